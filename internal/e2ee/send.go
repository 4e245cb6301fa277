package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Send sends evtType with per-device contents. With encrypt, every target
// device whose keys can be obtained gets its content Olm-encrypted, the
// others get it in plaintext (hydrogen drops plaintext, js-sdk >= v37 only
// sends plaintext: §2.4). All encrypted contents go out in one sendToDevice
// request of type m.room.encrypted, all plaintext ones in one request of
// evtType. Without encrypt everything is plaintext in one request.
func (d *Device) Send(ctx context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error {
	if d.closed.Load() {
		return ErrClosed
	}
	evtType.Class = event.ToDeviceEventType
	plain := &mautrix.ReqSendToDevice{Messages: make(map[id.UserID]map[id.DeviceID]*event.Content)}
	var toEncrypt *mautrix.ReqSendToDevice
	nPlain := 0
	addPlain := func(user id.UserID, device id.DeviceID, raw json.RawMessage) {
		if plain.Messages[user] == nil {
			plain.Messages[user] = make(map[id.DeviceID]*event.Content)
		}
		plain.Messages[user][device] = &event.Content{VeryRaw: raw}
		nPlain++
	}
	var known map[deviceKey]*id.Device
	if encrypt {
		var targets []deviceKey
		for user, devices := range msgs {
			for device := range devices {
				targets = append(targets, deviceKey{user, device})
			}
		}
		var err error
		if known, err = d.lookupDevices(ctx, targets); err != nil {
			return err
		}
	}
	for user, devices := range msgs {
		for device, raw := range devices {
			if !json.Valid(raw) {
				return fmt.Errorf("content for %s/%s is not valid JSON", user, device)
			}
			if known[deviceKey{user, device}] != nil {
				if toEncrypt == nil {
					toEncrypt = &mautrix.ReqSendToDevice{Messages: make(map[id.UserID]map[id.DeviceID]*event.Content)}
				}
				if toEncrypt.Messages[user] == nil {
					toEncrypt.Messages[user] = make(map[id.DeviceID]*event.Content)
				}
				toEncrypt.Messages[user][device] = &event.Content{VeryRaw: raw}
				continue
			}
			addPlain(user, device, raw)
		}
	}
	var errs []error
	if toEncrypt != nil {
		encrypted, err := d.mach.EncryptToDevices(ctx, evtType, toEncrypt)
		if err != nil {
			return fmt.Errorf("failed to encrypt %s: %w", evtType.Type, err)
		}
		// Devices without a claimable one-time key get no Olm session; they
		// are missing from the result and fall back to plaintext.
		nEncrypted := 0
		for user, devices := range toEncrypt.Messages {
			for device, content := range devices {
				if _, ok := encrypted.Messages[user][device]; ok {
					nEncrypted++
					continue
				}
				zerolog.Ctx(ctx).Warn().Stringer("target_user_id", user).Stringer("target_device_id", device).
					Str("event_type", evtType.Type).Msg("No Olm session for device, sending plaintext")
				addPlain(user, device, content.VeryRaw)
			}
		}
		for user, devices := range encrypted.Messages {
			if len(devices) == 0 {
				delete(encrypted.Messages, user)
			}
		}
		if nEncrypted > 0 {
			if _, err := d.cli.SendToDevice(ctx, event.ToDeviceEncrypted, encrypted); err != nil {
				errs = append(errs, fmt.Errorf("failed to send encrypted %s to %d devices: %w", evtType.Type, nEncrypted, err))
			}
		}
	}
	if nPlain > 0 {
		if _, err := d.cli.SendToDevice(ctx, evtType, plain); err != nil {
			errs = append(errs, fmt.Errorf("failed to send %s to %d devices: %w", evtType.Type, nPlain, err))
		}
	}
	return errors.Join(errs...)
}

// lookupDevices returns the keys of the target devices that have any, from
// the store or, for the rest, from one /keys/query. Devices the server has
// no keys for are remembered for FetchFailureTTL and get plaintext. A store
// error is returned: it must not silently downgrade a message to plaintext.
func (d *Device) lookupDevices(ctx context.Context, targets []deviceKey) (map[deviceKey]*id.Device, error) {
	found := make(map[deviceKey]*id.Device, len(targets))
	var missing []deviceKey
	var users []id.UserID
	d.failLock.Lock()
	now := time.Now()
	for _, key := range targets {
		if failed, ok := d.failedAt[key]; ok {
			if now.Sub(failed) < FetchFailureTTL {
				continue
			}
			delete(d.failedAt, key)
		}
		missing = append(missing, key)
	}
	d.failLock.Unlock()
	unknown := missing[:0]
	for _, key := range missing {
		dev, err := d.store.GetDevice(ctx, key.user, key.device)
		if err != nil {
			return nil, fmt.Errorf("failed to read device %s of %s from the crypto store: %w", key.device, key.user, err)
		}
		if dev != nil {
			found[key] = dev
			continue
		}
		if !slices.Contains(users, key.user) {
			users = append(users, key.user)
		}
		unknown = append(unknown, key)
	}
	if len(unknown) == 0 {
		return found, nil
	}
	devices, err := d.mach.FetchKeys(ctx, users, true)
	d.failLock.Lock()
	defer d.failLock.Unlock()
	for _, key := range unknown {
		if dev := devices[key.user][key.device]; err == nil && dev != nil {
			found[key] = dev
			continue
		}
		zerolog.Ctx(ctx).Debug().Err(err).Stringer("target_user_id", key.user).Stringer("target_device_id", key.device).
			Msg("No device keys, target gets plaintext")
		d.failedAt[key] = now
	}
	return found, nil
}

// forgetFailures drops remembered lookup failures of users whose device
// lists changed, so their new devices are looked up at once.
func (d *Device) forgetFailures(users []id.UserID) {
	d.failLock.Lock()
	defer d.failLock.Unlock()
	for _, u := range users {
		for k := range d.failedAt {
			if k.user == u {
				delete(d.failedAt, k)
			}
		}
	}
}
