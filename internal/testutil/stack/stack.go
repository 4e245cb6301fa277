// Package stack runs the whole recorder in-process against a real Dendrite for
// integration tests: config, registration, homeserver and app.
package stack

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/app"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/recording"
)

// Options tunes the stack.
type Options struct {
	// Permissions replaces the default map ("*": user).
	Permissions map[string]config.PermissionLevel
	// Database overrides the SQLite default (e.g. a pgtest URI).
	DatabaseType, DatabaseURI string
	// Observer receives everything the call bot receives.
	Observer callbot.Sink
	// Create opens recording files (inject write errors).
	Create recording.CreateFunc
	// API enables the operator API on a free loopback port with APIToken.
	API bool
	// Configure changes the recorder's config before it starts.
	Configure func(*config.Config)
	// StopCheckInterval overrides how often stop conditions are checked.
	StopCheckInterval time.Duration
	// RoomKeyWait overrides how long an undecryptable event waits for its key.
	RoomKeyWait time.Duration
	// WebhookBackoff overrides the pause between webhook attempts.
	WebhookBackoff func(attempts int) time.Duration
	// Federation turns Dendrite's federation API on (MatrixRTC tests: the
	// authorization service checks OpenID tokens through it).
	Federation bool
	// MembershipExpiry overrides the recorder's MatrixRTC membership expiry.
	MembershipExpiry time.Duration
	// InviteTimeout overrides how long the recorder's mesh invites wait
	// for an answer.
	InviteTimeout time.Duration
}

// Stack is a running Dendrite plus a running recorder.
type Stack struct {
	HS     *homeserver.Server
	Config *config.Config
	App    *app.App
	Dir    string

	ctx  context.Context
	opts Options
}

// Start starts Dendrite with the recorder's registration, then the recorder.
// Both stop when the test ends.
func Start(t *testing.T, opts Options) *Stack {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := config.Default()
	cfg.Homeserver.Domain = homeserver.Domain
	cfg.Homeserver.Address = "http://127.0.0.1:1" // replaced once Dendrite runs
	cfg.Appservice.Hostname = "127.0.0.1"
	cfg.Appservice.Port = port
	cfg.Appservice.Address = "http://127.0.0.1:" + strconv.Itoa(port)
	cfg.Database.URI = "file:" + filepath.Join(dir, "recorder.db") + "?_txlock=immediate"
	if opts.DatabaseType != "" {
		cfg.Database.Type, cfg.Database.URI = opts.DatabaseType, opts.DatabaseURI
	}
	cfg.Recordings.Path = filepath.Join(dir, "recordings")
	cfg.API.Listen = ""
	if opts.API {
		cfg.API.Listen = "127.0.0.1:" + strconv.Itoa(freePort(t))
		cfg.API.Tokens = []string{APIToken}
	}
	cfg.Logging.MinLevel = "debug"
	cfg.WebRTC = config.WebRTCConfig{LoopbackOnly: true}
	cfg.Permissions = opts.Permissions
	if cfg.Permissions == nil {
		cfg.Permissions = map[string]config.PermissionLevel{"*": config.PermissionUser}
	}
	cfg.Mixdown.Enabled = false
	// Tests start many recorders on fresh databases and Dendrites: users
	// are set up by the calls that take them, unless a test asks
	// (TestReadyUsers).
	cfg.Appservice.ReadyUsers = 0
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	reg := appservice.GenerateRegistration(cfg.Homeserver, cfg.Appservice)
	cfg.Appservice.ASToken, cfg.Appservice.HSToken = reg.AppToken, reg.ServerToken
	regPath := filepath.Join(dir, "registration.yaml")
	require.NoError(t, reg.Save(regPath))

	hs := homeserver.Start(t, homeserver.Options{RegistrationFiles: []string{regPath}, Federation: opts.Federation})
	cfg.Homeserver.Address = hs.URL
	require.NoError(t, cfg.Validate(true))

	log := zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger().Level(zerolog.InfoLevel)
	s := &Stack{HS: hs, Config: cfg, Dir: dir, ctx: log.WithContext(context.Background()), opts: opts}
	s.startApp(t)
	return s
}

// APIToken is the operator API token of stacks started with Options.API.
const APIToken = "test-api-token-0123456789"

// APIURL is the base URL of the operator API.
func (s *Stack) APIURL() string { return "http://" + s.Config.API.Listen }

// WriteConfig writes the stack's config as a YAML file for running the
// recorder binary, and returns its path.
func (s *Stack) WriteConfig(t *testing.T) string {
	t.Helper()
	data, err := yaml.Marshal(s.Config)
	require.NoError(t, err)
	path := filepath.Join(s.Dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// StartApp starts the recorder again after StopApp.
func (s *Stack) StartApp(t *testing.T) {
	t.Helper()
	s.startApp(t)
}

// Ctx is a context carrying the test logger.
func (s *Stack) Ctx() context.Context { return s.ctx }

func (s *Stack) startApp(t *testing.T) {
	t.Helper()
	recorder, err := app.New(s.ctx, s.Config, "test", app.Options{Observer: s.opts.Observer, Create: s.opts.Create, SignalHold: 2 * time.Second,
		StopCheckInterval: s.opts.StopCheckInterval, RoomKeyWait: s.opts.RoomKeyWait, WebhookBackoff: s.opts.WebhookBackoff,
		MembershipExpiry: s.opts.MembershipExpiry, InviteTimeout: s.opts.InviteTimeout})
	require.NoError(t, err)
	require.NoError(t, recorder.Start(s.ctx))
	s.App = recorder
	t.Cleanup(func() { s.StopApp(t) })
}

// StopApp stops the recorder (idempotent).
func (s *Stack) StopApp(t *testing.T) {
	t.Helper()
	if s.App == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
	defer cancel()
	require.NoError(t, s.App.Stop(ctx))
	s.App = nil
}

// RestartApp stops the recorder and starts a new one on the same config and database.
func (s *Stack) RestartApp(t *testing.T) {
	t.Helper()
	s.StopApp(t)
	s.startApp(t)
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := testutil.FreePort()
	require.NoError(t, err)
	return port
}
