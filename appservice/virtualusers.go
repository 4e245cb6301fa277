package appservice

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	mautrixas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// DeviceRecord is what is persisted per virtual user.
type DeviceRecord struct {
	UserID      id.UserID
	DeviceID    id.DeviceID
	AccessToken string
	NextBatch   string
}

// DeviceStore persists the virtual users' devices and sync positions.
type DeviceStore interface {
	// GetDevice returns nil, nil when the user has no device yet.
	GetDevice(ctx context.Context, userID id.UserID) (*DeviceRecord, error)
	SaveDevice(ctx context.Context, rec *DeviceRecord) error
	SaveNextBatch(ctx context.Context, userID id.UserID, nextBatch string) error
}

// DeviceEvents is one batch of device-addressed data for a virtual user, from
// its /sync or from an appservice transaction (MSC2409/MSC3202).
type DeviceEvents struct {
	ToDevice        []*event.Event
	DeviceLists     *mautrix.DeviceLists
	OTKCount        *mautrix.OTKCount
	FromTransaction bool
}

// DeviceHandler consumes a virtual user's device events. It is called from the
// user's sync goroutine, one batch at a time and in order; it should hand work
// to its own loop rather than block. The sync position is saved after it
// returns, so a batch is redelivered if the process dies while handling it.
type DeviceHandler func(ctx context.Context, vu *VirtualUser, batch *DeviceEvents)

// VirtualUser is a recorder user with a device of its own and a /sync loop.
type VirtualUser struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	// Client acts as the device (its own access token): to-device, keys, sync.
	Client *mautrix.Client
	// Intent acts as the user through the as_token: joins, state events.
	Intent *mautrixas.IntentAPI

	vm      *VirtualUsers
	handler DeviceHandler
	cancel  context.CancelFunc
	done    chan struct{}

	deliverLock sync.Mutex // batches from /sync and transactions never overlap

	seenLock sync.Mutex
	seen     map[[32]byte]struct{}
	seenRing [][32]byte
	seenPos  int
}

// VirtualUsers owns every virtual user's device and sync goroutine.
type VirtualUsers struct {
	svc   *Service
	store DeviceStore

	lock  sync.Mutex
	users map[id.UserID]*VirtualUser

	// SyncTimeout is the long-poll timeout of each /sync.
	SyncTimeout time.Duration
	// MaxBackoff caps the wait between failed syncs.
	MaxBackoff time.Duration
	// OnSyncError, if set, is called for every failed sync (metrics).
	OnSyncError func()
}

func newVirtualUsers(s *Service, store DeviceStore) *VirtualUsers {
	return &VirtualUsers{svc: s, store: store, users: make(map[id.UserID]*VirtualUser),
		SyncTimeout: 30 * time.Second, MaxBackoff: 30 * time.Second}
}

// UserID builds a virtual user ID from a suffix: "1" → @<prefix>1:<domain>.
func (vm *VirtualUsers) UserID(suffix string) id.UserID {
	return id.NewUserID(vm.svc.cfg.Appservice.UserPrefix+suffix, vm.svc.cfg.Homeserver.Domain)
}

// Get returns the running virtual user, creating it on first use: registered,
// logged in with its stored device (or a new one) and syncing. handler
// receives its device events; it is set on the first call only.
func (vm *VirtualUsers) Get(ctx context.Context, userID id.UserID, handler DeviceHandler) (*VirtualUser, error) {
	if !vm.svc.IsVirtualUser(userID) {
		return nil, fmt.Errorf("%w: %s", ErrNotInNamespace, userID)
	}
	vm.lock.Lock()
	defer vm.lock.Unlock()
	if vm.svc.bgCtx == nil || vm.svc.bgCtx.Err() != nil {
		return nil, ErrStopped
	}
	if vu, ok := vm.users[userID]; ok {
		return vu, nil
	}
	log := zerolog.Ctx(ctx).With().Stringer("virtual_user", userID).Logger()
	ctx = log.WithContext(ctx)
	intent := vm.svc.AS.Intent(userID)
	if err := intent.EnsureRegistered(ctx); err != nil {
		return nil, fmt.Errorf("failed to register %s: %w", userID, err)
	}
	rec, err := vm.store.GetDevice(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("failed to load device of %s: %w", userID, err)
	}
	cli, rec, err := vm.ensureDevice(ctx, userID, rec)
	if err != nil {
		return nil, err
	}
	vu := &VirtualUser{
		UserID: userID, DeviceID: rec.DeviceID, Client: cli, Intent: intent,
		vm: vm, handler: handler, done: make(chan struct{}),
		seen: make(map[[32]byte]struct{}), seenRing: make([][32]byte, 256),
	}
	// The sync loop outlives the request that created the user: log with the
	// service's logger, not the caller's (e.g. a command's event fields).
	syncLog := zerolog.Ctx(vm.svc.bgCtx).With().Stringer("virtual_user", userID).Logger()
	syncCtx, cancel := context.WithCancel(syncLog.WithContext(vm.svc.bgCtx))
	vu.cancel = cancel
	vm.users[userID] = vu
	vm.svc.wg.Add(1)
	go func() {
		defer vm.svc.wg.Done()
		defer close(vu.done)
		vu.syncLoop(syncCtx, rec.NextBatch)
	}()
	log.Info().Stringer("device_id", rec.DeviceID).Msg("Virtual user ready")
	return vu, nil
}

// ensureDevice reuses the stored access token when it still works, else logs
// in again with the stored device ID (a second login with the same device
// invalidates the old token, so we only log in when we must), else creates a
// new device.
func (vm *VirtualUsers) ensureDevice(ctx context.Context, userID id.UserID, rec *DeviceRecord) (*mautrix.Client, *DeviceRecord, error) {
	log := zerolog.Ctx(ctx)
	hsURL := vm.svc.cfg.Homeserver.Address
	if rec != nil && rec.AccessToken != "" {
		cli, err := vm.newClient(hsURL, userID, rec.DeviceID, rec.AccessToken)
		if err != nil {
			return nil, nil, err
		}
		who, err := cli.Whoami(ctx)
		if err == nil && who.UserID == userID && who.DeviceID == rec.DeviceID {
			log.Debug().Msg("Reusing stored access token")
			return cli, rec, nil
		}
		log.Info().Err(err).Msg("Stored access token is not usable, logging in again")
	}
	if rec == nil {
		rec = &DeviceRecord{UserID: userID, DeviceID: id.DeviceID("REC" + strings.ToUpper(random.String(10)))}
	}
	loginCli, err := vm.newClient(hsURL, "", "", vm.svc.cfg.Appservice.ASToken)
	if err != nil {
		return nil, nil, err
	}
	resp, err := loginCli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID.Localpart()},
		DeviceID:                 rec.DeviceID,
		InitialDeviceDisplayName: "Call recorder",
	})
	if err != nil {
		return nil, nil, fmt.Errorf("appservice login of %s failed: %w", userID, err)
	}
	if resp.DeviceID != rec.DeviceID {
		log.Warn().Stringer("wanted", rec.DeviceID).Stringer("got", resp.DeviceID).Msg("Homeserver gave a different device ID")
	}
	rec.DeviceID, rec.AccessToken = resp.DeviceID, resp.AccessToken
	if err = vm.store.SaveDevice(ctx, rec); err != nil {
		return nil, nil, fmt.Errorf("failed to save device of %s: %w", userID, err)
	}
	cli, err := vm.newClient(hsURL, userID, rec.DeviceID, rec.AccessToken)
	return cli, rec, err
}

func (vm *VirtualUsers) newClient(hsURL string, userID id.UserID, deviceID id.DeviceID, token string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(hsURL, userID, token)
	if err != nil {
		return nil, fmt.Errorf("failed to create client: %w", err)
	}
	cli.DeviceID = deviceID
	cli.UserAgent = vm.svc.AS.UserAgent
	cli.Log = zerolog.Ctx(vm.svc.bgCtx).With().Str("component", "virtual_user_client").Stringer("virtual_user", userID).Logger()
	return cli, nil
}

// Stop stops one virtual user's sync and waits for it.
func (vm *VirtualUsers) Stop(userID id.UserID) {
	vm.lock.Lock()
	vu := vm.users[userID]
	delete(vm.users, userID)
	vm.lock.Unlock()
	if vu != nil {
		vu.cancel()
		<-vu.done
	}
}

func (vm *VirtualUsers) stopAll() {
	vm.lock.Lock()
	users := vm.users
	vm.users = make(map[id.UserID]*VirtualUser)
	vm.lock.Unlock()
	for _, vu := range users {
		vu.cancel()
	}
	for _, vu := range users {
		<-vu.done
	}
}

func (vm *VirtualUsers) lookup(userID id.UserID, deviceID id.DeviceID) *VirtualUser {
	vm.lock.Lock()
	defer vm.lock.Unlock()
	vu := vm.users[userID]
	if vu == nil || (deviceID != "" && vu.DeviceID != deviceID) {
		return nil
	}
	return vu
}

// syncFilter keeps /sync to device data: room events reach the appservice
// through transactions.
var syncFilter = map[string]any{
	"room":         map[string]any{"rooms": []string{}, "account_data": map[string]any{"not_types": []string{"*"}}},
	"presence":     map[string]any{"not_types": []string{"*"}},
	"account_data": map[string]any{"not_types": []string{"*"}},
}

func (vu *VirtualUser) syncLoop(ctx context.Context, since string) {
	log := zerolog.Ctx(ctx)
	var filterID string
	failures := 0
	for ctx.Err() == nil {
		if filterID == "" {
			var resp mautrix.RespCreateFilter
			_, err := vu.Client.MakeRequest(ctx, http.MethodPost, vu.Client.BuildClientURL("v3", "user", vu.UserID, "filter"), syncFilter, &resp)
			if err == nil {
				filterID = resp.FilterID
			} else if ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to upload sync filter")
			}
		}
		resp, err := vu.Client.FullSyncRequest(ctx, mautrix.ReqSync{
			Since: since, Timeout: int(vu.vm.SyncTimeout / time.Millisecond), FilterID: filterID,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if vu.vm.OnSyncError != nil {
				vu.vm.OnSyncError()
			}
			if errors.Is(err, mautrix.MUnknownToken) {
				log.Warn().Msg("Access token was invalidated, logging in again")
				if relogErr := vu.relogin(ctx); relogErr != nil {
					log.Err(relogErr).Msg("Failed to log in again")
				}
			}
			wait := backoff(failures, vu.vm.MaxBackoff)
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
		batch := &DeviceEvents{ToDevice: vu.dedupe(resp.ToDevice.Events)}
		if len(resp.DeviceLists.Changed) > 0 || len(resp.DeviceLists.Left) > 0 {
			batch.DeviceLists = &resp.DeviceLists
		}
		if since != "" || resp.DeviceOTKCount.SignedCurve25519 > 0 {
			otk := resp.DeviceOTKCount
			otk.UserID, otk.DeviceID = vu.UserID, vu.DeviceID
			batch.OTKCount = &otk
		}
		vu.deliver(ctx, batch)
		since = resp.NextBatch
		// Saved even while stopping: the batch was handled, so it must not
		// come again after a restart.
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err = vu.vm.store.SaveNextBatch(saveCtx, vu.UserID, since); err != nil {
			log.Err(err).Msg("Failed to save sync position")
		}
		cancel()
	}
}

func (vu *VirtualUser) relogin(ctx context.Context) error {
	rec := &DeviceRecord{UserID: vu.UserID, DeviceID: vu.DeviceID}
	cli, rec, err := vu.vm.ensureDevice(ctx, vu.UserID, rec)
	if err != nil {
		return err
	}
	vu.Client.AccessToken = cli.AccessToken
	vu.DeviceID = rec.DeviceID
	return nil
}

func (vu *VirtualUser) deliver(ctx context.Context, batch *DeviceEvents) {
	if vu.handler == nil || (len(batch.ToDevice) == 0 && batch.DeviceLists == nil && batch.OTKCount == nil) {
		return
	}
	vu.deliverLock.Lock()
	defer vu.deliverLock.Unlock()
	defer func() {
		if r := recover(); r != nil {
			zerolog.Ctx(ctx).Error().Any("panic", r).Stack().Msg("Panic in device event handler")
		}
	}()
	vu.handler(ctx, vu, batch)
}

// dedupe drops to-device events already delivered by the other path (a
// homeserver with MSC2409 may send the same event by transaction and /sync).
func (vu *VirtualUser) dedupe(evts []*event.Event) []*event.Event {
	vu.seenLock.Lock()
	defer vu.seenLock.Unlock()
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
		if _, dup := vu.seen[key]; dup {
			continue
		}
		delete(vu.seen, vu.seenRing[vu.seenPos])
		vu.seenRing[vu.seenPos] = key
		vu.seenPos = (vu.seenPos + 1) % len(vu.seenRing)
		vu.seen[key] = struct{}{}
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

func (vm *VirtualUsers) handleTransactionToDevice(ctx context.Context, evt *event.Event) {
	vu := vm.lookup(evt.ToUserID, evt.ToDeviceID)
	if vu == nil {
		zerolog.Ctx(ctx).Debug().Stringer("to_user", evt.ToUserID).Stringer("to_device", evt.ToDeviceID).
			Msg("Dropping to-device event for a device we do not run")
		return
	}
	if evts := vu.dedupe([]*event.Event{evt}); len(evts) > 0 {
		vu.deliver(ctx, &DeviceEvents{ToDevice: evts, FromTransaction: true})
	}
}

func (vm *VirtualUsers) handleTransactionDeviceLists(ctx context.Context, dl *mautrix.DeviceLists) {
	vm.lock.Lock()
	users := make([]*VirtualUser, 0, len(vm.users))
	for _, vu := range vm.users {
		users = append(users, vu)
	}
	vm.lock.Unlock()
	for _, vu := range users {
		vu.deliver(ctx, &DeviceEvents{DeviceLists: dl, FromTransaction: true})
	}
}

func (vm *VirtualUsers) handleTransactionOTKCount(ctx context.Context, otk *mautrix.OTKCount) {
	if vu := vm.lookup(otk.UserID, otk.DeviceID); vu != nil {
		vu.deliver(ctx, &DeviceEvents{OTKCount: otk, FromTransaction: true})
	}
}
