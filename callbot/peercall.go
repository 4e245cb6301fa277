package callbot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// candidateBatchDelay batches local candidates; gathering on a host is fast,
// and the end of gathering flushes at once.
const candidateBatchDelay = 100 * time.Millisecond

// newPeer creates the PeerConnection for one remote device, with the bot's
// silent audio track, and wires its callbacks to post into the loop.
func (c *Call) newPeer(ctx context.Context, part signaling.Participant, callID signaling.CallID, outgoing bool, now time.Time) (*peer, error) {
	if maxPeers := c.m.cfg.Limits.MaxPeersPerCall; maxPeers > 0 && c.peers[part.Key()] == nil && len(c.peers) >= maxPeers {
		c.limitHit(ctx, "max_peers_per_call")
		return nil, fmt.Errorf("%w: %d peer connections", errLimit, maxPeers)
	}
	pc, err := c.m.api.NewPeerConnection(webrtc.Configuration{ICEServers: c.iceServers})
	if err != nil {
		return nil, fmt.Errorf("failed to create peer connection: %w", err)
	}
	p := &peer{
		info: c.peerInfo(part, callID), key: part.Key(), outgoing: outgoing, pc: pc, createdAt: now,
		tracks: map[string]*RemoteTrack{}, remoteMeta: signaling.StreamMetadata{},
	}
	silent, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "recorder-audio", c.streamID)
	if err == nil {
		_, err = pc.AddTrack(silent)
	}
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("failed to add the silent audio track: %w", err)
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			c.post(gatheringDoneMsg{p: p})
			return
		}
		init := cand.ToJSON()
		c.post(localCandidateMsg{p: p, cand: signaling.Candidate{Candidate: init.Candidate, SDPMid: init.SDPMid, SDPMLineIndex: init.SDPMLineIndex}})
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		c.post(connStateMsg{p: p, state: st})
	})
	pc.OnTrack(func(track *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
		c.post(trackMsg{p: p, track: trackArrival{track: track, receiver: receiver, at: time.Now()}})
	})
	c.peers[p.key] = p
	c.byCallID[callID] = p
	p.pcState = webrtc.PeerConnectionStateNew
	c.m.peerState(webrtc.PeerConnectionStateUnknown, p.pcState)
	return p, nil
}

// placeCall sends an invite to a device the bot is responsible for calling.
func (c *Call) placeCall(ctx context.Context, part signaling.Participant, now time.Time) error {
	callID := signaling.NewCallID(now)
	p, err := c.newPeer(ctx, part, callID, true, now)
	if err != nil {
		return err
	}
	if _, err = p.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		c.dropPeer(p)
		return fmt.Errorf("failed to add video transceiver: %w", err)
	}
	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		c.dropPeer(p)
		return fmt.Errorf("failed to create offer: %w", err)
	}
	p.state = PeerInviteSent
	p.inviteOlm = c.m.sendOlm(p.key)
	invite := &signaling.Invite{
		Offer:    event.CallData{SDP: p.pc.LocalDescription().SDP, Type: event.CallDataTypeOffer},
		Lifetime: int64(c.m.inviteTimeout / time.Millisecond), Invitee: part.UserID, Metadata: c.ownMetadata(),
	}
	p.inviteExpires = now.Add(c.m.inviteTimeout)
	c.deliver(ctx, c.inbox.KnowCall(callID), now)
	c.send(p, invite)
	zerolog.Ctx(ctx).Info().Stringer("peer", p.key).Str("call_id", string(callID)).Msg("Placed call")
	return nil
}

func (c *Call) handleInvite(ctx context.Context, key signaling.DeviceKey, invite *signaling.Invite, now time.Time) {
	log := zerolog.Ctx(ctx)
	part, ok := c.participants[key]
	if !ok {
		log.Info().Msg("Ignored invite from a device that left the call")
		return
	}
	var existing *signaling.ExistingCall
	old := c.peers[key]
	if old != nil {
		existing = &signaling.ExistingCall{CallID: old.info.CallID, PendingOutbound: old.outgoing && old.state == PeerInviteSent}
	}
	switch action := signaling.DecideInvite(existing, invite.CallID); action {
	case signaling.InviteDuplicate:
		return
	case signaling.InviteRejectIncoming:
		log.Info().Msg("Glare: keeping our call, hanging up theirs")
		tmp := &peer{info: c.peerInfo(part, invite.CallID), key: key}
		c.send(tmp, &signaling.Hangup{Reason: signaling.ReasonReplaced})
		c.outbox.Forget(invite.CallID)
		return
	case signaling.InviteReplaceExisting:
		log.Info().Str("old_call_id", string(old.info.CallID)).Msg("Replacing existing call with the new invite")
		c.endPeer(ctx, old, signaling.ReasonReplaced, false, now)
		delete(c.attempts, key)
	}
	if invite.Offer.Type != "" && invite.Offer.Type != event.CallDataTypeOffer {
		log.Warn().Str("sdp_type", string(invite.Offer.Type)).Msg("Rejected invite without an offer")
		return
	}
	if err := signaling.CheckSDP(invite.Offer.SDP); err != nil {
		log.Warn().Err(err).Msg("Rejected invite")
		return
	}
	p, err := c.newPeer(ctx, part, invite.CallID, false, now)
	if err != nil {
		log.Err(err).Msg("Failed to answer invite")
		return
	}
	p.partyID = invite.PartyID
	c.updateMetadata(ctx, p, invite.Metadata, now)
	if err = p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: invite.Offer.SDP}); err != nil {
		log.Warn().Err(err).Msg("Rejected invite with an unusable offer")
		c.send(p, &signaling.Reject{Reason: signaling.ReasonSetRemoteDescription})
		c.dropPeer(p)
		return
	}
	p.remoteDescSet = true
	c.addRemoteCandidates(ctx, p)
	answer, err := p.pc.CreateAnswer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(answer)
	}
	if err != nil {
		log.Err(err).Msg("Failed to create answer")
		c.send(p, &signaling.Hangup{Reason: signaling.ReasonUnknownError})
		c.dropPeer(p)
		return
	}
	p.state = PeerConnecting
	c.send(p, &signaling.Answer{
		Answer:   event.CallData{SDP: p.pc.LocalDescription().SDP, Type: event.CallDataTypeAnswer},
		Metadata: c.ownMetadata(),
	})
	log.Info().Msg("Answered call")
}

func (c *Call) handleAnswer(ctx context.Context, p *peer, answer *signaling.Answer) {
	if !p.outgoing || p.state != PeerInviteSent {
		zerolog.Ctx(ctx).Debug().Msg("Ignored answer for a call that is not waiting for one")
		return
	}
	p.partyID = answer.PartyID
	c.updateMetadata(ctx, p, answer.Metadata, time.Now())
	err := signaling.CheckSDP(answer.Answer.SDP)
	if err == nil {
		err = p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer.Answer.SDP})
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Hanging up: unusable answer")
		c.endPeer(ctx, p, signaling.ReasonSetRemoteDescription, true, time.Now())
		return
	}
	p.remoteDescSet = true
	p.state = PeerConnecting
	c.addRemoteCandidates(ctx, p)
	c.send(p, &signaling.SelectAnswer{SelectedPartyID: answer.PartyID})
	zerolog.Ctx(ctx).Info().Msg("Call answered")
}

func (c *Call) handleCandidates(ctx context.Context, p *peer, msg *signaling.Candidates) {
	for _, cand := range msg.Candidates {
		if cand.IsEndOfCandidates() {
			continue
		}
		if len(p.remoteCands) >= maxHeldCandidates {
			c.limitHit(ctx, "held_candidates")
			break
		}
		p.remoteCands = append(p.remoteCands, webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: cand.SDPMid, SDPMLineIndex: cand.SDPMLineIndex})
	}
	if p.remoteDescSet {
		c.addRemoteCandidates(ctx, p)
	}
}

func (c *Call) addRemoteCandidates(ctx context.Context, p *peer) {
	for _, cand := range p.remoteCands {
		if err := p.pc.AddICECandidate(cand); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Str("candidate", cand.Candidate).Msg("Ignored unusable remote candidate")
		}
	}
	p.remoteCands = nil
}

// handleNegotiate answers renegotiation offers (a screen share or camera
// added mid-call). The bot is always the polite side and never starts one.
func (c *Call) handleNegotiate(ctx context.Context, p *peer, msg *signaling.Negotiate) {
	log := zerolog.Ctx(ctx)
	c.updateMetadata(ctx, p, msg.Metadata, time.Now())
	if msg.Description.Type != event.CallDataTypeOffer {
		log.Debug().Str("sdp_type", string(msg.Description.Type)).Msg("Ignored negotiate that is not an offer")
		return
	}
	if p.pc.SignalingState() != webrtc.SignalingStateStable {
		// Polite: roll back whatever we had (we never offer, so this is rare).
		_ = p.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback})
	}
	err := signaling.CheckSDP(msg.Description.SDP)
	if err == nil {
		err = p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: msg.Description.SDP})
	}
	if err != nil {
		log.Warn().Err(err).Msg("Ignored unusable renegotiation offer")
		return
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(answer)
	}
	if err != nil {
		log.Err(err).Msg("Failed to answer renegotiation")
		return
	}
	c.send(p, &signaling.Negotiate{
		Description: event.CallData{SDP: p.pc.LocalDescription().SDP, Type: event.CallDataTypeAnswer},
		Lifetime:    signaling.DefaultLifetime, Metadata: c.ownMetadata(),
	})
	log.Info().Msg("Answered renegotiation")
}

// live reports whether p is still the call's peer for its device; events of
// a replaced or ended peer are dropped.
func (c *Call) live(p *peer) bool { return c.peers[p.key] == p && p.state != PeerEnded }

func (c *Call) onLocalCandidate(msg localCandidateMsg, now time.Time) {
	if !c.live(msg.p) {
		return
	}
	msg.p.localCands.Add(msg.cand)
	if msg.p.candFlushAt.IsZero() {
		msg.p.candFlushAt = now.Add(candidateBatchDelay)
	}
}

func (c *Call) onGatheringDone(ctx context.Context, msg gatheringDoneMsg) {
	if !c.live(msg.p) {
		return
	}
	msg.p.localCands.End()
	c.flushCandidates(c.peerCtx(ctx, msg.p), msg.p)
}

func (c *Call) onConnState(ctx context.Context, msg connStateMsg, now time.Time) {
	p := msg.p
	if !c.live(p) {
		return
	}
	ctx = c.peerCtx(ctx, p)
	log := zerolog.Ctx(ctx)
	log.Debug().Stringer("state", msg.state).Msg("Peer connection state changed")
	c.m.peerState(p.pcState, msg.state)
	p.pcState = msg.state
	switch msg.state {
	case webrtc.PeerConnectionStateConnected:
		if p.state != PeerConnected {
			p.state = PeerConnected
			p.connectedAt = now
			delete(c.attempts, p.key)
			log.Info().Dur("setup_time", now.Sub(p.createdAt)).Msg("Peer connected")
		}
	case webrtc.PeerConnectionStateFailed:
		log.Warn().Msg("Peer connection failed")
		c.endPeer(ctx, p, signaling.ReasonICEFailed, true, now)
	}
}

func (c *Call) onTrack(ctx context.Context, msg trackMsg) {
	if !c.live(msg.p) {
		// A late track of a dead peer: read it until its closed connection
		// ends it, so pion's buffers do not fill.
		c.readers.Add(1)
		go func() {
			defer c.readers.Done()
			drainTrack(msg.track)
		}()
		return
	}
	if maxTracks := c.m.cfg.Limits.MaxTracksPerPeer; maxTracks > 0 && len(msg.p.tracks) >= maxTracks {
		c.limitHit(ctx, "max_tracks_per_peer")
		c.readers.Add(1)
		go func() {
			defer c.readers.Done()
			drainTrack(msg.track)
		}()
		return
	}
	c.startTrack(c.peerCtx(ctx, msg.p), msg.p, msg.track)
}

// maxHeldCandidates bounds the remote candidates held for a peer until its
// description is set.
const maxHeldCandidates = 64

// errLimit means a configured limit refused something.
var errLimit = errors.New("limit reached")

// limitHit logs (once per call and limit) and counts that a participant
// reached one of the limits.
func (c *Call) limitHit(ctx context.Context, limit string) {
	if c.m.met != nil {
		c.m.met.LimitsHit.WithLabelValues(limit).Inc()
	}
	if c.limitsLogged[limit] {
		return
	}
	if c.limitsLogged == nil {
		c.limitsLogged = map[string]bool{}
	}
	c.limitsLogged[limit] = true
	zerolog.Ctx(ctx).Warn().Str("limit", limit).Msg("A participant reached a limit; what is beyond it is not recorded")
}

// peerCtx adds the peer's fields to the context's logger.
func (c *Call) peerCtx(ctx context.Context, p *peer) context.Context {
	return zerolog.Ctx(ctx).With().Stringer("peer", p.key).Str("call_id", string(p.info.CallID)).Logger().WithContext(ctx)
}

func (c *Call) flushCandidates(ctx context.Context, p *peer) {
	p.candFlushAt = time.Time{}
	batch := p.localCands.Take()
	if len(batch) == 0 || p.state == PeerEnded {
		return
	}
	c.send(p, &signaling.Candidates{Candidates: batch})
	zerolog.Ctx(ctx).Trace().Int("candidates", len(batch)).Msg("Sent candidates")
}

// endPeer ends a peer call: optionally tells the peer, closes the connection,
// lets the track readers finish, and schedules a retry when the bot placed
// the call and the device is still there.
func (c *Call) endPeer(ctx context.Context, p *peer, reason signaling.HangupReason, retry bool, now time.Time) {
	if p.state == PeerEnded {
		return
	}
	notify := reason != signaling.ReasonAnsweredElsewhere
	if notify && c.peers[p.key] == p {
		if p.state == PeerInviteSent || p.state == PeerConnecting || p.state == PeerConnected {
			c.send(p, &signaling.Hangup{Reason: reason})
		}
	}
	p.state = PeerEnded
	c.dropPeer(p)
	c.m.sink.ParticipantLeft(ctx, p.info, now)
	if retry && p.outgoing {
		if at := c.attempts[p.key]; at != nil {
			at.next = now.Add(c.m.retryPeriod)
		}
	} else if !p.outgoing {
		delete(c.attempts, p.key)
	}
	c.reconcileSoon(now)
}

// dropPeer forgets a peer and closes its connection off the loop (Close
// waits for pion's goroutines).
func (c *Call) dropPeer(p *peer) {
	if c.peers[p.key] == p {
		delete(c.peers, p.key)
	}
	delete(c.byCallID, p.info.CallID)
	if p.pcState != webrtc.PeerConnectionStateUnknown {
		c.m.peerState(p.pcState, webrtc.PeerConnectionStateClosed)
		p.pcState = webrtc.PeerConnectionStateUnknown
	}
	c.inbox.ForgetCall(p.info.CallID)
	c.outbox.Forget(p.info.CallID)
	pc := p.pc
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		if err := pc.Close(); err != nil && !errors.Is(err, io.EOF) {
			zerolog.Ctx(c.m.bgCtx).Debug().Err(err).Msg("Error closing peer connection")
		}
	}()
}

// trackArrival is a remote track pion announced.
type trackArrival struct {
	track    *webrtc.TrackRemote
	receiver *webrtc.RTPReceiver
	at       time.Time
}

func drainTrack(tr trackArrival) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := tr.track.Read(buf); err != nil && !errors.Is(err, io.ErrShortBuffer) {
			return
		}
	}
}

// startTrack hands a new remote track to the sink and starts its readers.
func (c *Call) startTrack(ctx context.Context, p *peer, tr trackArrival) {
	rt := &RemoteTrack{
		Peer: p.info, StreamID: tr.track.StreamID(), TrackID: tr.track.ID(), Kind: tr.track.Kind(),
		Codec: tr.track.Codec(), SSRC: tr.track.SSRC(), Purpose: p.purposeOf(tr.track.StreamID()), Started: tr.at,
	}
	if rt.Kind == webrtc.RTPCodecTypeVideo {
		rt.RequestKeyframe = p.requestKeyframe(rt.SSRC, func() {
			if c.m.met != nil {
				c.m.met.KeyframeRequests.Inc()
			}
		})
	} else {
		rt.RequestKeyframe = func() {}
	}
	p.tracks[rt.TrackID] = rt
	zerolog.Ctx(ctx).Info().Str("stream_id", rt.StreamID).Str("track_id", rt.TrackID).Str("kind", rt.Kind.String()).
		Str("codec", rt.Codec.MimeType).Str("purpose", string(rt.Purpose)).Msg("Receiving track")
	var sink TrackSink
	if s := c.m.sink.TrackStarted(ctx, rt); s != nil {
		sink = &lockedSink{sink: s}
	}
	c.readers.Add(2)
	go func() {
		defer c.readers.Done()
		readRTP(tr.track, sink, c.onFirstPacket, c.onTrackPanic(rt))
	}()
	go func() {
		defer c.readers.Done()
		readRTCP(tr.receiver, sink, c.onTrackPanic(rt))
	}()
}

// rtpReader is what readRTP needs of a pion TrackRemote.
type rtpReader interface {
	Read(b []byte) (int, interceptor.Attributes, error)
}

// readRTP feeds a track's packets to its sink until the track ends. The
// read buffer and the packet are reused: no allocation per packet. A packet
// too large for the buffer is skipped. A panic in the sink (a parser bug
// on hostile media) is contained to this track: it is reported to
// onPanic, the sink is dropped and the track drained to its end.
func readRTP(track rtpReader, sink TrackSink, onFirst func(), onPanic func(any)) {
	defer func() {
		if sink != nil {
			CloseSink(sink, onPanic)
		}
	}()
	buf := make([]byte, RTPReadBuffer)
	var pkt rtp.Packet
	first := true
	for {
		n, _, err := track.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			continue // larger than any packet a peer may send; pion dropped it
		}
		if err != nil {
			return
		}
		if err = pkt.Unmarshal(buf[:n]); err != nil {
			continue // not RTP; pion's interceptors already counted it
		}
		if first {
			first = false
			onFirst()
		}
		if sink == nil {
			continue
		}
		if err = WriteSink(sink, &pkt, time.Now(), onPanic); err != nil {
			// The sink stopped (disk full, a panic); keep draining so
			// pion's buffers do not fill, but stop writing.
			CloseSink(sink, onPanic)
			sink = nil
		}
	}
}

// RTPReadBuffer is the size of a track's read buffer: above pion's receive
// MTU. Readers allocate it once per track and reuse it with one rtp.Packet.
const RTPReadBuffer = 1500

// errSinkPanicked is what a sink that panicked returns.
var errSinkPanicked = errors.New("track sink panicked")

// WriteSink writes one packet, turning a panic in the sink (a parser bug on
// hostile media) into an error after reporting it to onPanic. Every track
// reader writes through it, whatever transport the track came over.
func WriteSink(sink TrackSink, pkt *rtp.Packet, now time.Time, onPanic func(any)) (err error) {
	defer func() {
		if v := recover(); v != nil {
			onPanic(v)
			err = errSinkPanicked
		}
	}()
	return sink.WriteRTP(pkt, now)
}

// CloseSink closes a sink, reporting a panic in it to onPanic.
func CloseSink(sink TrackSink, onPanic func(any)) {
	defer func() {
		if v := recover(); v != nil {
			onPanic(v)
		}
	}()
	sink.Close()
}

// onTrackPanic reports a panic contained in a track's reader: logged with
// its stack and counted, the call and other tracks go on.
func (c *Call) onTrackPanic(rt *RemoteTrack) func(any) {
	return func(v any) {
		zerolog.Ctx(c.m.bgCtx).Error().Str("stack", string(debug.Stack())).Any("panic", v).
			Stringer("room_id", c.roomID).Stringer("user_id", rt.Peer.UserID).Str("track_id", rt.TrackID).
			Msg("Recording a track panicked; that track is no longer recorded")
		if c.m.met != nil {
			c.m.met.Panics.WithLabelValues("track").Inc()
		}
	}
}

// onFirstPacket records the time from joining to the call's first packet.
func (c *Call) onFirstPacket() {
	if c.firstPacket.CompareAndSwap(false, true) && c.m.met != nil {
		c.m.met.JoinToFirstPacket.Observe(time.Since(c.joinedAt).Seconds())
	}
}

// readRTCP drains a receiver's RTCP (pion's interceptors need it read) and
// passes sender reports on.
func readRTCP(receiver *webrtc.RTPReceiver, sink TrackSink, onPanic func(any)) {
	for {
		pkts, _, err := receiver.ReadRTCP()
		if err != nil {
			return
		}
		if sink == nil {
			continue
		}
		for _, pkt := range pkts {
			if sr, ok := pkt.(*rtcp.SenderReport); ok && !senderReport(sink, sr, onPanic) {
				sink = nil
				break
			}
		}
	}
}

// senderReport passes one sender report on; false if the sink panicked.
func senderReport(sink TrackSink, sr *rtcp.SenderReport, onPanic func(any)) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			onPanic(v)
			ok = false
		}
	}()
	sink.SenderReport(sr.NTPTime, sr.RTPTime, time.Now())
	return true
}

// lockedSink serialises the RTP and RTCP readers' calls into one TrackSink
// and makes Close final.
type lockedSink struct {
	lock   sync.Mutex
	sink   TrackSink
	closed bool
}

func (ls *lockedSink) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	ls.lock.Lock()
	defer ls.lock.Unlock()
	if ls.closed {
		return errCallEnded
	}
	return ls.sink.WriteRTP(pkt, arrival)
}

func (ls *lockedSink) SenderReport(ntp uint64, rtpTime uint32, arrival time.Time) {
	ls.lock.Lock()
	defer ls.lock.Unlock()
	if !ls.closed {
		ls.sink.SenderReport(ntp, rtpTime, arrival)
	}
}

func (ls *lockedSink) Close() {
	ls.lock.Lock()
	defer ls.lock.Unlock()
	if !ls.closed {
		ls.closed = true
		ls.sink.Close()
	}
}
