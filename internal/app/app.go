// Package app wires the recorder's components together; cmd/recorder runs it.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/archive"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/commands"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
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
	Metrics *metrics.Metrics
	Web     *web.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Options are optional parts of the app, mostly for tests.
type Options struct {
	// Observer also receives everything the call bot receives (tests).
	Observer callbot.Sink
	// Create opens recording files (tests inject write errors).
	Create recording.CreateFunc
	// SignalHold overrides how long signals from unlisted devices wait.
	SignalHold time.Duration
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
		},
		StateStore: stateStore, Version: version,
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
	arch, err := archive.New(archive.Options{DB: db, Store: store, Dir: cfg.Recordings.Path, Create: opts.Create, Metrics: met})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: config key recordings.path: %w", ErrConfig, err)
	}
	var sink callbot.Sink = arch
	if opts.Observer != nil {
		sink = callbot.Tee{arch, opts.Observer}
	}
	calls, err := callbot.New(callbot.Options{
		Config: callbot.Config{WebRTC: cfg.WebRTC, CommandPrefix: cfg.Commands.Prefix},
		Matrix: callMatrix{svc}, Sink: sink, SignalHold: opts.SignalHold, Metrics: met,
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: %w", ErrStartup, err)
	}
	rtc := livekit.New(livekit.Options{
		Config: livekit.Config{AllowedHosts: cfg.MatrixRTC.AllowedHosts, MembershipExpiry: opts.MembershipExpiry},
		Matrix: rtcMatrix{svc}, Sink: sink,
	})
	router := callRouter{mesh: calls, rtc: rtc}
	commands.Register(svc, router, db.Recording, db.File)
	a := &App{Config: cfg, DB: db, AS: svc, Calls: calls, RTC: rtc, Store: store, Archive: arch, Metrics: met}
	if cfg.API.Listen != "" {
		a.Web = web.NewServer(cfg.API.Listen, web.New(web.Options{
			Recordings: web.StorageRecordings(db), Files: store, Calls: webCalls{router}, Tokens: cfg.API.Tokens,
			Metrics: met, Ready: a.readyChecks(), PublicMetrics: !cfg.API.ProtectMetrics, AllowedHosts: cfg.API.HostNames(), TrustedProxies: cfg.API.TrustedProxies,
		}))
	}
	return a, nil
}

// Start starts every component. The homeserver must be reachable: the bot is
// registered here. (Dendrite has no appservice ping, so that is not a gate.)
func (app *App) Start(ctx context.Context) error {
	if err := app.Archive.Recover(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	app.cancel = cancel
	if err := app.AS.Start(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrStartup, err)
	}
	if err := app.Calls.Start(ctx); err != nil {
		return fmt.Errorf("%w: failed to set up WebRTC (config section webrtc): %w", ErrStartup, err)
	}
	if err := app.RTC.Start(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrStartup, err)
	}
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
	return nil
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

// Stop stops every component and closes the database.
func (app *App) Stop(ctx context.Context) error {
	var errs []error
	if app.Web != nil {
		if err := app.Web.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Calls first: leaving hangs up peers and rewrites member events, which
	// needs the virtual users and the homeserver connection.
	if err := app.Calls.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := app.RTC.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := app.AS.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if app.cancel != nil {
		app.cancel()
	}
	app.wg.Wait()
	if err := app.DB.Close(); err != nil {
		errs = append(errs, fmt.Errorf("failed to close database: %w", err))
	}
	return errors.Join(errs...)
}

// readyChecks are what /readyz runs: the database answers and the
// homeserver is reachable.
func (app *App) readyChecks() []web.ReadyCheck {
	return []web.ReadyCheck{
		{Name: "database", Check: func(ctx context.Context) error { return app.DB.RawDB.PingContext(ctx) }},
		{Name: "homeserver", Check: func(ctx context.Context) error {
			_, err := app.AS.Bot.Versions(ctx)
			return err
		}},
	}
}
