package matrixrtc

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// KeysType is the to-device event that carries a member's media key
// (Element Call's to-device key transport; always Olm-encrypted).
var KeysType = event.Type{Type: "io.element.call.encryption_keys", Class: event.ToDeviceEventType}

// ErrBadKeys means a media key event is malformed or not for an m.call
// session of a room.
var ErrBadKeys = errors.New("invalid call encryption keys event")

// MediaKey is one media key a member sent: the key of its frames under
// Index, for its device in a room's m.call session.
type MediaKey struct {
	RoomID id.RoomID
	// DeviceID is the device the sender claims the key is for
	// (member.claimed_device_id); it must be the Olm sender device.
	DeviceID id.DeviceID
	// MemberID is the member's random id (not used for lookups).
	MemberID string
	Index    uint8
	Key      []byte
	SentTS   int64
}

type keysContent struct {
	Keys *struct {
		Index *int   `json:"index"`
		Key   string `json:"key"`
	} `json:"keys"`
	Member *struct {
		ClaimedDeviceID id.DeviceID `json:"claimed_device_id"`
		ID              string      `json:"id"`
	} `json:"member"`
	RoomID  id.RoomID `json:"room_id"`
	SentTS  int64     `json:"sent_ts"`
	Session *struct {
		Application string `json:"application"`
		CallID      string `json:"call_id"`
		Scope       string `json:"scope"`
	} `json:"session"`
}

// ParseMediaKey reads an io.element.call.encryption_keys content. Who sent
// it is the caller's check (the Olm sender device must be DeviceID).
func ParseMediaKey(content json.RawMessage) (MediaKey, error) {
	var c keysContent
	if err := json.Unmarshal(content, &c); err != nil {
		return MediaKey{}, fmt.Errorf("%w: %w", ErrBadKeys, err)
	}
	switch {
	case c.RoomID == "":
		return MediaKey{}, fmt.Errorf("%w: no room_id", ErrBadKeys)
	case c.Keys == nil || c.Keys.Index == nil || c.Keys.Key == "":
		return MediaKey{}, fmt.Errorf("%w: no keys", ErrBadKeys)
	case *c.Keys.Index < 0 || *c.Keys.Index > 255:
		return MediaKey{}, fmt.Errorf("%w: key index %d", ErrBadKeys, *c.Keys.Index)
	case c.Member == nil || c.Member.ClaimedDeviceID == "":
		return MediaKey{}, fmt.Errorf("%w: no member.claimed_device_id", ErrBadKeys)
	case c.Session != nil && (c.Session.Application != "" && c.Session.Application != Application ||
		c.Session.CallID != "" || c.Session.Scope != "" && c.Session.Scope != "m.room"):
		return MediaKey{}, fmt.Errorf("%w: not the room's m.call session", ErrBadKeys)
	}
	key, err := base64.StdEncoding.DecodeString(c.Keys.Key)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(c.Keys.Key)
	}
	if err != nil {
		return MediaKey{}, fmt.Errorf("%w: key is not base64", ErrBadKeys)
	}
	return MediaKey{RoomID: c.RoomID, DeviceID: c.Member.ClaimedDeviceID, MemberID: c.Member.ID,
		Index: uint8(*c.Keys.Index), Key: key, SentTS: c.SentTS}, nil //nolint:gosec // checked above
}
