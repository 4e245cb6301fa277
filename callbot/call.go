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
	memberRetryDelay  = 10 * time.Second
	maxPendingSignals = 256
	// slowHandlerAfter: a loop handler running longer is logged (and again
	// every slowHandlerAfter while it runs).
	slowHandlerAfter = 2 * time.Second
)

// Call is one joined group call. Its run goroutine owns every field below
// the channel; other goroutines only post messages.
type Call struct {
	id     string
	m      *Manager
	roomID id.RoomID
	dev    Device // the virtual user's, owned by the Matrix side
	msgs   *mailbox.Box[any]
	done   chan struct{}

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
}

type attemptState struct {
	count int
	next  time.Time
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
	ID        string              `json:"id"`
	RoomID    id.RoomID           `json:"room_id"`
	ConfID    signaling.ConfID    `json:"conf_id"`
	UserID    id.UserID           `json:"user_id"`
	DeviceID  id.DeviceID         `json:"device_id"`
	SessionID signaling.SessionID `json:"session_id"`
	JoinedAt  time.Time           `json:"joined_at"`
	Peers     []PeerStatus        `json:"peers"`
}

func (c *Call) status() CallStatus {
	st := CallStatus{ID: c.id, RoomID: c.roomID, ConfID: c.conf.ConfID, UserID: c.dev.UserID(), DeviceID: c.dev.DeviceID(),
		SessionID: c.session, JoinedAt: c.joinedAt, Peers: []PeerStatus{}}
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
		SessionID: c.session, JoinedAt: c.joinedAt}
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
	c.m.notice(ctx, c.roomID, fmt.Sprintf("Recording this call (as %s). Say `%s stop` to stop.", c.dev.UserID(), c.m.cfg.CommandPrefix))
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
			c.timed(ctx, "leave", func() { c.leave(context.WithoutCancel(ctx), "shutdown") })
		case <-c.msgs.Notify():
			for _, msg := range c.msgs.Take() {
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
			zerolog.Ctx(ctx).Info().Stringer("peer", p.key).Msg("Invite timed out")
			c.endPeer(ctx, p, signaling.ReasonInviteTimeout, true, now)
		}
	}
	if !c.memberRenewAt.IsZero() && !now.Before(c.memberRenewAt) {
		if err := c.publishMember(ctx, now); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to renew call member event")
			c.memberRenewAt = now.Add(memberRetryDelay)
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

// unverifiedDeadline is when the oldest waiting signal has waited too long.
func (c *Call) unverifiedDeadline() (time.Time, bool) {
	if len(c.unverified) == 0 {
		return time.Time{}, false
	}
	oldest := c.unverified[0].at
	for _, ps := range c.unverified[1:] {
		if ps.at.Before(oldest) {
			oldest = ps.at
		}
	}
	// retryUnverified drops a signal once it waited strictly longer.
	return oldest.Add(c.m.signalHold + time.Millisecond), true
}

// publishMember writes our device into our member event, keeping everything
// else in it, with a fresh expiry.
func (c *Call) publishMember(ctx context.Context, now time.Time) error {
	dev := signaling.NewMemberDevice(c.dev.DeviceID(), c.session, now.Add(signaling.MemberValidity), signaling.PurposeUserMedia)
	content, err := signaling.SetMemberDevice(c.ownMember, c.conf.ConfID, dev, now)
	if err != nil {
		return fmt.Errorf("failed to build member event: %w", err)
	}
	if err = c.dev.SetState(ctx, c.roomID, c.memberType, string(c.dev.UserID()), content); err != nil {
		return fmt.Errorf("failed to send %s: %w", c.memberType.Type, err)
	}
	c.ownMember = content
	c.memberRenewAt = now.Add(signaling.MemberRenewAfter)
	return nil
}

func (c *Call) handleState(ctx context.Context, evt *event.Event, now time.Time) {
	switch {
	case signaling.IsGroupCallType(evt.Type.Type) && evt.GetStateKey() == string(c.conf.ConfID):
		content, err := signaling.ParseGroupCall(evt.Content.VeryRaw)
		if err == nil && content.Terminated {
			zerolog.Ctx(ctx).Info().Msg("Group call was terminated")
			c.leave(ctx, "call terminated")
		}
	case signaling.IsCallMemberType(evt.Type.Type):
		userID := id.UserID(evt.GetStateKey())
		if userID == c.dev.UserID() {
			return // our own echo; ownMember is authoritative
		}
		c.memberEvents[userID] = evt
		c.reconcile(ctx, now)
		c.retryUnverified(ctx, now)
	case evt.Type == event.StateMember:
		if m := evt.Content.AsMember().Membership; m == event.MembershipLeave || m == event.MembershipBan {
			if id.UserID(evt.GetStateKey()) == c.dev.UserID() {
				zerolog.Ctx(ctx).Info().Msg("Recorder user was removed from the room")
				c.leave(ctx, "removed from room")
				return
			}
		}
		c.reconcile(ctx, now)
		c.retryUnverified(ctx, now) // a listed device's user may have joined
	}
}

// reconcile compares the member state with the peer calls: ends calls to
// devices that left, expired or changed session, and places the calls the
// bot is responsible for. It runs on member and membership events and at
// reconcileAt, which it sets to the next expiry or due retry.
func (c *Call) reconcile(ctx context.Context, now time.Time) {
	c.reconcileAt = time.Time{}
	if c.leaving {
		return
	}
	events := make([]*event.Event, 0, len(c.memberEvents))
	for _, evt := range c.memberEvents {
		events = append(events, evt)
	}
	current := map[signaling.DeviceKey]signaling.Participant{}
	for _, p := range signaling.Members(events, c.conf.ConfID, now) {
		if p.UserID == c.dev.UserID() || !c.m.mx.IsInRoom(ctx, c.roomID, p.UserID) {
			continue
		}
		current[p.Key()] = p
	}
	for key, p := range c.peers {
		part, ok := current[key]
		switch {
		case !ok:
			zerolog.Ctx(ctx).Info().Stringer("peer", key).Msg("Participant left the call")
			c.endPeer(ctx, p, signaling.ReasonUserHangup, false, now)
		case part.SessionID != p.info.SessionID:
			zerolog.Ctx(ctx).Info().Stringer("peer", key).Str("old_session", string(p.info.SessionID)).
				Str("new_session", string(part.SessionID)).Msg("Participant changed session")
			c.endPeer(ctx, p, signaling.ReasonUserHangup, false, now)
			delete(c.attempts, key)
		}
	}
	for key := range c.attempts {
		if _, ok := current[key]; !ok {
			delete(c.attempts, key)
		}
	}
	c.participants = current
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for key, part := range current {
		consider(part.ExpiresAt)
		if _, busy := c.peers[key]; busy || !signaling.ShouldInvite(c.self(), key) {
			continue
		}
		at := c.attempts[key]
		if at == nil {
			at = &attemptState{}
			c.attempts[key] = at
		}
		if at.count > signaling.MaxInviteRetries {
			continue
		}
		if now.Before(at.next) {
			consider(at.next)
			continue
		}
		at.count++
		at.next = now.Add(c.m.retryPeriod)
		if err := c.placeCall(ctx, part, now); err != nil {
			zerolog.Ctx(ctx).Err(err).Stringer("peer", key).Int("attempt", at.count).Msg("Failed to place call")
			consider(at.next)
		}
	}
	c.reconcileAt = next
}

// reconcileSoon makes the loop reconcile on its next turn (a peer call
// ended: it may have to be placed again once its retry is due).
func (c *Call) reconcileSoon(now time.Time) {
	if c.reconcileAt.IsZero() || now.Before(c.reconcileAt) {
		c.reconcileAt = now
	}
}

func (c *Call) peerInfo(part signaling.Participant, callID signaling.CallID) PeerInfo {
	return PeerInfo{RoomID: c.roomID, ConfID: c.conf.ConfID, CallID: callID, UserID: part.UserID,
		DeviceID: part.DeviceID, SessionID: part.SessionID}
}

// ownMetadata announces the bot's one silent, muted audio stream.
func (c *Call) ownMetadata() signaling.StreamMetadata {
	return signaling.StreamMetadata{c.streamID: {Purpose: signaling.PurposeUserMedia, AudioMuted: true, VideoMuted: true}}
}

// send queues a message to one device, stamped with the common fields.
func (c *Call) send(p *peer, msg signaling.Message) {
	c.outbox.Stamp(msg, c.conf.ConfID, p.info.CallID, p.info.SessionID)
	content, err := signaling.Marshal(msg)
	if err != nil {
		zerolog.Ctx(c.m.bgCtx).Err(err).Str("event_type", msg.Type().Type).Msg("Refusing to send invalid message")
		return
	}
	c.sendQ.Push(outgoing{evtType: msg.Type(), user: p.key.UserID, device: p.key.DeviceID, content: content})
}

// deliver processes what the inbox released, in order, and logs its drops.
func (c *Call) deliver(ctx context.Context, out signaling.Output, now time.Time) {
	for _, d := range out.Drops {
		zerolog.Ctx(ctx).Info().Err(d.Err).Object("message", d.Envelope).Msg("Dropped call signalling message")
		c.m.countIgnored(IgnoredInbox)
	}
	for _, env := range out.Deliver {
		c.process(ctx, env, now)
	}
}

// handleSignal checks who sent a to-device call event and feeds it to the
// inbox. Encrypted events must come from the Olm device the content claims;
// every event must come from a device the sender's member event lists.
func (c *Call) handleSignal(ctx context.Context, rcv e2ee.Received, now time.Time) {
	log := zerolog.Ctx(ctx).With().Stringer("sender", rcv.Sender).Str("event_type", rcv.Type.Type).Bool("encrypted", rcv.Encrypted).Logger()
	msg, err := signaling.Parse(rcv.Type.Type, rcv.Content)
	if err != nil {
		log.Warn().Err(err).Msg("Rejected malformed call signalling message")
		c.m.countIgnored(IgnoredMalformed)
		return
	}
	base := msg.Common()
	if rcv.Encrypted && rcv.SenderDevice != base.DeviceID {
		log.Warn().Stringer("olm_device", rcv.SenderDevice).Stringer("claimed_device", base.DeviceID).
			Msg("Ignored encrypted call event whose device_id is not the Olm sender device")
		c.m.countIgnored(IgnoredWrongOlmDevice)
		return
	}
	if base.ConfID != c.conf.ConfID {
		log.Debug().Str("conf_id", string(base.ConfID)).Msg("Ignored call event for another conference")
		return
	}
	c.admit(ctx, pendingSignal{rcv: rcv, msg: msg, at: now}, now)
}

// admit pushes a signal into the inbox if its sender is a participant; a
// signal from a device the member state does not list (yet) waits, in order
// behind any earlier waiting signals of that device.
func (c *Call) admit(ctx context.Context, ps pendingSignal, now time.Time) {
	key := ps.msg.Common().Sender(ps.rcv.Sender)
	waiting := false
	for _, u := range c.unverified {
		if u.msg.Common().Sender(u.rcv.Sender) == key {
			waiting = true
			break
		}
	}
	if waiting || !c.isParticipant(key, ps.msg.Common().SenderSessionID) {
		if !c.m.mx.IsInRoom(ctx, c.roomID, ps.rcv.Sender) {
			zerolog.Ctx(ctx).Warn().Stringer("from", key).Str("event_type", ps.rcv.Type.Type).
				Msg("Ignored call event from a user who is not in the room")
			c.m.countIgnored(IgnoredNotInRoom)
			return
		}
		if len(c.unverified) >= maxPendingSignals {
			zerolog.Ctx(ctx).Warn().Stringer("from", key).Msg("Ignored call event: too many events from unlisted devices")
			c.m.countIgnored(IgnoredNotInCall)
			return
		}
		c.unverified = append(c.unverified, ps)
		return
	}
	c.deliver(ctx, c.inbox.Push(signaling.Envelope{Sender: ps.rcv.Sender, Message: ps.msg}, now), now)
}

func (c *Call) isParticipant(key signaling.DeviceKey, session signaling.SessionID) bool {
	part, ok := c.participants[key]
	return ok && (session == "" || session == part.SessionID)
}

// retryUnverified admits waiting signals whose device is now listed and drops
// those that waited too long.
func (c *Call) retryUnverified(ctx context.Context, now time.Time) {
	pending := c.unverified
	c.unverified = nil
	blocked := map[signaling.DeviceKey]bool{}
	for _, ps := range pending {
		key := ps.msg.Common().Sender(ps.rcv.Sender)
		switch {
		case blocked[key]:
			c.unverified = append(c.unverified, ps)
		case c.isParticipant(key, ps.msg.Common().SenderSessionID):
			c.deliver(ctx, c.inbox.Push(signaling.Envelope{Sender: ps.rcv.Sender, Message: ps.msg}, now), now)
		case now.Sub(ps.at) > c.m.signalHold:
			zerolog.Ctx(ctx).Warn().Stringer("from", key).Str("event_type", ps.rcv.Type.Type).
				Str("session_id", string(ps.msg.Common().SenderSessionID)).
				Msg("Ignored call event from a device that is not in the call")
			c.m.countIgnored(IgnoredNotInCall)
		default:
			blocked[key] = true
			c.unverified = append(c.unverified, ps)
		}
	}
}

// process acts on one in-order, admitted signalling message.
func (c *Call) process(ctx context.Context, env signaling.Envelope, now time.Time) {
	base := env.Message.Common()
	key := base.Sender(env.Sender)
	log := zerolog.Ctx(ctx).With().Stringer("peer", key).Str("call_id", string(base.CallID)).Str("event_type", env.Message.Type().Type).Logger()
	ctx = log.WithContext(ctx)
	if c.leaving {
		return
	}
	if invite, ok := env.Message.(*signaling.Invite); ok {
		c.handleInvite(ctx, key, invite, now)
		return
	}
	p := c.byCallID[base.CallID]
	if p == nil || p.key != key {
		log.Debug().Msg("Ignored message for a call we do not have with that device")
		return
	}
	if base.PartyID != "" && p.partyID != "" && base.PartyID != p.partyID {
		log.Debug().Str("party_id", string(base.PartyID)).Msg("Ignored message from another party of the call")
		return
	}
	switch msg := env.Message.(type) {
	case *signaling.Answer:
		c.handleAnswer(ctx, p, msg)
	case *signaling.Candidates:
		c.handleCandidates(ctx, p, msg)
	case *signaling.SelectAnswer:
		if !p.outgoing && msg.SelectedPartyID != signaling.PartyID(c.dev.DeviceID()) {
			log.Info().Msg("Call was answered by another device")
			c.endPeer(ctx, p, signaling.ReasonAnsweredElsewhere, false, now)
		}
	case *signaling.Negotiate:
		c.handleNegotiate(ctx, p, msg)
	case *signaling.Hangup:
		log.Info().Str("reason", string(msg.EffectiveReason())).Msg("Peer hung up")
		c.endPeer(ctx, p, msg.EffectiveReason(), false, now)
	case *signaling.Reject:
		log.Info().Str("reason", string(msg.EffectiveReason())).Msg("Peer rejected the call")
		c.endPeer(ctx, p, msg.EffectiveReason(), false, now)
	case *signaling.MetadataChanged:
		c.updateMetadata(ctx, p, msg.Metadata, now)
	}
}

func (c *Call) updateMetadata(ctx context.Context, p *peer, update signaling.StreamMetadata, now time.Time) {
	if len(update) == 0 {
		return
	}
	old := p.remoteMeta
	p.remoteMeta = p.remoteMeta.Merge(update)
	for streamID, info := range update {
		before, had := old[streamID]
		if had && before.Purpose == info.Purpose && before.AudioMuted == info.AudioMuted && before.VideoMuted == info.VideoMuted {
			continue
		}
		for _, t := range p.tracks {
			if t.StreamID == streamID && info.Purpose.Known() {
				t.Purpose = info.Purpose
			}
		}
		change := StreamChange{Peer: p.info, StreamID: streamID, Purpose: info.Purpose, AudioMuted: info.AudioMuted, VideoMuted: info.VideoMuted, At: now}
		zerolog.Ctx(ctx).Info().Str("stream_id", streamID).Str("purpose", string(info.Purpose)).
			Bool("audio_muted", info.AudioMuted).Bool("video_muted", info.VideoMuted).Msg("Stream metadata changed")
		c.m.sink.StreamChanged(ctx, change)
	}
}

// leave hangs up every peer, takes the bot's device out of its member event
// and stops the loop.
func (c *Call) leave(ctx context.Context, reason string) {
	if c.leaving {
		return
	}
	c.leaving = true
	log := zerolog.Ctx(ctx)
	log.Info().Str("reason", reason).Int("peers", len(c.peers)).Msg("Leaving group call")
	now := time.Now()
	for _, p := range c.peers {
		c.endPeer(ctx, p, signaling.ReasonUserHangup, false, now)
	}
	flushed := make(chan struct{})
	c.sendQ.Push(outgoing{flushed: flushed})
	select {
	case <-flushed:
	case <-time.After(leaveFlushTimeout):
		log.Warn().Msg("Timed out sending hangups")
	}
	content, err := signaling.RemoveMemberDevice(c.ownMember, c.conf.ConfID, c.dev.DeviceID(), now)
	if err == nil {
		stateCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveStateTimeout)
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
	c.m.notice(ctx, c.roomID, "Stopped recording this call.")
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
