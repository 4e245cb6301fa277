// Package livekit records MatrixRTC calls held on a LiveKit SFU (Element
// Call, Element X): a virtual recorder user publishes its own m.call
// membership, gets an SFU token from the call's focus (the authorization
// service: OpenID token → /sfu/get), connects with server-sdk-go, subscribes
// to every track and hands them to the same callbot.Sink the mesh calls
// use. The recording side does not know which transport a track came from.
//
// Each joined call has one loop goroutine owning its state; LiveKit and
// Matrix callbacks only post messages to it. Every track has a reader
// goroutine owned by its call.
package livekit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit/framecrypt"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/internal/metrics"
)

// Kind is this transport's name in CallStatus.Kind.
const Kind = "matrixrtc"

// Sentinel errors of this package.
var (
	// ErrHostNotAllowed means the call's focus is not on the configured allow-list.
	ErrHostNotAllowed = errors.New("the call's LiveKit focus is not on the allow-list")
	// ErrFocus means the authorization service or the SFU could not be used.
	ErrFocus = errors.New("could not get into the LiveKit room")
)

// Matrix is what this transport needs of the Matrix side (internal/app
// provides it over the appservice).
type Matrix interface {
	// VirtualUserID is the n-th recorder user of MatrixRTC calls (n ≥ 1).
	VirtualUserID(n int) id.UserID
	// Device returns the virtual user's running device; onToDevice gets
	// its decrypted to-device events (members' media keys).
	Device(ctx context.Context, userID id.UserID, onToDevice callbot.ToDeviceHandler) (Device, error)
	// RoomState reads a room's current state as the bot.
	RoomState(ctx context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error)
	// OnRoomEvent registers a handler for room events of a type.
	OnRoomEvent(evtType event.Type, handler func(ctx context.Context, evt *event.Event))
	// PowerLevels are the room's power levels.
	PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error)
	// SendNotice posts markdown as the bot's m.notice.
	SendNotice(ctx context.Context, roomID id.RoomID, markdown string, replyTo id.EventID)
}

// Device is a virtual user's device as a MatrixRTC call uses it.
type Device interface {
	UserID() id.UserID
	DeviceID() id.DeviceID
	// JoinRoom makes the user a member of the room (the bot invites it).
	JoinRoom(ctx context.Context, roomID id.RoomID) error
	// SetState sends a state event as the user.
	SetState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any) error
	// OpenIDToken asks the homeserver for an OpenID token of the user.
	OpenIDToken(ctx context.Context) (*mautrix.RespOpenIDToken, error)
}

// Config is this transport's configuration.
type Config struct {
	// AllowedHosts, when not empty, are the only hosts (host or host:port)
	// of authorization services and SFUs the recorder connects to.
	AllowedHosts []string
	// MembershipExpiry is the expires of the recorder's own membership; it
	// is re-sent after three quarters of it (default matrixrtc.DefaultExpires).
	MembershipExpiry time.Duration
	// EmptyGrace is how long the call may have no member on its SFUs before
	// the recorder leaves (default 15 s: members joining or reconnecting).
	EmptyGrace time.Duration
}

// Options configure a Manager.
type Options struct {
	Config Config
	Matrix Matrix
	Sink   callbot.Sink
	// HTTPClient talks to authorization services (default: 15 s timeout).
	HTTPClient *http.Client
	// Metrics, if set, counts contained panics.
	Metrics *metrics.Metrics
}

// Manager owns every joined MatrixRTC call.
type Manager struct {
	cfg  Config
	mx   Matrix
	sink callbot.Sink
	http *http.Client
	met  *metrics.Metrics

	lock    sync.Mutex
	calls   map[id.RoomID]*Call
	joining map[id.RoomID]id.UserID // the virtual user joining the room
	inUse   map[id.UserID]bool
	stopped bool

	// keys are members' media keys, by room and device (keys.go).
	keysLock sync.Mutex
	keys     map[id.RoomID]map[deviceKey]*framecrypt.Keys

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup
}

// New builds the manager and registers its room event handler.
func New(opts Options) *Manager {
	if opts.Config.MembershipExpiry <= 0 {
		opts.Config.MembershipExpiry = matrixrtc.DefaultExpires
	}
	if opts.Config.EmptyGrace <= 0 {
		opts.Config.EmptyGrace = 15 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if opts.Sink == nil {
		opts.Sink = callbot.DiscardSink{}
	}
	m := &Manager{cfg: opts.Config, mx: opts.Matrix, sink: opts.Sink, http: opts.HTTPClient, met: opts.Metrics,
		calls: map[id.RoomID]*Call{}, joining: map[id.RoomID]id.UserID{}, inUse: map[id.UserID]bool{},
		keys: map[id.RoomID]map[deviceKey]*framecrypt.Keys{}}
	opts.Matrix.OnRoomEvent(matrixrtc.StateType, m.handleRoomState)
	return m
}

// Start gives the manager its background context (and logger). server-sdk-go
// logs its pion stack through a process-wide logger only: that one is set
// to ctx's logger here too.
func (m *Manager) Start(ctx context.Context) error {
	lksdk.SetLogger(newLogger(*zerolog.Ctx(ctx)))
	m.lock.Lock()
	defer m.lock.Unlock()
	m.bgCtx, m.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	return nil
}

// Stop leaves every call, removing the recorder's memberships.
func (m *Manager) Stop(ctx context.Context) error {
	m.lock.Lock()
	m.stopped = true
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.lock.Unlock()
	for _, c := range calls {
		_ = c.requestLeave(ctx, "recorder shutting down", callbot.StopShutdown)
	}
	if m.bgCancel != nil {
		m.bgCancel()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("timed out waiting for MatrixRTC calls to end: %w", ctx.Err())
	}
}

// HasSession reports whether the room has a MatrixRTC m.call session:
// at least one valid membership of someone else than the recorder users.
func (m *Manager) HasSession(ctx context.Context, roomID id.RoomID) (bool, error) {
	state, err := m.mx.RoomState(ctx, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to read room state: %w", err)
	}
	s := matrixrtc.Read(state, time.Now())
	for _, mem := range s.Members {
		if !m.isRecorder(mem.UserID) {
			return true, nil
		}
	}
	return false, nil
}

// Prepare sets the first n MatrixRTC virtual users up before a call needs
// them (callbot.PrepareUsers).
func (m *Manager) Prepare(ctx context.Context, n int) {
	callbot.PrepareUsers(ctx, n, m.mx.VirtualUserID, func(ctx context.Context, userID id.UserID) error {
		_, err := m.mx.Device(ctx, userID, m.toDeviceHandler(userID))
		return err
	})
}

// InCall reports whether the recorder is in (or joining) the room's MatrixRTC call.
func (m *Manager) InCall(roomID id.RoomID) bool {
	m.lock.Lock()
	defer m.lock.Unlock()
	return m.calls[roomID] != nil || m.joining[roomID] != ""
}

func (m *Manager) isRecorder(userID id.UserID) bool {
	for n := 1; n <= 64; n++ {
		if m.mx.VirtualUserID(n) == userID {
			return true
		}
	}
	return false
}

// Calls returns a snapshot of every joined call.
func (m *Manager) Calls(ctx context.Context) []callbot.CallStatus {
	m.lock.Lock()
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.lock.Unlock()
	out := make([]callbot.CallStatus, 0, len(calls))
	for _, c := range calls {
		if st, err := c.requestStatus(ctx); err == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoomID < out[j].RoomID })
	return out
}

// Status returns the call in a room.
func (m *Manager) Status(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	m.lock.Lock()
	c := m.calls[roomID]
	m.lock.Unlock()
	if c == nil {
		return callbot.CallStatus{}, callbot.ErrNotJoined
	}
	return c.requestStatus(ctx)
}

// Leave takes the recorder out of the room's call (callbot.StopAsked).
func (m *Manager) Leave(ctx context.Context, roomID id.RoomID) error {
	return m.LeaveFor(ctx, roomID, callbot.StopAsked)
}

// LeaveFor takes the recorder out of the room's call for a reason, which
// the sink's CallLeft reports.
func (m *Manager) LeaveFor(ctx context.Context, roomID id.RoomID, reason callbot.StopReason) error {
	m.lock.Lock()
	c := m.calls[roomID]
	m.lock.Unlock()
	if c == nil {
		return callbot.ErrNotJoined
	}
	return c.requestLeave(ctx, "asked to leave: "+string(reason), reason)
}

func (m *Manager) handleRoomState(_ context.Context, evt *event.Event) {
	m.lock.Lock()
	c := m.calls[evt.RoomID]
	m.lock.Unlock()
	if c != nil {
		c.post(stateMsg{evt: evt})
	}
}

// reserve picks the lowest-numbered free virtual user for the room (or
// the given one: a rejoin after a restart).
func (m *Manager) reserve(roomID id.RoomID, userID id.UserID) (id.UserID, error) {
	m.lock.Lock()
	defer m.lock.Unlock()
	if m.stopped || m.bgCtx == nil {
		return "", callbot.ErrStopped
	}
	if m.calls[roomID] != nil || m.joining[roomID] != "" {
		return "", callbot.ErrAlreadyJoined
	}
	userID, err := callbot.FreeUser(m.inUse, userID, m.mx.VirtualUserID)
	if err != nil {
		return "", err
	}
	m.inUse[userID] = true
	m.joining[roomID] = userID
	return userID, nil
}

func (m *Manager) forget(c *Call) {
	m.lock.Lock()
	defer m.lock.Unlock()
	if m.calls[c.roomID] == c {
		delete(m.calls, c.roomID)
	}
	delete(m.inUse, c.dev.UserID())
	m.dropKeys(c.roomID)
}

// Join puts a virtual recorder user into the room's MatrixRTC call: it
// returns once the recorder's membership is published and it is connected
// to the SFU; tracks follow in the call's loop.
func (m *Manager) Join(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	return m.join(ctx, roomID, "", "")
}

// Rejoin puts the virtual user that was recording the room's call when the
// recorder stopped back into it, continuing the same recording: its new
// membership replaces the one the stopped process left (same state key).
// A call without other members any more is ErrNoCall.
func (m *Manager) Rejoin(ctx context.Context, roomID id.RoomID, userID id.UserID, recordingID string) (callbot.CallStatus, error) {
	return m.join(ctx, roomID, userID, recordingID)
}

// Unlist removes the membership a stopped recorder process left for the
// virtual user in a call it does not rejoin (no ghost participant).
func (m *Manager) Unlist(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	m.lock.Lock()
	busy := m.inUse[userID]
	m.lock.Unlock()
	if busy {
		return fmt.Errorf("%w: %s is in a call", callbot.ErrAlreadyJoined, userID)
	}
	dev, err := m.mx.Device(ctx, userID, m.toDeviceHandler(userID))
	if err != nil {
		return fmt.Errorf("failed to start virtual user: %w", err)
	}
	state, err := m.mx.RoomState(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read room state: %w", err)
	}
	key := matrixrtc.StateKey(userID, dev.DeviceID())
	if evt := state[matrixrtc.StateType][key]; evt == nil || len(evt.Content.VeryRaw) <= 2 {
		return nil // none, or already {}
	}
	if err = dev.SetState(ctx, roomID, matrixrtc.StateType, key, struct{}{}); err != nil {
		return fmt.Errorf("failed to remove the stale membership: %w", err)
	}
	return nil
}

func (m *Manager) join(ctx context.Context, roomID id.RoomID, want id.UserID, recordingID string) (callbot.CallStatus, error) {
	userID, err := m.reserve(roomID, want)
	if err != nil {
		return callbot.CallStatus{}, err
	}
	log := zerolog.Ctx(m.bgCtx).With().Stringer("room_id", roomID).Stringer("virtual_user", userID).Str("call_kind", Kind).Logger()
	c, err := m.prepare(log.WithContext(ctx), roomID, userID, recordingID)
	m.lock.Lock()
	delete(m.joining, roomID)
	if err != nil || m.stopped {
		delete(m.inUse, userID)
		m.lock.Unlock()
		m.dropKeys(roomID)
		if err == nil {
			c.shutdown(log.WithContext(context.WithoutCancel(ctx)))
			err = callbot.ErrStopped
		}
		return callbot.CallStatus{}, err
	}
	m.calls[roomID] = c
	m.lock.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c.run(log.WithContext(m.bgCtx))
	}()
	return c.baseStatus(), nil
}
