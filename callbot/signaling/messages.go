package signaling

import (
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Invite is m.call.invite (§2.3).
type Invite struct {
	Base
	Offer event.CallData
	// Lifetime in ms; 0 when absent (EffectiveLifetime and Marshal use
	// DefaultLifetime then).
	Lifetime int64
	// Invitee is set by js-sdk (the callee's MXID), omitted by hydrogen.
	Invitee      id.UserID
	Capabilities *Capabilities
	Metadata     StreamMetadata
	MetadataKeys MetadataKeys
}

// Answer is m.call.answer.
type Answer struct {
	Base
	Answer       event.CallData
	Capabilities *Capabilities
	Metadata     StreamMetadata
	MetadataKeys MetadataKeys
}

// Candidates is m.call.candidates: a batch, possibly ending with the
// end-of-candidates marker.
type Candidates struct {
	Base
	Candidates []Candidate
}

// SelectAnswer is m.call.select_answer (js-sdk only; hydrogen ignores it).
type SelectAnswer struct {
	Base
	SelectedPartyID PartyID
}

// Negotiate is m.call.negotiate: a renegotiation offer or answer.
type Negotiate struct {
	Base
	Description  event.CallData
	Lifetime     int64
	Metadata     StreamMetadata
	MetadataKeys MetadataKeys
}

// Hangup is m.call.hangup. An empty Reason is omitted on the wire and means
// ReasonUserHangup on receipt (see EffectiveReason).
type Hangup struct {
	Base
	Reason HangupReason
}

// Reject is m.call.reject (ignored by hydrogen).
type Reject struct {
	Base
	Reason HangupReason
}

// MetadataChanged is m.call.sdp_stream_metadata_changed (or the
// org.matrix.call. name when Unstable is set).
type MetadataChanged struct {
	Base
	Metadata     StreamMetadata
	MetadataKeys MetadataKeys
	// Unstable selects the org.matrix.call.sdp_stream_metadata_changed type.
	Unstable bool
}

func (*Invite) Type() event.Type       { return EventInvite }
func (*Answer) Type() event.Type       { return EventAnswer }
func (*Candidates) Type() event.Type   { return EventCandidates }
func (*SelectAnswer) Type() event.Type { return EventSelectAnswer }
func (*Negotiate) Type() event.Type    { return EventNegotiate }
func (*Hangup) Type() event.Type       { return EventHangup }
func (*Reject) Type() event.Type       { return EventReject }
func (m *MetadataChanged) Type() event.Type {
	if m.Unstable {
		return EventMetadataChangedUnstable
	}
	return EventMetadataChanged
}

// EffectiveLifetime is Lifetime, or DefaultLifetime when absent.
func (m *Invite) EffectiveLifetime() int64 {
	if m.Lifetime <= 0 {
		return DefaultLifetime
	}
	return m.Lifetime
}

// EffectiveReason is Reason, or ReasonUserHangup when absent.
func (m *Hangup) EffectiveReason() HangupReason {
	if m.Reason == "" {
		return ReasonUserHangup
	}
	return m.Reason
}

// EffectiveReason is Reason, or ReasonUserHangup when absent.
func (m *Reject) EffectiveReason() HangupReason {
	if m.Reason == "" {
		return ReasonUserHangup
	}
	return m.Reason
}

// IsEnd reports whether the batch contains the end-of-candidates marker.
func (m *Candidates) IsEnd() bool {
	for _, c := range m.Candidates {
		if c.IsEndOfCandidates() {
			return true
		}
	}
	return false
}

// Validate implementations.

func (m *Invite) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if err := validateDescription(m.Offer, "offer", event.CallDataTypeOffer); err != nil {
		return err
	}
	if m.Lifetime < 0 {
		return invalid("lifetime", "must be >= 0")
	}
	return validateMetadata(m.Metadata)
}

func (m *Answer) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if err := validateDescription(m.Answer, "answer", event.CallDataTypeAnswer); err != nil {
		return err
	}
	return validateMetadata(m.Metadata)
}

func (m *Candidates) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if m.Candidates == nil {
		return missing("candidates")
	}
	for i, c := range m.Candidates {
		if err := c.validate(candidatePath(i)); err != nil {
			return err
		}
	}
	return nil
}

func (m *SelectAnswer) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if m.SelectedPartyID == "" {
		return missing("selected_party_id")
	}
	return nil
}

func (m *Negotiate) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if err := validateDescription(m.Description, "description", ""); err != nil {
		return err
	}
	if m.Lifetime < 0 {
		return invalid("lifetime", "must be >= 0")
	}
	return validateMetadata(m.Metadata)
}

func (m *Hangup) Validate() error { return m.Base.validate() }
func (m *Reject) Validate() error { return m.Base.validate() }

func (m *MetadataChanged) Validate() error {
	if err := m.Base.validate(); err != nil {
		return err
	}
	if m.Metadata == nil {
		return missing(KeyStreamMetadata)
	}
	return validateMetadata(m.Metadata)
}

// MarshalJSON implementations: Extra first, then the known fields.

func (m Invite) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 16)
	m.Base.put(out)
	out["offer"] = m.Offer
	lifetime := m.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	out["lifetime"] = lifetime
	if m.Invitee != "" {
		out["invitee"] = m.Invitee
	}
	if m.Capabilities != nil {
		out["capabilities"] = m.Capabilities
	}
	putMetadata(out, m.Metadata, m.MetadataKeys)
	return encode(out)
}

func (m Answer) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 14)
	m.Base.put(out)
	out["answer"] = m.Answer
	if m.Capabilities != nil {
		out["capabilities"] = m.Capabilities
	}
	putMetadata(out, m.Metadata, m.MetadataKeys)
	return encode(out)
}

func (m Candidates) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 10)
	m.Base.put(out)
	cands := m.Candidates
	if cands == nil {
		cands = []Candidate{}
	}
	out["candidates"] = cands
	return encode(out)
}

func (m SelectAnswer) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 10)
	m.Base.put(out)
	out["selected_party_id"] = m.SelectedPartyID
	return encode(out)
}

func (m Negotiate) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 14)
	m.Base.put(out)
	out["description"] = m.Description
	lifetime := m.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	out["lifetime"] = lifetime
	putMetadata(out, m.Metadata, m.MetadataKeys)
	return encode(out)
}

func (m Hangup) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 10)
	m.Base.put(out)
	if m.Reason != "" {
		out["reason"] = m.Reason
	}
	return encode(out)
}

func (m Reject) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 10)
	m.Base.put(out)
	if m.Reason != "" {
		out["reason"] = m.Reason
	}
	return encode(out)
}

func (m MetadataChanged) MarshalJSON() ([]byte, error) {
	out := withExtra(m.Extra, 12)
	m.Base.put(out)
	md := m.Metadata
	if md == nil {
		md = StreamMetadata{}
	}
	putMetadata(out, md, m.MetadataKeys)
	return encode(out)
}

// UnmarshalJSON implementations delegate to the Parse path (type-specific
// parsing plus Validate).

func (m *Invite) UnmarshalJSON(raw []byte) error       { return unmarshalInto(raw, m) }
func (m *Answer) UnmarshalJSON(raw []byte) error       { return unmarshalInto(raw, m) }
func (m *Candidates) UnmarshalJSON(raw []byte) error   { return unmarshalInto(raw, m) }
func (m *SelectAnswer) UnmarshalJSON(raw []byte) error { return unmarshalInto(raw, m) }
func (m *Negotiate) UnmarshalJSON(raw []byte) error    { return unmarshalInto(raw, m) }
func (m *Hangup) UnmarshalJSON(raw []byte) error       { return unmarshalInto(raw, m) }
func (m *Reject) UnmarshalJSON(raw []byte) error       { return unmarshalInto(raw, m) }
func (m *MetadataChanged) UnmarshalJSON(raw []byte) error {
	unstable := m.Unstable
	err := unmarshalInto(raw, m)
	m.Unstable = unstable
	return err
}

var (
	_ Message = (*Invite)(nil)
	_ Message = (*Answer)(nil)
	_ Message = (*Candidates)(nil)
	_ Message = (*SelectAnswer)(nil)
	_ Message = (*Negotiate)(nil)
	_ Message = (*Hangup)(nil)
	_ Message = (*Reject)(nil)
	_ Message = (*MetadataChanged)(nil)
)
