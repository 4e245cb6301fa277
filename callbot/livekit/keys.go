package livekit

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit/framecrypt"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// maxKeyedDevices bounds the devices whose media keys are kept per room.
const maxKeyedDevices = 1024

// ErrKeyRejected means a media key event was not accepted.
var ErrKeyRejected = errors.New("media key rejected")

// deviceKey names a participant's key ring: the Matrix user and device the
// Olm session proved (member.id is random and not used).
type deviceKey struct {
	user   id.UserID
	device id.DeviceID
}

// toDeviceHandler receives the to-device events of one virtual user's
// device: members' media keys for the call that user is in.
func (m *Manager) toDeviceHandler(userID id.UserID) callbot.ToDeviceHandler {
	return func(ctx context.Context, received []e2ee.Received) {
		for _, r := range received {
			if r.Type.Type != matrixrtc.KeysType.Type {
				continue
			}
			log := zerolog.Ctx(ctx).With().Stringer("sender", r.Sender).
				Stringer("sender_device", r.SenderDevice).Logger()
			key, changed, first, err := m.acceptKey(userID, r)
			if err != nil {
				log.Warn().Err(err).Msg("Ignoring a media key")
				continue
			}
			log.Debug().Stringer("room_id", key.RoomID).Uint8("key_index", key.Index).Bool("new", changed).Msg("Media key received")
			if changed {
				m.lock.Lock()
				c := m.calls[key.RoomID]
				m.lock.Unlock()
				if c != nil {
					c.post(keyMsg{from: deviceKey{r.Sender, r.SenderDevice}, index: key.Index, first: first})
				}
			}
		}
	}
}

// acceptKey checks a received media key and stores it: it must have come
// Olm-encrypted from the device it is for, for the room the receiving
// virtual user is recording (or joining).
func (m *Manager) acceptKey(userID id.UserID, r e2ee.Received) (key matrixrtc.MediaKey, changed, first bool, err error) {
	if !r.Encrypted || r.SenderDevice == "" {
		return matrixrtc.MediaKey{}, false, false, fmt.Errorf("%w: not Olm-encrypted", ErrKeyRejected)
	}
	key, err = matrixrtc.ParseMediaKey(r.Content)
	if err != nil {
		return key, false, false, err
	}
	if key.DeviceID != r.SenderDevice {
		return key, false, false, fmt.Errorf("%w: for device %s, sent by device %s", ErrKeyRejected, key.DeviceID, r.SenderDevice)
	}
	if m.isRecorder(r.Sender) {
		return key, false, false, fmt.Errorf("%w: from a recorder user", ErrKeyRejected)
	}
	m.lock.Lock()
	c, joining := m.calls[key.RoomID], m.joining[key.RoomID]
	ours := (c != nil && c.dev.UserID() == userID) || (c == nil && joining == userID)
	m.lock.Unlock()
	if !ours {
		return key, false, false, fmt.Errorf("%w: %s is not recording room %s", ErrKeyRejected, userID, key.RoomID)
	}
	keys, err := m.keyring(key.RoomID, deviceKey{r.Sender, r.SenderDevice}, true)
	if err != nil {
		return key, false, false, err
	}
	changed, err = keys.Set(key.Index, key.Key)
	if err != nil {
		return key, false, false, fmt.Errorf("%w: %w", ErrKeyRejected, err)
	}
	return key, changed, changed && keys.Count() == 1, nil
}

// keyring is a device's key ring in a room (created when create is set).
func (m *Manager) keyring(roomID id.RoomID, dk deviceKey, create bool) (*framecrypt.Keys, error) {
	m.keysLock.Lock()
	defer m.keysLock.Unlock()
	room := m.keys[roomID]
	if k := room[dk]; k != nil || !create {
		return k, nil
	}
	if room == nil {
		room = map[deviceKey]*framecrypt.Keys{}
		m.keys[roomID] = room
	}
	if len(room) >= maxKeyedDevices {
		return nil, fmt.Errorf("%w: keys of %d devices are kept for the room already", ErrKeyRejected, len(room))
	}
	k := framecrypt.NewKeys()
	room[dk] = k
	return k, nil
}

// dropKeys forgets a room's keys when the recorder leaves its call.
func (m *Manager) dropKeys(roomID id.RoomID) {
	m.keysLock.Lock()
	defer m.keysLock.Unlock()
	delete(m.keys, roomID)
}
