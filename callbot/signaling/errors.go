package signaling

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidContent means the event content is not a JSON object.
	ErrInvalidContent = errors.New("invalid event content")
	// ErrMissingField means a required field is absent (or empty). It is
	// always wrapped in a *FieldError naming the field.
	ErrMissingField = errors.New("missing required field")
	// ErrInvalidField means a field has the wrong JSON type or value. It is
	// always wrapped in a *FieldError naming the field.
	ErrInvalidField = errors.New("invalid field")
	// ErrBadSDPType means a session description has a type that does not fit
	// the message (e.g. an "answer" in an invite, "pranswer" anywhere).
	ErrBadSDPType = errors.New("bad SDP type")
	// ErrUnknownEventType means the event type is not a group-call signalling
	// type handled by this package.
	ErrUnknownEventType = errors.New("unknown call event type")

	// ErrNoActiveCall means the room has no group call a js-sdk client would
	// adopt (none, all terminated/redacted, or the newest one is invalid).
	ErrNoActiveCall = errors.New("no active group call")

	// ErrUnknownConf is a drop reason: conf_id is not a call we are in.
	ErrUnknownConf = errors.New("unknown conf_id")
	// ErrDestSessionMismatch is a drop reason: dest_session_id is not our
	// session id (absent counts as a mismatch, like js-sdk and hydrogen).
	ErrDestSessionMismatch = errors.New("dest_session_id mismatch")
	// ErrDuplicateSeq is a drop reason: seq was already delivered or is
	// already held for this (sender, device, call_id).
	ErrDuplicateSeq = errors.New("duplicate seq")
	// ErrUnknownCall is a drop reason: a message for a call_id whose invite
	// never arrived (and that we did not place) was held until it expired.
	ErrUnknownCall = errors.New("message for unknown call_id")
	// ErrStashFull is a drop reason: too many messages are already held for
	// unknown call ids.
	ErrStashFull = errors.New("unknown-call buffer full")
)

// FieldError names the field that failed validation. Err is ErrMissingField,
// ErrInvalidField or ErrBadSDPType, so errors.Is works on the sentinel and
// errors.As gives the field path (e.g. "offer.sdp", "candidates[1].sdpMid").
type FieldError struct {
	Field  string
	Err    error
	Detail string
}

func (e *FieldError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%v %s", e.Err, e.Field)
	}
	return fmt.Sprintf("%v %s: %s", e.Err, e.Field, e.Detail)
}

func (e *FieldError) Unwrap() error { return e.Err }

func missing(field string) error {
	return &FieldError{Field: field, Err: ErrMissingField}
}

func invalid(field, detail string) error {
	return &FieldError{Field: field, Err: ErrInvalidField, Detail: detail}
}
