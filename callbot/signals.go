package callbot

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/e2ee"
)

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
	// Answer in kind: the device gets what it sends. The sender is the
	// homeserver's word; its device id is (for plaintext) its own.
	c.m.noteKind(base.Sender(rcv.Sender), rcv.Encrypted)
	if p := c.peers[base.Sender(rcv.Sender)]; p != nil {
		p.heard = true
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
	for streamID, info := range update {
		before, had := p.remoteMeta[streamID]
		if !had && len(p.remoteMeta) >= maxStreamsPerPeer {
			c.limitHit(ctx, "stream_metadata")
			continue
		}
		p.remoteMeta[streamID] = info // updated in place, never copied whole
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

// maxStreamsPerPeer bounds the streams a peer's metadata may describe.
const maxStreamsPerPeer = 16

// send queues a message to one device, stamped with the common fields.
func (c *Call) send(p *peer, msg signaling.Message) {
	c.outbox.Stamp(msg, c.conf.ConfID, p.info.CallID, p.info.SessionID)
	content, err := signaling.Marshal(msg)
	if err != nil {
		zerolog.Ctx(c.m.bgCtx).Err(err).Str("event_type", msg.Type().Type).Msg("Refusing to send invalid message")
		return
	}
	c.sendQ.Push(outgoing{evtType: msg.Type(), user: p.key.UserID, device: p.key.DeviceID, content: content, olm: c.m.sendOlm(p.key)})
}

// ownMetadata announces the bot's one silent, muted audio stream.
func (c *Call) ownMetadata() signaling.StreamMetadata {
	return signaling.StreamMetadata{c.streamID: {Purpose: signaling.PurposeUserMedia, AudioMuted: true, VideoMuted: true}}
}
