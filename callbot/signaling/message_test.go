package signaling

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func ptr[T any](v T) *T { return &v }

func TestParseFixtures(t *testing.T) {
	tests := []struct {
		name    string
		evtType string
		raw     string
		check   func(t *testing.T, m Message)
	}{
		{"js invite stable metadata", EventInvite.Type, fixtureJSInvite, func(t *testing.T, m Message) {
			inv := m.(*Invite)
			require.Equal(t, CallID("1700000000000aBcDeFgHiJkLmNoPq"), inv.CallID)
			require.Equal(t, PartyID("JSDEVICE"), inv.PartyID)
			require.Equal(t, Version1, inv.Version)
			require.False(t, inv.NumericVersion)
			require.Equal(t, ConfID("conf1"), inv.ConfID)
			require.Equal(t, id.DeviceID("JSDEVICE"), inv.DeviceID)
			require.Equal(t, SessionID("jsSess1234"), inv.SenderSessionID)
			require.Equal(t, SessionID("botSession"), inv.DestSessionID)
			require.Equal(t, ptr(uint64(0)), inv.Seq)
			require.Equal(t, event.CallDataTypeOffer, inv.Offer.Type)
			require.Equal(t, "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", inv.Offer.SDP)
			require.EqualValues(t, 60000, inv.Lifetime)
			require.Equal(t, id.UserID("@zzz-recorder:example.org"), inv.Invitee)
			require.Equal(t, &Capabilities{}, inv.Capabilities)
			require.Equal(t, MetadataKeysStable, inv.MetadataKeys)
			require.Equal(t, StreamMetadata{"stream-a": {Purpose: PurposeUserMedia, VideoMuted: true}}, inv.Metadata)
			require.Contains(t, inv.Extra, "org.matrix.msgid")
		}},
		{"old js invite unstable metadata", EventInvite.Type, fixtureJSOldInvite, func(t *testing.T, m Message) {
			inv := m.(*Invite)
			require.Equal(t, MetadataKeysUnstable, inv.MetadataKeys)
			require.Equal(t, StreamMetadata{"stream-b": {Purpose: PurposeUserMedia, AudioMuted: true}}, inv.Metadata)
		}},
		{"hydrogen invite numeric version", EventInvite.Type, fixtureHYInvite, func(t *testing.T, m Message) {
			inv := m.(*Invite)
			require.Equal(t, Version1, inv.Version)
			require.True(t, inv.NumericVersion)
			require.False(t, inv.IsLegacyVersion())
			require.Empty(t, inv.Invitee)
			require.Nil(t, inv.Capabilities)
			require.Equal(t, ptr(uint64(4)), inv.Seq)
			require.Equal(t, PurposeUserMedia, inv.Metadata["hy-stream"].Purpose)
			require.Nil(t, inv.Extra)
		}},
		{"js answer", EventAnswer.Type, fixtureJSAnswer, func(t *testing.T, m Message) {
			a := m.(*Answer)
			require.Equal(t, event.CallDataTypeAnswer, a.Answer.Type)
			require.Equal(t, MetadataKeysStable, a.MetadataKeys)
		}},
		{"js candidates batch with end marker", EventCandidates.Type, fixtureJSCandidates, func(t *testing.T, m Message) {
			c := m.(*Candidates)
			require.Len(t, c.Candidates, 3)
			require.Equal(t, Candidate{
				Candidate:        "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
				SDPMid:           ptr("0"),
				SDPMLineIndex:    ptr(uint16(0)),
				UsernameFragment: ptr("abcd"),
			}, c.Candidates[0])
			require.Nil(t, c.Candidates[1].UsernameFragment, "null usernameFragment")
			require.Equal(t, ptr(uint16(1)), c.Candidates[1].SDPMLineIndex)
			require.False(t, c.Candidates[0].IsEndOfCandidates())
			require.True(t, c.Candidates[2].IsEndOfCandidates())
			require.True(t, c.IsEnd())
		}},
		{"hydrogen lone end marker", EventCandidates.Type, fixtureHYEndOfCandidates, func(t *testing.T, m Message) {
			c := m.(*Candidates)
			require.Equal(t, []Candidate{EndOfCandidates()}, c.Candidates)
			require.True(t, c.IsEnd())
		}},
		{"mautrix end marker shape", EventCandidates.Type, fixtureMautrixEndOfCandidates, func(t *testing.T, m Message) {
			c := m.(*Candidates)
			require.True(t, c.IsEnd())
			require.Nil(t, c.Seq, "waterfall sends no seq")
		}},
		{"select_answer", EventSelectAnswer.Type, fixtureJSSelectAnswer, func(t *testing.T, m Message) {
			require.Equal(t, PartyID("BOTDEVICE"), m.(*SelectAnswer).SelectedPartyID)
		}},
		{"negotiate with screenshare", EventNegotiate.Type, fixtureJSNegotiate, func(t *testing.T, m Message) {
			n := m.(*Negotiate)
			require.Equal(t, event.CallDataTypeOffer, n.Description.Type)
			require.Equal(t, PurposeScreenshare, n.Metadata["screen-1"].Purpose)
		}},
		{"hangup without reason", EventHangup.Type, fixtureJSHangupNoReason, func(t *testing.T, m Message) {
			h := m.(*Hangup)
			require.Empty(t, h.Reason)
			require.Equal(t, ReasonUserHangup, h.EffectiveReason())
		}},
		{"hangup replaced", EventHangup.Type, fixtureHYHangupReplaced, func(t *testing.T, m Message) {
			require.Equal(t, ReasonReplaced, m.(*Hangup).EffectiveReason())
		}},
		{"reject", EventReject.Type, fixtureJSReject, func(t *testing.T, m Message) {
			require.Equal(t, ReasonUserHangup, m.(*Reject).EffectiveReason())
		}},
		{"metadata changed stable", EventMetadataChanged.Type, fixtureJSMetadataChanged, func(t *testing.T, m Message) {
			mc := m.(*MetadataChanged)
			require.False(t, mc.Unstable)
			require.Equal(t, EventMetadataChanged, mc.Type())
			require.True(t, mc.Metadata["stream-a"].AudioMuted)
		}},
		{"metadata changed unstable keeps unknown stream fields", EventMetadataChangedUnstable.Type, fixtureHYMetadataChanged, func(t *testing.T, m Message) {
			mc := m.(*MetadataChanged)
			require.True(t, mc.Unstable)
			require.Equal(t, EventMetadataChangedUnstable, mc.Type())
			info := mc.Metadata["hy-stream"]
			require.True(t, info.AudioMuted)
			require.JSONEq(t, `"@hy:example.org"`, string(info.Extra["user_id"]))
			require.Contains(t, info.Extra, "tracks")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.evtType, json.RawMessage(tt.raw))
			require.NoError(t, err)
			require.Equal(t, tt.evtType, m.Type().Type)
			require.Equal(t, event.ToDeviceEventType, m.Type().Class)
			tt.check(t, m)

			// Round trip: Marshal then Parse gives the same message.
			out, err := Marshal(m)
			require.NoError(t, err)
			again, err := Parse(tt.evtType, out)
			require.NoError(t, err)
			require.Equal(t, normalize(t, m), normalize(t, again))
		})
	}
}

// normalize re-encodes a message so raw Extra values compare equal
// regardless of the original whitespace.
func normalize(t *testing.T, m Message) Message {
	t.Helper()
	raw, err := Marshal(m)
	require.NoError(t, err)
	out, err := Parse(m.Type().Type, raw)
	require.NoError(t, err)
	return out
}

func TestParseErrors(t *testing.T) {
	// base builds a valid invite and lets a test change one field.
	base := func(mut func(map[string]any)) string {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(fixtureJSInvite), &m))
		mut(m)
		raw, err := json.Marshal(m)
		require.NoError(t, err)
		return string(raw)
	}
	tests := []struct {
		name    string
		evtType string
		raw     string
		want    error
		field   string
	}{
		{"missing call_id", EventInvite.Type, base(func(m map[string]any) { delete(m, "call_id") }), ErrMissingField, "call_id"},
		{"empty call_id", EventInvite.Type, base(func(m map[string]any) { m["call_id"] = "" }), ErrMissingField, "call_id"},
		{"missing conf_id", EventInvite.Type, base(func(m map[string]any) { delete(m, "conf_id") }), ErrMissingField, "conf_id"},
		{"missing device_id", EventInvite.Type, base(func(m map[string]any) { delete(m, "device_id") }), ErrMissingField, "device_id"},
		{"null device_id", EventInvite.Type, base(func(m map[string]any) { m["device_id"] = nil }), ErrMissingField, "device_id"},
		{"missing offer", EventInvite.Type, base(func(m map[string]any) { delete(m, "offer") }), ErrMissingField, "offer"},
		{"missing offer sdp", EventInvite.Type, base(func(m map[string]any) { m["offer"] = map[string]any{"type": "offer"} }), ErrMissingField, "offer.sdp"},
		{"answer type in invite", EventInvite.Type, base(func(m map[string]any) { m["offer"] = map[string]any{"type": "answer", "sdp": "v=0"} }), ErrBadSDPType, "offer.type"},
		{"offer not object", EventInvite.Type, base(func(m map[string]any) { m["offer"] = "v=0" }), ErrInvalidField, "offer"},
		{"call_id not string", EventInvite.Type, base(func(m map[string]any) { m["call_id"] = 5 }), ErrInvalidField, "call_id"},
		{"version bool", EventInvite.Type, base(func(m map[string]any) { m["version"] = true }), ErrInvalidField, "version"},
		{"negative seq", EventInvite.Type, base(func(m map[string]any) { m["seq"] = -1 }), ErrInvalidField, "seq"},
		{"fractional seq", EventInvite.Type, base(func(m map[string]any) { m["seq"] = 1.5 }), ErrInvalidField, "seq"},
		{"string seq", EventInvite.Type, base(func(m map[string]any) { m["seq"] = "1" }), ErrInvalidField, "seq"},
		{"metadata not object", EventInvite.Type, base(func(m map[string]any) { m["sdp_stream_metadata"] = []any{} }), ErrInvalidField, "sdp_stream_metadata"},
		{"metadata mute not bool", EventInvite.Type, base(func(m map[string]any) {
			m["sdp_stream_metadata"] = map[string]any{"s": map[string]any{"purpose": "m.usermedia", "audio_muted": "yes"}}
		}), ErrInvalidField, `sdp_stream_metadata["s"].audio_muted`},
		{"missing answer", EventAnswer.Type, `{"call_id":"c","conf_id":"x","device_id":"D"}`, ErrMissingField, "answer"},
		{"pranswer", EventAnswer.Type, `{"call_id":"c","conf_id":"x","device_id":"D","answer":{"type":"pranswer","sdp":"v=0"}}`, ErrBadSDPType, "answer.type"},
		{"negotiate rollback", EventNegotiate.Type, `{"call_id":"c","conf_id":"x","device_id":"D","description":{"type":"rollback","sdp":"v=0"}}`, ErrBadSDPType, "description.type"},
		{"negotiate without type", EventNegotiate.Type, `{"call_id":"c","conf_id":"x","device_id":"D","description":{"sdp":"v=0"}}`, ErrMissingField, "description.type"},
		{"missing candidates", EventCandidates.Type, `{"call_id":"c","conf_id":"x","device_id":"D"}`, ErrMissingField, "candidates"},
		{"candidate without mid and index", EventCandidates.Type, `{"call_id":"c","conf_id":"x","device_id":"D","candidates":[{"candidate":"candidate:1"}]}`, ErrMissingField, "candidates[0].sdpMid"},
		{"candidate without candidate", EventCandidates.Type, `{"call_id":"c","conf_id":"x","device_id":"D","candidates":[{"sdpMid":"0"}]}`, ErrMissingField, "candidates[0].candidate"},
		{"candidate index too large", EventCandidates.Type, `{"call_id":"c","conf_id":"x","device_id":"D","candidates":[{"candidate":"a","sdpMLineIndex":70000}]}`, ErrInvalidField, "candidates[0].sdpMLineIndex"},
		{"missing selected_party_id", EventSelectAnswer.Type, `{"call_id":"c","conf_id":"x","device_id":"D"}`, ErrMissingField, "selected_party_id"},
		{"metadata changed without metadata", EventMetadataChanged.Type, `{"call_id":"c","conf_id":"x","device_id":"D"}`, ErrMissingField, "sdp_stream_metadata"},
		{"hangup reason not string", EventHangup.Type, `{"call_id":"c","conf_id":"x","device_id":"D","reason":1}`, ErrInvalidField, "reason"},
		{"not an object", EventHangup.Type, `[1,2]`, ErrInvalidContent, ""},
		{"null content", EventHangup.Type, `null`, ErrInvalidContent, ""},
		{"unknown type", "m.call.replaces", `{}`, ErrUnknownEventType, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.evtType, json.RawMessage(tt.raw))
			require.ErrorIs(t, err, tt.want)
			if tt.field != "" {
				var fe *FieldError
				require.ErrorAs(t, err, &fe)
				require.Equal(t, tt.field, fe.Field)
				require.Contains(t, err.Error(), tt.field)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		name    string
		version string // JSON literal, "" = absent
		want    Version
		numeric bool
		legacy  bool
		written string
	}{
		{"string 1", `"1"`, Version1, false, false, `"1"`},
		{"number 1", `1`, Version1, true, false, `1`},
		{"number 0 is legacy", `0`, Version0, true, true, `0`},
		{"string 0 is not legacy", `"0"`, Version0, false, false, `"0"`},
		{"future string", `"2"`, "2", false, false, `"2"`},
		{"absent", ``, "", false, false, `"1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"call_id":"c","conf_id":"x","device_id":"D","reason":"user_hangup"`
			if tt.version != "" {
				raw += `,"version":` + tt.version
			}
			raw += `}`
			m, err := Parse(EventHangup.Type, json.RawMessage(raw))
			require.NoError(t, err)
			b := m.Common()
			require.Equal(t, tt.want, b.Version)
			require.Equal(t, tt.numeric, b.NumericVersion)
			require.Equal(t, tt.legacy, b.IsLegacyVersion())
			out, err := Marshal(m)
			require.NoError(t, err)
			var got map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(out, &got))
			require.Equal(t, tt.written, string(got["version"]))
		})
	}
}

func TestMetadataKeys(t *testing.T) {
	both := `{"call_id":"c","conf_id":"x","device_id":"D",
		"sdp_stream_metadata":{"s1":{"purpose":"m.usermedia"}},
		"org.matrix.msc3077.sdp_stream_metadata":{"s2":{"purpose":"m.screenshare"}}}`
	m, err := Parse(EventMetadataChanged.Type, json.RawMessage(both))
	require.NoError(t, err)
	mc := m.(*MetadataChanged)
	require.Equal(t, MetadataKeysBoth, mc.MetadataKeys)
	require.Equal(t, StreamMetadata{"s1": {Purpose: PurposeUserMedia}}, mc.Metadata, "stable key read first")

	tests := []struct {
		name         string
		keys         MetadataKeys
		wantStable   bool
		wantUnstable bool
	}{
		{"default writes both", MetadataKeysBoth, true, true},
		{"stable only (js-sdk >= v41)", MetadataKeysStable, true, false},
		{"unstable only (hydrogen)", MetadataKeysUnstable, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := &Answer{
				Base:         Base{CallID: "c", ConfID: "x", DeviceID: "D"},
				Answer:       event.CallData{Type: event.CallDataTypeAnswer, SDP: "v=0"},
				Metadata:     StreamMetadata{"s": {Purpose: PurposeUserMedia, VideoMuted: true}},
				MetadataKeys: tt.keys,
			}
			out, err := Marshal(msg)
			require.NoError(t, err)
			var got map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(out, &got))
			want := `{"s":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true}}`
			if tt.wantStable {
				require.JSONEq(t, want, string(got[KeyStreamMetadata]))
			} else {
				require.NotContains(t, got, KeyStreamMetadata)
			}
			if tt.wantUnstable {
				require.JSONEq(t, want, string(got[KeyStreamMetadataUnstable]))
			} else {
				require.NotContains(t, got, KeyStreamMetadataUnstable)
			}
		})
	}
}

func TestStreamMetadataMerge(t *testing.T) {
	old := StreamMetadata{"a": {Purpose: PurposeUserMedia}, "b": {Purpose: PurposeScreenshare}}
	merged := old.Merge(StreamMetadata{"a": {Purpose: PurposeUserMedia, AudioMuted: true}})
	require.Equal(t, StreamMetadata{"a": {Purpose: PurposeUserMedia, AudioMuted: true}, "b": {Purpose: PurposeScreenshare}}, merged)
	require.False(t, old["a"].AudioMuted, "receiver not modified")
	require.True(t, PurposeScreenshare.Known())
	require.False(t, Purpose("m.other").Known())
}

// TestBotMessagesWireShape checks what the bot puts on the wire.
func TestBotMessagesWireShape(t *testing.T) {
	ob := NewOutbox("BOTDEVICE", "botSession")
	inv := &Invite{
		Offer:        event.CallData{Type: event.CallDataTypeOffer, SDP: "v=0\r\n"},
		Invitee:      "@alice:example.org",
		Capabilities: &Capabilities{},
		Metadata:     StreamMetadata{"bot-stream": {Purpose: PurposeUserMedia}},
	}
	ob.Stamp(inv, "conf1", "1700000000000botcall", "aliceSession")
	raw, err := Marshal(inv)
	require.NoError(t, err)
	require.JSONEq(t, `{
		"call_id": "1700000000000botcall",
		"party_id": "BOTDEVICE",
		"version": "1",
		"conf_id": "conf1",
		"device_id": "BOTDEVICE",
		"sender_session_id": "botSession",
		"dest_session_id": "aliceSession",
		"seq": 0,
		"offer": {"type": "offer", "sdp": "v=0\r\n"},
		"lifetime": 60000,
		"invitee": "@alice:example.org",
		"capabilities": {"m.call.transferee": false, "m.call.dtmf": false},
		"sdp_stream_metadata": {"bot-stream": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": false}},
		"org.matrix.msc3077.sdp_stream_metadata": {"bot-stream": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": false}}
	}`, string(raw))

	cands := &Candidates{Candidates: []Candidate{
		{Candidate: "candidate:1 1 udp 1 192.0.2.1 1 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr(uint16(0))},
		EndOfCandidates(),
	}}
	ob.Stamp(cands, "conf1", "1700000000000botcall", "aliceSession")
	raw, err = Marshal(cands)
	require.NoError(t, err)
	var got map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &got))
	require.Equal(t, "1", string(got["seq"]))
	require.JSONEq(t, `[{"candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]`, string(got["candidates"]))

	// A different call starts at 0 again.
	h := &Hangup{Reason: ReasonUserHangup}
	ob.Stamp(h, "conf1", "1700000000001other", "bobSession")
	require.Equal(t, ptr(uint64(0)), h.Seq)

	// Marshal refuses what Parse would refuse.
	_, err = Marshal(&Hangup{Base: Base{CallID: "c", DeviceID: "D"}})
	require.ErrorIs(t, err, ErrMissingField)
	_, err = Marshal(&Negotiate{Base: Base{CallID: "c", ConfID: "x", DeviceID: "D"}, Description: event.CallData{Type: "pranswer", SDP: "v=0"}})
	require.ErrorIs(t, err, ErrBadSDPType)
}

func TestUnmarshalJSONUsesParse(t *testing.T) {
	var inv Invite
	require.NoError(t, json.Unmarshal([]byte(fixtureHYInvite), &inv))
	require.Equal(t, CallID("c1a2b3c4d5e6f70"), inv.CallID)
	var bad Invite
	err := json.Unmarshal([]byte(`{"call_id":"c"}`), &bad)
	var fe *FieldError
	require.True(t, errors.As(err, &fe))
}

func TestIsCallEventType(t *testing.T) {
	require.True(t, IsCallEventType("m.call.invite"))
	require.True(t, IsCallEventType("org.matrix.call.asserted_identity"))
	require.False(t, IsCallEventType("m.room.message"))
	require.False(t, IsCallEventType("m.call"))
}

func TestRetriedBy(t *testing.T) {
	for _, r := range []HangupReason{"", ReasonUserHangup, ReasonReplaced, ReasonNewSession, ReasonAnsweredElsewhere} {
		require.False(t, RetriedBy(r), r)
	}
	for _, r := range []HangupReason{ReasonICEFailed, ReasonInviteTimeout, ReasonUnknownError, ReasonSignallingTimeout} {
		require.True(t, RetriedBy(r), r)
	}
}

func TestCandidateQueue(t *testing.T) {
	var q CandidateQueue
	require.Nil(t, q.Take())
	c1 := Candidate{Candidate: "candidate:1", SDPMid: ptr("0")}
	c2 := Candidate{Candidate: "candidate:2", SDPMid: ptr("0")}
	q.Add(c1)
	q.Discard() // sent inside the SDP
	require.Equal(t, 0, q.Len())
	q.Add(c2)
	q.Add(EndOfCandidates())
	q.End() // idempotent
	require.True(t, q.Ended())
	require.Equal(t, []Candidate{c2, EndOfCandidates()}, q.Take())
	require.Nil(t, q.Take())
	q.Restart()
	require.False(t, q.Ended())
	q.End()
	require.Equal(t, []Candidate{EndOfCandidates()}, q.Take())
}
