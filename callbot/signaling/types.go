package signaling

import (
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"go.mau.fi/util/random"
)

// CallID identifies one 1:1 peer call (one per pair of devices per attempt).
type CallID string

// ConfID identifies a group call: the state key of the call event.
type ConfID string

// PartyID is the sender's party id; js-sdk and hydrogen use the device id.
type PartyID string

// SessionID is a device's per-run session id as published in its member
// event (session_id) and sent as sender_session_id / dest_session_id.
type SessionID string

// To-device signalling event types (§2.1). They are declared with the
// to-device class; mautrix declares the m.call.* names only as room message
// types.
var (
	EventInvite       = event.Type{Type: "m.call.invite", Class: event.ToDeviceEventType}
	EventAnswer       = event.Type{Type: "m.call.answer", Class: event.ToDeviceEventType}
	EventCandidates   = event.Type{Type: "m.call.candidates", Class: event.ToDeviceEventType}
	EventSelectAnswer = event.Type{Type: "m.call.select_answer", Class: event.ToDeviceEventType}
	EventNegotiate    = event.Type{Type: "m.call.negotiate", Class: event.ToDeviceEventType}
	EventHangup       = event.Type{Type: "m.call.hangup", Class: event.ToDeviceEventType}
	EventReject       = event.Type{Type: "m.call.reject", Class: event.ToDeviceEventType}
	// EventMetadataChanged is the stable name (written by js-sdk >= v41).
	EventMetadataChanged = event.Type{Type: "m.call.sdp_stream_metadata_changed", Class: event.ToDeviceEventType}
	// EventMetadataChangedUnstable is the unstable name (hydrogen, js-sdk < v41).
	EventMetadataChangedUnstable = event.Type{Type: "org.matrix.call.sdp_stream_metadata_changed", Class: event.ToDeviceEventType}
)

// Room state event types (§1).
var (
	// StateGroupCall is what every implementation sends and reads.
	StateGroupCall = event.Type{Type: "org.matrix.msc3401.call", Class: event.StateEventType}
	// StateGroupCallStable is the MSC3401 stable name (never sent by js-sdk/hydrogen).
	StateGroupCallStable = event.Type{Type: "m.call", Class: event.StateEventType}
	// StateCallMember is what every implementation sends and reads.
	StateCallMember = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
	// StateCallMemberStable is the MSC3401 stable name.
	StateCallMemberStable = event.Type{Type: "m.call.member", Class: event.StateEventType}
)

// Stream metadata content keys (§5.1).
const (
	KeyStreamMetadata         = "sdp_stream_metadata"
	KeyStreamMetadataUnstable = "org.matrix.msc3077.sdp_stream_metadata"
)

// IsCallEventType reports whether a to-device event type belongs to VoIP
// signalling at all (js-sdk buffers every m.call.* / org.matrix.call.* type).
// Parse supports only a subset; the rest (replaces, asserted_identity) can be
// ignored by a group-call participant.
func IsCallEventType(evtType string) bool {
	return strings.HasPrefix(evtType, "m.call.") || strings.HasPrefix(evtType, "org.matrix.call.")
}

// IsGroupCallType reports whether t is a group call state event type.
func IsGroupCallType(t string) bool {
	return t == StateGroupCall.Type || t == StateGroupCallStable.Type
}

// IsCallMemberType reports whether t is a call member state event type.
func IsCallMemberType(t string) bool {
	return t == StateCallMember.Type || t == StateCallMemberStable.Type
}

// DeviceKey is one participant device.
type DeviceKey struct {
	UserID   id.UserID
	DeviceID id.DeviceID
}

func (k DeviceKey) String() string {
	return k.UserID.String() + "/" + k.DeviceID.String()
}

// NewCallID makes a call id the way js-sdk does: the time in ms followed by
// 16 random characters.
func NewCallID(now time.Time) CallID {
	return CallID(strconv.FormatInt(now.UnixMilli(), 10) + random.String(16))
}
