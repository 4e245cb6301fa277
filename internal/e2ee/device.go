// Package e2ee is the Olm layer of one Matrix device: the appservice's
// devices (appservice.Device, one per virtual user) and the call simulator
// (internal/simpeer) each own one.
//
// It wraps a mautrix OlmMachine but does its own to-device routing: the stock
// path (ProcessSyncResponse / HandleToDeviceEvent) decrypts m.room.encrypted
// to-device events and then throws away every decrypted event it does not
// handle itself, which includes all m.call.* signalling
// (shared/docs/mautrix-dendrite.md §3, recording.md C.3). HandleSync decrypts
// each encrypted event exactly once and returns the call events.
package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// FetchFailureTTL is how long a failed device key lookup is remembered; Send
// sends plaintext to that device without asking the server again meanwhile.
const FetchFailureTTL = 10 * time.Second

// OTKCheckInterval bounds how often a sync batch without a one-time key
// count makes HandleSync ask the server for the count.
const OTKCheckInterval = time.Minute

// Received is one to-device event for the caller: a decrypted Olm event of a
// non-crypto type, or a plaintext event of a non-crypto type.
type Received struct {
	// Type is the (inner) event type, with the to-device class.
	Type event.Type
	// Content is the (decrypted) content JSON.
	Content json.RawMessage
	// Sender is the to-device sender; for Olm events mautrix has checked
	// that it equals the sender inside the ciphertext.
	Sender id.UserID
	// SenderDevice is the device whose Olm identity key sent an encrypted
	// event, as mautrix verified it (identity key and signing key match the
	// device keys). Empty for plaintext events: nothing vouches for the
	// device_id a plaintext content claims.
	SenderDevice id.DeviceID
	// Encrypted reports whether the event arrived Olm-encrypted.
	Encrypted bool
}

// Device is one Matrix device's Olm machine. HandleSync and Send may be
// called from different goroutines.
type Device struct {
	cli   *mautrix.Client
	store *crypto.SQLCryptoStore
	mach  *crypto.OlmMachine
	log   zerolog.Logger

	// syncLock serialises HandleSync: Olm messages must be decrypted in
	// order, and each exactly once. It also guards lastOTKCheck.
	syncLock     sync.Mutex
	lastOTKCheck time.Time

	failLock  sync.Mutex
	failedAt  map[deviceKey]time.Time
	closed    atomic.Bool
	closeOnce sync.Once
}

type deviceKey struct {
	user   id.UserID
	device id.DeviceID
}

// upgradeLock serialises crypto store upgrades: several Devices share one
// database and the upgrade of the shared crypto tables must run once at a
// time.
var upgradeLock sync.Mutex

// Open sets up the Olm machine for cli's device (cli.UserID, cli.DeviceID and
// cli.AccessToken must be set). The crypto tables live in db next to other
// data; the account id is the user ID, so several users' Devices can share
// one db, but one user can only ever have one device in it. On first use the
// device keys and one-time keys are uploaded; when Open returns, the keys are
// on the server. The same db, user, device and pickleKey give the same
// identity on the next run.
func Open(ctx context.Context, cli *mautrix.Client, db *dbutil.Database, pickleKey []byte) (*Device, error) {
	if cli == nil || cli.UserID == "" || cli.DeviceID == "" || cli.AccessToken == "" {
		return nil, ErrNoDevice
	}
	log := zerolog.Ctx(ctx).With().
		Str("component", "e2ee").
		Stringer("user_id", cli.UserID).
		Stringer("device_id", cli.DeviceID).
		Logger()
	ctx = log.WithContext(ctx)

	store := crypto.NewSQLCryptoStore(db, dbutil.ZeroLogger(log), string(cli.UserID), cli.DeviceID, pickleKey)
	upgradeLock.Lock()
	err := store.DB.Upgrade(ctx)
	upgradeLock.Unlock()
	if err != nil {
		return nil, fmt.Errorf("failed to upgrade crypto store: %w", err)
	}
	var storedDevice id.DeviceID
	err = store.DB.QueryRow(ctx, "SELECT device_id FROM crypto_account WHERE account_id=$1", store.AccountID).Scan(&storedDevice)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("failed to read crypto account: %w", err)
	case storedDevice != cli.DeviceID:
		return nil, fmt.Errorf("%w: account %s is stored for device %s, not %s", ErrDeviceMismatch, store.AccountID, storedDevice, cli.DeviceID)
	}

	d := &Device{
		cli:      cli,
		store:    store,
		log:      log,
		failedAt: make(map[deviceKey]time.Time),
	}
	stateStore, ok := mautrix.NewMemoryStateStore().(crypto.StateStore)
	if !ok {
		return nil, fmt.Errorf("mautrix memory state store does not implement crypto.StateStore")
	}
	d.mach = crypto.NewOlmMachine(cli, &d.log, store, stateStore)
	if err := d.mach.Load(ctx); err != nil {
		return nil, fmt.Errorf("failed to load olm account: %w", err)
	}
	if err := d.ensureKeysOnServer(ctx); err != nil {
		d.mach.Destroy()
		return nil, err
	}
	return d, nil
}

// ensureKeysOnServer compares the local account with the server's view of
// the device (as mautrix's cryptohelper does) and uploads keys the first
// time.
func (d *Device) ensureKeysOnServer(ctx context.Context) error {
	resp, err := d.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{
		DeviceKeys: map[id.UserID]mautrix.DeviceIDList{d.cli.UserID: {d.cli.DeviceID}},
	})
	if err != nil {
		return fmt.Errorf("failed to query own device keys: %w", err)
	}
	shared := d.mach.GetAccount().Shared
	onServer, ok := resp.DeviceKeys[d.cli.UserID][d.cli.DeviceID]
	hasKeys := ok && len(onServer.Keys) > 0
	switch {
	case !hasKeys && shared:
		return ErrKeysVanished
	case !hasKeys:
		start := time.Now()
		if err := d.mach.ShareKeys(ctx, -1); err != nil {
			return fmt.Errorf("failed to upload device keys: %w", err)
		}
		zerolog.Ctx(ctx).Debug().Dur("took", time.Since(start)).Stringer("identity_key", d.IdentityKey()).
			Msg("Uploaded device keys and one-time keys")
		return nil
	case !shared:
		return ErrKeysOnServer
	case onServer.Keys.GetEd25519(d.cli.DeviceID) != d.mach.OwnIdentity().SigningKey:
		return fmt.Errorf("%w: server has %s", ErrKeyMismatch, onServer.Keys.GetEd25519(d.cli.DeviceID))
	default:
		zerolog.Ctx(ctx).Debug().Stringer("identity_key", d.IdentityKey()).Msg("Loaded shared olm account")
		return nil
	}
}

// UserID is the device's user.
func (d *Device) UserID() id.UserID { return d.cli.UserID }

// DeviceID is the device's ID.
func (d *Device) DeviceID() id.DeviceID { return d.cli.DeviceID }

// IdentityKey is the device's Curve25519 identity key.
func (d *Device) IdentityKey() id.IdentityKey { return d.mach.OwnIdentity().IdentityKey }

// SigningKey is the device's Ed25519 signing key.
func (d *Device) SigningKey() id.Ed25519 { return d.mach.OwnIdentity().SigningKey }

// Machine exposes the underlying OlmMachine (for tests and diagnostics).
// Never feed it to-device events: use HandleSync.
func (d *Device) Machine() *crypto.OlmMachine { return d.mach }

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
// and drops the rest (room key requests: we share no Megolm sessions;
// verification: not supported; keys and secrets: only valid encrypted).
func (d *Device) handlePlainCrypto(ctx context.Context, evt *event.Event) {
	switch evt.Type {
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

// Close stops the machine. It does not close the database (it is shared).
// Stop the sync loop feeding HandleSync first.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.syncLock.Lock() // wait for a running HandleSync
		d.mach.Destroy()
		d.syncLock.Unlock()
	})
	return nil
}
