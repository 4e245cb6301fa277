package signaling

import (
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Parse parses the content of a to-device signalling event. It is tolerant
// (version as number or string, either metadata key, unknown fields kept,
// missing seq/party_id/session ids accepted) but validating: the group-call
// fields call_id, conf_id and device_id (js-sdk drops messages without
// device_id) and the type-specific required fields must be present. Errors
// wrap ErrUnknownEventType, ErrInvalidContent or a *FieldError.
//
// Session and seq rules are not applied here; see Inbox.
func Parse(evtType string, raw json.RawMessage) (Message, error) {
	m, err := newMessage(evtType)
	if err != nil {
		return nil, err
	}
	if err := unmarshalInto(raw, m); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", evtType, err)
	}
	return m, nil
}

// Marshal validates msg and returns its content JSON. Send it as
// msg.Type(). Version defaults to "1"; stream metadata is written under both
// keys unless the message's MetadataKeys says otherwise.
func Marshal(msg Message) (json.RawMessage, error) {
	if err := msg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid %s: %w", msg.Type().Type, err)
	}
	raw, err := msg.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("failed to marshal %s: %w", msg.Type().Type, err)
	}
	return raw, nil
}

func newMessage(evtType string) (Message, error) {
	switch evtType {
	case EventInvite.Type:
		return &Invite{}, nil
	case EventAnswer.Type:
		return &Answer{}, nil
	case EventCandidates.Type:
		return &Candidates{}, nil
	case EventSelectAnswer.Type:
		return &SelectAnswer{}, nil
	case EventNegotiate.Type:
		return &Negotiate{}, nil
	case EventHangup.Type:
		return &Hangup{}, nil
	case EventReject.Type:
		return &Reject{}, nil
	case EventMetadataChanged.Type:
		return &MetadataChanged{}, nil
	case EventMetadataChangedUnstable.Type:
		return &MetadataChanged{Unstable: true}, nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownEventType, evtType)
	}
}

func candidatePath(i int) string { return fmt.Sprintf("candidates[%d]", i) }

func unmarshalInto(raw []byte, m Message) error {
	o, err := decodeObject(raw)
	if err != nil {
		return err
	}
	base, err := parseBase(o)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *Invite:
		*m = Invite{Base: base}
		if m.Offer, err = takeDescription(o, "offer", "offer"); err != nil {
			return err
		}
		if m.Lifetime, _, err = o.intField("lifetime", "lifetime", 0); err != nil {
			return err
		}
		var invitee string
		if invitee, err = o.str("invitee", "invitee"); err != nil {
			return err
		}
		m.Invitee = id.UserID(invitee)
		if m.Capabilities, err = takeCapabilities(o); err != nil {
			return err
		}
		if m.Metadata, m.MetadataKeys, err = o.takeMetadata(); err != nil {
			return err
		}
	case *Answer:
		*m = Answer{Base: base}
		if m.Answer, err = takeDescription(o, "answer", "answer"); err != nil {
			return err
		}
		if m.Capabilities, err = takeCapabilities(o); err != nil {
			return err
		}
		if m.Metadata, m.MetadataKeys, err = o.takeMetadata(); err != nil {
			return err
		}
	case *Candidates:
		*m = Candidates{Base: base}
		v, ok := o.take("candidates")
		if !ok {
			return missing("candidates")
		}
		if m.Candidates, err = parseCandidates(v); err != nil {
			return err
		}
	case *SelectAnswer:
		*m = SelectAnswer{Base: base}
		var s string
		if s, err = o.str("selected_party_id", "selected_party_id"); err != nil {
			return err
		}
		m.SelectedPartyID = PartyID(s)
	case *Negotiate:
		*m = Negotiate{Base: base}
		if m.Description, err = takeDescription(o, "description", ""); err != nil {
			return err
		}
		if m.Lifetime, _, err = o.intField("lifetime", "lifetime", 0); err != nil {
			return err
		}
		if m.Metadata, m.MetadataKeys, err = o.takeMetadata(); err != nil {
			return err
		}
	case *Hangup:
		*m = Hangup{Base: base}
		var s string
		if s, err = o.str("reason", "reason"); err != nil {
			return err
		}
		m.Reason = HangupReason(s)
	case *Reject:
		*m = Reject{Base: base}
		var s string
		if s, err = o.str("reason", "reason"); err != nil {
			return err
		}
		m.Reason = HangupReason(s)
	case *MetadataChanged:
		*m = MetadataChanged{Base: base, Unstable: m.Unstable}
		if m.Metadata, m.MetadataKeys, err = o.takeMetadata(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %T", ErrUnknownEventType, m)
	}
	m.Common().Extra = o.extra()
	return m.Validate()
}
