package e2ee

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// HandleSync processes one sync batch: every to-device event (encrypted ones
// are decrypted once, through HandleEncryptedEvent), then the device list
// changes and the one-time key counts (re-uploading keys when they run low).
// It returns the call-relevant events in order; crypto-internal events are
// consumed, undecryptable ones are logged and dropped. lists and otk may be
// nil.
func (d *Device) HandleSync(ctx context.Context, toDevice []*event.Event, lists *mautrix.DeviceLists, otk *mautrix.OTKCount) []Received {
	if d.closed.Load() {
		return nil
	}
	d.syncLock.Lock()
	defer d.syncLock.Unlock()
	var out []Received
	for _, evt := range toDevice {
		if evt == nil {
			continue
		}
		if rcv, ok := d.handleToDevice(ctx, evt); ok {
			out = append(out, rcv)
		}
	}
	if lists != nil && !lists.IsZero() {
		d.mach.HandleDeviceLists(ctx, lists, "")
		d.forgetFailures(lists.Changed)
	}
	d.handleOTKCount(ctx, otk)
	d.mach.MarkOlmHashSavePoint(ctx)
	return out
}

func (d *Device) handleToDevice(ctx context.Context, evt *event.Event) (Received, bool) {
	evt.Type.Class = event.ToDeviceEventType
	log := zerolog.Ctx(ctx).With().Stringer("sender", evt.Sender).Str("event_type", evt.Type.Type).Logger()
	ctx = log.WithContext(ctx)
	if len(evt.ToUserID) > 0 && (evt.ToUserID != d.cli.UserID || (evt.ToDeviceID != "" && evt.ToDeviceID != "*" && evt.ToDeviceID != d.cli.DeviceID)) {
		log.Warn().Stringer("to_user_id", evt.ToUserID).Stringer("to_device_id", evt.ToDeviceID).
			Msg("Dropping to-device event addressed to another device")
		return Received{}, false
	}
	switch {
	case evt.Type == event.ToDeviceEncrypted:
		return d.decrypt(ctx, evt)
	case isCryptoType(evt.Type.Type):
		d.handlePlainCrypto(ctx, evt)
		return Received{}, false
	default:
		return Received{
			Type:    evt.Type,
			Content: rawContent(evt),
			Sender:  evt.Sender,
		}, true
	}
}

// decrypt decrypts an m.room.encrypted to-device event exactly once.
func (d *Device) decrypt(ctx context.Context, evt *event.Event) (Received, bool) {
	log := zerolog.Ctx(ctx)
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			log.Warn().Err(err).Str("reason", "unparseable").Msg("Dropping encrypted to-device event")
			return Received{}, false
		}
	}
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		log.Warn().Str("reason", "not encrypted content").Msg("Dropping encrypted to-device event")
		return Received{}, false
	}
	if content.Algorithm != id.AlgorithmOlmV1 {
		log.Warn().Str("reason", "unsupported algorithm").Str("algorithm", string(content.Algorithm)).
			Msg("Dropping encrypted to-device event")
		return Received{}, false
	}
	if _, ok := content.OlmCiphertext[d.IdentityKey()]; !ok {
		log.Warn().Str("reason", "not encrypted for this device").Stringer("sender_key", content.SenderKey).
			Msg("Dropping encrypted to-device event")
		return Received{}, false
	}
	// On failure the machine logs "Failed to decrypt to-device event" with
	// the cause (session mismatch, duplicate, sender mismatch, ...) to the
	// context logger and returns nil, exactly as for consumed key events.
	dec := d.mach.HandleEncryptedEvent(ctx, evt)
	if dec == nil {
		return Received{}, false
	}
	innerType := dec.Type
	innerType.Class = event.ToDeviceEventType
	log2 := log.With().Str("decrypted_type", innerType.Type).Logger()
	if isCryptoType(innerType.Type) {
		log2.Debug().Msg("Ignoring decrypted crypto event the machine does not handle")
		return Received{}, false
	}
	if dec.SenderDevice == nil {
		log2.Warn().Str("reason", "sender device unknown").Stringer("sender_key", dec.SenderKey).
			Msg("Dropping decrypted to-device event")
		return Received{}, false
	}
	raw := json.RawMessage(dec.Content.VeryRaw)
	if len(raw) == 0 {
		var err error
		if raw, err = json.Marshal(&dec.Content); err != nil {
			log2.Warn().Err(err).Str("reason", "content not re-encodable").Msg("Dropping decrypted to-device event")
			return Received{}, false
		}
	}
	return Received{
		Type:         innerType,
		Content:      raw,
		Sender:       dec.Sender,
		SenderDevice: dec.SenderDevice.DeviceID,
		Encrypted:    true,
	}, true
}

// handleOTKCount hands the one-time key count to the machine, which tops the
// keys up when fewer than half are left. Dendrite omits
// device_one_time_keys_count from initial syncs, so a missing (zero) count
// is checked against the server, at most once per OTKCheckInterval, instead
// of making the machine upload a fresh batch it does not need.
func (d *Device) handleOTKCount(ctx context.Context, otk *mautrix.OTKCount) {
	if otk != nil && !otk.IsZero() {
		d.mach.HandleOTKCounts(ctx, otk)
		return
	}
	if !d.lastOTKCheck.IsZero() && time.Since(d.lastOTKCheck) < OTKCheckInterval {
		return
	}
	d.lastOTKCheck = time.Now()
	resp, err := d.cli.UploadKeys(ctx, &mautrix.ReqUploadKeys{})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to check one-time key count")
		return
	}
	d.mach.HandleOTKCounts(ctx, &resp.OneTimeKeyCounts)
}

// handlePlainCrypto passes plaintext crypto events the machine acts on to it
// and drops the rest (verification: not supported; keys and secrets: only valid encrypted).
func (d *Device) handlePlainCrypto(ctx context.Context, evt *event.Event) {
	switch evt.Type {
	case event.ToDeviceRoomKeyRequest:
		// Answered (or refused: mautrix shares only with our own verified
		// devices) here, in order, not on a goroutine of the machine's.
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Msg("Dropping unparseable room key request")
			return
		}
		if content, ok := evt.Content.Parsed.(*event.RoomKeyRequestEventContent); ok {
			d.mach.HandleRoomKeyRequest(ctx, evt.Sender, content)
		}
	case event.ToDeviceRoomKeyWithheld, event.ToDeviceOrgMatrixRoomKeyWithheld, event.ToDeviceBeeperRoomKeyAck:
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Msg("Dropping unparseable crypto to-device event")
			return
		}
		d.mach.HandleToDeviceEvent(ctx, evt)
	default:
		zerolog.Ctx(ctx).Debug().Msg("Ignoring plaintext crypto to-device event")
	}
}

// isCryptoType reports event types that belong to the crypto machinery, not
// to the application.
func isCryptoType(t string) bool {
	switch {
	case t == event.ToDeviceEncrypted.Type, t == event.ToDeviceDummy.Type,
		t == event.ToDeviceForwardedRoomKey.Type, t == event.ToDeviceOrgMatrixRoomKeyWithheld.Type,
		t == event.ToDeviceBeeperRoomKeyAck.Type, t == event.ToDeviceSecretPush.Type:
		return true
	case strings.HasPrefix(t, "m.room_key"), strings.HasPrefix(t, "m.secret."), strings.HasPrefix(t, "m.key.verification."):
		return true
	}
	return false
}

func rawContent(evt *event.Event) json.RawMessage {
	if len(evt.Content.VeryRaw) > 0 {
		return json.RawMessage(evt.Content.VeryRaw)
	}
	raw, err := json.Marshal(&evt.Content)
	if err != nil {
		return json.RawMessage("{}")
	}
	return raw
}
