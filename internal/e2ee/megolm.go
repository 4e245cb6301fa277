package e2ee

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Megolm: room events of encrypted rooms. Only a device opened with a real
// room state store (OpenForRooms) can encrypt: the machine reads the room's
// encryption settings and members' shared rooms from it.

// ErrNoRoomKey means a room event was encrypted with a Megolm session this
// device has not (yet) received.
var ErrNoRoomKey = crypto.ErrNoSessionFound

// OpenForRooms is Open for a device that reads and writes encrypted room
// events (the bot): the Olm machine uses stateStore (kept up to date from the
// appservice's transactions) for room encryption settings and members.
func OpenForRooms(ctx context.Context, cli *mautrix.Client, db *dbutil.Database, pickleKey []byte, stateStore crypto.StateStore) (*Device, error) {
	return open(ctx, cli, db, pickleKey, stateStore)
}

// DecryptRoomEvent decrypts an m.room.encrypted room event (Megolm). The
// error wraps ErrNoRoomKey when the session is missing: request it with
// RequestRoomKey and wait with WaitForRoomKey.
func (d *Device) DecryptRoomEvent(ctx context.Context, evt *event.Event) (*event.Event, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			return nil, fmt.Errorf("unparseable encrypted content: %w", err)
		}
	}
	return d.mach.DecryptMegolmEvent(ctx, evt)
}

// RequestRoomKey asks the sender's devices (the one named in the event when
// it names one) for the Megolm session of evt.
func (d *Device) RequestRoomKey(ctx context.Context, evt *event.Event) error {
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		return crypto.ErrIncorrectEncryptedContentType
	}
	targets := map[id.UserID][]id.DeviceID{evt.Sender: {"*"}}
	//lint:ignore SA1019 js-sdk 36 and older still send device_id; newer ones omit it
	if sender := content.DeviceID; sender != "" {
		targets[evt.Sender] = []id.DeviceID{sender}
	}
	return d.mach.SendRoomKeyRequest(ctx, evt.RoomID, content.SenderKey, content.SessionID, "", targets)
}

// WaitForRoomKey waits up to timeout for evt's Megolm session to arrive (by
// m.room_key or a forwarded key) and reports whether it did.
func (d *Device) WaitForRoomKey(ctx context.Context, evt *event.Event, timeout time.Duration) bool {
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		return false
	}
	return d.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, timeout)
}

// EncryptRoomEvent encrypts content for the room with the device's outbound
// Megolm session, creating and sharing a new one with members' devices when
// there is none, it expired or it was not shared yet (rotation as the room's
// m.room.encryption settings say).
func (d *Device) EncryptRoomEvent(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, members []id.UserID) (*event.EncryptedEventContent, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	encrypted, err := d.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if err == nil {
		return encrypted, nil
	}
	if !errors.Is(err, crypto.ErrSessionExpired) && !errors.Is(err, crypto.ErrSessionNotShared) && !errors.Is(err, crypto.ErrNoGroupSession) {
		return nil, fmt.Errorf("failed to encrypt for %s: %w", roomID, err)
	}
	if err = d.mach.ShareGroupSession(ctx, roomID, members); err != nil {
		return nil, fmt.Errorf("failed to share room key in %s: %w", roomID, err)
	}
	encrypted, err = d.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if err != nil {
		return nil, fmt.Errorf("failed to encrypt for %s after sharing the room key: %w", roomID, err)
	}
	return encrypted, nil
}
