package appservice

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	mautrixcrypto "maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// The bot in encrypted rooms: it has a device of its own (like the virtual
// users, keys in the project's database), opened and its keys uploaded
// before the first room event is handled, so an invite is only accepted by a
// bot whose keys clients can find. It decrypts Megolm room events from
// transactions and encrypts what it sends in encrypted rooms.

// DefaultRoomKeyWait is how long an undecryptable event waits for its room
// key (late keys are common: the key comes by the bot's /sync, the event by
// a transaction) before it is given up.
const DefaultRoomKeyWait = time.Minute

// maxKeyWaiters bounds the events waiting for room keys at once.
const maxKeyWaiters = 256

// startBotDevice gives the bot its device; room events wait for it.
func (s *Service) startBotDevice(ctx context.Context) error {
	stateStore, ok := s.AS.StateStore.(mautrixcrypto.StateStore)
	if !ok {
		return fmt.Errorf("the appservice state store %T cannot serve the bot's encryption", s.AS.StateStore)
	}
	dev, err := s.Users.startDevice(ctx, s.Bot.UserID, nil, stateStore)
	if err != nil {
		return fmt.Errorf("failed to start the bot's device: %w", err)
	}
	s.botDev = dev
	close(s.botReady)
	zerolog.Ctx(ctx).Info().Stringer("device_id", dev.DeviceID()).Msg("Bot device ready")
	return nil
}

// BotDeviceID is the bot's device, empty before Start.
func (s *Service) BotDeviceID() id.DeviceID {
	select {
	case <-s.botReady:
		return s.botDev.DeviceID()
	default:
		return ""
	}
}

// PendingRoomKeys is how many undecryptable events wait for their room
// keys.
func (s *Service) PendingRoomKeys() int {
	s.waitLock.Lock()
	defer s.waitLock.Unlock()
	return s.keyWaiters
}

// decryptRoomEvent decrypts evt. When the room key is missing it asks the
// sender for it and waits in the background, bounded by the key wait; the
// event is handled again in the room's order once the key is there. nil
// means the event is not handled now (the reason is logged).
func (s *Service) decryptRoomEvent(ctx context.Context, evt *event.Event, retried bool) *event.Event {
	log := zerolog.Ctx(ctx)
	if s.botDev == nil || s.botDev.olm == nil {
		log.Warn().Str("reason", "bot has no crypto device").Msg("Cannot decrypt room event")
		return nil
	}
	dec, err := s.botDev.olm.DecryptRoomEvent(ctx, evt)
	if err == nil {
		log.Debug().Str("decrypted_type", dec.Type.Type).Msg("Decrypted room event")
		return dec
	}
	if !errors.Is(err, e2ee.ErrNoRoomKey) || retried {
		log.Warn().Err(err).Str("reason", undecryptableReason(err, retried)).Msg("Undecryptable room event, not handling it")
		return nil
	}
	s.waitLock.Lock()
	tooMany := s.keyWaiters >= maxKeyWaiters
	if !tooMany {
		s.keyWaiters++
	}
	s.waitLock.Unlock()
	if tooMany {
		log.Warn().Err(err).Str("reason", "too many events waiting for keys").Msg("Undecryptable room event, not handling it")
		return nil
	}
	log.Info().Err(err).Dur("wait", s.keyWait).Msg("No room key for event yet, requesting it and waiting")
	if reqErr := s.botDev.olm.RequestRoomKey(ctx, evt); reqErr != nil {
		log.Warn().Err(reqErr).Msg("Failed to request room key")
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.waitLock.Lock()
			s.keyWaiters--
			s.waitLock.Unlock()
		}()
		if !s.botDev.olm.WaitForRoomKey(ctx, evt, s.keyWait) {
			if ctx.Err() == nil {
				log.Warn().Str("reason", "room key did not arrive").Dur("waited", s.keyWait).
					Msg("Undecryptable room event, not handling it")
			}
			return
		}
		log.Info().Msg("Room key arrived, handling event")
		s.enqueue(ctx, &queuedEvent{evt: evt, keyRetried: true})
	}()
	return nil
}

func undecryptableReason(err error, retried bool) string {
	switch {
	case errors.Is(err, e2ee.ErrNoRoomKey) && retried:
		return "room key arrived but does not decrypt the event"
	case errors.Is(err, e2ee.ErrNoRoomKey):
		return "no room key"
	case errors.Is(err, mautrixcrypto.ErrUnsupportedAlgorithm):
		return "unsupported algorithm"
	default:
		return "decryption failed"
	}
}

// encryptIfNeeded returns what to send for content in roomID: unchanged in
// an unencrypted room, Megolm-encrypted (for the joined and invited members'
// devices) in an encrypted one.
func (s *Service) encryptIfNeeded(ctx context.Context, roomID id.RoomID, evtType event.Type, content any) (event.Type, any, error) {
	encrypted, err := s.AS.StateStore.IsEncrypted(ctx, roomID)
	if err != nil {
		return evtType, nil, fmt.Errorf("failed to check if %s is encrypted: %w", roomID, err)
	}
	if !encrypted {
		return evtType, content, nil
	}
	if s.botDev == nil || s.botDev.olm == nil {
		return evtType, nil, errors.New("the bot has no crypto device for an encrypted room")
	}
	members, err := s.AS.StateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil {
		return evtType, nil, fmt.Errorf("failed to list members of %s: %w", roomID, err)
	}
	enc, err := s.botDev.olm.EncryptRoomEvent(ctx, roomID, evtType, content, members)
	if err != nil {
		return evtType, nil, err
	}
	return event.EventEncrypted, enc, nil
}

// loadEncryption stores the room's m.room.encryption state (sent before the
// bot was in the room, so no transaction carried it).
func (s *Service) loadEncryption(ctx context.Context, roomID id.RoomID) {
	var content event.EncryptionEventContent
	if err := s.Bot.StateEvent(ctx, roomID, event.StateEncryption, "", &content); err != nil {
		zerolog.Ctx(ctx).Debug().Err(err).Msg("Room has no encryption state")
		return
	}
	if content.Algorithm == "" {
		return
	}
	if err := s.AS.StateStore.SetEncryptionEvent(ctx, roomID, &content); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to store room encryption state")
	}
}
