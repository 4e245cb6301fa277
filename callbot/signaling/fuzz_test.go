package signaling

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
)

var fuzzTypes = []string{
	EventInvite.Type, EventAnswer.Type, EventCandidates.Type, EventSelectAnswer.Type,
	EventNegotiate.Type, EventHangup.Type, EventReject.Type,
	EventMetadataChanged.Type, EventMetadataChangedUnstable.Type,
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// marshals and re-parses to a fixed point.
func FuzzParse(f *testing.F) {
	seeds := map[string]string{
		fixtureJSInvite: EventInvite.Type, fixtureJSOldInvite: EventInvite.Type, fixtureHYInvite: EventInvite.Type,
		fixtureJSAnswer: EventAnswer.Type, fixtureJSCandidates: EventCandidates.Type,
		fixtureHYEndOfCandidates: EventCandidates.Type, fixtureMautrixEndOfCandidates: EventCandidates.Type,
		fixtureJSSelectAnswer: EventSelectAnswer.Type, fixtureJSNegotiate: EventNegotiate.Type,
		fixtureJSHangupNoReason: EventHangup.Type, fixtureHYHangupReplaced: EventHangup.Type,
		fixtureJSReject: EventReject.Type, fixtureJSMetadataChanged: EventMetadataChanged.Type,
		fixtureHYMetadataChanged: EventMetadataChangedUnstable.Type,
		`{}`:                     EventHangup.Type, `null`: EventHangup.Type, `{"version":1e999}`: EventHangup.Type,
		`{"call_id":"c","conf_id":"x","device_id":"D","version":1.5}`: EventHangup.Type,
	}
	for raw, typ := range seeds {
		for i, ft := range fuzzTypes {
			if ft == typ {
				f.Add(uint8(i), []byte(raw))
			}
		}
	}
	f.Fuzz(func(t *testing.T, typeIdx uint8, raw []byte) {
		evtType := fuzzTypes[int(typeIdx)%len(fuzzTypes)]
		m, err := Parse(evtType, json.RawMessage(raw))
		if err != nil {
			require.Nil(t, m)
			return
		}
		out, err := Marshal(m)
		require.NoError(t, err)
		m2, err := Parse(evtType, out)
		require.NoError(t, err, "re-parse of %s", out)
		out2, err := Marshal(m2)
		require.NoError(t, err)
		m3, err := Parse(evtType, out2)
		require.NoError(t, err)
		require.Equal(t, m2, m3)
		require.JSONEq(t, string(out), string(out2))
	})
}

// FuzzSetMemberDevice checks that any existing member content can be
// rewritten and that the result lists the bot's device as active.
func FuzzSetMemberDevice(f *testing.F) {
	for _, seed := range []string{fixtureJSMember, fixtureHYMember, `{}`, `{"m.calls":[]}`, `{"m.calls":{}}`, `[]`, ``, `{"m.calls":[{"m.call_id":"conf1","m.devices":"x"}]}`} {
		f.Add([]byte(seed))
	}
	now := t0
	bot := NewMemberDevice("BOTDEVICE", "botSession", now.Add(MemberValidity))
	f.Fuzz(func(t *testing.T, existing []byte) {
		out, err := SetMemberDevice(existing, "conf1", bot, now)
		require.NoError(t, err)
		mc, err := ParseMember(out)
		require.NoError(t, err)
		call, ok := mc.Call("conf1")
		require.True(t, ok)
		found := false
		for _, d := range call.Devices {
			if d.DeviceID == "BOTDEVICE" {
				require.False(t, found, "own device listed once")
				require.True(t, d.Active(now))
				found = true
			}
		}
		require.True(t, found)
		left, err := RemoveMemberDevice(out, "conf1", "BOTDEVICE", now)
		require.NoError(t, err)
		mc, err = ParseMember(left)
		require.NoError(t, err)
		if call, ok := mc.Call("conf1"); ok {
			for _, d := range call.Devices {
				require.NotEqual(t, "BOTDEVICE", string(d.DeviceID))
			}
		}
	})
}

// FuzzMemberState: any member or call state content (from anyone in the
// room) is parsed without panicking, and Members stays bounded per user.
func FuzzMemberState(f *testing.F) {
	for _, seed := range []string{fixtureJSMember, fixtureHYMember, `{}`, `{"m.calls":[{"m.call_id":"conf1","m.devices":[{}]}]}`,
		`{"m.intent":"m.room","m.type":"m.video","m.terminated":true}`, `{"m.terminated":"yes"}`, `[]`, `null`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = ParseGroupCall(json.RawMessage(raw))
		if _, err := ParseMember(json.RawMessage(raw)); err != nil {
			return
		}
		key := "@fuzz:example.org"
		evt := &event.Event{Type: StateCallMember, StateKey: &key, Content: event.Content{VeryRaw: raw}}
		parts := Members([]*event.Event{evt}, "conf1", t0)
		require.LessOrEqual(t, len(parts), MaxDevicesPerUser)
	})
}
