package callbot

import (
	"context"
	"fmt"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/mailbox"
)

// Join puts a virtual recorder user into the room's group call. It returns
// once the member event is being published; peer calls follow in the loop.
func (m *Manager) Join(ctx context.Context, roomID id.RoomID) (CallStatus, error) {
	userID, err := m.reserve(roomID, "")
	if err != nil {
		return CallStatus{}, err
	}
	return m.join(ctx, roomID, userID, nil)
}

// Rejoin puts the recorder back into a call it was in before a restart or
// crash: as the same virtual user (whose device, and so whose stale entry
// in the member event, is replaced by one with a new session), with callID
// as the call's ID so the sink continues the same recording. It fails with
// ErrNoCall when the call has ended meanwhile: the room's call is another
// one than confID, or no other device is in it any more.
func (m *Manager) Rejoin(ctx context.Context, roomID id.RoomID, userID id.UserID, confID signaling.ConfID, callID string) (CallStatus, error) {
	if _, err := m.reserve(roomID, userID); err != nil {
		return CallStatus{}, err
	}
	return m.join(ctx, roomID, userID, &rejoin{confID: confID, callID: callID})
}

// Unlist takes the virtual user's device out of its call member event in
// the room: the ghost entry a crashed process left for a call the recorder
// does not rejoin (it ended meanwhile). The user must not be in a call.
func (m *Manager) Unlist(ctx context.Context, roomID id.RoomID, userID id.UserID, confID signaling.ConfID) error {
	m.lock.Lock()
	busy := m.inUse[userID]
	m.lock.Unlock()
	if busy {
		return fmt.Errorf("%w: %s is in a call", ErrAlreadyJoined, userID)
	}
	dev, err := m.mx.Device(ctx, userID, m.deviceHandler(userID))
	if err != nil {
		return fmt.Errorf("failed to start virtual user: %w", err)
	}
	state, err := dev.RoomState(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read room state: %w", err)
	}
	for _, t := range []event.Type{signaling.StateCallMember, signaling.StateCallMemberStable} {
		evt := state[t][string(userID)]
		if evt == nil {
			continue
		}
		content, err := signaling.RemoveMemberDevice(evt.Content.VeryRaw, confID, dev.DeviceID(), time.Now())
		if err == nil {
			err = dev.SetState(ctx, roomID, t, string(userID), content)
		}
		if err != nil {
			return fmt.Errorf("failed to update %s: %w", t.Type, err)
		}
	}
	return nil
}

// rejoin is what Rejoin continues.
type rejoin struct {
	confID signaling.ConfID
	callID string
}

func (m *Manager) join(ctx context.Context, roomID id.RoomID, userID id.UserID, again *rejoin) (CallStatus, error) {
	c, err := m.prepare(ctx, roomID, userID)
	if err == nil && again != nil {
		c.id = again.callID
		err = c.stillLive(again.confID, time.Now())
	}
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
	bgCtx := m.bgCtx
	m.wg.Add(1) // under the lock: Stop's Wait starts after stopped is set
	m.lock.Unlock()
	log := zerolog.Ctx(bgCtx).With().Stringer("room_id", roomID).Stringer("virtual_user", userID).Logger()
	go func() {
		defer m.wg.Done()
		c.run(log.WithContext(bgCtx))
	}()
	return CallStatus{ID: c.id, RoomID: roomID, ConfID: c.conf.ConfID, UserID: userID, DeviceID: c.dev.DeviceID(), SessionID: c.session, JoinedAt: c.joinedAt}, nil
}

// reserve picks the lowest-numbered free virtual user for the room, or
// the given one.
func (m *Manager) reserve(roomID id.RoomID, want id.UserID) (id.UserID, error) {
	m.lock.Lock()
	defer m.lock.Unlock()
	if m.stopped || m.bgCtx == nil {
		return "", ErrStopped
	}
	if m.calls[roomID] != nil || m.joining[roomID] {
		return "", ErrAlreadyJoined
	}
	if maxCalls := m.cfg.Limits.MaxCalls; maxCalls > 0 && len(m.calls)+len(m.joining) >= maxCalls {
		return "", ErrTooManyCalls
	}
	want, err := FreeUser(m.inUse, want, m.mx.VirtualUserID)
	if err != nil {
		return "", err
	}
	m.inUse[want] = true
	m.joining[roomID] = true
	return want, nil
}

// FreeUser is the virtual user a call takes: want when it is not in use
// (ErrAlreadyJoined when it is), or with want empty the lowest-numbered
// one not in use. Both kinds of call manager reserve users with it.
func FreeUser(inUse map[id.UserID]bool, want id.UserID, userID func(n int) id.UserID) (id.UserID, error) {
	if want != "" && inUse[want] {
		return "", fmt.Errorf("%w: %s is in another call", ErrAlreadyJoined, want)
	}
	for n := 1; want == ""; n++ {
		if u := userID(n); !inUse[u] {
			want = u
		}
	}
	return want, nil
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
	dev, err := m.mx.Device(ctx, userID, m.deviceHandler(userID))
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
		id: m.newID(now),
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

// stillLive tells whether the call the recorder was in before a restart
// goes on: the same conference, with another device in it.
func (c *Call) stillLive(confID signaling.ConfID, now time.Time) error {
	if c.conf.ConfID != confID {
		return fmt.Errorf("%w: the room's call is now %s, not %s", ErrNoCall, c.conf.ConfID, confID)
	}
	events := make([]*event.Event, 0, len(c.memberEvents))
	for _, evt := range c.memberEvents {
		events = append(events, evt)
	}
	if len(signaling.Members(events, confID, now)) == 0 {
		return fmt.Errorf("%w: nobody else is in call %s any more", ErrNoCall, confID)
	}
	return nil
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
