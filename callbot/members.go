package callbot

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// publishMember writes our device into our member event, keeping everything
// else in it, with a fresh expiry.
func (c *Call) publishMember(ctx context.Context, now time.Time) error {
	dev := signaling.NewMemberDevice(c.dev.DeviceID(), c.session, now.Add(signaling.MemberValidity), signaling.PurposeUserMedia)
	content, err := signaling.SetMemberDevice(c.ownMember, c.conf.ConfID, dev, now)
	if err != nil {
		return fmt.Errorf("failed to build member event: %w", err)
	}
	stateCtx, cancel := context.WithTimeout(ctx, c.m.stateTimeout)
	err = c.dev.SetState(stateCtx, c.roomID, c.memberType, string(c.dev.UserID()), content)
	cancel()
	if err != nil {
		return fmt.Errorf("failed to send %s: %w", c.memberType.Type, err)
	}
	c.ownMember = content
	c.memberRenewAt = now.Add(c.m.memberRenew)
	return nil
}

func (c *Call) handleState(ctx context.Context, evt *event.Event, now time.Time) {
	switch {
	case signaling.IsGroupCallType(evt.Type.Type) && evt.GetStateKey() == string(c.conf.ConfID):
		content, err := signaling.ParseGroupCall(evt.Content.VeryRaw)
		if err == nil && content.Terminated {
			zerolog.Ctx(ctx).Info().Msg("Group call was terminated")
			c.leave(ctx, StopCallEnded)
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
				c.leave(ctx, StopRemoved)
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
			c.attempts[key].newSession(now)
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
		if maxPeers := c.m.cfg.Limits.MaxPeersPerCall; maxPeers > 0 && len(c.peers) >= maxPeers {
			c.limitHit(ctx, "max_peers_per_call")
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
