package appservice

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	mautrixas "maunium.net/go/mautrix/appservice"
	mautrixcrypto "maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// StoredDevice is what is persisted per virtual user: its device and sync
// position.
type StoredDevice struct {
	UserID      id.UserID
	DeviceID    id.DeviceID
	AccessToken string
	NextBatch   string
}

// DeviceStore persists the virtual users' devices and sync positions.
type DeviceStore interface {
	// GetDevice returns nil, nil when the user has no device yet.
	GetDevice(ctx context.Context, userID id.UserID) (*StoredDevice, error)
	SaveDevice(ctx context.Context, dev *StoredDevice) error
	SaveNextBatch(ctx context.Context, userID id.UserID, nextBatch string) error
}

// VirtualUser is a recorder user: its intent (the as_token) for room
// actions, and its Device for everything device-addressed.
type VirtualUser struct {
	*Device
	intent *mautrixas.IntentAPI
	bot    *mautrixas.IntentAPI
	states mautrix.StateStore // the appservice's room memberships
	joins  *selfJoins         // the rooms JoinRoom brings it into
	since  string             // the stored sync position its sync starts from
}

// JoinRoom makes the user a member of the room, with the bot inviting it
// when needed. A user not yet invited is invited first: most rooms are
// invite-only, and a join refused before the invite costs the homeserver a
// round trip on every call's join path.
func (vu *VirtualUser) JoinRoom(ctx context.Context, roomID id.RoomID) error {
	if vu.joins != nil {
		vu.joins.mark(roomID, vu.intent.UserID)
	}
	if vu.states != nil && !vu.states.IsMembership(ctx, roomID, vu.intent.UserID, event.MembershipJoin, event.MembershipInvite) {
		if _, err := vu.bot.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: vu.intent.UserID}); err != nil {
			// A public room the bot may not invite to, or a state store
			// behind the room: the join below says what holds.
			zerolog.Ctx(ctx).Debug().Err(err).Stringer("virtual_user", vu.intent.UserID).Msg("Inviting the virtual user before its join failed")
		}
	}
	return vu.intent.EnsureJoined(ctx, roomID, mautrixas.EnsureJoinedParams{BotOverride: vu.bot.Client})
}

// RoomState reads the room's full current state as the user.
func (vu *VirtualUser) RoomState(ctx context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error) {
	return vu.intent.State(ctx, roomID)
}

// SetState sends a state event as the user.
func (vu *VirtualUser) SetState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any) error {
	_, err := vu.intent.SendStateEvent(ctx, roomID, evtType, stateKey, content)
	return err
}

// selfJoins remembers for a while the rooms virtual users are brought into
// by JoinRoom, which joins after the bot's invite itself: the invite
// handler leaves those invites alone instead of joining a second time (one
// more room event for the homeserver on every call's join path).
type selfJoins struct {
	lock sync.Mutex
	at   map[selfJoin]time.Time
}

type selfJoin struct {
	room id.RoomID
	user id.UserID
}

// selfJoinFor is how long an invite is taken as one JoinRoom follows up:
// far longer than the invite transaction takes to arrive.
const selfJoinFor = time.Minute

func (j *selfJoins) mark(room id.RoomID, user id.UserID) {
	j.lock.Lock()
	defer j.lock.Unlock()
	now := time.Now()
	if j.at == nil {
		j.at = map[selfJoin]time.Time{}
	}
	for k, at := range j.at {
		if now.Sub(at) > selfJoinFor {
			delete(j.at, k)
		}
	}
	j.at[selfJoin{room, user}] = now
}

func (j *selfJoins) marked(room id.RoomID, user id.UserID) bool {
	j.lock.Lock()
	defer j.lock.Unlock()
	at, ok := j.at[selfJoin{room, user}]
	return ok && time.Since(at) <= selfJoinFor
}

// VirtualUsersOptions configure the virtual users' devices.
type VirtualUsersOptions struct {
	Store DeviceStore
	// CryptoDB holds the devices' Olm accounts (crypto tables); PickleKey
	// encrypts them.
	CryptoDB  *dbutil.Database
	PickleKey []byte
	// SyncTimeout is the long-poll timeout of each /sync (default 30 s).
	SyncTimeout time.Duration
	// MaxBackoff caps the wait between failed syncs (default 30 s).
	MaxBackoff time.Duration
	// OnSyncError, if set, is called for every failed sync (metrics).
	OnSyncError func()
}

// VirtualUsers owns every virtual user and its Device: a device is started
// by Get and stopped by Stop or when the service stops.
type VirtualUsers struct {
	svc  *Service
	opts VirtualUsersOptions

	lock     sync.Mutex
	users    map[id.UserID]*VirtualUser
	starting map[id.UserID]*startingUser
	joins    selfJoins
	stopped  bool
}

func newVirtualUsers(s *Service, opts VirtualUsersOptions) *VirtualUsers {
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	return &VirtualUsers{svc: s, opts: opts, users: make(map[id.UserID]*VirtualUser), starting: make(map[id.UserID]*startingUser)}
}

// UserID builds a virtual user ID from a suffix: "1" → @<prefix>1:<domain>.
func (vm *VirtualUsers) UserID(suffix string) id.UserID {
	return id.NewUserID(vm.svc.cfg.Appservice.UserPrefix+suffix, vm.svc.cfg.Homeserver.Domain)
}

// Get returns the running virtual user, starting it on first use:
// registered, logged in with its stored device (or a new one), its Olm
// machine open with the keys on the server, and syncing. handler receives
// its decrypted to-device events; it is set on the first call only.
func (vm *VirtualUsers) Get(ctx context.Context, userID id.UserID, handler ToDeviceHandler) (*VirtualUser, error) {
	if !vm.svc.IsVirtualUser(userID) {
		return nil, fmt.Errorf("%w: %s", ErrNotInNamespace, userID)
	}
	// The lock is never held across network or database I/O: every
	// to-device event and transaction needs it. A user being set up is
	// waited for by its other callers only.
	vm.lock.Lock()
	if vm.stopped || vm.svc.bgCtx == nil || vm.svc.bgCtx.Err() != nil {
		vm.lock.Unlock()
		return nil, ErrStopped
	}
	if vu, ok := vm.users[userID]; ok {
		vm.lock.Unlock()
		return vu, nil
	}
	if st := vm.starting[userID]; st != nil {
		vm.lock.Unlock()
		select {
		case <-st.done:
			return st.vu, st.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	st := &startingUser{done: make(chan struct{})}
	vm.starting[userID] = st
	vm.lock.Unlock()
	defer close(st.done)
	st.vu, st.err = vm.open(ctx, userID, handler)
	vm.lock.Lock()
	defer vm.lock.Unlock()
	delete(vm.starting, userID)
	if st.err != nil {
		return nil, st.err
	}
	if vm.stopped || vm.svc.bgCtx.Err() != nil {
		st.vu.stop(ctx) // never started: closes its crypto
		st.vu, st.err = nil, ErrStopped
		return nil, ErrStopped
	}
	vm.users[userID] = st.vu
	// The sync loop outlives the request that created the user: log with
	// the service's logger, not the caller's (e.g. a command's event
	// fields). Started under the lock, so stopAll sees it.
	syncLog := zerolog.Ctx(vm.svc.bgCtx).With().Stringer("virtual_user", userID).Logger()
	st.vu.start(syncLog.WithContext(vm.svc.bgCtx), &vm.svc.wg, st.vu.since)
	zerolog.Ctx(ctx).Info().Stringer("virtual_user", userID).Stringer("device_id", st.vu.deviceID).Msg("Virtual user ready")
	return st.vu, nil
}

// startingUser is a virtual user being set up by one Get; others wait for
// done.
type startingUser struct {
	done chan struct{}
	vu   *VirtualUser
	err  error
}

// open sets a virtual user up (registered, logged in with its stored
// device or a new one, its Olm machine open with the keys on the server)
// without starting its sync.
func (vm *VirtualUsers) open(ctx context.Context, userID id.UserID, handler ToDeviceHandler) (*VirtualUser, error) {
	log := zerolog.Ctx(ctx).With().Stringer("virtual_user", userID).Logger()
	ctx = log.WithContext(ctx)
	dev, since, err := vm.openDevice(ctx, userID, handler, nil)
	if err != nil {
		return nil, err
	}
	return &VirtualUser{Device: dev, intent: vm.svc.AS.Intent(userID), bot: vm.svc.Bot, states: vm.svc.AS.StateStore, joins: &vm.joins, since: since}, nil
}

// startDevice opens userID's device (see openDevice) and starts its sync,
// owned by the service (the bot's device).
func (vm *VirtualUsers) startDevice(ctx context.Context, userID id.UserID, handler ToDeviceHandler, stateStore mautrixcrypto.StateStore) (*Device, error) {
	dev, since, err := vm.openDevice(ctx, userID, handler, stateStore)
	if err != nil {
		return nil, err
	}
	// The sync loop outlives the request that created the device: log with
	// the service's logger, not the caller's (e.g. a command's event fields).
	syncLog := zerolog.Ctx(vm.svc.bgCtx).With().Stringer("user_id", userID).Logger()
	dev.start(syncLog.WithContext(vm.svc.bgCtx), &vm.svc.wg, since)
	return dev, nil
}

// openDevice registers userID (a namespaced user: a virtual user or the
// bot), logs in its stored device (or a new one) and opens its Olm machine
// with the keys on the server; it returns the device, not yet syncing, and
// the stored sync position. stateStore, when set, lets the device handle
// Megolm room events.
func (vm *VirtualUsers) openDevice(ctx context.Context, userID id.UserID, handler ToDeviceHandler, stateStore mautrixcrypto.StateStore) (*Device, string, error) {
	intent := vm.svc.AS.Intent(userID)
	if err := intent.EnsureRegistered(ctx); err != nil {
		return nil, "", fmt.Errorf("failed to register %s: %w", userID, err)
	}
	stored, err := vm.opts.Store.GetDevice(ctx, userID)
	if err != nil {
		return nil, "", fmt.Errorf("failed to load device of %s: %w", userID, err)
	}
	cli, stored, err := vm.ensureDevice(ctx, userID, stored)
	if err != nil {
		return nil, "", err
	}
	var olm *e2ee.Device
	if stateStore != nil {
		olm, err = e2ee.OpenForRooms(ctx, cli, vm.opts.CryptoDB, vm.opts.PickleKey, stateStore)
	} else {
		olm, err = e2ee.Open(ctx, cli, vm.opts.CryptoDB, vm.opts.PickleKey)
	}
	if err != nil {
		return nil, "", fmt.Errorf("failed to set up encryption for %s: %w", userID, err)
	}
	dev := newDevice(cli, olm, deviceOptions{
		store: vm.opts.Store, handler: handler, syncTimeout: vm.opts.SyncTimeout, maxBackoff: vm.opts.MaxBackoff,
		onSyncError: vm.opts.OnSyncError,
		relogin: func(ctx context.Context) (string, error) {
			relogged, _, err := vm.ensureDevice(ctx, userID, &StoredDevice{UserID: userID, DeviceID: cli.DeviceID})
			if err != nil {
				return "", err
			}
			return relogged.AccessToken, nil
		},
	})
	dev.olm = olm
	return dev, stored.NextBatch, nil
}

// ensureDevice reuses the stored access token when it still works, else logs
// in again with the stored device ID (a second login with the same device
// invalidates the old token, so we only log in when we must), else creates a
// new device.
func (vm *VirtualUsers) ensureDevice(ctx context.Context, userID id.UserID, stored *StoredDevice) (*mautrix.Client, *StoredDevice, error) {
	log := zerolog.Ctx(ctx)
	hsURL := vm.svc.cfg.Homeserver.Address
	if stored != nil && stored.AccessToken != "" {
		cli, err := vm.newClient(hsURL, userID, stored.DeviceID, stored.AccessToken)
		if err != nil {
			return nil, nil, err
		}
		who, err := cli.Whoami(ctx)
		if err == nil && who.UserID == userID && who.DeviceID == stored.DeviceID {
			log.Debug().Msg("Reusing stored access token")
			return cli, stored, nil
		}
		log.Info().Err(err).Msg("Stored access token is not usable, logging in again")
	}
	if stored == nil {
		stored = &StoredDevice{UserID: userID, DeviceID: id.DeviceID("REC" + strings.ToUpper(random.String(10)))}
	}
	loginCli, err := vm.newClient(hsURL, "", "", vm.svc.cfg.Appservice.ASToken)
	if err != nil {
		return nil, nil, err
	}
	resp, err := loginCli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID.Localpart()},
		DeviceID:                 stored.DeviceID,
		InitialDeviceDisplayName: "Call recorder",
	})
	if err != nil {
		return nil, nil, fmt.Errorf("appservice login of %s failed: %w", userID, err)
	}
	if resp.DeviceID != stored.DeviceID {
		log.Warn().Stringer("wanted", stored.DeviceID).Stringer("got", resp.DeviceID).Msg("Homeserver gave a different device ID")
	}
	stored.DeviceID, stored.AccessToken = resp.DeviceID, resp.AccessToken
	if err = vm.opts.Store.SaveDevice(ctx, stored); err != nil {
		return nil, nil, fmt.Errorf("failed to save device of %s: %w", userID, err)
	}
	cli, err := vm.newClient(hsURL, userID, stored.DeviceID, stored.AccessToken)
	return cli, stored, err
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

// Stop stops one virtual user's device (sync, then crypto) and waits for it.
func (vm *VirtualUsers) Stop(ctx context.Context, userID id.UserID) {
	vm.lock.Lock()
	vu := vm.users[userID]
	delete(vm.users, userID)
	vm.lock.Unlock()
	if vu != nil {
		vu.stop(ctx)
	}
}

func (vm *VirtualUsers) stopAll(ctx context.Context) {
	vm.lock.Lock()
	vm.stopped = true
	users := vm.users
	vm.users = make(map[id.UserID]*VirtualUser)
	vm.lock.Unlock()
	for _, vu := range users {
		vu.cancelSync() // all at once, then wait for each
	}
	for _, vu := range users {
		vu.stop(ctx)
	}
}

func (vm *VirtualUsers) lookup(userID id.UserID, deviceID id.DeviceID) *VirtualUser {
	vm.lock.Lock()
	defer vm.lock.Unlock()
	vu := vm.users[userID]
	if vu == nil || (deviceID != "" && vu.deviceID != deviceID) {
		return nil
	}
	return vu
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
