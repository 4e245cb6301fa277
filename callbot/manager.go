package callbot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/e2ee"
	"github.com/matrix-recorder/recorder/internal/metrics"
)

// Sentinel errors of this package.
var (
	// ErrAlreadyJoined means the room's call already has a recorder.
	ErrAlreadyJoined = errors.New("already in the call")
	// ErrNotJoined means there is no recorder in the room's call.
	ErrNotJoined = errors.New("not in a call in this room")
	// ErrNoCall means the room has no active group call.
	ErrNoCall = errors.New("no active group call in the room")
	// ErrPowerLevel means the room's power levels forbid the member event.
	ErrPowerLevel = errors.New("the room's power levels do not allow the recorder to join calls")
	// ErrStopped means the manager is shutting down.
	ErrStopped = errors.New("call bot stopped")
	// ErrTooManyCalls means the recorder is in as many calls as
	// limits.max_calls allows.
	ErrTooManyCalls = errors.New("the recorder is already in as many calls as it may record")
)

// Config is the call bot's section of the configuration.
type Config struct {
	WebRTC config.WebRTCConfig
	// CommandPrefix is what the room is told to say to stop a recording.
	CommandPrefix string
	// Limits bound what participants can make the recorder hold.
	Limits config.LimitsConfig
	// NoRecordingNotices leaves the "recording" and "stopped" notices to
	// someone else (the room controller announces both with more detail).
	NoRecordingNotices bool
}

// Options configure a Manager.
type Options struct {
	Config Config
	Matrix Matrix
	Sink   Sink
	// SignalHold overrides DefaultSignalHold (tests).
	SignalHold time.Duration
	// InviteTimeout overrides signaling.InviteTimeout, how long an invite
	// the bot placed waits for its answer (tests).
	InviteTimeout time.Duration
	// Metrics, if set, are updated with calls, peer states and timings.
	Metrics *metrics.Metrics
	// RecordingID mints the ID of a joined call's recording; the recording
	// side owns the rule (archive.NewRecordingID). CallInfo.ID and
	// CallStatus.ID carry it. Without it calls get a random ID (tests).
	RecordingID func(joined time.Time) string
}

// Manager owns every joined call. The virtual users' devices are the
// Matrix side's.
type Manager struct {
	cfg        Config
	mx         Matrix
	sink       Sink
	signalHold time.Duration
	met        *metrics.Metrics
	newID      func(time.Time) string
	// Protocol timings and bounds; tests shorten them.
	inviteTimeout time.Duration
	retryPeriod   time.Duration
	slowHandler   time.Duration
	leaveFlush    time.Duration
	leaveState    time.Duration
	// memberRenew, memberRetry: when the member event is renewed, and
	// retried after a failure; stateTimeout bounds one attempt.
	memberRenew, memberRetry, stateTimeout time.Duration
	api                                    *webrtc.API
	closeAPI                               func() error

	lock    sync.Mutex
	calls   map[id.RoomID]*Call
	joining map[id.RoomID]bool
	byUser  map[id.UserID]*Call
	inUse   map[id.UserID]bool
	stopped bool

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup

	statsLock sync.Mutex
	ignored   map[IgnoreReason]int64

	// kinds is how to send to each device (true for Olm): the way it last
	// signalled, or the other way after it left an invite unanswered
	// without a word. It outlives calls and sessions: a page reloaded
	// with another client keeps its device id.
	kindLock sync.Mutex
	kinds    map[signaling.DeviceKey]bool
}

// maxKinds bounds the devices whose signalling kind is remembered.
const maxKinds = 4096

// noteKind remembers whether to Olm-encrypt what goes to a device.
func (m *Manager) noteKind(key signaling.DeviceKey, olm bool) {
	m.kindLock.Lock()
	defer m.kindLock.Unlock()
	if _, ok := m.kinds[key]; !ok && len(m.kinds) >= maxKinds {
		clear(m.kinds)
	}
	m.kinds[key] = olm
}

// sendOlm says whether to Olm-encrypt what goes to a device: as noted, or
// Olm to a device that has shown nothing yet (Hydrogen drops plaintext).
func (m *Manager) sendOlm(key signaling.DeviceKey) bool {
	m.kindLock.Lock()
	defer m.kindLock.Unlock()
	olm, known := m.kinds[key]
	return olm || !known
}

// IgnoreReason says why a to-device call event was not acted on.
type IgnoreReason string

// Reasons for ignoring call signalling.
const (
	IgnoredMalformed      IgnoreReason = "malformed"
	IgnoredWrongOlmDevice IgnoreReason = "olm_device_mismatch"
	IgnoredNotInRoom      IgnoreReason = "sender_not_in_room"
	IgnoredNotInCall      IgnoreReason = "device_not_in_call"
	IgnoredInbox          IgnoreReason = "inbox_drop" // wrong session/conf, duplicate seq, unknown call
)

func (m *Manager) countIgnored(reason IgnoreReason) {
	m.statsLock.Lock()
	defer m.statsLock.Unlock()
	m.ignored[reason]++
}

// Ignored returns how many call events were ignored for a reason.
func (m *Manager) Ignored(reason IgnoreReason) int64 {
	m.statsLock.Lock()
	defer m.statsLock.Unlock()
	return m.ignored[reason]
}

// New builds the manager and registers its room event handlers with the
// Matrix side.
func New(opts Options) (*Manager, error) {
	sink := opts.Sink
	if sink == nil {
		sink = DiscardSink{}
	}
	m := &Manager{
		cfg: opts.Config, mx: opts.Matrix, sink: sink,
		closeAPI: func() error { return nil }, signalHold: opts.SignalHold, met: opts.Metrics,
		calls: map[id.RoomID]*Call{}, joining: map[id.RoomID]bool{}, byUser: map[id.UserID]*Call{},
		inUse: map[id.UserID]bool{}, ignored: map[IgnoreReason]int64{}, kinds: map[signaling.DeviceKey]bool{},
	}
	for _, t := range []string{signaling.StateGroupCall.Type, signaling.StateGroupCallStable.Type,
		signaling.StateCallMember.Type, signaling.StateCallMemberStable.Type} {
		opts.Matrix.OnRoomEvent(event.Type{Type: t, Class: event.StateEventType}, m.handleRoomState)
	}
	opts.Matrix.OnRoomEvent(event.StateMember, m.handleRoomState)
	if m.signalHold <= 0 {
		m.signalHold = DefaultSignalHold
	}
	m.newID = opts.RecordingID
	if m.newID == nil {
		m.newID = func(time.Time) string { return strings.ToLower(random.String(16)) }
	}
	m.inviteTimeout, m.retryPeriod, m.slowHandler = signaling.InviteTimeout, signaling.RetryInterval, slowHandlerAfter
	if opts.InviteTimeout > 0 {
		m.inviteTimeout = opts.InviteTimeout
	}
	m.leaveFlush, m.leaveState = leaveFlushTimeout, leaveStateTimeout
	m.memberRenew, m.memberRetry, m.stateTimeout = signaling.MemberRenewAfter, memberRetryDelay, memberStateTimeout
	return m, nil
}

// Start builds the WebRTC stack (logging into ctx's logger) and gives the
// manager its background context.
func (m *Manager) Start(ctx context.Context) error {
	api, closer, err := NewAPI(m.cfg.WebRTC, APIOptions{Log: *zerolog.Ctx(ctx)})
	if err != nil {
		return err
	}
	bgCtx, bgCancel := context.WithCancel(context.WithoutCancel(ctx))
	// Join reads these under the lock: the appservice may already deliver
	// commands.
	m.lock.Lock()
	defer m.lock.Unlock()
	m.api, m.closeAPI = api, closer
	m.bgCtx, m.bgCancel = bgCtx, bgCancel
	return nil
}

// Stop leaves every call, all at once (hanging up and removing the member
// events). The virtual users' devices stay up for that; the Matrix side
// stops them after.
func (m *Manager) Stop(ctx context.Context) error {
	m.lock.Lock()
	m.stopped = true
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	bgCancel, closeAPI := m.bgCancel, m.closeAPI
	m.lock.Unlock()
	for _, c := range calls {
		c.post(leaveMsg{reason: StopShutdown}) // all at once; waited for below
	}
	for _, c := range calls {
		select {
		case <-c.done:
		case <-ctx.Done():
		}
	}
	if bgCancel != nil {
		bgCancel()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("timed out waiting for calls to end: %w", ctx.Err())
	}
	return errors.Join(err, closeAPI())
}

// Calls returns a snapshot of every joined call.
func (m *Manager) Calls(ctx context.Context) []CallStatus {
	m.lock.Lock()
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.lock.Unlock()
	out := make([]CallStatus, 0, len(calls))
	for _, c := range calls {
		if st, err := c.requestStatus(ctx); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// Status returns the call in a room.
func (m *Manager) Status(ctx context.Context, roomID id.RoomID) (CallStatus, error) {
	m.lock.Lock()
	c := m.calls[roomID]
	m.lock.Unlock()
	if c == nil {
		return CallStatus{}, ErrNotJoined
	}
	return c.requestStatus(ctx)
}

func (c *Call) requestStatus(ctx context.Context) (CallStatus, error) {
	reply := make(chan CallStatus, 1)
	c.post(statusMsg{reply: reply})
	select {
	case st := <-reply:
		return st, nil
	case <-c.done:
		return CallStatus{}, ErrNotJoined
	case <-ctx.Done():
		return CallStatus{}, ctx.Err()
	}
}

func (c *Call) requestLeave(ctx context.Context, reason StopReason) error {
	c.post(leaveMsg{reason: reason})
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Leave takes the recorder out of the room's call (StopAsked).
func (m *Manager) Leave(ctx context.Context, roomID id.RoomID) error {
	return m.LeaveFor(ctx, roomID, StopAsked)
}

// LeaveFor takes the recorder out of the room's call for a reason, which
// the sink's CallLeft gets in CallInfo.StopReason.
func (m *Manager) LeaveFor(ctx context.Context, roomID id.RoomID, reason StopReason) error {
	m.lock.Lock()
	c := m.calls[roomID]
	m.lock.Unlock()
	if c == nil {
		return ErrNotJoined
	}
	return c.requestLeave(ctx, reason)
}

// Prepare sets the first n virtual users up before a call needs them: each
// registered, its device logged in with its keys on the homeserver, and
// syncing (PrepareUsers).
func (m *Manager) Prepare(ctx context.Context, n int) {
	PrepareUsers(ctx, n, m.mx.VirtualUserID, func(ctx context.Context, userID id.UserID) error {
		_, err := m.mx.Device(ctx, userID, m.deviceHandler(userID))
		return err
	})
}

// PrepareUsers starts the devices of users 1..n one after the other, so the
// homeserver is not asked for all at once. A user whose device is stored
// from an earlier run is only started. A call joining meanwhile waits only
// for the user it takes. It returns when all are ready or ctx ends; a user
// that fails is logged and left to the call that takes it.
func PrepareUsers(ctx context.Context, n int, userID func(n int) id.UserID, start func(context.Context, id.UserID) error) {
	for i := 1; i <= n && ctx.Err() == nil; i++ {
		u := userID(i)
		if err := start(ctx, u); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("virtual_user", u).Msg("Failed to set up a virtual user ahead of calls")
		}
	}
}

// deviceHandler is the to-device handler of the virtual user's device.
func (m *Manager) deviceHandler(userID id.UserID) ToDeviceHandler {
	return func(ctx context.Context, received []e2ee.Received) {
		m.handleDeviceEvents(ctx, userID, received)
	}
}

// handleDeviceEvents runs on a virtual user's device goroutine: it routes
// call signalling to the user's call.
func (m *Manager) handleDeviceEvents(ctx context.Context, userID id.UserID, received []e2ee.Received) {
	now := time.Now()
	m.lock.Lock()
	c := m.byUser[userID]
	m.lock.Unlock()
	for _, rcv := range received {
		if !signaling.IsCallEventType(rcv.Type.Type) {
			continue
		}
		if c == nil {
			zerolog.Ctx(ctx).Debug().Str("event_type", rcv.Type.Type).Stringer("sender", rcv.Sender).Msg("Dropping call event: not in a call")
			continue
		}
		c.post(signalMsg{rcv: rcv, at: now})
	}
}

func (m *Manager) handleRoomState(ctx context.Context, evt *event.Event) {
	m.lock.Lock()
	c := m.calls[evt.RoomID]
	m.lock.Unlock()
	if c != nil {
		c.post(stateMsg{evt: evt})
	}
}

func (m *Manager) notice(ctx context.Context, roomID id.RoomID, text string) {
	m.mx.SendNotice(ctx, roomID, text, "")
}

// peerState moves a peer connection between states in the metrics.
func (m *Manager) peerState(from, to webrtc.PeerConnectionState) {
	if m.met != nil {
		m.met.PeerStateChanged(metricsState(from), metricsState(to))
	}
}

// metricsState is a state's metrics label; "" for none.
func metricsState(st webrtc.PeerConnectionState) string {
	if st == webrtc.PeerConnectionStateUnknown {
		return ""
	}
	return st.String()
}
