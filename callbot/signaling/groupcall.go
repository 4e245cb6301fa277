package signaling

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// CallIntent is m.intent of the group call event.
type CallIntent string

const (
	IntentRing   CallIntent = "m.ring"
	IntentPrompt CallIntent = "m.prompt"
	IntentRoom   CallIntent = "m.room"
)

// CallType is m.type of the group call event.
type CallType string

const (
	CallTypeVideo CallType = "m.video"
	CallTypeVoice CallType = "m.voice"
)

// TerminatedValue is what js-sdk writes into m.terminated (hydrogen writes
// true); readers treat any truthy value as terminated.
const TerminatedValue = "call_ended"

// GroupCallContent is the content of org.matrix.msc3401.call (§1.1).
type GroupCallContent struct {
	Intent CallIntent
	Type   CallType
	// Terminated is JavaScript truthiness of m.terminated.
	Terminated bool
	Name       string
	// PTT is io.element.ptt.
	PTT                 bool
	DataChannelsEnabled bool
	// LiveKitServiceURL (io.element.livekit_service_url) marks a LiveKit-era
	// call in which js-sdk places no mesh calls.
	LiveKitServiceURL string
	// Extra keeps every other field (dataChannelOptions, ...).
	Extra map[string]json.RawMessage
}

// ParseGroupCall parses a call event content. It only fails on wrong JSON
// types; use Validate for the intent/type checks js-sdk applies.
func ParseGroupCall(raw json.RawMessage) (GroupCallContent, error) {
	var c GroupCallContent
	o, err := decodeObject(raw)
	if err != nil {
		return c, err
	}
	if v, ok := o.take("m.terminated"); ok {
		c.Terminated = truthy(v)
	}
	var s string
	if s, err = o.str("m.intent", "m.intent"); err != nil {
		return c, err
	}
	c.Intent = CallIntent(s)
	if s, err = o.str("m.type", "m.type"); err != nil {
		return c, err
	}
	c.Type = CallType(s)
	if c.Name, err = o.str("m.name", "m.name"); err != nil {
		return c, err
	}
	if c.PTT, err = o.boolean("io.element.ptt", "io.element.ptt"); err != nil {
		return c, err
	}
	if c.DataChannelsEnabled, err = o.boolean("dataChannelsEnabled", "dataChannelsEnabled"); err != nil {
		return c, err
	}
	if c.LiveKitServiceURL, err = o.str("io.element.livekit_service_url", "io.element.livekit_service_url"); err != nil {
		return c, err
	}
	c.Extra = o.extra()
	return c, nil
}

// Validate applies js-sdk's checks: m.intent and m.type must be known values.
func (c *GroupCallContent) Validate() error {
	switch c.Intent {
	case IntentRing, IntentPrompt, IntentRoom:
	case "":
		return missing("m.intent")
	default:
		return invalid("m.intent", fmt.Sprintf("unknown intent %q", c.Intent))
	}
	switch c.Type {
	case CallTypeVideo, CallTypeVoice:
	case "":
		return missing("m.type")
	default:
		return invalid("m.type", fmt.Sprintf("unknown type %q", c.Type))
	}
	return nil
}

// MarshalJSON writes the content; a terminated call gets js-sdk's
// "m.terminated": "call_ended".
func (c GroupCallContent) MarshalJSON() ([]byte, error) {
	out := withExtra(c.Extra, 7)
	out["m.intent"] = c.Intent
	out["m.type"] = c.Type
	if c.Terminated {
		out["m.terminated"] = TerminatedValue
	}
	if c.Name != "" {
		out["m.name"] = c.Name
	}
	if c.PTT {
		out["io.element.ptt"] = true
	}
	if c.DataChannelsEnabled {
		out["dataChannelsEnabled"] = true
	}
	if c.LiveKitServiceURL != "" {
		out["io.element.livekit_service_url"] = c.LiveKitServiceURL
	}
	return encode(out)
}

// GroupCall is the call PickCall chose.
type GroupCall struct {
	RoomID    id.RoomID
	ConfID    ConfID
	EventID   id.EventID
	Sender    id.UserID
	Timestamp time.Time
	// EventType is the state event type it was found under.
	EventType event.Type
	Content   GroupCallContent
}

// PickCall picks the call a js-sdk client adopts from a room's group call
// state events (§1.1, groupCallEventHandler createGroupCallForRoom): sort by
// origin_server_ts descending, take the first that is neither terminated
// (truthy m.terminated) nor redacted, then validate m.intent/m.type. If that
// newest live call is invalid there is no call (js-sdk does not fall back to
// an older one); the error then wraps both ErrNoActiveCall and the
// validation error.
//
// Events of other types or without a state key are ignored; both the
// unstable and the stable call type are considered. Redacted means
// unsigned.redacted_because is set or the content is empty (redaction strips
// every key). Ties on timestamp are broken by the unstable type first, then
// lower state key, to stay deterministic.
func PickCall(events []*event.Event) (GroupCall, error) {
	candidates := make([]*event.Event, 0, len(events))
	for _, evt := range events {
		if evt == nil || !IsGroupCallType(evt.Type.Type) || evt.StateKey == nil || *evt.StateKey == "" {
			continue
		}
		candidates = append(candidates, evt)
	}
	slices.SortStableFunc(candidates, func(a, b *event.Event) int {
		if a.Timestamp != b.Timestamp {
			if a.Timestamp > b.Timestamp {
				return -1
			}
			return 1
		}
		if a.Type.Type != b.Type.Type {
			if a.Type.Type == StateGroupCall.Type {
				return -1
			}
			return 1
		}
		return strings.Compare(*a.StateKey, *b.StateKey)
	})
	for _, evt := range candidates {
		raw := contentJSON(evt)
		if evt.Unsigned.RedactedBecause != nil || isEmptyObject(raw) {
			continue
		}
		o, err := decodeObject(raw)
		if err != nil {
			continue // not an object: nothing a client could read either
		}
		if v, ok := o["m.terminated"]; ok && truthy(v) {
			continue
		}
		call := GroupCall{
			RoomID:    evt.RoomID,
			ConfID:    ConfID(*evt.StateKey),
			EventID:   evt.ID,
			Sender:    evt.Sender,
			Timestamp: time.UnixMilli(evt.Timestamp),
			EventType: evt.Type,
		}
		if call.Content, err = ParseGroupCall(raw); err == nil {
			err = call.Content.Validate()
		}
		if err != nil {
			return GroupCall{}, fmt.Errorf("%w: newest call %q is invalid: %w", ErrNoActiveCall, call.ConfID, err)
		}
		return call, nil
	}
	return GroupCall{}, ErrNoActiveCall
}

// contentJSON returns the raw content of a mautrix event.
func contentJSON(evt *event.Event) json.RawMessage {
	if len(evt.Content.VeryRaw) > 0 {
		return evt.Content.VeryRaw
	}
	if evt.Content.Raw != nil {
		if raw, err := json.Marshal(evt.Content.Raw); err == nil {
			return raw
		}
	}
	if evt.Content.Parsed != nil {
		if raw, err := json.Marshal(evt.Content.Parsed); err == nil {
			return raw
		}
	}
	return nil
}

func isEmptyObject(raw json.RawMessage) bool {
	if isNull(raw) {
		return true
	}
	var o map[string]json.RawMessage
	return json.Unmarshal(raw, &o) == nil && len(o) == 0
}
