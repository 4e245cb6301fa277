// Package e2ee is the Olm layer of one Matrix device: the appservice's
// devices (appservice.Device, one per virtual user) and the call simulator
// (internal/testutil/simpeer) each own one.
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
	return open(ctx, cli, db, pickleKey, nil)
}

func open(ctx context.Context, cli *mautrix.Client, db *dbutil.Database, pickleKey []byte, stateStore crypto.StateStore) (*Device, error) {
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
	if stateStore == nil {
		memory, ok := mautrix.NewMemoryStateStore().(crypto.StateStore)
		if !ok {
			return nil, fmt.Errorf("mautrix memory state store does not implement crypto.StateStore")
		}
		stateStore = memory
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
