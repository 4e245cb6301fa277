package simpeer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// peerCall is one 1:1 peer call with one remote device. Owned by the loop.
type peerCall struct {
	id            signaling.CallID
	remote        signaling.DeviceKey
	remoteSession signaling.SessionID
	outbound      bool
	state         string
	pc            *webrtc.PeerConnection

	// listed: the remote device was in member state while this call ran.
	listed bool
	// held: HoldInvites keeps the invite back.
	held bool

	cands          signaling.CandidateQueue
	sendDescAt     time.Time // when to send the invite/answer (GatherWait)
	descSent       bool      // invite or answer sent: candidates may flow
	flushAt        time.Time // next candidate batch
	inviteDeadline time.Time

	remoteDescSet bool
	pendingRemote []webrtc.ICECandidateInit
	opponentParty signaling.PartyID
	remoteMeta    signaling.StreamMetadata

	userStream   string
	screenStream string
	local        []*localTrack
	screen       *localTrack
	makingOffer  bool
	reofferAfter bool // our offer was rolled back for the peer's: offer again

	rec *callRecord
}

type localTrack struct {
	track  *webrtc.TrackLocalStaticRTP
	src    *source
	sender *webrtc.RTPSender
}

func (p *Participant) newCall(callID signaling.CallID, remote signaling.DeviceKey, session signaling.SessionID, outbound bool, now time.Time) *peerCall {
	c := &peerCall{id: callID, remote: remote, remoteSession: session, outbound: outbound, userStream: random.String(12)}
	c.rec = &callRecord{info: CallInfo{CallID: callID, Remote: remote, RemoteSession: session, Outbound: outbound, StartedAt: now, RemoteMetadata: signaling.StreamMetadata{}}}
	p.obs.update(func() { p.obs.calls = append(p.obs.calls, c.rec) })
	p.calls[callID] = c
	p.current[remote] = c
	return c
}

func (p *Participant) setState(c *peerCall, state string, now time.Time) {
	c.state = state
	p.obs.update(func() {
		c.rec.info.State = state
		switch state {
		case StateConnected:
			if c.rec.info.ConnectedAt.IsZero() {
				c.rec.info.ConnectedAt = now
			}
		case StateEnded:
			c.rec.info.EndedAt = now
		}
	})
}

// newPC creates the peer connection with callbacks posting into the loop.
func (p *Participant) newPC(c *peerCall) error {
	pc, err := p.api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return fmt.Errorf("failed to create peer connection: %w", err)
	}
	callID := c.id
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) { p.box.Push(iceCandMsg{callID: callID, cand: cand}) })
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) { p.box.Push(iceStateMsg{callID: callID, state: s}) })
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) { p.box.Push(pcStateMsg{callID: callID, state: s}) })
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		st := &trackStats{info: TrackInfo{
			StreamID: t.StreamID(), TrackID: t.ID(), Kind: t.Kind(), MimeType: t.Codec().MimeType, StartedAt: time.Now(),
		}}
		// The loop starts the reader, so every media.Add happens before
		// Stop's media.Wait (the loop has ended by then).
		p.box.Push(trackMsg{callID: callID, stats: st, track: t})
	})
	c.pc = pc
	return nil
}

// addTrack adds a local track of src in stream to the call.
func (p *Participant) addTrack(c *peerCall, src *source, stream string) (*localTrack, error) {
	track, err := webrtc.NewTrackLocalStaticRTP(src.capability, src.kind.String()+"-"+random.String(8), stream)
	if err != nil {
		return nil, fmt.Errorf("failed to create %s track: %w", src.kind, err)
	}
	sender, err := c.pc.AddTrack(track)
	if err != nil {
		return nil, fmt.Errorf("failed to add %s track: %w", src.kind, err)
	}
	// Read RTCP so the interceptors (NACK responder, reports) see it, and
	// pass key frame requests to the source.
	p.media.Add(1)
	go func() {
		defer p.media.Done()
		buf := make([]byte, 1500)
		for {
			n, _, err := sender.Read(buf)
			if err != nil {
				return
			}
			pkts, err := rtcp.Unmarshal(buf[:n])
			if err != nil {
				continue
			}
			for _, pkt := range pkts {
				switch pkt.(type) {
				case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
					src.requestKeyframe()
				}
			}
		}
	}()
	src.attach(track)
	lt := &localTrack{track: track, src: src, sender: sender}
	return lt, nil
}

func (p *Participant) addLocalMedia(c *peerCall) error {
	if p.cfg.ReceiveOnly && c.outbound {
		// nothing to send: offer to receive audio and video
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if _, err := c.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return fmt.Errorf("failed to add a receive-only transceiver: %w", err)
			}
		}
		return nil
	}
	for _, src := range []*source{p.audio, p.video} {
		if src == nil {
			continue
		}
		lt, err := p.addTrack(c, src, c.userStream)
		if err != nil {
			return err
		}
		c.local = append(c.local, lt)
	}
	if p.sharing {
		return p.addScreenTrack(c)
	}
	return nil
}

func (p *Participant) addScreenTrack(c *peerCall) error {
	if c.screen != nil {
		return nil
	}
	c.screenStream = random.String(12)
	lt, err := p.addTrack(c, p.screen, c.screenStream)
	if err != nil {
		return err
	}
	c.screen = lt
	return nil
}

func (p *Participant) removeScreenTrack(c *peerCall) error {
	if c.screen == nil {
		return nil
	}
	lt := c.screen
	c.screen, c.screenStream = nil, ""
	lt.src.detach(lt.track)
	if err := c.pc.RemoveTrack(lt.sender); err != nil {
		return fmt.Errorf("failed to remove screen track: %w", err)
	}
	return nil
}

// localMetadata lists every stream we send on c (§5.2: all of them).
func (p *Participant) localMetadata(c *peerCall) signaling.StreamMetadata {
	md := signaling.StreamMetadata{c.userStream: {Purpose: signaling.PurposeUserMedia, AudioMuted: p.audioMuted, VideoMuted: p.videoMuted}}
	if c.screen != nil {
		md[c.screenStream] = signaling.StreamInfo{Purpose: signaling.PurposeScreenshare}
	}
	return md
}

// placeCall starts an outgoing call to part (§3.2): offer now, invite after
// GatherWait.
func (p *Participant) placeCall(ctx context.Context, part signaling.Participant, now time.Time) {
	c := p.newCall(signaling.NewCallID(time.Now()), part.Key(), part.SessionID, true, now)
	c.listed = true
	p.deliver(ctx, p.inbox.KnowCall(c.id), now)
	fail := func(reason signaling.HangupReason, err error) {
		zerolog.Ctx(ctx).Err(err).Stringer("to", c.remote).Msg("Failed to place call")
		p.endCall(ctx, c, reason, false, false)
	}
	if err := p.newPC(c); err != nil {
		fail(signaling.ReasonLocalOfferFailed, err)
		return
	}
	if err := p.addLocalMedia(c); err != nil {
		fail(signaling.ReasonLocalOfferFailed, err)
		return
	}
	if p.video != nil && part.Screenshare() {
		// js-sdk asks for the callee's announced screen share up front.
		if _, err := c.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			fail(signaling.ReasonLocalOfferFailed, err)
			return
		}
	}
	offer, err := c.pc.CreateOffer(nil)
	if err == nil {
		err = c.pc.SetLocalDescription(offer)
	}
	if err != nil {
		fail(signaling.ReasonCreateOffer, err)
		return
	}
	p.setState(c, StateCreateOffer, now)
	if p.cfg.HoldInvites {
		c.held = true
	} else {
		c.sendDescAt = now.Add(signaling.GatherWait)
	}
	zerolog.Ctx(ctx).Debug().Str("call_id", string(c.id)).Stringer("to", c.remote).Msg("Placing call")
}

func (p *Participant) tickCall(ctx context.Context, c *peerCall, now time.Time) {
	if !c.descSent && !c.held && !c.sendDescAt.IsZero() && !now.Before(c.sendDescAt) {
		switch c.state {
		case StateCreateOffer:
			p.sendInvite(ctx, c, now)
		case StateCreateAnswer:
			p.sendAnswer(ctx, c, now)
		}
	}
	if c.state == StateEnded {
		return
	}
	if !c.flushAt.IsZero() && !now.Before(c.flushAt) {
		c.flushAt = time.Time{}
		if batch := c.cands.Take(); len(batch) > 0 {
			if err := p.send(ctx, c, &signaling.Candidates{Candidates: batch}); err != nil {
				zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to send candidates")
			}
		}
	}
	if c.state == StateInviteSent && !now.Before(c.inviteDeadline) {
		p.endCall(ctx, c, signaling.ReasonInviteTimeout, true, false)
	}
}

func (p *Participant) flushDelay(c *peerCall) time.Duration {
	if c.outbound {
		return signaling.CandidateFlushOutbound
	}
	return signaling.CandidateFlushInbound
}

// descriptionSent: the SDP carried the candidates so far; the rest follow
// in batches (§6).
func (p *Participant) descriptionSent(c *peerCall, now time.Time) {
	c.descSent = true
	c.cands.Discard()
	if c.cands.Len() > 0 {
		c.flushAt = now.Add(p.flushDelay(c))
	}
}

func (p *Participant) sendInvite(ctx context.Context, c *peerCall, now time.Time) {
	inv := &signaling.Invite{
		Offer:        event.CallData{Type: event.CallDataTypeOffer, SDP: c.pc.LocalDescription().SDP},
		Lifetime:     signaling.DefaultLifetime,
		Invitee:      c.remote.UserID,
		Capabilities: &signaling.Capabilities{},
		Metadata:     p.localMetadata(c),
	}
	if err := p.send(ctx, c, inv); err != nil {
		zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to send invite")
		p.endCall(ctx, c, signaling.ReasonSignallingTimeout, false, false)
		return
	}
	p.setState(c, StateInviteSent, now)
	c.inviteDeadline = now.Add(signaling.InviteTimeout)
	p.descriptionSent(c, now)
}

func (p *Participant) sendAnswer(ctx context.Context, c *peerCall, now time.Time) {
	ans := &signaling.Answer{
		Answer:       event.CallData{Type: event.CallDataTypeAnswer, SDP: c.pc.LocalDescription().SDP},
		Capabilities: &signaling.Capabilities{},
		Metadata:     p.localMetadata(c),
	}
	if err := p.send(ctx, c, ans); err != nil {
		zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to send answer")
		p.endCall(ctx, c, signaling.ReasonSendAnswer, false, false)
		return
	}
	state := StateConnecting
	if ice := c.pc.ICEConnectionState(); ice == webrtc.ICEConnectionStateConnected || ice == webrtc.ICEConnectionStateCompleted {
		state = StateConnected
	}
	p.setState(c, state, now)
	p.descriptionSent(c, now)
}

// send stamps msg for c and sends it to the remote device.
func (p *Participant) send(ctx context.Context, c *peerCall, msg signaling.Message) error {
	return p.sendTo(ctx, c.id, c.remote, c.remoteSession, msg)
}

func (p *Participant) sendTo(ctx context.Context, callID signaling.CallID, remote signaling.DeviceKey, dest signaling.SessionID, msg signaling.Message) error {
	p.outbox.Stamp(msg, p.conf, callID, dest)
	raw, err := signaling.Marshal(msg)
	if err != nil {
		return err
	}
	if p.dev != nil {
		return p.dev.Send(ctx, msg.Type(), map[id.UserID]map[id.DeviceID]json.RawMessage{remote.UserID: {remote.DeviceID: raw}}, true)
	}
	_, err = p.cli.SendToDevice(ctx, msg.Type(), &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		remote.UserID: {remote.DeviceID: {VeryRaw: raw}},
	}})
	if err != nil {
		return fmt.Errorf("failed to send %s: %w", msg.Type().Type, err)
	}
	return nil
}

// endCall ends c: optionally sends a hangup, closes the connection and
// schedules a retry for calls we are responsible for.
func (p *Participant) endCall(ctx context.Context, c *peerCall, reason signaling.HangupReason, sendHangup, byRemote bool) {
	if c.state == StateEnded {
		return
	}
	if sendHangup {
		if err := p.send(ctx, c, &signaling.Hangup{Reason: reason}); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to send hangup")
		}
	}
	zerolog.Ctx(ctx).Debug().Str("call_id", string(c.id)).Stringer("remote", c.remote).
		Str("reason", string(reason)).Bool("by_remote", byRemote).Msg("Call ended")
	now := time.Now()
	p.setState(c, StateEnded, now)
	p.obs.update(func() {
		c.rec.info.EndReason = reason
		c.rec.info.EndedByRemote = byRemote
	})
	p.closeCall(c)
	p.outbox.Forget(c.id)
	p.inbox.ForgetCall(c.id)
	if p.current[c.remote] == c {
		delete(p.current, c.remote)
		r := p.retry[c.remote]
		if r == nil || r.session != c.remoteSession {
			r = &retryState{session: c.remoteSession}
			p.retry[c.remote] = r
		}
		r.at = now.Add(signaling.RetryInterval)
		if signaling.RetriedBy(reason) {
			r.count++
		}
	}
}

// closeCall releases c's media and connection.
func (p *Participant) closeCall(c *peerCall) {
	delete(p.calls, c.id)
	for _, lt := range c.local {
		lt.src.detach(lt.track)
	}
	if c.screen != nil {
		c.screen.src.detach(c.screen.track)
	}
	if c.pc != nil {
		if err := c.pc.Close(); err != nil {
			p.log.Debug().Err(err).Str("call_id", string(c.id)).Msg("Error closing peer connection")
		}
	}
}

// callFor finds the live call a message is for and checks that it comes
// from that call's peer device.
func (p *Participant) callFor(env signaling.Envelope) (*peerCall, string) {
	b := env.Message.Common()
	c := p.calls[b.CallID]
	switch {
	case c == nil:
		return nil, "no live call " + string(b.CallID)
	case b.Sender(env.Sender) != c.remote:
		return nil, fmt.Sprintf("call %s belongs to %s", b.CallID, c.remote)
	}
	return c, ""
}

func (p *Participant) dispatch(ctx context.Context, env signaling.Envelope, now time.Time) {
	if inv, ok := env.Message.(*signaling.Invite); ok {
		p.handleInvite(ctx, env, inv, now)
		return
	}
	c, why := p.callFor(env)
	if c == nil {
		zerolog.Ctx(ctx).Debug().Object("msg", env).Str("reason", why).Msg("Ignoring signalling message")
		return
	}
	switch m := env.Message.(type) {
	case *signaling.Answer:
		p.handleAnswer(ctx, c, m, now)
	case *signaling.Candidates:
		p.handleCandidates(ctx, c, m)
	case *signaling.SelectAnswer:
		if !c.outbound && m.SelectedPartyID != signaling.PartyID(p.outbox.DeviceID) {
			p.endCall(ctx, c, signaling.ReasonAnsweredElsewhere, false, true)
		}
	case *signaling.Negotiate:
		p.handleNegotiate(ctx, c, m, now)
	case *signaling.MetadataChanged:
		p.mergeMetadata(c, m.Type().Type, m.Metadata, now)
	case *signaling.Hangup:
		p.endCall(ctx, c, m.EffectiveReason(), false, true)
	case *signaling.Reject:
		if c.outbound && (c.state == StateInviteSent || c.state == StateCreateOffer) {
			p.endCall(ctx, c, m.EffectiveReason(), false, true)
		}
	}
}

func (p *Participant) handleInvite(ctx context.Context, env signaling.Envelope, inv *signaling.Invite, now time.Time) {
	log := zerolog.Ctx(ctx).With().Object("msg", env).Logger()
	key := inv.Sender(env.Sender)
	if inv.Invitee != "" && inv.Invitee != p.self.UserID {
		log.Debug().Msg("Ignoring invite for another user")
		return
	}
	if p.skip(key) {
		log.Debug().Msg("Ignoring invite from a skipped peer")
		return
	}
	existing := p.current[key]
	var ex *signaling.ExistingCall
	if existing != nil {
		ex = &signaling.ExistingCall{CallID: existing.id, PendingOutbound: existing.outbound && (existing.state == StateCreateOffer || existing.state == StateInviteSent)}
	}
	action := signaling.DecideInvite(ex, inv.CallID)
	if ex != nil && ex.PendingOutbound && action != signaling.InviteDuplicate {
		p.obs.update(func() { p.obs.glare++ })
	}
	log.Debug().Stringer("action", action).Msg("Incoming invite")
	switch action {
	case signaling.InviteDuplicate:
		return
	case signaling.InviteRejectIncoming:
		if err := p.sendTo(ctx, inv.CallID, key, inv.SenderSessionID, &signaling.Hangup{Reason: signaling.ReasonReplaced}); err != nil {
			log.Err(err).Msg("Failed to hang up the losing incoming call")
		}
		p.outbox.Forget(inv.CallID)
		return
	case signaling.InviteReplaceExisting:
		p.endCall(ctx, existing, signaling.ReasonReplaced, existing.descSent, false)
	}
	c := p.newCall(inv.CallID, key, inv.SenderSessionID, false, now)
	c.listed = existing != nil && existing.listed
	c.opponentParty = inv.PartyID
	p.mergeMetadata(c, inv.Type().Type, inv.Metadata, now)
	fail := func(reason signaling.HangupReason, err error) {
		log.Err(err).Msg("Failed to answer call")
		p.endCall(ctx, c, reason, true, false)
	}
	if err := p.newPC(c); err != nil {
		fail(signaling.ReasonCreateAnswer, err)
		return
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: inv.Offer.SDP}); err != nil {
		fail(signaling.ReasonSetRemoteDescription, err)
		return
	}
	p.remoteDescriptionSet(ctx, c)
	if err := p.addLocalMedia(c); err != nil {
		fail(signaling.ReasonCreateAnswer, err)
		return
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err == nil {
		err = c.pc.SetLocalDescription(answer)
	}
	if err != nil {
		fail(signaling.ReasonCreateAnswer, err)
		return
	}
	p.setState(c, StateCreateAnswer, now)
	c.sendDescAt = now.Add(signaling.GatherWait)
}

func (p *Participant) handleAnswer(ctx context.Context, c *peerCall, m *signaling.Answer, now time.Time) {
	if !c.outbound || c.state != StateInviteSent {
		return
	}
	c.opponentParty = m.PartyID
	p.mergeMetadata(c, m.Type().Type, m.Metadata, now)
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.Answer.SDP}); err != nil {
		zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to apply answer")
		p.endCall(ctx, c, signaling.ReasonSetRemoteDescription, true, false)
		return
	}
	p.remoteDescriptionSet(ctx, c)
	state := StateConnecting
	if ice := c.pc.ICEConnectionState(); ice == webrtc.ICEConnectionStateConnected || ice == webrtc.ICEConnectionStateCompleted {
		state = StateConnected
	}
	p.setState(c, state, now)
	if m.PartyID != "" {
		if err := p.send(ctx, c, &signaling.SelectAnswer{SelectedPartyID: m.PartyID}); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("call_id", string(c.id)).Msg("Failed to send select_answer")
		}
	}
}

func (p *Participant) remoteDescriptionSet(ctx context.Context, c *peerCall) {
	c.remoteDescSet = true
	for _, cand := range c.pendingRemote {
		if err := c.pc.AddICECandidate(cand); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Str("call_id", string(c.id)).Msg("Failed to add buffered candidate")
		}
	}
	c.pendingRemote = nil
}

func (p *Participant) handleCandidates(ctx context.Context, c *peerCall, m *signaling.Candidates) {
	if c.opponentParty != "" && m.PartyID != "" && m.PartyID != c.opponentParty {
		return
	}
	for _, cand := range m.Candidates {
		if cand.IsEndOfCandidates() {
			continue
		}
		init := webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: cand.SDPMid, SDPMLineIndex: cand.SDPMLineIndex, UsernameFragment: cand.UsernameFragment}
		if !c.remoteDescSet {
			c.pendingRemote = append(c.pendingRemote, init)
			continue
		}
		if err := c.pc.AddICECandidate(init); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Str("call_id", string(c.id)).Msg("Failed to add candidate")
		}
	}
}

// renegotiate sends a new offer in m.call.negotiate (what js-sdk does on
// negotiationneeded).
func (p *Participant) renegotiate(ctx context.Context, c *peerCall) error {
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("failed to create offer: %w", err)
	}
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("failed to set local offer: %w", err)
	}
	c.makingOffer = true
	return p.send(ctx, c, &signaling.Negotiate{
		Description: event.CallData{Type: event.CallDataTypeOffer, SDP: c.pc.LocalDescription().SDP},
		Lifetime:    signaling.DefaultLifetime,
		Metadata:    p.localMetadata(c),
	})
}

// handleNegotiate is perfect negotiation as js-sdk/hydrogen do it (§4.5):
// the callee is polite; pion has no implicit rollback, so the polite side
// rolls back explicitly and offers again afterwards.
func (p *Participant) handleNegotiate(ctx context.Context, c *peerCall, m *signaling.Negotiate, now time.Time) {
	log := zerolog.Ctx(ctx).With().Str("call_id", string(c.id)).Logger()
	if c.state != StateConnecting && c.state != StateConnected {
		return
	}
	switch m.Description.Type {
	case event.CallDataTypeOffer:
		polite := !c.outbound
		collision := c.makingOffer || c.pc.SignalingState() != webrtc.SignalingStateStable
		if collision && !polite {
			log.Debug().Msg("Ignoring colliding renegotiation offer (impolite side)")
			return
		}
		if collision {
			if err := c.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); err != nil {
				log.Err(err).Msg("Failed to roll back local offer")
				return
			}
			c.makingOffer = false
			c.reofferAfter = true
		}
		p.mergeMetadata(c, m.Type().Type, m.Metadata, now)
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.Description.SDP}); err != nil {
			log.Err(err).Msg("Failed to apply renegotiation offer")
			return
		}
		answer, err := c.pc.CreateAnswer(nil)
		if err == nil {
			err = c.pc.SetLocalDescription(answer)
		}
		if err != nil {
			log.Err(err).Msg("Failed to answer renegotiation")
			return
		}
		if err := p.send(ctx, c, &signaling.Negotiate{
			Description: event.CallData{Type: event.CallDataTypeAnswer, SDP: c.pc.LocalDescription().SDP},
			Metadata:    p.localMetadata(c),
		}); err != nil {
			log.Err(err).Msg("Failed to send renegotiation answer")
			return
		}
		p.obs.update(func() { c.rec.info.Negotiations++ })
		if c.reofferAfter {
			c.reofferAfter = false
			if err := p.renegotiate(ctx, c); err != nil {
				log.Err(err).Msg("Failed to offer again after rollback")
			}
		}
	case event.CallDataTypeAnswer:
		if !c.makingOffer {
			return
		}
		c.makingOffer = false
		p.mergeMetadata(c, m.Type().Type, m.Metadata, now)
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.Description.SDP}); err != nil {
			log.Err(err).Msg("Failed to apply renegotiation answer")
			return
		}
		p.obs.update(func() { c.rec.info.Negotiations++ })
	}
}

func (p *Participant) mergeMetadata(c *peerCall, evtType string, md signaling.StreamMetadata, now time.Time) {
	if md == nil {
		return
	}
	c.remoteMeta = c.remoteMeta.Merge(md)
	merged := c.remoteMeta
	p.obs.update(func() {
		c.rec.info.RemoteMetadata = merged
		c.rec.info.MetadataChanges = append(c.rec.info.MetadataChanges, MetadataChange{At: now, EventType: evtType, Metadata: md})
		// Tracks that arrived before their metadata get their purpose now.
		for _, ts := range c.rec.tracks {
			if ts.info.Purpose == "" {
				ts.info.Purpose = merged[ts.info.StreamID].Purpose
			}
		}
	})
}

func (p *Participant) onLocalCandidate(m iceCandMsg, now time.Time) {
	c := p.calls[m.callID]
	if c == nil {
		return
	}
	if m.cand == nil {
		c.cands.End()
	} else {
		j := m.cand.ToJSON()
		c.cands.Add(signaling.Candidate{Candidate: j.Candidate, SDPMid: j.SDPMid, SDPMLineIndex: j.SDPMLineIndex, UsernameFragment: j.UsernameFragment})
	}
	if c.descSent && c.flushAt.IsZero() {
		c.flushAt = now.Add(p.flushDelay(c))
	}
}

func (p *Participant) onICEState(ctx context.Context, m iceStateMsg, now time.Time) {
	c := p.calls[m.callID]
	if c == nil {
		return
	}
	p.obs.update(func() { c.rec.info.ICEState = m.state })
	switch m.state {
	case webrtc.ICEConnectionStateConnected, webrtc.ICEConnectionStateCompleted:
		if c.state == StateConnecting {
			p.setState(c, StateConnected, now)
		}
		if r := p.retry[c.remote]; r != nil {
			r.count = 0
		}
	case webrtc.ICEConnectionStateFailed:
		p.endCall(ctx, c, signaling.ReasonICEFailed, true, false)
	}
}

func (p *Participant) onPCState(ctx context.Context, m pcStateMsg, _ time.Time) {
	c := p.calls[m.callID]
	if c == nil {
		return
	}
	p.obs.update(func() { c.rec.info.PeerState = m.state })
	if m.state == webrtc.PeerConnectionStateFailed {
		p.endCall(ctx, c, signaling.ReasonICEFailed, true, false)
	}
}

func (p *Participant) onTrack(m trackMsg) {
	p.media.Add(1)
	go func() {
		defer p.media.Done()
		buf := make([]byte, 1500)
		for {
			if _, _, err := m.track.Read(buf); err != nil {
				return
			}
			m.stats.packets.Add(1)
			m.stats.lastAt.Store(time.Now().UnixNano())
		}
	}()
	var rec *callRecord
	var purpose signaling.Purpose
	if c := p.calls[m.callID]; c != nil {
		rec = c.rec
		purpose = c.remoteMeta[m.stats.info.StreamID].Purpose
	}
	p.obs.update(func() {
		if rec == nil {
			for _, r := range p.obs.calls {
				if r.info.CallID == m.callID {
					rec = r
				}
			}
		}
		if rec == nil {
			return
		}
		m.stats.info.Purpose = purpose
		rec.tracks = append(rec.tracks, m.stats)
	})
}
