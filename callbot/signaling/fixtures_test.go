package signaling

// Fixtures in the shape js-sdk (MatrixCall.sendVoipEvent with a GroupCall
// opponent) and hydrogen (Member.sendSignallingMessage) put on the wire.
// SDP bodies are shortened.

// js-sdk >= v41: stable metadata key only, version "1", msgid, invitee,
// capabilities, seq per call id.
const fixtureJSInvite = `{
  "call_id": "1700000000000aBcDeFgHiJkLmNoPq",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 0,
  "org.matrix.msgid": "6f1c6a3e-0d0b-4a0e-9a8c-1b2c3d4e5f60",
  "offer": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},
  "lifetime": 60000,
  "invitee": "@zzz-recorder:example.org",
  "capabilities": {"m.call.transferee": false, "m.call.dtmf": false},
  "sdp_stream_metadata": {
    "stream-a": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": true}
  }
}`

// js-sdk < v41: unstable metadata key only.
const fixtureJSOldInvite = `{
  "call_id": "1690000000000zzzzzzzzzzzzzzzz",
  "party_id": "OLDJS",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "OLDJS",
  "sender_session_id": "oldSess",
  "dest_session_id": "botSession",
  "seq": 0,
  "offer": {"type": "offer", "sdp": "v=0\r\n"},
  "lifetime": 60000,
  "invitee": "@zzz-recorder:example.org",
  "capabilities": {"m.call.transferee": false, "m.call.dtmf": false},
  "org.matrix.msc3077.sdp_stream_metadata": {
    "stream-b": {"purpose": "m.usermedia", "audio_muted": true, "video_muted": false}
  }
}`

// hydrogen: version as number 1, unstable key, no invitee/capabilities, seq
// counted per member connection (here a retry: seq 4).
const fixtureHYInvite = `{
  "call_id": "c1a2b3c4d5e6f70",
  "party_id": "HYDEVICE",
  "version": 1,
  "conf_id": "conf1",
  "device_id": "HYDEVICE",
  "sender_session_id": "s9f8e7d6c5b4a3",
  "dest_session_id": "botSession",
  "seq": 4,
  "offer": {"type": "offer", "sdp": "v=0\r\n"},
  "lifetime": 60000,
  "org.matrix.msc3077.sdp_stream_metadata": {
    "hy-stream": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": false}
  }
}`

const fixtureJSAnswer = `{
  "call_id": "1700000000000botcallid000000",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 0,
  "answer": {"type": "answer", "sdp": "v=0\r\n"},
  "capabilities": {"m.call.transferee": false, "m.call.dtmf": false},
  "sdp_stream_metadata": {
    "stream-a": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": false}
  }
}`

// js-sdk: browser toJSON() candidates, end marker appended to the batch.
const fixtureJSCandidates = `{
  "call_id": "1700000000000aBcDeFgHiJkLmNoPq",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 1,
  "candidates": [
    {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"},
    {"candidate": "candidate:2 1 udp 1686052607 198.51.100.7 40000 typ srflx raddr 192.0.2.1 rport 54321", "sdpMid": "1", "sdpMLineIndex": 1, "usernameFragment": null},
    {"candidate": ""}
  ]
}`

// hydrogen: end marker sent on its own.
const fixtureHYEndOfCandidates = `{
  "call_id": "c1a2b3c4d5e6f70",
  "party_id": "HYDEVICE",
  "version": 1,
  "conf_id": "conf1",
  "device_id": "HYDEVICE",
  "sender_session_id": "s9f8e7d6c5b4a3",
  "dest_session_id": "botSession",
  "seq": 6,
  "candidates": [{"candidate": ""}]
}`

// mautrix-go's CallCandidate shape for the end marker.
const fixtureMautrixEndOfCandidates = `{
  "call_id": "c1", "party_id": "WF", "version": "1", "conf_id": "conf1",
  "device_id": "WF", "sender_session_id": "sfu", "dest_session_id": "botSession",
  "candidates": [{"candidate": "", "sdpMLineIndex": 0, "sdpMid": ""}]
}`

const fixtureJSSelectAnswer = `{
  "call_id": "1700000000000botcallid000000",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 2,
  "selected_party_id": "BOTDEVICE"
}`

// js-sdk screen share start: negotiate offer with both streams.
const fixtureJSNegotiate = `{
  "call_id": "1700000000000aBcDeFgHiJkLmNoPq",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 5,
  "description": {"type": "offer", "sdp": "v=0\r\n"},
  "lifetime": 60000,
  "sdp_stream_metadata": {
    "stream-a": {"purpose": "m.usermedia", "audio_muted": false, "video_muted": false},
    "screen-1": {"purpose": "m.screenshare", "audio_muted": false, "video_muted": false}
  }
}`

// js-sdk omits reason for user_hangup towards an unknown-version opponent.
const fixtureJSHangupNoReason = `{
  "call_id": "1700000000000aBcDeFgHiJkLmNoPq",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 7
}`

const fixtureHYHangupReplaced = `{
  "call_id": "c1a2b3c4d5e6f70",
  "party_id": "HYDEVICE",
  "version": 1,
  "conf_id": "conf1",
  "device_id": "HYDEVICE",
  "sender_session_id": "s9f8e7d6c5b4a3",
  "dest_session_id": "botSession",
  "seq": 9,
  "reason": "replaced"
}`

const fixtureJSReject = `{
  "call_id": "1700000000000botcallid000000",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 0
}`

// js-sdk >= v41 mute: stable type, stable key.
const fixtureJSMetadataChanged = `{
  "call_id": "1700000000000aBcDeFgHiJkLmNoPq",
  "party_id": "JSDEVICE",
  "version": "1",
  "conf_id": "conf1",
  "device_id": "JSDEVICE",
  "sender_session_id": "jsSess1234",
  "dest_session_id": "botSession",
  "seq": 8,
  "sdp_stream_metadata": {
    "stream-a": {"purpose": "m.usermedia", "audio_muted": true, "video_muted": true}
  }
}`

// hydrogen mute: unstable type, unstable key; mautrix-style extra fields.
const fixtureHYMetadataChanged = `{
  "call_id": "c1a2b3c4d5e6f70",
  "party_id": "HYDEVICE",
  "version": 1,
  "conf_id": "conf1",
  "device_id": "HYDEVICE",
  "sender_session_id": "s9f8e7d6c5b4a3",
  "dest_session_id": "botSession",
  "seq": 10,
  "org.matrix.msc3077.sdp_stream_metadata": {
    "hy-stream": {"purpose": "m.usermedia", "audio_muted": true, "video_muted": false, "user_id": "@hy:example.org", "tracks": {}}
  }
}`

// Member event content as js-sdk writes it (feeds) plus an unrelated call
// and unknown fields at each level.
const fixtureJSMember = `{
  "m.calls": [
    {
      "m.call_id": "conf1",
      "m.devices": [
        {"device_id": "JSDEVICE", "session_id": "jsSess1234", "expires_ts": 1700003600000,
         "feeds": [{"purpose": "m.usermedia"}], "x.custom": 1}
      ],
      "m.foci": []
    },
    {"m.call_id": "otherconf", "m.devices": [{"device_id": "JSDEVICE", "session_id": "jsSess1234", "expires_ts": 1700003600000, "feeds": []}]}
  ],
  "x.top": {"keep": true}
}`

// Hydrogen member content (feeds written, m.foci.active absent).
const fixtureHYMember = `{
  "m.calls": [
    {"m.call_id": "conf1", "m.devices": [
      {"device_id": "HYDEVICE", "session_id": "s9f8e7d6c5b4a3", "expires_ts": 1700003600000, "feeds": [{"purpose": "m.usermedia"}]}
    ]}
  ]
}`

// Group call state contents.
const (
	fixtureJSCall           = `{"m.intent": "m.room", "m.type": "m.video", "io.element.ptt": false, "dataChannelsEnabled": true, "dataChannelOptions": {"ordered": true}}`
	fixtureJSCallTerminated = `{"m.intent": "m.room", "m.type": "m.video", "m.terminated": "call_ended"}`
	fixtureHYCall           = `{"m.intent": "m.ring", "m.type": "m.voice", "m.name": "Standup"}`
	fixtureHYCallTerminated = `{"m.intent": "m.ring", "m.type": "m.voice", "m.name": "Standup", "m.terminated": true}`
)
