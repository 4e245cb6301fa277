package appservice

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// DeviceEvents is one batch of device-addressed data, from the device's
// /sync or from an appservice transaction (MSC2409/MSC3202).
type DeviceEvents struct {
	ToDevice        []*event.Event
	DeviceLists     *mautrix.DeviceLists
	OTKCount        *mautrix.OTKCount
	FromTransaction bool
}

// ToDeviceHandler consumes a device's to-device events after decryption
// (crypto-internal events are consumed by the device). It is called from the
// device's goroutines one batch at a time and in order; it should hand work
// to its own loop rather than block. The sync position is saved after it
// returns, so a batch is redelivered if the process dies while handling it.
type ToDeviceHandler func(ctx context.Context, received []e2ee.Received)

// crypto is what a Device needs of its Olm machine (*e2ee.Device; tests
// use a plaintext fake).
type crypto interface {
	HandleSync(ctx context.Context, toDevice []*event.Event, lists *mautrix.DeviceLists, otk *mautrix.OTKCount) []e2ee.Received
	Send(ctx context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error
	Close() error
}

// Device is one logged-in Matrix device: its client, its Olm machine and
// its /sync loop, with one owner, one start (startDevice) and one stop
// (stop). mautrix attaches crypto to the client the same way; every virtual
// user has one, and the bot user can get one the same way for encrypted
// rooms.
type Device struct {
	userID   id.UserID
	deviceID id.DeviceID
	// client acts as the device (its own access token): to-device, keys, sync.
	client *mautrix.Client
	crypto crypto
	// olm is the real machine behind crypto (nil with a test fake); the
	// bot's device uses it for Megolm.
	olm  *e2ee.Device
	opts deviceOptions

	cancel context.CancelFunc
	done   chan struct{}

	deliverLock sync.Mutex // batches from /sync and transactions never overlap

	seenLock sync.Mutex
	seen     map[[32]byte]struct{}
	seenRing [][32]byte
	seenPos  int
}

// deviceOptions are a Device's collaborators and tunables.
type deviceOptions struct {
	store       DeviceStore
	handler     ToDeviceHandler
	syncTimeout time.Duration
	maxBackoff  time.Duration
	onSyncError func()
	// relogin gets a fresh access token when the server invalidated ours.
	relogin func(ctx context.Context) (string, error)
}

func newDevice(cli *mautrix.Client, cr crypto, opts deviceOptions) *Device {
	return &Device{
		userID: cli.UserID, deviceID: cli.DeviceID, client: cli, crypto: cr, opts: opts,
		done: make(chan struct{}), seen: make(map[[32]byte]struct{}), seenRing: make([][32]byte, 256),
	}
}

// UserID is the device's user.
func (d *Device) UserID() id.UserID { return d.userID }

// DeviceID is the device's ID.
func (d *Device) DeviceID() id.DeviceID { return d.deviceID }

// Client is the device's client (its own access token).
func (d *Device) Client() *mautrix.Client { return d.client }

// SendToDevice sends evtType with per-device contents, Olm-encrypted to
// every target whose keys can be had when encrypt is set (e2ee.Device.Send).
func (d *Device) SendToDevice(ctx context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error {
	return d.crypto.Send(ctx, evtType, msgs, encrypt)
}

// start runs the sync loop from since until stop; wg is its owner's.
func (d *Device) start(ctx context.Context, wg *sync.WaitGroup, since string) {
	ctx, d.cancel = context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(d.done)
		d.syncLoop(ctx, since)
	}()
}

func (d *Device) cancelSync() {
	if d.cancel != nil {
		d.cancel()
	}
}

// stop ends the sync loop, waits for it, then closes the Olm machine: no
// batch is handled after stop returns.
func (d *Device) stop(ctx context.Context) {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	if err := d.crypto.Close(); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("user_id", d.userID).Msg("Failed to close crypto device")
	}
}

// syncFilter keeps /sync to device data: room events reach the appservice
// through transactions.
var syncFilter = map[string]any{
	"room":         map[string]any{"rooms": []string{}, "account_data": map[string]any{"not_types": []string{"*"}}},
	"presence":     map[string]any{"not_types": []string{"*"}},
	"account_data": map[string]any{"not_types": []string{"*"}},
}

func (d *Device) syncLoop(ctx context.Context, since string) {
	log := zerolog.Ctx(ctx)
	var filterID string
	failures := 0
	for ctx.Err() == nil {
		if filterID == "" {
			var resp mautrix.RespCreateFilter
			_, err := d.client.MakeRequest(ctx, http.MethodPost, d.client.BuildClientURL("v3", "user", d.userID, "filter"), syncFilter, &resp)
			if err == nil {
				filterID = resp.FilterID
			} else if ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to upload sync filter")
			}
		}
		resp, err := d.client.FullSyncRequest(ctx, mautrix.ReqSync{
			Since: since, Timeout: int(d.opts.syncTimeout / time.Millisecond), FilterID: filterID,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if d.opts.onSyncError != nil {
				d.opts.onSyncError()
			}
			if errors.Is(err, mautrix.MUnknownToken) && d.opts.relogin != nil {
				log.Warn().Msg("Access token was invalidated, logging in again")
				if token, relogErr := d.opts.relogin(ctx); relogErr != nil {
					log.Err(relogErr).Msg("Failed to log in again")
				} else {
					// Under the client's own token lock: the call's sender and
					// room actions use this client at the same time.
					d.client.OAuthSetTokens("", "", token, time.Time{})
				}
			}
			wait := backoff(failures, d.opts.maxBackoff)
			log.Warn().Err(err).Int("failures", failures).Dur("retry_in", wait).Msg("Sync failed")
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		if failures > 0 {
			log.Info().Int("failures", failures).Msg("Sync recovered")
		}
		failures = 0
		batch := &DeviceEvents{ToDevice: d.dedupe(resp.ToDevice.Events)}
		if len(resp.DeviceLists.Changed) > 0 || len(resp.DeviceLists.Left) > 0 {
			batch.DeviceLists = &resp.DeviceLists
		}
		if since != "" || resp.DeviceOTKCount.SignedCurve25519 > 0 {
			otk := resp.DeviceOTKCount
			otk.UserID, otk.DeviceID = d.userID, d.deviceID
			batch.OTKCount = &otk
		}
		d.deliver(ctx, batch)
		since = resp.NextBatch
		// Saved even while stopping: the batch was handled, so it must not
		// come again after a restart.
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err = d.opts.store.SaveNextBatch(saveCtx, d.userID, since); err != nil {
			log.Err(err).Msg("Failed to save sync position")
		}
		cancel()
	}
}

// deliver runs one batch through the Olm machine (every batch: device lists
// and key counts matter even without events) and hands what it returns to
// the handler.
func (d *Device) deliver(ctx context.Context, batch *DeviceEvents) {
	if len(batch.ToDevice) == 0 && batch.DeviceLists == nil && batch.OTKCount == nil {
		return
	}
	d.deliverLock.Lock()
	defer d.deliverLock.Unlock()
	defer func() {
		if r := recover(); r != nil {
			zerolog.Ctx(ctx).Error().Any("panic", r).Stack().Msg("Panic in device event handler")
		}
	}()
	received := d.crypto.HandleSync(ctx, batch.ToDevice, batch.DeviceLists, batch.OTKCount)
	if len(received) > 0 && d.opts.handler != nil {
		d.opts.handler(ctx, received)
	}
}

// dedupe drops to-device events already delivered by the other path (a
// homeserver with MSC2409 may send the same event by transaction and /sync).
func (d *Device) dedupe(evts []*event.Event) []*event.Event {
	d.seenLock.Lock()
	defer d.seenLock.Unlock()
	out := evts[:0]
	for _, evt := range evts {
		h := sha256.New()
		h.Write([]byte(evt.Sender))
		h.Write([]byte{0})
		h.Write([]byte(evt.Type.Type))
		h.Write([]byte{0})
		h.Write(evt.Content.VeryRaw)
		var key [32]byte
		h.Sum(key[:0])
		if _, dup := d.seen[key]; dup {
			continue
		}
		delete(d.seen, d.seenRing[d.seenPos])
		d.seenRing[d.seenPos] = key
		d.seenPos = (d.seenPos + 1) % len(d.seenRing)
		d.seen[key] = struct{}{}
		out = append(out, evt)
	}
	return out
}

func backoff(failures int, maxWait time.Duration) time.Duration {
	wait := time.Second << min(failures-1, 10)
	if wait > maxWait {
		wait = maxWait
	}
	// ±20% jitter so many users do not retry in lockstep.
	return time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
}
