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
	"github.com/matrix-recorder/recorder/internal/mailbox"
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
)

// Config is the call bot's section of the configuration.
type Config struct {
	WebRTC config.WebRTCConfig
	// CommandPrefix is what the room is told to say to stop a recording.
	CommandPrefix string
}

// Options configure a Manager.
type Options struct {
	Config Config
	Matrix Matrix
	Sink   Sink
	// SignalHold overrides DefaultSignalHold (tests).
	SignalHold time.Duration
	// Metrics, if set, are updated with calls, peer states and timings.
	Metrics *metrics.Metrics
}

// Manager owns every joined call. The virtual users' devices are the
// Matrix side's.
type Manager struct {
	cfg        Config
	mx         Matrix
	sink       Sink
	signalHold time.Duration
	met        *metrics.Metrics
	// Protocol timings; tests shorten them.
	inviteTimeout time.Duration
	retryPeriod   time.Duration
	slowHandler   time.Duration
	api           *webrtc.API
	closeAPI      func() error

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
		inUse: map[id.UserID]bool{}, ignored: map[IgnoreReason]int64{},
	}
	for _, t := range []string{signaling.StateGroupCall.Type, signaling.StateGroupCallStable.Type,
		signaling.StateCallMember.Type, signaling.StateCallMemberStable.Type} {
		opts.Matrix.OnRoomEvent(event.Type{Type: t, Class: event.StateEventType}, m.handleRoomState)
	}
	opts.Matrix.OnRoomEvent(event.StateMember, m.handleRoomState)
	if m.signalHold <= 0 {
		m.signalHold = DefaultSignalHold
	}
	m.inviteTimeout, m.retryPeriod, m.slowHandler = signaling.InviteTimeout, signaling.RetryInterval, slowHandlerAfter
	return m, nil
}

// Start builds the WebRTC stack (logging into ctx's logger) and gives the
// manager its background context.
func (m *Manager) Start(ctx context.Context) error {
	api, closer, err := newAPI(m.cfg.WebRTC, *zerolog.Ctx(ctx))
	if err != nil {
		return err
	}
	m.api, m.closeAPI = api, closer
	m.bgCtx, m.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	return nil
}

// Stop leaves every call (hanging up and removing the member events). The
// virtual users' devices stay up for that; the Matrix side stops them after.
func (m *Manager) Stop(ctx context.Context) error {
	m.lock.Lock()
	m.stopped = true
	calls := make([]*Call, 0, len(m.calls))
	for _, c := range m.calls {
		calls = append(calls, c)
	}
	m.lock.Unlock()
	for _, c := range calls {
		_ = c.requestLeave(ctx, "recorder shutting down")
	}
	if m.bgCancel != nil {
		m.bgCancel()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("timed out waiting for calls to end: %w", ctx.Err())
	}
	return errors.Join(err, m.closeAPI())
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

func (c *Call) requestLeave(ctx context.Context, reason string) error {
	c.post(leaveMsg{reason: reason})
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Leave takes the recorder out of the room's call.
func (m *Manager) Leave(ctx context.Context, roomID id.RoomID) error {
	m.lock.Lock()
	c := m.calls[roomID]
	m.lock.Unlock()
	if c == nil {
		return ErrNotJoined
	}
	return c.requestLeave(ctx, "asked to leave")
}

// Join puts a virtual recorder user into the room's group call. It returns
// once the member event is being published; peer calls follow in the loop.
func (m *Manager) Join(ctx context.Context, roomID id.RoomID) (CallStatus, error) {
	userID, err := m.reserve(roomID)
	if err != nil {
		return CallStatus{}, err
	}
	c, err := m.prepare(ctx, roomID, userID)
	m.lock.Lock()
	delete(m.joining, roomID)
	if err != nil || m.stopped {
		delete(m.inUse, userID)
		m.lock.Unlock()
		if err == nil {
			err = ErrStopped
		}
		return CallStatus{}, err
	}
	m.calls[roomID] = c
	m.byUser[userID] = c
	m.lock.Unlock()
	log := zerolog.Ctx(m.bgCtx).With().Stringer("room_id", roomID).Stringer("virtual_user", userID).Logger()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		c.run(log.WithContext(m.bgCtx))
	}()
	return CallStatus{ID: c.id, RoomID: roomID, ConfID: c.conf.ConfID, UserID: userID, DeviceID: c.dev.DeviceID(), SessionID: c.session, JoinedAt: c.joinedAt}, nil
}

// reserve picks the lowest-numbered free virtual user for the room.
func (m *Manager) reserve(roomID id.RoomID) (id.UserID, error) {
	m.lock.Lock()
	defer m.lock.Unlock()
	if m.stopped || m.bgCtx == nil {
		return "", ErrStopped
	}
	if m.calls[roomID] != nil || m.joining[roomID] {
		return "", ErrAlreadyJoined
	}
	for n := 1; ; n++ {
		userID := m.mx.VirtualUserID(n)
		if !m.inUse[userID] {
			m.inUse[userID] = true
			m.joining[roomID] = true
			return userID, nil
		}
	}
}

func (m *Manager) forget(c *Call) {
	m.lock.Lock()
	defer m.lock.Unlock()
	if m.calls[c.roomID] == c {
		delete(m.calls, c.roomID)
	}
	if m.byUser[c.dev.UserID()] == c {
		delete(m.byUser, c.dev.UserID())
	}
	delete(m.inUse, c.dev.UserID())
}

// prepare does everything before the call loop runs: the virtual user with
// its device and uploaded keys, room membership, the call, power levels.
func (m *Manager) prepare(ctx context.Context, roomID id.RoomID, userID id.UserID) (*Call, error) {
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Stringer("virtual_user", userID).Logger()
	ctx = log.WithContext(ctx)
	dev, err := m.mx.Device(ctx, userID, func(ctx context.Context, received []e2ee.Received) {
		m.handleDeviceEvents(ctx, userID, received)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to start virtual user: %w", err)
	}
	if !m.mx.IsInRoom(ctx, roomID, userID) {
		if err = dev.JoinRoom(ctx, roomID); err != nil {
			return nil, fmt.Errorf("failed to bring %s into the room: %w", userID, err)
		}
	}
	// Membership decides who counts as a participant: make sure the state
	// store has the room's members even if the bot joined long ago.
	if err = m.mx.LoadMembers(ctx, roomID); err != nil {
		return nil, fmt.Errorf("failed to read room members: %w", err)
	}
	state, err := dev.RoomState(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read room state: %w", err)
	}
	var callEvents []*event.Event
	for _, t := range []event.Type{signaling.StateGroupCall, signaling.StateGroupCallStable} {
		for _, evt := range state[t] {
			callEvents = append(callEvents, evt)
		}
	}
	conf, err := signaling.PickCall(callEvents)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCall, err)
	}
	memberType := signaling.StateCallMember
	if conf.EventType.Type == signaling.StateGroupCallStable.Type {
		memberType = signaling.StateCallMemberStable
	}
	if err = m.checkPowerLevel(ctx, roomID, userID, memberType); err != nil {
		return nil, err
	}
	session := signaling.SessionID(random.String(16))
	now := time.Now()
	c := &Call{
		id: now.UTC().Format("20060102T150405Z") + "-" + strings.ToLower(random.String(8)),
		m:  m, roomID: roomID, dev: dev, msgs: mailbox.New[any](), done: make(chan struct{}),
		conf: conf, memberType: memberType, session: session, streamID: "recorder-" + string(session),
		outbox:   signaling.NewOutbox(dev.DeviceID(), session),
		inbox:    signaling.NewInbox(signaling.InboxConfig{SessionID: session, Confs: []signaling.ConfID{conf.ConfID}}),
		joinedAt: now, memberEvents: map[id.UserID]*event.Event{},
		participants: map[signaling.DeviceKey]signaling.Participant{}, peers: map[signaling.DeviceKey]*peer{},
		byCallID: map[signaling.CallID]*peer{}, attempts: map[signaling.DeviceKey]*attemptState{},
		sendQ: mailbox.New[outgoing](), iceServers: m.iceServers(ctx),
	}
	for key, evt := range state[memberType] {
		if key != string(userID) {
			c.memberEvents[id.UserID(key)] = evt
		} else {
			c.ownMember = evt.Content.VeryRaw
		}
	}
	return c, nil
}

// checkPowerLevel refuses to join when the member event would be rejected,
// and says so in the room.
func (m *Manager) checkPowerLevel(ctx context.Context, roomID id.RoomID, userID id.UserID, memberType event.Type) error {
	pl, err := m.mx.PowerLevels(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read power levels: %w", err)
	}
	need, have := pl.GetEventLevel(memberType), pl.GetUserLevel(userID)
	if have >= need {
		return nil
	}
	m.notice(ctx, roomID, fmt.Sprintf("I can't join the call: this room's power levels require level %d to send `%s` events, "+
		"and the recorder user %s has level %d. A room admin can lower the level for that event type.", need, memberType.Type, userID, have))
	return fmt.Errorf("%w: %s needs level %d, %s has %d", ErrPowerLevel, memberType.Type, need, userID, have)
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

// iceServers returns the homeserver's TURN servers, if configured to use them.
func (m *Manager) iceServers(ctx context.Context) []webrtc.ICEServer {
	if !m.cfg.WebRTC.TURN || m.cfg.WebRTC.LoopbackOnly {
		return nil
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := m.mx.TURNServer(tctx)
	if err != nil || len(resp.URIs) == 0 {
		return nil
	}
	return []webrtc.ICEServer{{URLs: resp.URIs, Username: resp.Username, Credential: resp.Password}}
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
