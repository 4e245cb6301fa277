// Package jsclient runs a real matrix-js-sdk client in a legacy MSC3401 full-mesh
// group call, for integration tests of the call bot against the reference client.
//
// Each Client is one headless Debian Chromium, launched and driven by a Node
// script (js/driver.mjs, puppeteer-core) that bundles js/page.js with
// matrix-js-sdk, serves it from 127.0.0.1 and answers newline-delimited JSON
// commands on its stdin/stdout. The page creates the js-sdk client with
// useE2eForGroupCall: false (plaintext to-device signalling), starts it, waits
// for the room, then creates the room's group call (m.video, intent m.room) if
// there is none or joins the existing one, and enter()s it with Chromium's fake
// camera and microphone. It drops every non-loopback remote ICE candidate, so all
// media stays on 127.0.0.1.
//
// With Options.SDK = SDK36 the page is bundled against matrix-js-sdk 36 (npm
// alias matrix-js-sdk-36) instead, and Options.Crypto = CryptoLegacy gives it
// the legacy Olm/Megolm crypto with libolm (@matrix-org/olm), so encrypted
// rooms and Olm-encrypted call signalling can be tested against the client
// most deployed Element versions used. SendText and Messages send and read
// (decrypted) room messages.
//
// With Options.MatrixRTCServiceURL the page is a MatrixRTC client instead
// (js/rtcpage.js: js-sdk 43 MatrixRTCSession + livekit-client 2.21, as Element
// Call), and with Options.E2EE it behaves as Element Call in an encrypted
// room: Rust crypto (wasm served by the driver), device keys uploaded before
// the membership, per-participant media keys sent Olm-encrypted to every
// member's device (io.element.call.encryption_keys) and rotated on leaves,
// livekit-client frame encryption (its E2EE worker served by the driver) with
// a key provider fed by the session, as Element Call's MatrixKeyProvider.
// RTCState reports the keys, what each remote track decoded and livekit-client's
// encryption errors; WaitKey, WaitDecoding, WaitOwnKeyRotation and
// WaitKeySentTo wait on them (e2ee.go).
//
// Setup: scripts/jsclient.sh (Debian chromium + `npm ci` in js/). Start fails the
// test, never skips it, when that has not been run.
//
// Two clients must not start in the same room at the same moment: each would
// create its own group call. Start returns only once the client has entered and
// its member event is in room state, so starting them one after the other is
// enough.
package jsclient

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"maunium.net/go/mautrix/id"
)

const (
	// DefaultChromium is Debian's chromium; JSCLIENT_CHROMIUM overrides it.
	DefaultChromium = "/usr/bin/chromium"

	// LaunchTimeout bounds driver startup: bundling, Chromium launch, page load.
	LaunchTimeout = 45 * time.Second
	// DefaultStartTimeout bounds the js-sdk start: first sync, room, group call,
	// enter() and the member event echo.
	DefaultStartTimeout = 45 * time.Second
	// StopTimeout is how long the driver gets to close Chromium and exit.
	StopTimeout = 15 * time.Second
	// leaveTimeout bounds the leave done by the cleanup.
	leaveTimeout = 10 * time.Second
	// pollInterval is how often WaitFor takes a state snapshot.
	pollInterval = 100 * time.Millisecond

	logTailBytes = 16000
)

// ErrExited is returned by commands when the driver process has exited.
var ErrExited = errors.New("jsclient driver exited")

// Options configures Start.
type Options struct {
	// HomeserverURL is the client-server API base URL (a 127.0.0.1 address).
	HomeserverURL string
	UserID        id.UserID
	AccessToken   string
	DeviceID      id.DeviceID
	// RoomID is a room the user has already joined.
	RoomID id.RoomID
	// Video sends camera video as well as microphone audio. Without it the client
	// captures audio only (and creates an m.voice call if it creates one).
	Video bool
	// StartTimeout overrides DefaultStartTimeout.
	StartTimeout time.Duration
	// LogLevel is the js-sdk logger level ("trace", "debug", "info", "warn");
	// default "info". The browser console goes to ConsoleLogPath.
	LogLevel string
	// SDK selects the matrix-js-sdk: "" is 43; SDK36 is 36, the last
	// release with the legacy Olm/Megolm crypto.
	SDK string
	// Crypto turns on end-to-end encryption: CryptoLegacy (js-sdk 36,
	// libolm) or CryptoRust (the Rust crypto of newer js-sdks). Messages in
	// encrypted rooms are then encrypted and decrypted.
	Crypto string
	// E2EGroupCall Olm-encrypts the call's to-device signalling
	// (useE2eForGroupCall; needs Crypto).
	E2EGroupCall bool
	// MatrixRTCServiceURL, when set, runs the MatrixRTC page instead of the
	// mesh one: the client joins the room's MatrixRTC session (m.call) with
	// this authorization service as its LiveKit focus and publishes its
	// microphone (and simulcast camera) with livekit-client. State() does not
	// apply to it; use RTCState.
	MatrixRTCServiceURL string
	// E2EE runs the MatrixRTC page the way Element Call runs in an encrypted
	// room (needs MatrixRTCServiceURL): Rust crypto with the device keys
	// uploaded before the membership, media keys managed by the session and
	// sent Olm-encrypted to every member's device, and livekit-client's
	// per-participant frame encryption fed with them. RTCState.E2EE and
	// RTCState.Remotes report the keys and the decoded media.
	E2EE bool
}

// js-sdk versions and crypto implementations for Options.
const (
	SDK36        = "36"
	CryptoLegacy = "legacy"
	CryptoRust   = "rust"
)

// Client is one running js-sdk client in one browser.
type Client struct {
	opts Options
	name string // for messages: the user and device

	dir            string // temp dir: Chromium profile, console log, driver stderr
	consoleLogPath string
	stderrPath     string

	cmd        *exec.Cmd
	stdin      io.WriteCloser
	browserPid int
	done       chan struct{} // closed when the driver exited and was reaped
	waitErr    error         // valid after done is closed
	ready      chan readyEvent

	writeMu sync.Mutex // serialises command lines on stdin

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan response
	left    bool
}

type readyEvent struct {
	Event      string `json:"event"`
	Error      string `json:"error"`
	Pid        int    `json:"pid"`
	BrowserPid int    `json:"browserPid"`
	URL        string `json:"url"`
}

type response struct {
	ID     int64           `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

type request struct {
	ID   int64  `json:"id"`
	Cmd  string `json:"cmd"`
	Args any    `json:"args,omitempty"`
}

// startArgs is what window.harness.start receives.
type startArgs struct {
	HomeserverURL string      `json:"homeserverUrl"`
	UserID        id.UserID   `json:"userId"`
	AccessToken   string      `json:"accessToken"`
	DeviceID      id.DeviceID `json:"deviceId"`
	RoomID        id.RoomID   `json:"roomId"`
	Video         bool        `json:"video"`
	TimeoutMs     int64       `json:"timeoutMs"`
	LogLevel      string      `json:"logLevel,omitempty"`
	Crypto        string      `json:"crypto,omitempty"`
	E2EGroupCall  bool        `json:"e2eGroupCall,omitempty"`
	ServiceURL    string      `json:"serviceUrl,omitempty"`
	E2EE          bool        `json:"e2ee,omitempty"`
}

// Start launches a js-sdk client that joins (or creates) the room's group call,
// and returns once it has entered the call and its member event is in room state.
// The test's cleanup leaves the call, closes the browser and stops the driver; if
// the test failed it logs the browser console and the driver's stderr.
func Start(t testing.TB, opts Options) *Client {
	t.Helper()
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.E2EE && opts.MatrixRTCServiceURL == "" {
		t.Fatalf("jsclient: Options.E2EE needs MatrixRTCServiceURL (it is a mode of the MatrixRTC page)")
	}
	jsDir, chromium := prerequisites(t)

	c := &Client{
		opts:    opts,
		name:    fmt.Sprintf("%s/%s", opts.UserID, opts.DeviceID),
		dir:     t.TempDir(),
		done:    make(chan struct{}),
		ready:   make(chan readyEvent, 1),
		pending: make(map[int64]chan response),
	}
	c.consoleLogPath = filepath.Join(c.dir, "console.log")
	c.stderrPath = filepath.Join(c.dir, "driver.stderr")

	if err := c.launch(jsDir, chromium); err != nil {
		t.Fatalf("jsclient %s: %v", c.name, err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { c.cleanup(t) })

	if err := c.waitReady(); err != nil {
		t.Fatalf("jsclient %s: %v", c.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout+5*time.Second)
	defer cancel()
	err := c.call(ctx, "start", startArgs{
		HomeserverURL: opts.HomeserverURL,
		UserID:        opts.UserID,
		AccessToken:   opts.AccessToken,
		DeviceID:      opts.DeviceID,
		RoomID:        opts.RoomID,
		Video:         opts.Video,
		TimeoutMs:     opts.StartTimeout.Milliseconds(),
		LogLevel:      opts.LogLevel,
		Crypto:        opts.Crypto,
		E2EGroupCall:  opts.E2EGroupCall,
		ServiceURL:    opts.MatrixRTCServiceURL,
		E2EE:          opts.E2EE,
	}, nil)
	if err != nil {
		t.Fatalf("jsclient %s: failed to start the js-sdk client: %v", c.name, err)
	}
	return c
}

// prerequisites returns the JS project directory and the Chromium binary, or
// fails the test with the command that installs them.
func prerequisites(t testing.TB) (jsDir, chromium string) {
	t.Helper()
	const fix = "run scripts/jsclient.sh (or make test)"
	jsDir = filepath.Join(testutil.ModuleRoot(t), "internal", "testutil", "jsclient", "js")
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("jsclient: node is not installed: %s", fix)
	}
	chromium = os.Getenv("JSCLIENT_CHROMIUM")
	if chromium == "" {
		chromium = DefaultChromium
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("jsclient: no Chromium at %s (%v): %s", chromium, err, fix)
	}
	lock, err := os.ReadFile(filepath.Join(jsDir, "package-lock.json"))
	if err != nil {
		t.Fatalf("jsclient: %v", err)
	}
	sum := sha256.Sum256(lock)
	stamp, err := os.ReadFile(filepath.Join(jsDir, "node_modules", ".package-lock.sha256"))
	if err != nil || strings.TrimSpace(string(stamp)) != hex.EncodeToString(sum[:]) {
		t.Fatalf("jsclient: %s/node_modules is missing or does not match package-lock.json: %s", jsDir, fix)
	}
	return jsDir, chromium
}

// launch starts the driver and the goroutine that reads its stdout.
func (c *Client) launch(jsDir, chromium string) error {
	stderr, err := os.Create(c.stderrPath)
	if err != nil {
		return fmt.Errorf("failed to create driver stderr file: %w", err)
	}
	cmd := exec.Command("node", filepath.Join(jsDir, "driver.mjs"),
		"--chromium", chromium,
		"--user-data-dir", filepath.Join(c.dir, "profile"),
		"--console-log", c.consoleLogPath,
		"--launch-timeout-ms", fmt.Sprint(LaunchTimeout.Milliseconds()),
		"--sdk", c.opts.SDK,
	)
	if c.opts.MatrixRTCServiceURL != "" {
		cmd.Args = append(cmd.Args, "--page", "rtc")
	}
	cmd.Dir = jsDir
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		_ = stderr.Close()
		return fmt.Errorf("failed to create stdin pipe: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stderr.Close()
		return fmt.Errorf("failed to create stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		_ = stderr.Close()
		return fmt.Errorf("failed to start node driver: %w", err)
	}
	c.cmd = cmd
	c.stdin = stdin
	// The reader owns stdout; it reaps the process once stdout is drained
	// (exec.Cmd.Wait must not run before all reads are done).
	go func() {
		c.readLoop(stdout)
		c.waitErr = cmd.Wait()
		_ = stderr.Close()
		c.failPending()
		close(c.done)
	}()
	return nil
}

func (c *Client) readLoop(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var probe struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			continue // not ours; the driver writes nothing else to stdout
		}
		if probe.Event != "" {
			var ev readyEvent
			if json.Unmarshal(line, &ev) == nil {
				select {
				case c.ready <- ev:
				default:
				}
			}
			continue
		}
		var resp response
		if err := json.Unmarshal(line, &resp); err != nil {
			continue
		}
		c.mu.Lock()
		ch := c.pending[resp.ID]
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- resp // buffered
		}
	}
}

// failPending unblocks commands still waiting when the driver is gone.
func (c *Client) failPending() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ch := range c.pending {
		ch <- response{ID: id, Error: ErrExited.Error()}
		delete(c.pending, id)
	}
}

func (c *Client) waitReady() error {
	timer := time.NewTimer(LaunchTimeout + 5*time.Second)
	defer timer.Stop()
	select {
	case ev := <-c.ready:
		if ev.Event != "ready" {
			return fmt.Errorf("driver failed to start: %s", ev.Error)
		}
		c.browserPid = ev.BrowserPid
		return nil
	case <-c.done:
		return fmt.Errorf("driver exited during startup (%v); stderr:\n%s", c.waitErr, tail(c.stderrPath))
	case <-timer.C:
		return fmt.Errorf("driver not ready within %s", LaunchTimeout)
	}
}

// call sends a command and decodes its result into out (if not nil).
func (c *Client) call(ctx context.Context, cmd string, args, out any) error {
	ch := make(chan response, 1)
	c.mu.Lock()
	c.nextID++
	reqID := c.nextID
	c.pending[reqID] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, reqID)
		c.mu.Unlock()
	}

	line, err := json.Marshal(request{ID: reqID, Cmd: cmd, Args: args})
	if err != nil {
		forget()
		return fmt.Errorf("failed to encode %s: %w", cmd, err)
	}
	c.writeMu.Lock()
	_, err = c.stdin.Write(append(line, '\n'))
	c.writeMu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("failed to send %s: %w", cmd, err)
	}

	select {
	case resp := <-ch:
		if resp.Error == ErrExited.Error() {
			return fmt.Errorf("%s: %w", cmd, ErrExited)
		}
		if !resp.OK {
			return fmt.Errorf("%s: %s", cmd, resp.Error)
		}
		if out != nil {
			if err := json.Unmarshal(resp.Result, out); err != nil {
				return fmt.Errorf("failed to decode %s result: %w", cmd, err)
			}
		}
		return nil
	case <-c.done:
		forget()
		return fmt.Errorf("%s: %w", cmd, ErrExited)
	case <-ctx.Done():
		forget()
		return fmt.Errorf("%s: %w", cmd, ctx.Err())
	}
}

// State returns a snapshot of the client's view of the call.
func (c *Client) State(ctx context.Context) (*State, error) {
	var st State
	if err := c.call(ctx, "state", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Message is a room message as the client sees it: decrypted when it could
// be, with DecryptionFailure when not.
type Message struct {
	EventID           id.EventID `json:"eventId"`
	Sender            id.UserID  `json:"sender"`
	Type              string     `json:"type"`     // after decryption
	WireType          string     `json:"wireType"` // m.room.encrypted when it was encrypted
	Encrypted         bool       `json:"encrypted"`
	DecryptionFailure bool       `json:"decryptionFailure"`
	MsgType           string     `json:"msgtype"`
	Body              string     `json:"body"`
	ReplyTo           id.EventID `json:"replyTo"`
}

// SendText sends a text message to the room (encrypted in an encrypted
// room) and returns its event ID.
func (c *Client) SendText(ctx context.Context, body string) (id.EventID, error) {
	var evtID id.EventID
	err := c.call(ctx, "sendText", map[string]string{"body": body}, &evtID)
	return evtID, err
}

// Messages returns the room's messages on the client's live timeline.
func (c *Client) Messages(ctx context.Context) ([]Message, error) {
	var msgs []Message
	err := c.call(ctx, "messages", nil, &msgs)
	return msgs, err
}

// RTCState is the MatrixRTC page's state: its membership, LiveKit
// connection and publications.
type RTCState struct {
	StartError string         `json:"startError"`
	Joined     bool           `json:"joined"`
	Membership map[string]any `json:"membership"`
	LiveKit    *struct {
		State    string   `json:"state"`
		SID      string   `json:"sid"`
		Identity string   `json:"identity"`
		Remotes  []string `json:"remotes"`
	} `json:"livekit"`
	Publications []struct {
		Source    string `json:"source"`
		Kind      string `json:"kind"`
		Muted     bool   `json:"muted"`
		SID       string `json:"sid"`
		Simulcast bool   `json:"simulcast"`
	} `json:"publications"`
	Times map[string]int64 `json:"times"` // ms from start: deviceKeys (E2EE), membership, connected, published

	// E2EE is set in E2EE mode (Options.E2EE).
	E2EE *E2EEState `json:"e2ee"`
	// Remotes are the LiveKit room's remote participants and their tracks'
	// receive counters (E2EE mode only).
	Remotes []RemoteParticipant `json:"remoteParticipants"`
}

// RTCState returns the MatrixRTC page's state.
func (c *Client) RTCState(ctx context.Context) (*RTCState, error) {
	var st RTCState
	if err := c.call(ctx, "state", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SetMicMuted mutes or unmutes the microphone (GroupCall.setMicrophoneMuted).
func (c *Client) SetMicMuted(ctx context.Context, muted bool) error {
	return c.call(ctx, "setMicMuted", map[string]bool{"muted": muted}, nil)
}

// SetVideoMuted mutes or unmutes the camera (GroupCall.setLocalVideoMuted).
func (c *Client) SetVideoMuted(ctx context.Context, muted bool) error {
	return c.call(ctx, "setVideoMuted", map[string]bool{"muted": muted}, nil)
}

// SetScreensharing starts or stops a screen share
// (GroupCall.setScreensharingEnabled); headless Chromium captures its own tab.
func (c *Client) SetScreensharing(ctx context.Context, enabled bool) error {
	return c.call(ctx, "setScreensharing", map[string]bool{"enabled": enabled}, nil)
}

// Leave leaves the group call (GroupCall.leave: hangs up every peer call) and
// returns once the client's device is gone from its member event.
func (c *Client) Leave(ctx context.Context) error {
	timeout := leaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	err := c.call(ctx, "leave", map[string]int64{"timeoutMs": timeout.Milliseconds()}, nil)
	if err == nil {
		c.mu.Lock()
		c.left = true
		c.mu.Unlock()
	}
	return err
}

// Close leaves the call if still in it, then closes the browser and stops
// the driver before the test ends: the device's to-device messages then go
// to the next client that syncs as it (the homeserver hands them to
// whichever /sync of the device asks first). The test's cleanup still logs
// the console on failure.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if !left {
		if err := c.Leave(ctx); err != nil {
			return err
		}
	}
	return c.stop()
}

// WaitFor polls the state until cond accepts it and returns that state, or fails
// the test after timeout with the last state seen.
func (c *Client) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(*State) bool) *State {
	t.Helper()
	return waitState(t, c, timeout, what, c.State, cond, Summary)
}

// waitState polls a page's state (read) until cond accepts it, or fails the
// test after timeout with the last state seen (summary).
func waitState[S any](t testing.TB, c *Client, timeout time.Duration, what string,
	read func(context.Context) (*S, error), cond func(*S) bool, summary func(*S) string) *S {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last *S
	var lastErr error
	for {
		st, err := read(ctx)
		if err == nil {
			last = st
			if cond(st) {
				return st
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
			if errors.Is(err, ErrExited) {
				t.Fatalf("jsclient %s: driver exited while waiting for %s: %v", c.name, what, err)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jsclient %s: timed out after %s waiting for %s (last error: %v); last state:\n%s",
				c.name, timeout, what, lastErr, summary(last))
			return nil
		case <-tick.C:
		}
	}
}

// UserID returns the client's user.
func (c *Client) UserID() id.UserID { return c.opts.UserID }

// DeviceID returns the client's device.
func (c *Client) DeviceID() id.DeviceID { return c.opts.DeviceID }

// ConsoleLogPath is the file collecting the browser console (js-sdk logs).
func (c *Client) ConsoleLogPath() string { return c.consoleLogPath }

// cleanup leaves the call if still in it, stops the driver and Chromium, and on
// failure logs the browser console and the driver's stderr.
func (c *Client) cleanup(t testing.TB) {
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	select {
	case <-c.done:
		if err := c.reapBrowser(); err != nil {
			t.Errorf("jsclient %s: %v", c.name, err)
		}
	default:
		if !left {
			ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
			if err := c.Leave(ctx); err != nil {
				t.Logf("jsclient %s: leave during cleanup failed: %v", c.name, err)
			}
			cancel()
		}
		if err := c.stop(); err != nil {
			t.Errorf("jsclient %s: %v", c.name, err)
		}
	}
	if t.Failed() {
		t.Logf("jsclient %s: browser console (%s):\n%s", c.name, c.consoleLogPath, tail(c.consoleLogPath))
		t.Logf("jsclient %s: driver stderr:\n%s", c.name, tail(c.stderrPath))
	}
}

// stop asks the driver to close Chromium and exit; after StopTimeout it kills
// the driver and Chromium's process group by pid.
func (c *Client) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = c.call(ctx, "close", nil, nil) // the driver may exit before answering
	cancel()
	_ = c.stdin.Close() // EOF also makes the driver exit

	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-c.done:
		return c.reapBrowser()
	case <-timer.C:
	}
	pid := c.cmd.Process.Pid
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("failed to kill driver (pid %d): %w", pid, err)
	}
	<-c.done
	_ = c.reapBrowser()
	return fmt.Errorf("driver (pid %d) did not exit within %s and was killed", pid, StopTimeout)
}

// reapBrowser kills Chromium's process group if it outlived the driver.
// puppeteer starts Chromium detached, as the leader of its own group, so the
// group holds exactly the browser and its helper processes.
func (c *Client) reapBrowser() error {
	if c.browserPid <= 0 {
		return nil
	}
	if err := syscall.Kill(c.browserPid, 0); err != nil {
		return nil // gone
	}
	if err := syscall.Kill(-c.browserPid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to kill Chromium (pgid %d): %w", c.browserPid, err)
	}
	return fmt.Errorf("chromium (pid %d) outlived the driver and was killed", c.browserPid)
}

// Summary renders the interesting parts of a state for failure messages.
func Summary(st *State) string {
	if st == nil {
		return "(no state)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "user=%s device=%s sync=%s groupCall=%s state=%s startError=%q turn=%q dropped=%d/%d\n",
		st.UserID, st.DeviceID, st.SyncState, st.GroupCallID, st.GroupCallState, st.StartError, st.TurnServer,
		st.DroppedRemoteCandidates, st.DroppedRemoteSDPCandidates)
	for _, p := range st.Participants {
		fmt.Fprintf(&b, "  participant %s/%s session=%s\n", p.UserID, p.DeviceID, p.SessionID)
	}
	for _, f := range st.Feeds {
		fmt.Fprintf(&b, "  feed %s/%s %s local=%t audioMuted=%t videoMuted=%t tracks=%da/%dv\n",
			f.UserID, f.DeviceID, f.Purpose, f.Local, f.AudioMuted, f.VideoMuted, f.AudioTracks, f.VideoTracks)
	}
	for _, pc := range st.Calls {
		fmt.Fprintf(&b, "  call %s with %s/%s %s state=%s pc=%s ice=%s in=%v out=%v pair=%+v hangup=%q\n",
			pc.CallID, pc.UserID, pc.DeviceID, pc.Direction, pc.State, pc.ConnectionState, pc.ICEConnectionState,
			pc.Inbound, pc.Outbound, pc.CandidatePair, pc.HangupReason)
	}
	return b.String()
}

// tail returns the end of a file.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	if len(data) > logTailBytes {
		data = append([]byte("...\n"), data[len(data)-logTailBytes:]...)
	}
	return string(data)
}
