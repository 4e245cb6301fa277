package signaling

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func stateEvent(t *testing.T, evtType event.Type, stateKey string, ts int64, content string) *event.Event {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"type":             evtType.Type,
		"state_key":        stateKey,
		"origin_server_ts": ts,
		"event_id":         "$" + stateKey + "_" + time.UnixMilli(ts).Format("150405.000"),
		"room_id":          "!room:example.org",
		"sender":           "@alice:example.org",
		"content":          json.RawMessage(content),
	})
	require.NoError(t, err)
	var evt event.Event
	require.NoError(t, json.Unmarshal(raw, &evt))
	return &evt
}

func TestTruthy(t *testing.T) {
	tests := map[string]bool{
		`true`: true, `false`: false, `null`: false, `""`: false, `"call_ended"`: true,
		`"0"`: true, `0`: false, `0.0`: false, `1`: true, `-1`: true, `{}`: true, `[]`: true,
	}
	for in, want := range tests {
		require.Equal(t, want, truthy(json.RawMessage(in)), in)
	}
}

func TestPickCall(t *testing.T) {
	redacted := func(evt *event.Event) *event.Event {
		evt.Unsigned.RedactedBecause = &event.Event{ID: "$redaction"}
		return evt
	}
	tests := []struct {
		name    string
		events  func(t *testing.T) []*event.Event
		want    ConfID
		wantErr bool
		intent  CallIntent
	}{
		{"single js call", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateGroupCall, "conf1", 1000, fixtureJSCall)}
		}, "conf1", false, IntentRoom},
		{"newest wins", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				stateEvent(t, StateGroupCall, "new", 2000, fixtureHYCall),
			}
		}, "new", false, IntentRing},
		{"newest terminated by js string falls back to older", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureHYCall),
				stateEvent(t, StateGroupCall, "new", 2000, fixtureJSCallTerminated),
			}
		}, "old", false, IntentRing},
		{"newest terminated by hydrogen bool", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				stateEvent(t, StateGroupCall, "new", 2000, fixtureHYCallTerminated),
			}
		}, "old", false, IntentRoom},
		{"all terminated", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "a", 1000, fixtureJSCallTerminated),
				stateEvent(t, StateGroupCall, "b", 2000, fixtureHYCallTerminated),
			}
		}, "", true, ""},
		{"redacted newest is skipped", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				redacted(stateEvent(t, StateGroupCall, "new", 2000, fixtureHYCall)),
			}
		}, "old", false, IntentRoom},
		{"stripped content counts as redacted", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				stateEvent(t, StateGroupCall, "new", 2000, `{}`),
			}
		}, "old", false, IntentRoom},
		{"invalid newest means no call (no fallback)", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				stateEvent(t, StateGroupCall, "new", 2000, `{"m.intent":"m.party","m.type":"m.video"}`),
			}
		}, "", true, ""},
		{"falsy m.terminated is live", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateGroupCall, "c", 1000, `{"m.intent":"m.room","m.type":"m.video","m.terminated":false}`)}
		}, "c", false, IntentRoom},
		{"stable type considered", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateGroupCall, "old", 1000, fixtureJSCall),
				stateEvent(t, StateGroupCallStable, "stable", 3000, fixtureHYCall),
			}
		}, "stable", false, IntentRing},
		{"other types ignored", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateCallMember, "@a:example.org", 5000, fixtureJSMember),
				stateEvent(t, StateGroupCall, "c", 1000, fixtureJSCall),
			}
		}, "c", false, IntentRoom},
		{"no events", func(t *testing.T) []*event.Event { return nil }, "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, err := PickCall(tt.events(t))
			if tt.wantErr {
				require.ErrorIs(t, err, ErrNoActiveCall)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, call.ConfID)
			require.Equal(t, tt.intent, call.Content.Intent)
			require.Equal(t, id.RoomID("!room:example.org"), call.RoomID)
		})
	}
}

func TestGroupCallContent(t *testing.T) {
	c, err := ParseGroupCall(json.RawMessage(fixtureJSCall))
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	require.Equal(t, CallTypeVideo, c.Type)
	require.True(t, c.DataChannelsEnabled)
	require.Contains(t, c.Extra, "dataChannelOptions")

	c.Terminated = true
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	require.JSONEq(t, `{"m.intent":"m.room","m.type":"m.video","m.terminated":"call_ended","dataChannelsEnabled":true,"dataChannelOptions":{"ordered":true}}`, string(raw))

	bad := GroupCallContent{Intent: IntentRoom}
	var fe *FieldError
	require.ErrorAs(t, bad.Validate(), &fe)
	require.Equal(t, "m.type", fe.Field)
}

func TestMembers(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	future := now.Add(time.Hour).UnixMilli()
	past := now.Add(-time.Second).UnixMilli()
	dev := func(device, session string, expires any, feeds any) map[string]any {
		d := map[string]any{"device_id": device, "session_id": session, "feeds": feeds}
		if expires != nil {
			d["expires_ts"] = expires
		}
		return d
	}
	content := func(devices ...map[string]any) string {
		raw, err := json.Marshal(map[string]any{"m.calls": []any{map[string]any{"m.call_id": "conf1", "m.devices": devices}}})
		require.NoError(t, err)
		return string(raw)
	}
	usermedia := []any{map[string]any{"purpose": "m.usermedia"}}
	tests := []struct {
		name   string
		events func(t *testing.T) []*event.Event
		want   []DeviceKey
	}{
		{"js and hydrogen fixtures", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateCallMember, "@js:example.org", 1, fixtureJSMember),
				stateEvent(t, StateCallMember, "@hy:example.org", 1, fixtureHYMember),
			}
		}, []DeviceKey{{"@hy:example.org", "HYDEVICE"}, {"@js:example.org", "JSDEVICE"}}},
		{"expired device is not a member", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				content(dev("OLD", "s1", past, usermedia), dev("NEW", "s2", future, usermedia)))}
		}, []DeviceKey{{"@a:example.org", "NEW"}}},
		{"expires exactly now is expired", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				content(dev("D", "s", now.UnixMilli(), usermedia)))}
		}, nil},
		{"missing or non-numeric expires_ts", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				content(dev("A", "s", nil, usermedia), dev("B", "s", "1800000000000", usermedia), dev("C", "s", 1.8e12+0.5, usermedia)))}
		}, nil},
		{"feeds not an array drops the device (js-sdk)", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				content(dev("A", "s", future, nil), dev("B", "s", future, map[string]any{}), dev("C", "s", future, []any{})))}
		}, []DeviceKey{{"@a:example.org", "C"}}},
		{"non-string ids dropped", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				content(map[string]any{"device_id": 5, "session_id": "s", "expires_ts": future, "feeds": usermedia},
					map[string]any{"device_id": "X", "expires_ts": future, "feeds": usermedia}))}
		}, nil},
		{"other conference ignored", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1,
				`{"m.calls":[{"m.call_id":"conf2","m.devices":[{"device_id":"D","session_id":"s","expires_ts":9999999999999,"feeds":[]}]}]}`)}
		}, nil},
		{"left call: empty m.calls", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "@a:example.org", 1, `{"m.calls":[]}`)}
		}, nil},
		{"matrixrtc per-device state key ignored", func(t *testing.T) []*event.Event {
			return []*event.Event{stateEvent(t, StateCallMember, "_@a:example.org_D_m.call", 1,
				`{"application":"m.call","call_id":"","device_id":"D","scope":"m.room"}`)}
		}, nil},
		{"duplicate device keeps first, stable type considered", func(t *testing.T) []*event.Event {
			return []*event.Event{
				stateEvent(t, StateCallMemberStable, "@a:example.org", 1, content(dev("D", "stable", future, usermedia), dev("S", "s", future, usermedia))),
				stateEvent(t, StateCallMember, "@a:example.org", 1, content(dev("D", "unstable", future, usermedia))),
			}
		}, []DeviceKey{{"@a:example.org", "D"}, {"@a:example.org", "S"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := Members(tt.events(t), "conf1", now)
			var got []DeviceKey
			for _, p := range ps {
				got = append(got, p.Key())
			}
			require.Equal(t, tt.want, got)
		})
	}

	t.Run("participant fields", func(t *testing.T) {
		evts := []*event.Event{
			stateEvent(t, StateCallMemberStable, "@a:example.org", 1, content(dev("D", "stable", future, usermedia))),
			stateEvent(t, StateCallMember, "@a:example.org", 1, content(
				map[string]any{"device_id": "D", "session_id": "unstable", "expires_ts": future,
					"feeds":         []any{map[string]any{"purpose": "m.usermedia"}, map[string]any{"purpose": "m.screenshare"}},
					"m.foci.active": []any{map[string]any{"type": "livekit"}}})),
		}
		ps := Members(evts, "conf1", now)
		require.Len(t, ps, 1)
		p := ps[0]
		require.Equal(t, SessionID("unstable"), p.SessionID, "unstable type wins")
		require.True(t, p.Screenshare())
		require.True(t, p.UsesFoci)
		require.Equal(t, time.UnixMilli(future), p.ExpiresAt)
		exp, ok := EarliestExpiry(ps)
		require.True(t, ok)
		require.Equal(t, time.UnixMilli(future), exp)
	})
}

func TestSetMemberDevice(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	bot := NewMemberDevice("BOTDEVICE", "botSession", now.Add(MemberValidity))
	tests := []struct {
		name     string
		existing string
		want     string
	}{
		{"no existing event", ``,
			`{"m.calls":[{"m.call_id":"conf1","m.devices":[{"device_id":"BOTDEVICE","session_id":"botSession","expires_ts":1700001800000,"feeds":[{"purpose":"m.usermedia"}]}]}]}`},
		{"empty content", `{}`,
			`{"m.calls":[{"m.call_id":"conf1","m.devices":[{"device_id":"BOTDEVICE","session_id":"botSession","expires_ts":1700001800000,"feeds":[{"purpose":"m.usermedia"}]}]}]}`},
		{"keeps other calls, devices and unknown fields; replaces own entry; drops expired", `{
			"x.top": {"keep": true},
			"m.calls": [
				{"m.call_id": "other", "m.devices": [{"device_id": "BOTDEVICE", "session_id": "x", "expires_ts": 1, "feeds": []}], "x.call": 1},
				{"m.call_id": "conf1", "m.foci": [], "m.devices": [
					{"device_id": "BOTDEVICE", "session_id": "oldSession", "expires_ts": 1700000500000, "feeds": []},
					{"device_id": "SECOND", "session_id": "s2", "expires_ts": 1700003600000, "feeds": [{"purpose": "m.usermedia", "x.feed": 2}], "x.dev": "k"},
					{"device_id": "STALE", "session_id": "s3", "expires_ts": 1699999999999, "feeds": []}
				]},
				"garbage"
			]}`,
			`{
			"x.top": {"keep": true},
			"m.calls": [
				{"m.call_id": "other", "m.devices": [{"device_id": "BOTDEVICE", "session_id": "x", "expires_ts": 1, "feeds": []}], "x.call": 1},
				{"m.call_id": "conf1", "m.foci": [], "m.devices": [
					{"device_id": "SECOND", "session_id": "s2", "expires_ts": 1700003600000, "feeds": [{"purpose": "m.usermedia", "x.feed": 2}], "x.dev": "k"},
					{"device_id": "BOTDEVICE", "session_id": "botSession", "expires_ts": 1700001800000, "feeds": [{"purpose": "m.usermedia"}]}
				]},
				"garbage"
			]}`},
		{"m.calls not an array is replaced", `{"m.calls": {"bad": 1}, "x": 1}`,
			`{"x": 1, "m.calls":[{"m.call_id":"conf1","m.devices":[{"device_id":"BOTDEVICE","session_id":"botSession","expires_ts":1700001800000,"feeds":[{"purpose":"m.usermedia"}]}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := SetMemberDevice(json.RawMessage(tt.existing), "conf1", bot, now)
			require.NoError(t, err)
			require.JSONEq(t, tt.want, string(out))

			// What we wrote is read back as an active participant.
			evt := stateEvent(t, StateCallMember, "@bot:example.org", 1, string(out))
			ps := Members([]*event.Event{evt}, "conf1", now)
			require.Contains(t, ps, Participant{
				UserID: "@bot:example.org", DeviceID: "BOTDEVICE", SessionID: "botSession",
				ExpiresAt: time.UnixMilli(1700001800000), Feeds: []Feed{{Purpose: PurposeUserMedia}},
			})
		})
	}
}

func TestRemoveMemberDevice(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	bot := NewMemberDevice("BOTDEVICE", "botSession", now.Add(MemberValidity))
	joined, err := SetMemberDevice(json.RawMessage(fixtureJSMember), "conf1", bot, now)
	require.NoError(t, err)

	left, err := RemoveMemberDevice(joined, "conf1", "BOTDEVICE", now)
	require.NoError(t, err)
	mc, err := ParseMember(left)
	require.NoError(t, err)
	call, ok := mc.Call("conf1")
	require.True(t, ok)
	require.Len(t, call.Devices, 1)
	require.Equal(t, id.DeviceID("JSDEVICE"), call.Devices[0].DeviceID)
	require.JSONEq(t, `1`, string(call.Devices[0].Extra["x.custom"]))
	require.Contains(t, call.Extra, "m.foci")
	require.JSONEq(t, `{"keep":true}`, string(mc.Extra["x.top"]))
	_, ok = mc.Call("otherconf")
	require.True(t, ok)

	// Last device gone: the call entry disappears, m.calls stays an array.
	only, err := SetMemberDevice(nil, "conf1", bot, now)
	require.NoError(t, err)
	empty, err := RemoveMemberDevice(only, "conf1", "BOTDEVICE", now)
	require.NoError(t, err)
	require.JSONEq(t, `{"m.calls":[]}`, string(empty))

	// Removing from nothing is harmless.
	none, err := RemoveMemberDevice(nil, "conf1", "BOTDEVICE", now)
	require.NoError(t, err)
	require.JSONEq(t, `{"m.calls":[]}`, string(none))
}

func TestParseMemberDeviceErrors(t *testing.T) {
	mc, err := ParseMember(json.RawMessage(`{"m.calls":[{"m.call_id":"conf1","m.devices":[{"device_id":"D","session_id":"s","expires_ts":1,"feeds":"x"}]}]}`))
	require.NoError(t, err)
	d := mc.Calls[0].Devices[0]
	var fe *FieldError
	require.ErrorAs(t, d.Err(), &fe)
	require.Equal(t, "feeds", fe.Field)
	require.False(t, d.Active(time.UnixMilli(0)))

	_, err = ParseMember(json.RawMessage(`"x"`))
	require.ErrorIs(t, err, ErrInvalidContent)
}
