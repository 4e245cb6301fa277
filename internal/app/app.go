// Package app wires the recorder's components together; cmd/recorder runs it.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/archive"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/commands"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/mixdown"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/retention"
	"github.com/matrix-recorder/recorder/rooms"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
	"github.com/matrix-recorder/recorder/webhooks"
)

// Classes of startup failure New and Start wrap their errors in; cmd/recorder
// turns each into its exit code.
var (
	// ErrConfig means the configuration does not work (e.g. recordings.path
	// cannot be created).
	ErrConfig = errors.New("unusable configuration")
	// ErrDatabase means the database could not be opened, upgraded or read.
	ErrDatabase = errors.New("database failure")
	// ErrStartup means a component failed to start.
	ErrStartup = errors.New("startup failure")
)

// App is the whole running recorder.
type App struct {
	Config  *config.Config
	DB      *storage.DB
	AS      *appservice.Service
	Calls   *callbot.Manager
	RTC     *livekit.Manager
	Store   storage.FileStore
	Archive *archive.Recorder
	Rooms   *rooms.Controller
	Metrics *metrics.Metrics
	Web     *web.Server
	// Outputs of recordings: the mixdown queue, webhooks and retention.
	Mixdown   *mixdown.Queue
	Webhooks  *webhooks.Sender
	Retention *retention.Cleaner

	outputs       *outputs
	cancel        context.CancelFunc
	cancelPrepare context.CancelFunc // ends setting up ready_users
	wg            sync.WaitGroup
	stopping      atomic.Bool
}

// Options are optional parts of the app, mostly for tests.
type Options struct {
	// Observer also receives everything the call bot receives (tests).
	Observer callbot.Sink
	// Create opens recording files (tests inject write errors).
	Create recording.CreateFunc
	// SignalHold overrides how long signals from unlisted devices wait.
	SignalHold time.Duration
	// InviteTimeout overrides how long an invite the recorder placed waits
	// for its answer.
	InviteTimeout time.Duration
	// StopCheckInterval overrides how often stop conditions are checked.
	StopCheckInterval time.Duration
	// RoomKeyWait overrides how long an undecryptable event waits for its key.
	RoomKeyWait time.Duration
	// WebhookBackoff overrides the pause between webhook attempts.
	WebhookBackoff func(attempts int) time.Duration
	// MembershipExpiry overrides the expires of the recorder's MatrixRTC
	// memberships (renewed after three quarters of it).
	MembershipExpiry time.Duration
}

// New opens the database and builds every component; Start runs them. cfg
// must have passed Validate(true) (cmd/recorder does that, once). version
// is shown to users (help, User-Agent).
func New(ctx context.Context, cfg *config.Config, version string, opts Options) (*App, error) {
	if err := os.MkdirAll(cfg.Recordings.Path, 0o750); err != nil {
		return nil, fmt.Errorf("%w: config key recordings.path: %w", ErrConfig, err)
	}
	db, err := storage.Open(ctx, storage.Options{
		Type: cfg.Database.Type, URI: cfg.Database.URI,
		MaxOpenConns: cfg.Database.MaxOpenConns, MaxIdleConns: cfg.Database.MaxIdleConns,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	stateStore := sqlstatestore.NewSQLStateStore(db.Database, dbutil.ZeroLogger(zerolog.Ctx(ctx).With().Str("component", "state_store").Logger()), false)
	if err = stateStore.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: failed to upgrade state store: %w", ErrDatabase, err)
	}
	pickleKey, err := db.KV.GetOrCreate(ctx, "crypto_pickle_key", random.String(64))
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: failed to load the crypto pickle key: %w", ErrDatabase, err)
	}
	met := metrics.New()
	svc, err := appservice.New(appservice.Options{
		Config: appservice.Config{
			Homeserver: cfg.Homeserver, Appservice: cfg.Appservice, Permissions: cfg.Permissions, CommandPrefix: cfg.Commands.Prefix,
			MinPowerLevel: cfg.Commands.MinPowerLevel,
		},
		StateStore: stateStore, Version: version, RoomKeyWait: opts.RoomKeyWait,
		Txns: txnStore{db}, Rooms: roomStore{db},
		VirtualUsers: appservice.VirtualUsersOptions{
			Store: deviceStore{db}, CryptoDB: db.Database, PickleKey: []byte(pickleKey), OnSyncError: met.SyncErrors.Inc,
		},
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartup, err)
	}
	store, err := storage.NewLocalStore(cfg.Recordings.Path)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: config key recordings.path: %w", ErrConfig, err)
	}
	out, err := newOutputs(cfg, db, store, met.Registry, opts.WebhookBackoff)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartup, err)
	}
	expiry, err := retention.New(retention.Options{Store: retentionStore{db}, Files: store, Days: cfg.Recordings.Retention, Registerer: met.Registry})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartup, err)
	}
	var calls *callbot.Manager // set below; the archive's limit stops need it
	archOpts := archive.Options{DB: db, Store: store, Dir: cfg.Recordings.Path, Create: opts.Create, Metrics: met, Log: *zerolog.Ctx(ctx),
		Events: out, Profiles: profiles{svc: svc, wait: 3 * time.Second},
		Limits: archive.Limits{
			MaxRecordingBytes: cfg.Recordings.MaxRecordingSizeMB << 20, MaxDiskBytes: cfg.Recordings.MaxDiskUsageMB << 20,
			OnLimit: func(ctx context.Context, roomID id.RoomID, reason callbot.StopReason) {
				// The room controller announces the stop with its reason.
				if err := calls.LeaveFor(ctx, roomID, reason); err != nil && !errors.Is(err, callbot.ErrNotJoined) {
					zerolog.Ctx(ctx).Err(err).Stringer("room_id", roomID).Msg("Failed to stop a recording at its limit")
				}
			},
		}}
	if cfg.Recording.RequireConsent {
		archOpts.Consent = consentGate{db}
	}
	arch, err := archive.New(archOpts)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: config key recordings.path: %w", ErrConfig, err)
	}
	// The archive comes first: the controller's stop notice reads what it stored.
	ctl := rooms.New(rooms.Options{
		Config: cfg.Recording, CommandPrefix: cfg.Commands.Prefix, Matrix: roomMatrix{svc}, Settings: roomSettings{db},
		Recordings: storedRecordings{db}, Consent: arch, CheckInterval: opts.StopCheckInterval,
		RecordingLink: pageLink(cfg.API.PublicURL),
	})
	sink := callbot.Tee{arch, ctl}
	if opts.Observer != nil {
		sink = append(sink, opts.Observer)
	}
	calls, err = callbot.New(callbot.Options{
		Config: callbot.Config{WebRTC: cfg.WebRTC, CommandPrefix: cfg.Commands.Prefix, NoRecordingNotices: true, Limits: cfg.Limits},
		Matrix: callMatrix{svc}, Sink: sink, SignalHold: opts.SignalHold, InviteTimeout: opts.InviteTimeout, Metrics: met, RecordingID: archive.NewRecordingID,
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartup, err)
	}
	rtc := livekit.New(livekit.Options{
		Config: livekit.Config{AllowedHosts: cfg.MatrixRTC.AllowedHosts, MembershipExpiry: opts.MembershipExpiry},
		Matrix: rtcMatrix{svc}, Sink: sink, Metrics: met,
	})
	router := callRouter{mesh: calls, rtc: rtc}
	ctl.SetCalls(router)
	commands.Register(svc, commands.Options{
		Room: ctl, Recordings: db.Recording, Files: db.File, Recording: cfg.Recording, PublicURL: cfg.API.PublicURL,
		RetentionDays: cfg.Recordings.Retention, MembersStopOperatorRecordings: cfg.Commands.MembersStopOperatorRecordings,
	})
	a := &App{Config: cfg, DB: db, AS: svc, Calls: calls, RTC: rtc, Store: store, Archive: arch, Rooms: ctl, Metrics: met,
		Mixdown: out.mix, Webhooks: out.hooks, Retention: expiry, outputs: out}
	if cfg.API.Listen != "" {
		a.Web = web.NewServer(cfg.API.Listen, web.New(web.Options{
			Recordings: web.StorageRecordings(db), Files: arch.Files(), Calls: webCalls{m: router, ctl: ctl}, Tokens: cfg.API.Tokens,
			Mixdowns: webMixdowns{db: db, queue: out.mix}, RetentionDays: cfg.Recordings.Retention,
			Metrics: met, Ready: a.readyChecks(), PublicMetrics: !cfg.API.ProtectMetrics, AllowedHosts: cfg.API.HostNames(), TrustedProxies: cfg.API.TrustedProxies,
			Pprof: cfg.API.Pprof,
		}))
	}
	return a, nil
}

// Start starts every component. The homeserver must be reachable: the bot is
// registered here. (Dendrite has no appservice ping, so that is not a gate.)
func (app *App) Start(ctx context.Context) error {
	interrupted, err := app.DB.Recording.GetByState(ctx, storage.StateRecording)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	resume, err := app.Archive.Recover(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	app.outputs.recovered(ctx, interrupted)
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	app.cancel = cancel
	// The call bot first: the appservice delivers commands (a retried
	// `!rec start`) as soon as it listens.
	if err := app.Calls.Start(ctx); err != nil {
		return fmt.Errorf("%w: failed to set up WebRTC (config section webrtc): %w", ErrStartup, err)
	}
	app.Rooms.Start(ctx)
	if err := app.RTC.Start(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrStartup, err)
	}
	if err := app.AS.Start(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrStartup, err)
	}
	app.Rooms.JoinAutoRecordRooms(ctx)
	if app.Web != nil {
		if err := app.Web.Start(ctx); err != nil {
			return fmt.Errorf("%w: config key api.listen: %w", ErrStartup, err)
		}
	}
	app.wg.Add(1)
	go func() {
		defer app.wg.Done()
		app.pruneTransactions(bg)
	}()
	if n := app.Config.Appservice.ReadyUsers; n > 0 {
		// Stopped first thing in Stop: no user is set up while the
		// appservice stops.
		prepCtx, cancel := context.WithCancel(bg)
		app.cancelPrepare = cancel
		app.wg.Add(1)
		go func() {
			defer app.wg.Done()
			app.Calls.Prepare(prepCtx, n)
			app.RTC.Prepare(prepCtx, n)
		}()
	}
	app.Webhooks.Start(bg)
	if err := app.Mixdown.Start(bg); err != nil {
		return fmt.Errorf("%w: %w", ErrStartup, err)
	}
	app.Retention.Start(bg)
	for _, ac := range resume {
		app.wg.Add(1)
		go func() {
			defer app.wg.Done()
			app.rejoin(bg, ac)
		}()
	}
	return nil
}

// Rejoining a call after a restart is retried this long (the homeserver may
// be starting too), with this pause between attempts.
const (
	rejoinFor   = 2 * time.Minute
	rejoinPause = time.Second
)

// rejoin puts the recorder back into a call it was recording when it
// stopped, continuing the same recording; a call that ended meanwhile has
// its recording closed (stop reason recorder_restarted).
func (app *App) rejoin(ctx context.Context, ac *storage.ActiveCall) {
	log := zerolog.Ctx(ctx).With().Stringer("room_id", ac.RoomID).Str("recording_id", string(ac.RecordingID)).Logger()
	ctx = log.WithContext(ctx)
	deadline := time.Now().Add(rejoinFor)
	for {
		var st callbot.CallStatus
		var err error
		if signaling.ConfID(ac.ConfID) == livekit.ConfID {
			st, err = app.RTC.Rejoin(ctx, ac.RoomID, ac.UserID, string(ac.RecordingID))
		} else {
			st, err = app.Calls.Rejoin(ctx, ac.RoomID, ac.UserID, signaling.ConfID(ac.ConfID), string(ac.RecordingID))
		}
		if err == nil {
			log.Info().Str("session_id", string(st.SessionID)).Dur("down_for", time.Since(ac.JoinedAt)).Msg("Rejoined call after restart")
			return
		}
		if errors.Is(err, callbot.ErrStopped) {
			return // shutting down: the next start tries again
		}
		if errors.Is(err, callbot.ErrNoCall) || errors.Is(err, callbot.ErrAlreadyJoined) || time.Now().After(deadline) {
			log.Info().Err(err).Msg("Not rejoining the call recorded before the restart; closing its recording")
			if err = app.Archive.Abandon(ctx, ac.RecordingID); err != nil {
				log.Err(err).Msg("Failed to close recording")
			} else if rec, err := app.DB.Recording.Get(ctx, ac.RecordingID); err == nil && rec != nil {
				app.outputs.RecordingEnded(ctx, rec)
			}
			// The room still shows it recording: take the indicator down.
			app.Rooms.ClearInterrupted([]rooms.Interrupted{{RoomID: ac.RoomID, UserID: ac.UserID, RecordingID: string(ac.RecordingID)}})
			// No ghost participant: the killed process's entry goes.
			if signaling.ConfID(ac.ConfID) == livekit.ConfID {
				err = app.RTC.Unlist(ctx, ac.RoomID, ac.UserID)
			} else {
				err = app.Calls.Unlist(ctx, ac.RoomID, ac.UserID, signaling.ConfID(ac.ConfID))
			}
			if err != nil {
				log.Warn().Err(err).Msg("Failed to remove the recorder from the call member event")
			}
			return
		}
		log.Warn().Err(err).Msg("Failed to rejoin call after restart; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(rejoinPause):
		}
	}
}

// pruneTransactions forgets processed transaction IDs after a week; homeservers
// retry a transaction for far less than that.
func (app *App) pruneTransactions(ctx context.Context) {
	ticker := time.NewTicker(time.Hour)
	defer ticker.Stop()
	for {
		if err := app.DB.Txn.Prune(ctx, time.Now().Add(-7*24*time.Hour)); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune old transaction IDs")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

var errShuttingDown = errors.New("shutting down")

// archiveStopTimeout bounds waiting for the recording files to be
// finalized and stored on shutdown, after the calls were left.
const archiveStopTimeout = 5 * time.Second

// Stop stops every component and closes the database, last: it stops
// taking work (/readyz answers unavailable, joins fail with
// callbot.ErrStopped), leaves every call in parallel (peers get hangups,
// member events lose the bot's device) within part of ctx's time, stops
// the appservice and the API, waits for the writers to finalize and store
// their files (with a deadline of their own) and closes the database.
func (app *App) Stop(ctx context.Context) error {
	app.stopping.Store(true)
	if app.cancelPrepare != nil {
		app.cancelPrepare()
	}
	var errs []error
	// Calls first: leaving hangs up peers and rewrites member events, which
	// needs the virtual users and the homeserver connection. They get part
	// of the time, so the rest of the shutdown still fits.
	callsCtx, cancelCalls := ctx, context.CancelFunc(func() {})
	if deadline, ok := ctx.Deadline(); ok {
		callsCtx, cancelCalls = context.WithDeadline(ctx, deadline.Add(-time.Until(deadline)*3/10))
	}
	err := app.Calls.Stop(callsCtx)
	if err != nil {
		errs = append(errs, err)
	}
	if err := app.RTC.Stop(callsCtx); err != nil {
		errs = append(errs, err)
	}
	cancelCalls()
	// Then the room controller: it announces those stops.
	app.Rooms.Stop(ctx)
	if err := app.AS.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if app.Web != nil {
		if err := app.Web.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// After the calls: their ends still queue events and mixdowns.
	app.Retention.Stop()
	app.Mixdown.Stop()
	app.Webhooks.Stop()
	if app.cancel != nil {
		app.cancel()
	}
	app.wg.Wait()
	app.Archive.WaitStops()
	// The writers get a deadline of their own: a shutdown that used up its
	// time leaving calls still finalizes the files.
	archCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), archiveStopTimeout)
	defer cancel()
	if err := app.Archive.Stop(archCtx); err != nil {
		errs = append(errs, err)
	}
	if err := app.DB.Close(); err != nil {
		errs = append(errs, fmt.Errorf("failed to close database: %w", err))
	}
	return errors.Join(errs...)
}

// readyChecks are what /readyz runs: the database answers and the
// homeserver is reachable.
func (app *App) readyChecks() []web.ReadyCheck {
	return []web.ReadyCheck{
		{Name: "running", Check: func(context.Context) error {
			if app.stopping.Load() {
				return errShuttingDown
			}
			return nil
		}},
		{Name: "database", Check: func(ctx context.Context) error { return app.DB.RawDB.PingContext(ctx) }},
		{Name: "homeserver", Check: func(ctx context.Context) error {
			_, err := app.AS.Bot.Versions(ctx)
			return err
		}},
	}
}
