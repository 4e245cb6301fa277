package signaling

import (
	"encoding/json"
	"fmt"
	"strconv"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Version is the VoIP protocol version. On receipt it may be the number 0/1
// or a string; numbers are stored as their decimal text. MSC2746: anything
// other than the number 0 is treated as "1".
type Version string

const (
	Version0 Version = "0"
	Version1 Version = "1"
)

// DefaultLifetime is the invite/negotiate lifetime js-sdk and hydrogen send
// (ms), and the invite timeout (§3.2).
const DefaultLifetime = 60000

// Message is one parsed to-device signalling message. The concrete types are
// *Invite, *Answer, *Candidates, *SelectAnswer, *Negotiate, *Hangup, *Reject
// and *MetadataChanged.
type Message interface {
	// Type is the event type the message is sent as.
	Type() event.Type
	// Common gives access to the fields every group-call message carries.
	Common() *Base
	// Validate checks required fields; Parse and Marshal call it.
	Validate() error
	json.Marshaler
}

// Base holds the common fields of §2.2. Unknown top-level fields (e.g.
// org.matrix.msgid, capabilities on messages that don't define it) are kept
// in Extra and written back by Marshal.
type Base struct {
	CallID  CallID
	PartyID PartyID
	// Version is written as the string "1" when empty.
	Version Version
	// NumericVersion writes Version as a JSON number (hydrogen style); Parse
	// sets it when the version arrived as a number.
	NumericVersion  bool
	ConfID          ConfID
	DeviceID        id.DeviceID
	SenderSessionID SessionID
	DestSessionID   SessionID
	// Seq is nil when the message has no seq.
	Seq   *uint64
	Extra map[string]json.RawMessage
}

// Common returns b; it makes every message type satisfy Message.
func (b *Base) Common() *Base { return b }

// SeqValue returns the seq and whether there is one.
func (b *Base) SeqValue() (uint64, bool) {
	if b.Seq == nil {
		return 0, false
	}
	return *b.Seq, true
}

// SetSeq sets seq.
func (b *Base) SetSeq(seq uint64) { b.Seq = &seq }

// IsLegacyVersion reports version 0 (only the number 0, as js-sdk checks).
func (b *Base) IsLegacyVersion() bool {
	return b.NumericVersion && b.Version == Version0
}

// Sender returns the (user, device) key of a message from userID.
func (b *Base) Sender(userID id.UserID) DeviceKey {
	return DeviceKey{UserID: userID, DeviceID: b.DeviceID}
}

func (b *Base) validate() error {
	switch {
	case b.CallID == "":
		return missing("call_id")
	case b.ConfID == "":
		return missing("conf_id")
	case b.DeviceID == "":
		return missing("device_id")
	}
	return nil
}

func parseBase(o object) (Base, error) {
	var b Base
	var err error
	var s string
	if s, err = o.str("call_id", "call_id"); err != nil {
		return b, err
	}
	b.CallID = CallID(s)
	if s, err = o.str("party_id", "party_id"); err != nil {
		return b, err
	}
	b.PartyID = PartyID(s)
	if v, ok := o.take("version"); ok {
		if b.Version, b.NumericVersion, err = parseVersion(v); err != nil {
			return b, err
		}
	}
	if s, err = o.str("conf_id", "conf_id"); err != nil {
		return b, err
	}
	b.ConfID = ConfID(s)
	if s, err = o.str("device_id", "device_id"); err != nil {
		return b, err
	}
	b.DeviceID = id.DeviceID(s)
	if s, err = o.str("sender_session_id", "sender_session_id"); err != nil {
		return b, err
	}
	b.SenderSessionID = SessionID(s)
	if s, err = o.str("dest_session_id", "dest_session_id"); err != nil {
		return b, err
	}
	b.DestSessionID = SessionID(s)
	seq, ok, err := o.intField("seq", "seq", 0)
	if err != nil {
		return b, err
	}
	if ok {
		b.SetSeq(uint64(seq))
	}
	return b, nil
}

func parseVersion(v json.RawMessage) (Version, bool, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return Version(s), false, nil
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err == nil {
		return Version(n.String()), true, nil
	}
	return "", false, invalid("version", "expected a number or string")
}

func (b *Base) put(out map[string]any) {
	out["call_id"] = b.CallID
	if b.PartyID != "" {
		out["party_id"] = b.PartyID
	}
	version := b.Version
	if version == "" {
		version = Version1
	}
	if b.NumericVersion {
		if _, err := strconv.ParseUint(string(version), 10, 64); err == nil {
			out["version"] = json.RawMessage(version)
		} else {
			out["version"] = version
		}
	} else {
		out["version"] = version
	}
	out["conf_id"] = b.ConfID
	out["device_id"] = b.DeviceID
	if b.SenderSessionID != "" {
		out["sender_session_id"] = b.SenderSessionID
	}
	if b.DestSessionID != "" {
		out["dest_session_id"] = b.DestSessionID
	}
	if b.Seq != nil {
		out["seq"] = *b.Seq
	}
}

// Capabilities as js-sdk sends them on invite/answer; hydrogen omits them.
type Capabilities struct {
	Transferee bool `json:"m.call.transferee"`
	DTMF       bool `json:"m.call.dtmf"`
}

func takeCapabilities(o object) (*Capabilities, error) {
	v, ok := o.take("capabilities")
	if !ok {
		return nil, nil
	}
	var c Capabilities
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, invalid("capabilities", "expected an object of booleans")
	}
	return &c, nil
}

// takeDescription reads a session description. want is the only accepted
// type ("" accepts offer or answer); an absent type is taken as want
// (MSC2746 calls the type redundant on invite/answer).
func takeDescription(o object, key string, want event.CallDataType) (event.CallData, error) {
	v, ok := o.take(key)
	if !ok {
		return event.CallData{}, missing(key)
	}
	d, err := decodeObject(v)
	if err != nil {
		return event.CallData{}, invalid(key, "expected an object")
	}
	var cd event.CallData
	var s string
	if s, err = d.str("type", key+".type"); err != nil {
		return cd, err
	}
	cd.Type = event.CallDataType(s)
	if cd.Type == "" {
		cd.Type = want
	}
	if s, err = d.str("sdp", key+".sdp"); err != nil {
		return cd, err
	}
	cd.SDP = s
	return cd, validateDescription(cd, key, want)
}

func validateDescription(cd event.CallData, key string, want event.CallDataType) error {
	if cd.SDP == "" {
		return missing(key + ".sdp")
	}
	switch {
	case cd.Type == "":
		return missing(key + ".type")
	case want != "" && cd.Type != want:
		return &FieldError{Field: key + ".type", Err: ErrBadSDPType, Detail: fmt.Sprintf("got %q, want %q", cd.Type, want)}
	case cd.Type != event.CallDataTypeOffer && cd.Type != event.CallDataTypeAnswer:
		return &FieldError{Field: key + ".type", Err: ErrBadSDPType, Detail: fmt.Sprintf("got %q, want offer or answer", cd.Type)}
	}
	return nil
}

func validateMetadata(md StreamMetadata) error {
	for streamID := range md {
		if streamID == "" {
			return invalid(KeyStreamMetadata, "empty stream id")
		}
	}
	return nil
}
