package matrixrtc

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// live is a membership as Element Call sent it in the live run (matrixrtc.md §1).
const live = `{"application":"m.call","call_id":"","scope":"m.room","device_id":"Ox4YFrpH",
 "membershipID":"@alice:localhost:Ox4YFrpH","expires":14400000,
 "focus_active":{"type":"livekit","focus_selection":"multi_sfu"},
 "foci_preferred":[{"type":"livekit","livekit_service_url":"http://127.0.0.1:18013","livekit_alias":"!room:localhost"}]}`

func stateEvent(sender id.UserID, key, content string, ts time.Time) *event.Event {
	return &event.Event{Type: StateType, Sender: sender, StateKey: &key, RoomID: "!room:localhost",
		Timestamp: ts.UnixMilli(), Content: event.Content{VeryRaw: json.RawMessage(content)}}
}

func TestParse(t *testing.T) {
	now := time.Now()
	alice := id.UserID("@alice:localhost")
	key := "_@alice:localhost_Ox4YFrpH_m.call"
	tests := []struct {
		name    string
		evt     *event.Event
		wantErr error
	}{
		{"element call", stateEvent(alice, key, live, now.Add(-time.Minute)), nil},
		{"no leading underscore", stateEvent(alice, "@alice:localhost_Ox4YFrpH_m.call", live, now), nil},
		{"left", stateEvent(alice, key, `{}`, now), ErrLeft},
		{"mesh member event", stateEvent(alice, "@alice:localhost", `{"m.calls":[]}`, now), ErrNotMembership},
		{"other sender", stateEvent("@mallory:localhost", key, live, now), ErrSenderMismatch},
		{"device mismatch", stateEvent(alice, "_@alice:localhost_OTHER_m.call", live, now), ErrSenderMismatch},
		{"expired (crashed client)", stateEvent(alice, key, live, now.Add(-5*time.Hour)), ErrExpired},
		{"no focus", stateEvent(alice, key, `{"application":"m.call","device_id":"Ox4YFrpH","foci_preferred":[{"type":"other"}]}`, now), ErrNoFocus},
		{"bad focus url", stateEvent(alice, key, `{"application":"m.call","device_id":"Ox4YFrpH","foci_preferred":[{"type":"livekit","livekit_service_url":"file:///etc"}]}`, now), ErrNoFocus},
		{"other application", stateEvent(alice, key, `{"application":"m.other","device_id":"Ox4YFrpH"}`, now), ErrNotMembership},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.evt, now)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, alice, m.UserID)
			require.Equal(t, id.DeviceID("Ox4YFrpH"), m.DeviceID)
			require.Equal(t, "@alice:localhost:Ox4YFrpH", m.Identity)
			require.Equal(t, "http://127.0.0.1:18013", m.ServiceURL)
		})
	}
}

func TestParseCreatedTS(t *testing.T) {
	now := time.Now()
	// A renewed membership counts from created_ts, not from the event.
	content := `{"application":"m.call","device_id":"D","expires":60000,"created_ts":` +
		jsonInt(now.Add(-2*time.Minute).UnixMilli()) + `,"foci_preferred":[{"type":"livekit","livekit_service_url":"https://sfu.example"}]}`
	_, err := Parse(stateEvent("@a:x", "_@a:x_D_m.call", content, now), now)
	require.ErrorIs(t, err, ErrExpired)
}

func jsonInt(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestReadAndOwnContent(t *testing.T) {
	now := time.Now()
	own := OwnContent("@rec:localhost", "RECDEV", "!room:localhost", "http://127.0.0.1:1", DefaultExpires, time.Time{})
	ownJSON, err := json.Marshal(own)
	require.NoError(t, err)
	state := mautrix.RoomStateMap{StateType: {
		"_@alice:localhost_Ox4YFrpH_m.call": stateEvent("@alice:localhost", "_@alice:localhost_Ox4YFrpH_m.call", live, now.Add(-time.Second)),
		"_@rec:localhost_RECDEV_m.call":     stateEvent("@rec:localhost", "_@rec:localhost_RECDEV_m.call", string(ownJSON), now),
		"_@bob:localhost_B_m.call":          stateEvent("@mallory:localhost", "_@bob:localhost_B_m.call", live, now),
		"@carol:localhost":                  stateEvent("@carol:localhost", "@carol:localhost", `{"m.calls":[]}`, now),
	}}
	s := Read(state, now)
	require.Len(t, s.Members, 2)
	require.Equal(t, id.UserID("@alice:localhost"), s.Members[0].UserID)
	require.Equal(t, "@rec:localhost:RECDEV", s.Members[1].Identity)
	require.Len(t, s.Others("@rec:localhost"), 1)
	require.Equal(t, []string{"http://127.0.0.1:18013", "http://127.0.0.1:1"}, s.ServiceURLs())
	require.ErrorIs(t, s.Ignored["_@bob:localhost_B_m.call"], ErrSenderMismatch)
	require.Equal(t, "_@rec:localhost_RECDEV_m.call", StateKey("@rec:localhost", "RECDEV"))
}

func TestParseMediaKey(t *testing.T) {
	good := `{"keys":{"index":3,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":"Ox4YFrpH","id":"728dc7d3"},` +
		`"room_id":"!r:localhost","sent_ts":1796015982178,"session":{"application":"m.call","call_id":"","scope":"m.room"}}`
	k, err := ParseMediaKey(json.RawMessage(good))
	if err != nil {
		t.Fatal(err)
	}
	if k.RoomID != "!r:localhost" || k.DeviceID != "Ox4YFrpH" || k.Index != 3 || len(k.Key) != 16 || k.MemberID != "728dc7d3" {
		t.Fatalf("%+v", k)
	}
	for name, bad := range map[string]string{
		"no room":     `{"keys":{"index":0,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":"D"}}`,
		"no index":    `{"keys":{"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":"D"},"room_id":"!r:x"}`,
		"index 256":   `{"keys":{"index":256,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":"D"},"room_id":"!r:x"}`,
		"no device":   `{"keys":{"index":0,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{},"room_id":"!r:x"}`,
		"not base64":  `{"keys":{"index":0,"key":"!!"},"member":{"claimed_device_id":"D"},"room_id":"!r:x"}`,
		"other app":   `{"keys":{"index":0,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":"D"},"room_id":"!r:x","session":{"application":"m.other"}}`,
		"not json":    `[`,
		"wrong types": `{"keys":{"index":"0","key":1}}`,
	} {
		if _, err := ParseMediaKey(json.RawMessage(bad)); !errors.Is(err, ErrBadKeys) {
			t.Errorf("%s: %v, want ErrBadKeys", name, err)
		}
	}
}
