package e2ee

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
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

// withheldPoll is how often a withheld session is looked at again: a sender
// may refuse a key request (m.room_key.withheld) and share the key later.
const withheldPoll = 250 * time.Millisecond

// WaitForRoomKey waits up to timeout for evt's Megolm session to arrive (by
// m.room_key or a forwarded key) and reports whether it did. A withheld
// notice does not end the wait: the key may still come before the deadline.
func (d *Device) WaitForRoomKey(ctx context.Context, evt *event.Event, timeout time.Duration) bool {
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		return false
	}
	deadline := time.Now().Add(timeout)
	loggedWithheld := false
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return false
		}
		if !d.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, remaining) {
			return false
		}
		sess, err := d.store.GetGroupSession(ctx, evt.RoomID, content.SessionID)
		switch {
		case sess != nil:
			return true
		case errors.Is(err, crypto.ErrGroupSessionWithheld):
			if !loggedWithheld {
				zerolog.Ctx(ctx).Info().Err(err).Msg("Sender withheld the room key; waiting on in case it is shared later")
				loggedWithheld = true
			}
		case err != nil:
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read the room key")
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(withheldPoll, time.Until(deadline))):
		}
	}
}

// HandleMemberEvent rotates the room's outbound Megolm session when its
// membership changes (a new session is shared with the members at the next
// EncryptRoomEvent), as mautrix bridges do.
func (d *Device) HandleMemberEvent(ctx context.Context, evt *event.Event) {
	if d.closed.Load() {
		return
	}
	d.mach.HandleMemberEvent(ctx, evt)
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
