package callbot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/e2ee"
	"github.com/matrix-recorder/recorder/internal/mailbox"
)

const (
	// DefaultSignalHold is how long a signal from a device not (yet) in the
	// member state waits for that state before it is dropped.
	DefaultSignalHold = 10 * time.Second
	// leaveFlushTimeout bounds how long leaving waits for hangups to go out.
	leaveFlushTimeout = 5 * time.Second
	// leaveStateTimeout bounds removing the own device from the member event.
	leaveStateTimeout = 10 * time.Second
	// leaveReadersTimeout bounds how long leaving waits for the track
	// readers; the Manager waits for the rest on Stop.
	leaveReadersTimeout = 5 * time.Second
	// leaveSinkTimeout is the context deadline of the sink's CallLeft.
	leaveSinkTimeout = 30 * time.Second
	// memberRetryDelay is the wait before retrying a failed member event.
	memberRetryDelay = 10 * time.Second
	// memberStateTimeout bounds one publication of the member event: the
	// call loop must not hang on a homeserver that does not answer.
	memberStateTimeout = 10 * time.Second
	maxPendingSignals  = 256
	// slowHandlerAfter: a loop handler running longer is logged (and again
	// every slowHandlerAfter while it runs).
	slowHandlerAfter = 2 * time.Second
)

// Call is one joined group call. Its run goroutine owns every field below
// the channel; other goroutines only post messages.
type Call struct {
	id string
	m  *Manager
	// limitsLogged keeps limit warnings to one per call and limit.
	limitsLogged map[string]bool
	roomID       id.RoomID
	dev          Device // the virtual user's, owned by the Matrix side
	msgs         *mailbox.Box[any]
	done         chan struct{}

	conf       signaling.GroupCall
	memberType event.Type
	session    signaling.SessionID
	streamID   string
	outbox     *signaling.Outbox
	inbox      *signaling.Inbox
	joinedAt   time.Time
	// iceServers are fetched once per join (TURN credentials last a day).
	iceServers []webrtc.ICEServer

	memberEvents map[id.UserID]*event.Event
	participants map[signaling.DeviceKey]signaling.Participant
	peers        map[signaling.DeviceKey]*peer
	byCallID     map[signaling.CallID]*peer
	attempts     map[signaling.DeviceKey]*attemptState
	unverified   []pendingSignal

	ownMember     json.RawMessage
	memberRenewAt time.Time
	// reconcileAt is the next time membership must be looked at without a
	// member event: a listed device expires or a call retry is due.
	reconcileAt time.Time

	sendQ *mailbox.Box[outgoing]
	// firstPacket is set by the first track reader that gets a packet.
	firstPacket atomic.Bool
	readers     sync.WaitGroup
	leaving     bool
	stopReason  StopReason
}

type attemptState struct {
	count int
	next  time.Time
	// budgetAt is when the retry budget was last given back for a new
	// session: a device that rejoins gets calls again, one that rotates
	// its session_id to get more invites gets at most one budget a minute.
	budgetAt time.Time
}

// sessionBudgetEvery is how often a device's retry budget is renewed by a
// session change.
const sessionBudgetEvery = time.Minute

// newSession gives a device that changed session a fresh retry budget, at
// most once per sessionBudgetEvery. Safe on a nil state.
func (a *attemptState) newSession(now time.Time) {
	if a == nil || now.Sub(a.budgetAt) < sessionBudgetEvery {
		return
	}
	a.count, a.next, a.budgetAt = 0, time.Time{}, now
}

type pendingSignal struct {
	rcv e2ee.Received
	msg signaling.Message
	at  time.Time
}

// post delivers a message to the loop. It never blocks: pion callbacks may
// run while the loop is inside a pion call.
func (c *Call) post(msg any) { c.msgs.Push(msg) }

// CallStatus is a snapshot of a joined call.
type CallStatus struct {
	// Kind is the kind of call: "mesh" (empty from the mesh Manager) or "matrixrtc".
	Kind      string              `json:"kind,omitempty"`
	ID        string              `json:"id"`
	RoomID    id.RoomID           `json:"room_id"`
	ConfID    signaling.ConfID    `json:"conf_id"`
	UserID    id.UserID           `json:"user_id"`
	DeviceID  id.DeviceID         `json:"device_id"`
	SessionID signaling.SessionID `json:"session_id"`
	JoinedAt  time.Time           `json:"joined_at"`
	Peers     []PeerStatus        `json:"peers"`
	// Participants counts the other devices in the call's member state.
	Participants int `json:"participants"`
}

func (c *Call) status() CallStatus {
	st := CallStatus{ID: c.id, RoomID: c.roomID, ConfID: c.conf.ConfID, UserID: c.dev.UserID(), DeviceID: c.dev.DeviceID(),
		SessionID: c.session, JoinedAt: c.joinedAt, Peers: []PeerStatus{}, Participants: len(c.participants)}
	for _, p := range c.peers {
		st.Peers = append(st.Peers, p.status())
	}
	sort.Slice(st.Peers, func(i, j int) bool {
		return st.Peers[i].UserID+id.UserID(st.Peers[i].DeviceID) < st.Peers[j].UserID+id.UserID(st.Peers[j].DeviceID)
	})
	return st
}

func (c *Call) info() CallInfo {
	return CallInfo{ID: c.id, RoomID: c.roomID, ConfID: c.conf.ConfID, UserID: c.dev.UserID(), DeviceID: c.dev.DeviceID(),
		SessionID: c.session, JoinedAt: c.joinedAt, StopReason: c.stopReason}
}

func (c *Call) self() signaling.DeviceKey {
	return signaling.DeviceKey{UserID: c.dev.UserID(), DeviceID: c.dev.DeviceID()}
}

func (c *Call) run(ctx context.Context) {
	defer close(c.done)
	defer c.m.forget(c)
	log := zerolog.Ctx(ctx)
	// The sender outlives a cancelled ctx until leave has flushed the
	// hangups; the deferred cancel stops it after that.
	senderCtx, cancelSender := context.WithCancel(context.WithoutCancel(ctx))
	c.m.wg.Add(1)
	go func() {
		defer c.m.wg.Done()
		sendLoop(senderCtx, c.dev, c.sendQ)
	}()
	defer cancelSender()

	if err := c.publishMember(ctx, time.Now()); err != nil {
		log.Err(err).Msg("Failed to publish call member event")
		c.m.notice(ctx, c.roomID, "I couldn't join the call: publishing my call membership failed.")
		return
	}
	log.Info().Str("conf_id", string(c.conf.ConfID)).Stringer("device_id", c.dev.DeviceID()).Str("session_id", string(c.session)).Msg("Joined group call")
	c.m.sink.CallJoined(ctx, c.info())
	// Whoever started it (command, API), the room is told it is recorded.
	if !c.m.cfg.NoRecordingNotices {
		c.m.notice(ctx, c.roomID, fmt.Sprintf("Recording this call (as %s). Say `%s stop` to stop.", c.dev.UserID(), c.m.cfg.CommandPrefix))
	}
	if c.m.met != nil {
		c.m.met.ActiveCalls.Inc()
		defer c.m.met.ActiveCalls.Dec()
	}
	c.reconcile(ctx, time.Now())

	// Every timer of the call is a deadline in its state; the loop sleeps
	// until the earliest one or the next message.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !c.leaving {
		now := time.Now()
		c.timed(ctx, "timers", func() { c.runTimers(ctx, now) })
		if c.leaving {
			break
		}
		if next := c.nextDeadline(); next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(next.Sub(now))
		}
		select {
		case <-ctx.Done():
			c.timed(ctx, "leave", func() { c.leave(context.WithoutCancel(ctx), StopShutdown) })
		case <-c.msgs.Notify():
			for _, msg := range c.msgs.Take() {
				if c.leaving {
					// The connections are closed and the readers waited
					// for: nothing after leave may start new work.
					break
				}
				c.timed(ctx, fmt.Sprintf("%T", msg), func() { c.handle(ctx, msg) })
			}
		case <-timer.C:
		}
	}
}

// timed runs one loop handler under a watchdog: a handler that runs longer
// than slowHandlerAfter is logged while it runs and when it ends (as
// mautrix bridgev2's handleSingleEventWithDelayLogging), so a stuck call
// shows in the logs. It also recovers a panic: one bad message never
// kills the call.
func (c *Call) timed(ctx context.Context, what string, fn func()) {
	log := zerolog.Ctx(ctx)
	start := time.Now()
	var lock sync.Mutex
	finished := false
	var watchdog *time.Timer
	lock.Lock()
	watchdog = time.AfterFunc(c.m.slowHandler, func() {
		lock.Lock()
		defer lock.Unlock()
		if finished {
			return
		}
		log.Warn().Str("handler", what).Dur("running_for", time.Since(start)).Msg("Call loop handler is taking long")
		watchdog.Reset(c.m.slowHandler)
	})
	lock.Unlock()
	defer func() {
		lock.Lock()
		finished = true
		watchdog.Stop()
		lock.Unlock()
		if took := time.Since(start); took >= c.m.slowHandler {
			log.Warn().Str("handler", what).Dur("took", took).Msg("Slow call loop handler finished")
		}
		if r := recover(); r != nil {
			log.Error().Any("panic", r).Str("handler", what).Stack().Msg("Panic in call loop")
		}
	}()
	fn()
}

func (c *Call) handle(ctx context.Context, msg any) {
	now := time.Now()
	switch msg := msg.(type) {
	case stateMsg:
		c.handleState(ctx, msg.evt, now)
	case signalMsg:
		c.handleSignal(ctx, msg.rcv, msg.at)
	case localCandidateMsg:
		c.onLocalCandidate(msg, now)
	case gatheringDoneMsg:
		c.onGatheringDone(ctx, msg)
	case connStateMsg:
		c.onConnState(ctx, msg, now)
	case trackMsg:
		c.onTrack(ctx, msg)
	case leaveMsg:
		c.leave(ctx, msg.reason)
	case statusMsg:
		msg.reply <- c.status()
	}
}

// runTimers does whatever is due at now.
func (c *Call) runTimers(ctx context.Context, now time.Time) {
	c.deliver(ctx, c.inbox.Expire(now), now)
	for _, p := range c.peers {
		if !p.candFlushAt.IsZero() && !now.Before(p.candFlushAt) {
			c.flushCandidates(c.peerCtx(ctx, p), p)
		}
		if p.outgoing && p.state == PeerInviteSent && !now.Before(p.inviteExpires) {
			zerolog.Ctx(ctx).Info().Stringer("peer", p.key).Bool("olm", p.inviteOlm).Bool("heard", p.heard).Msg("Invite timed out")
			c.endPeer(ctx, p, signaling.ReasonInviteTimeout, true, now)
			if !p.heard {
				// Perhaps it could not read us: a js-sdk ≥ 37 page cannot
				// read Olm, Hydrogen drops plaintext, and a page reloaded
				// with another client keeps its device id. The hangup
				// above went the old way; the next attempt the other.
				c.m.noteKind(p.key, !p.inviteOlm)
			}
		}
	}
	if !c.memberRenewAt.IsZero() && !now.Before(c.memberRenewAt) {
		if err := c.publishMember(ctx, now); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to renew call member event")
			c.memberRenewAt = now.Add(c.m.memberRetry)
		}
	}
	if at, ok := c.unverifiedDeadline(); ok && !now.Before(at) {
		c.retryUnverified(ctx, now)
	}
	if !c.reconcileAt.IsZero() && !now.Before(c.reconcileAt) {
		c.reconcile(ctx, now)
	}
}

// nextDeadline is the earliest time runTimers has something to do; zero
// when nothing is scheduled.
func (c *Call) nextDeadline() time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if t, ok := c.inbox.NextDeadline(); ok {
		consider(t)
	}
	for _, p := range c.peers {
		consider(p.candFlushAt)
		if p.outgoing && p.state == PeerInviteSent {
			consider(p.inviteExpires)
		}
	}
	consider(c.memberRenewAt)
	if t, ok := c.unverifiedDeadline(); ok {
		consider(t)
	}
	consider(c.reconcileAt)
	return next
}

// leave hangs up every peer, takes the bot's device out of its member event
// and stops the loop.
func (c *Call) leave(ctx context.Context, reason StopReason) {
	if c.leaving {
		return
	}
	c.leaving = true
	c.stopReason = reason
	log := zerolog.Ctx(ctx)
	log.Info().Str("reason", string(reason)).Int("peers", len(c.peers)).Msg("Leaving group call")
	now := time.Now()
	for _, p := range c.peers {
		c.endPeer(ctx, p, signaling.ReasonUserHangup, false, now)
	}
	flushed := make(chan struct{})
	c.sendQ.Push(outgoing{flushed: flushed})
	select {
	case <-flushed:
	case <-time.After(c.m.leaveFlush):
		log.Warn().Msg("Timed out sending hangups")
	}
	content, err := signaling.RemoveMemberDevice(c.ownMember, c.conf.ConfID, c.dev.DeviceID(), now)
	if err == nil {
		stateCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.m.leaveState)
		err = c.dev.SetState(stateCtx, c.roomID, c.memberType, string(c.dev.UserID()), content)
		cancel()
	}
	if err != nil {
		log.Err(err).Msg("Failed to remove the recorder from the call member event")
	}
	c.waitReaders(ctx)
	sinkCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveSinkTimeout)
	c.m.sink.CallLeft(sinkCtx, c.info(), time.Now())
	cancel()
	if !c.m.cfg.NoRecordingNotices {
		c.m.notice(ctx, c.roomID, "Stopped recording this call.")
	}
	log.Info().Msg("Left group call")
}

// waitReaders waits a bounded time for the track readers and connection
// closers to end (their tracks end when the connections close). Those that
// outlast it are handed to the Manager, whose Stop waits for them.
func (c *Call) waitReaders(ctx context.Context) {
	done := make(chan struct{})
	c.m.wg.Add(1)
	go func() {
		defer c.m.wg.Done()
		c.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(leaveReadersTimeout):
		zerolog.Ctx(ctx).Warn().Msg("Track readers still running after leaving; not waiting for them")
	}
}

var errCallEnded = errors.New("call ended")
