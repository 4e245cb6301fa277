// Package homeserver runs a real Dendrite homeserver for integration tests.
//
// The Dendrite binary comes from .tools/bin (scripts/homeserver.sh install, or
// make tools) and its configuration is written by `scripts/homeserver.sh config`,
// the one place that defines the config text. Every Server has its own state
// directory under t.TempDir(), listens on a free 127.0.0.1 port, is named
// "localhost", has federation off and open registration (UIA m.login.dummy), and
// is stopped when the test ends. Its output goes to dendrite.log in that
// directory; the tail of it is printed when the test fails.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// Domain is the server_name of every test homeserver.
	Domain = "localhost"

	// StartTimeout bounds how long Start waits for /_matrix/client/versions.
	StartTimeout = 30 * time.Second
	// StopTimeout is how long Dendrite gets to exit after SIGTERM before SIGKILL.
	StopTimeout = 10 * time.Second

	logTailBytes = 8000
	startRetries = 3
)

// Event types whose power level CallPowerLevelsZero sets to 0.
var callEventTypes = []string{
	"org.matrix.msc3401.call",
	"org.matrix.msc3401.call.member",
	"m.call",
	"m.call.member",
}

// Options configures Start.
type Options struct {
	// RegistrationFiles are appservice registration YAML files loaded through
	// app_service_api.config_files.
	RegistrationFiles []string
	// Federation turns Dendrite's federation API on (loopback only, as
	// everything): it serves /_matrix/federation/v1/openid/userinfo, which
	// a MatrixRTC authorization service checks OpenID tokens with.
	Federation bool
}

// Server is a running Dendrite.
type Server struct {
	// URL is the client-server API base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Domain is the server name ("localhost"); user IDs are @name:Domain.
	Domain string
	// Dir is the state directory: dendrite.yaml, SQLite files, dendrite.log.
	Dir string
	// SharedSecret is client_api.registration_shared_secret.
	SharedSecret string

	binary  string
	port    int
	logPath string

	mu   sync.Mutex
	proc *process
}

// process is one run of the dendrite binary.
type process struct {
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when cmd.Wait returns
	waitErr error         // valid after done is closed
}

// Start starts a Dendrite for the test and stops it when the test ends. It fails
// the test (never skips) if Dendrite is not installed or does not come up.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	root := testutil.ModuleRoot(t)
	binary := filepath.Join(root, ".tools", "bin", "dendrite")
	if _, err := os.Stat(binary); err != nil {
		t.Fatalf("homeserver: Dendrite is not installed at %s (%v): run `make tools` or `scripts/homeserver.sh install`", binary, err)
	}

	s := &Server{
		Domain: Domain,
		Dir:    t.TempDir(),
		binary: binary,
	}
	s.logPath = filepath.Join(s.Dir, "dendrite.log")
	t.Cleanup(func() {
		s.stop(t)
		if _, err := os.Stat(s.logPath); err == nil && t.Failed() {
			t.Logf("homeserver: tail of %s:\n%s", s.logPath, s.LogTail())
		}
	})

	var lastErr error
	for attempt := 0; attempt < startRetries; attempt++ {
		port, err := testutil.FreePort()
		if err != nil {
			t.Fatalf("homeserver: %v", err)
		}
		s.configure(t, root, port, opts.Federation, opts.RegistrationFiles)
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		// Another process may have taken the port between freePort and bind.
		if !strings.Contains(s.LogTail(), "address already in use") {
			break
		}
	}
	// The cleanup prints the log tail.
	t.Fatalf("homeserver: failed to start Dendrite: %v", lastErr)
	return nil
}

// configure writes dendrite.yaml for port through scripts/homeserver.sh config.
func (s *Server) configure(t testing.TB, root string, port int, federation bool, registrationFiles []string) {
	t.Helper()
	args := append([]string{filepath.Join(root, "scripts", "homeserver.sh"), "config", s.Dir, strconv.Itoa(port)}, registrationFiles...)
	cmd := exec.Command("bash", args...)
	if federation {
		cmd.Env = append(os.Environ(), "HOMESERVER_FEDERATION=1")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("homeserver: scripts/homeserver.sh config failed: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "dendrite.yaml"))
	if err != nil {
		t.Fatalf("homeserver: failed to read generated config: %v", err)
	}
	var cfg struct {
		ClientAPI struct {
			RegistrationSharedSecret string `yaml:"registration_shared_secret"`
		} `yaml:"client_api"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("homeserver: generated config is not valid YAML: %v", err)
	}
	s.port = port
	s.URL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.SharedSecret = cfg.ClientAPI.RegistrationSharedSecret
}

// start runs the binary and waits until it answers /versions.
func (s *Server) start() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("failed to open log file: %w", err)
	}
	cmd := exec.Command(s.binary,
		"-config", filepath.Join(s.Dir, "dendrite.yaml"),
		"-really-enable-open-registration",
		"-http-bind-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
	)
	cmd.Dir = s.Dir
	// Dendrite dies with the test binary even if that is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("failed to exec %s: %w", s.binary, err)
	}
	p := &process{cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	if err := s.waitReady(p); err != nil {
		_ = s.stopProcess(p) // the startup error is the one worth reporting
		return err
	}
	return nil
}

func (s *Server) waitReady(p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	url := s.URL + "/_matrix/client/versions"
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := getOK(ctx, client, url)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("dendrite exited during startup: %w", p.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("dendrite did not answer %s within %s: %w", url, StartTimeout, err)
		case <-tick.C:
		}
	}
}

func getOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unexpected status %s", resp.Status)
	}
	return nil
}

// Restart stops Dendrite and starts it again on the same port with the same state
// directory, so users, rooms and devices survive (jetstream is in memory, so
// undelivered internal messages do not).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop(t)
	if err := s.start(); err != nil {
		t.Fatalf("homeserver: failed to restart Dendrite: %v", err) // the cleanup prints the log tail
	}
}

// Stop stops Dendrite (SIGTERM) until Start: an outage of the homeserver.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop(t)
}

// Pause freezes Dendrite (SIGSTOP) until Resume: a homeserver that accepts
// connections and answers nothing. The test's end resumes it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { s.signal(t, syscall.SIGCONT) })
}

// Resume lets a paused Dendrite run again (SIGCONT).
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT)
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("homeserver: failed to send %v to dendrite (pid %d): %v", sig, p.cmd.Process.Pid, err)
	}
}

// Start starts Dendrite again after Stop, on the same port and state.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("homeserver: failed to start Dendrite again: %v", err)
	}
}

// stop stops the current process, if any.
func (s *Server) stop(t testing.TB) {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := s.stopProcess(p); err != nil {
		t.Errorf("homeserver: %v", err)
	}
}

// stopProcess sends SIGTERM, then SIGKILL after StopTimeout, and waits for exit.
func (s *Server) stopProcess(p *process) error {
	select {
	case <-p.done:
		return nil // already exited
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("failed to send SIGTERM to dendrite (pid %d): %w", p.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("failed to kill dendrite (pid %d): %w", p.cmd.Process.Pid, err)
	}
	<-p.done
	return fmt.Errorf("dendrite (pid %d) ignored SIGTERM for %s and was killed", p.cmd.Process.Pid, StopTimeout)
}

// LogTail returns the end of dendrite.log.
func (s *Server) LogTail() string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(data) > logTailBytes {
		data = data[len(data)-logTailBytes:]
	}
	return string(data)
}

// UserID returns the user ID of localpart on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.Domain)
}

// Password returns the password RegisterUser gives localpart.
func Password(localpart string) string {
	return localpart + "-test-password"
}

// DeviceID returns the device ID RegisterUser logs localpart in with.
func DeviceID(localpart string) id.DeviceID {
	return id.DeviceID(strings.ToUpper(localpart) + "DEV")
}

// NewClient returns an unauthenticated client for this server.
func (s *Server) NewClient(t testing.TB) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatalf("homeserver: failed to create client: %v", err)
	}
	return cli
}

// RegisterUser registers localpart as a normal user through the UIA m.login.dummy
// flow (if it does not exist yet), logs it in by password with device
// DeviceID(localpart) and returns the logged-in client.
func (s *Server) RegisterUser(ctx context.Context, t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	return s.RegisterUserDevice(ctx, t, localpart, DeviceID(localpart))
}

// RegisterUserDevice is RegisterUser with a chosen device ID (clients may
// pick any device ID at login).
func (s *Server) RegisterUserDevice(ctx context.Context, t testing.TB, localpart string, deviceID id.DeviceID) *mautrix.Client {
	t.Helper()
	cli := s.NewClient(t)
	_, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{
		Username:     localpart,
		Password:     Password(localpart),
		InhibitLogin: true,
	})
	if err != nil && !errors.Is(err, mautrix.MUserInUse) {
		t.Fatalf("homeserver: failed to register %s: %v", localpart, err)
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         Password(localpart),
		DeviceID:         deviceID,
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("homeserver: failed to log in %s: %v", localpart, err)
	}
	return cli
}

// RoomOptions configures CreateRoom.
type RoomOptions struct {
	Name   string
	Invite []id.UserID
	// IsDirect marks the room as a DM (is_direct on the invites).
	IsDirect bool
	// Encrypted adds m.room.encryption (megolm) to the initial state.
	Encrypted bool
	// CallPowerLevelsZero lets every member send org.matrix.msc3401.call,
	// org.matrix.msc3401.call.member, m.call and m.call.member state events.
	// By default they need the state_default level (50).
	CallPowerLevelsZero bool
	// EventLevels sets the power level of more event types.
	EventLevels map[string]int
	// Preset defaults to private_chat.
	Preset string
}

// CreateRoom creates a room as creator and returns its ID.
func (s *Server) CreateRoom(ctx context.Context, t testing.TB, creator *mautrix.Client, opts RoomOptions) id.RoomID {
	t.Helper()
	req := &mautrix.ReqCreateRoom{
		Name:     opts.Name,
		Invite:   opts.Invite,
		IsDirect: opts.IsDirect,
		Preset:   opts.Preset,
	}
	if req.Preset == "" {
		req.Preset = "private_chat"
	}
	if opts.Encrypted {
		req.InitialState = append(req.InitialState, &event.Event{
			Type:     event.StateEncryption,
			StateKey: new(""),
			Content:  event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		})
	}
	if opts.CallPowerLevelsZero || len(opts.EventLevels) > 0 {
		// Dendrite merges the override into its defaults, so only these keys change.
		events := make(map[string]int, len(callEventTypes))
		if opts.CallPowerLevelsZero {
			for _, evtType := range callEventTypes {
				events[evtType] = 0
			}
		}
		for evtType, level := range opts.EventLevels {
			events[evtType] = level
		}
		req.PowerLevelOverride = &event.PowerLevelsEventContent{Events: events}
	}
	resp, err := creator.CreateRoom(ctx, req)
	if err != nil {
		t.Fatalf("homeserver: %s failed to create room: %v", creator.UserID, err)
	}
	return resp.RoomID
}
