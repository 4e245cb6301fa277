// Package simpeer is a simulated participant of a legacy full-mesh MSC3401
// group call that speaks the protocol the way matrix-js-sdk's GroupCall does
// (shared/docs/protocol.md): member state, who-calls-whom, seq per call,
// batched trickle ICE with the end marker, glare, select_answer, hangup,
// reject, renegotiation for screen sharing, mute metadata, session changes
// and leaving. Media is real Opus and VP8 from testdata/media, paced in real
// time. Signalling is Olm-encrypted through callbot/e2ee or plaintext.
//
// One goroutine (the event loop) owns all call state; the /sync goroutine,
// pion callbacks and the public methods only post messages into it. ICE is
// restricted to 127.0.0.1.
package simpeer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/e2ee"
	"github.com/matrix-recorder/recorder/internal/mailbox"
)

var (
	// ErrNoCall means the room has no group call to join and CreateCall is off.
	ErrNoCall = errors.New("no group call in the room")
	// ErrNotJoined means the operation needs the participant to be in the call.
	ErrNotJoined = errors.New("not in the call")
	// ErrStopped means the participant was stopped.
	ErrStopped = errors.New("participant stopped")
	// ErrBadConfig means the Config is incomplete.
	ErrBadConfig = errors.New("invalid simpeer config")
)

// ReasonMemberLeft is the local end reason of a call whose peer device left
// the member state (no hangup is sent, as in hydrogen).
const ReasonMemberLeft signaling.HangupReason = "member_left"

const (
	defaultSyncTimeout = 5 * time.Second
	// maxLoopWait caps the event loop's sleep so periodic work (reconcile,
	// expiry, renewal) runs at least this often.
	maxLoopWait = time.Second
)

// Config configures a Participant.
type Config struct {
	// Client is logged in (UserID, DeviceID, AccessToken set) and joined to
	// RoomID. The participant runs its own /sync on it.
	Client *mautrix.Client
	RoomID id.RoomID
	// ConfID is the call to join; empty adopts the room's call the way
	// js-sdk picks it.
	ConfID signaling.ConfID
	// CreateCall creates the org.matrix.msc3401.call event (m.intent m.room,
	// m.type CallType) when there is no call to join.
	CreateCall bool
	// CallType defaults to m.video.
	CallType signaling.CallType

	// Encrypt sends Olm-encrypted signalling (plaintext to devices without
	// keys) and uploads device keys. Needs CryptoDB and PickleKey.
	Encrypt   bool
	CryptoDB  *dbutil.Database
	PickleKey []byte

	// Video sends VP8 video next to Opus audio; otherwise audio only.
	Video bool
	// MediaDir holds AudioFile, VideoFile and ScreenFile (testdata/media).
	MediaDir string
	// Audio is the Ogg Opus file in MediaDir to send instead of AudioFile
	// (e.g. a tone of its own per participant).
	Audio string

	// Misbehaviour for tests.

	// ClaimDeviceID puts this device_id (and party_id) into every
	// signalling message instead of the real one; the member event keeps the
	// real device.
	ClaimDeviceID id.DeviceID
	// SkipMemberEvent never publishes membership: a sender that is not in
	// the call. Combine with InviteAll to make it call others anyway.
	SkipMemberEvent bool
	// InviteAll calls every participant device regardless of ShouldInvite
	// (glare, intruders).
	InviteAll bool
	// HoldInvites prepares outgoing calls but sends the invites only on
	// ReleaseInvites (deterministic glare).
	HoldInvites bool
	// UnstableMetadataEvent sends mute changes as
	// org.matrix.call.sdp_stream_metadata_changed (hydrogen, js-sdk < v41)
	// instead of m.call.sdp_stream_metadata_changed.
	UnstableMetadataEvent bool

	// Browser makes the media behave like a browser's (padding probes, key
	// frames on request, ramp-up, a lossy network); zero is the plain
	// simulator.
	Browser Browser

	// SyncTimeout is the /sync long-poll timeout (default 5 s).
	SyncTimeout time.Duration

	// For load generators (cmd/loadtest).

	// SkipPeer, if set, names devices this participant neither calls nor
	// answers: load participants that would otherwise mesh with each other
	// send their media only to the recorder (or the baseline joiner).
	SkipPeer func(signaling.DeviceKey) bool
	// ReceiveOnly sends no media: the participant receives and discards
	// (a bare pion joiner to compare the recorder with, which also takes
	// pion's default interceptors).
	ReceiveOnly bool
	// VideoFrameBytes pads every camera frame to at least this many bytes
	// (key frames to three times as many), turning the small test video
	// into a camera of a chosen bitrate: 4000 is about 1 Mbit/s at 30 fps.
	// The padding is zeros after the frame, which receivers that do not
	// decode (the recorder) carry like any other payload.
	VideoFrameBytes int
}

// Participant is one simulated call participant (one Matrix device).
type Participant struct {
	cfg  Config
	cli  *mautrix.Client
	self signaling.DeviceKey
	dev  *e2ee.Device
	api  *webrtc.API
	log  zerolog.Logger

	audio, video, screen *source

	obs observer
	box *mailbox.Box[any]

	cancel   context.CancelFunc
	wg       sync.WaitGroup // loop, sync, media sources
	media    sync.WaitGroup // RTP/RTCP readers of pion tracks
	done     chan struct{}  // closed when the loop has exited
	stopOnce sync.Once
	since    string // owned by the sync goroutine after Start

	// Everything below is owned by the event loop.
	session    signaling.SessionID
	outbox     *signaling.Outbox
	inbox      *signaling.Inbox
	conf       signaling.ConfID
	joined     bool
	sharing    bool
	audioMuted bool
	videoMuted bool
	state      map[stateKey]*event.Event
	ownEvents  map[id.EventID]struct{}
	lastOwn    id.EventID
	calls      map[signaling.CallID]*peerCall // live calls
	current    map[signaling.DeviceKey]*peerCall
	retry      map[signaling.DeviceKey]*retryState
	renewAt    time.Time
	reconciled time.Time
}

type stateKey struct {
	evtType  string
	stateKey string
}

type retryState struct {
	session signaling.SessionID
	at      time.Time
	count   int
}

// Loop messages.
type (
	syncBatch struct {
		received []e2ee.Received
		state    []*event.Event
	}
	cmdMsg struct {
		ctx  context.Context //nolint:containedctx // the caller's context travels with its command
		fn   func(ctx context.Context) error
		done chan error
	}
	iceCandMsg struct {
		callID signaling.CallID
		cand   *webrtc.ICECandidate
	}
	iceStateMsg struct {
		callID signaling.CallID
		state  webrtc.ICEConnectionState
	}
	pcStateMsg struct {
		callID signaling.CallID
		state  webrtc.PeerConnectionState
	}
	trackMsg struct {
		callID signaling.CallID
		stats  *trackStats
		track  *webrtc.TrackRemote
	}
)

// New prepares a participant: loads the media, opens the Olm device (keys
// are on the server when New returns) and fetches the room state with an
// initial /sync. Call Start to run it and Join to enter the call.
func New(ctx context.Context, cfg Config) (*Participant, error) {
	cli := cfg.Client
	if cli == nil || cli.UserID == "" || cli.DeviceID == "" || cfg.RoomID == "" || cfg.MediaDir == "" {
		return nil, fmt.Errorf("%w: Client (with user and device), RoomID and MediaDir are required", ErrBadConfig)
	}
	if cfg.Encrypt && (cfg.CryptoDB == nil || len(cfg.PickleKey) == 0) {
		return nil, fmt.Errorf("%w: Encrypt needs CryptoDB and PickleKey", ErrBadConfig)
	}
	if cfg.CallType == "" {
		cfg.CallType = signaling.CallTypeVideo
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = defaultSyncTimeout
	}
	p := &Participant{
		cfg:       cfg,
		cli:       cli,
		self:      signaling.DeviceKey{UserID: cli.UserID, DeviceID: cli.DeviceID},
		box:       mailbox.New[any](),
		done:      make(chan struct{}),
		state:     map[stateKey]*event.Event{},
		ownEvents: map[id.EventID]struct{}{},
		calls:     map[signaling.CallID]*peerCall{},
		current:   map[signaling.DeviceKey]*peerCall{},
		retry:     map[signaling.DeviceKey]*retryState{},
	}
	p.log = zerolog.Ctx(ctx).With().Str("component", "simpeer").Stringer("user_id", cli.UserID).Stringer("device_id", cli.DeviceID).Logger()
	ctx = p.log.WithContext(ctx)

	var err error
	if err := p.loadMedia(); err != nil {
		return nil, err
	}
	if p.api, p.obs.wire, err = newAPI(cfg.Browser, cfg.ReceiveOnly); err != nil {
		return nil, err
	}
	if cfg.Encrypt {
		if p.dev, err = e2ee.Open(ctx, cli, cfg.CryptoDB, cfg.PickleKey); err != nil {
			return nil, fmt.Errorf("failed to open olm device: %w", err)
		}
	}
	p.newSession()
	// Initial sync: full room state, and the to-device position.
	resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		p.closeDevice()
		return nil, fmt.Errorf("initial sync failed: %w", err)
	}
	p.since = resp.NextBatch
	// Queued for the loop like every later batch: its to-device events are
	// decrypted here and cannot be decrypted again.
	p.box.Push(p.batch(ctx, resp))
	return p, nil
}

// loadMedia loads the sources the participant sends (none if ReceiveOnly).
func (p *Participant) loadMedia() error {
	cfg := p.cfg
	p.obs.sources = map[string]*source{}
	if cfg.ReceiveOnly {
		return nil
	}
	var err error
	audioFile := AudioFile
	if cfg.Audio != "" {
		audioFile = cfg.Audio
	}
	if p.audio, err = loadOpus(filepath.Join(cfg.MediaDir, audioFile)); err != nil {
		return err
	}
	p.obs.sources["audio"] = p.audio
	if cfg.Video {
		camera := VideoFile
		if cfg.Browser.KeyframesOnRequest {
			camera = LongGOPFile
		}
		if p.video, err = loadVP8(filepath.Join(cfg.MediaDir, camera)); err != nil {
			return err
		}
		p.video.probes, p.video.keyOnRequest = cfg.Browser.Probes, cfg.Browser.KeyframesOnRequest
		if cfg.Browser.RampUp {
			small, err := loadVP8(filepath.Join(cfg.MediaDir, ScreenFile))
			if err != nil {
				return err
			}
			p.video.ramp = small.frames[:30] // one second, from its key frame
		}
		if p.screen, err = loadVP8(filepath.Join(cfg.MediaDir, ScreenFile)); err != nil {
			return err
		}
		p.obs.sources["video"], p.obs.sources["screen"] = p.video, p.screen
		if cfg.VideoFrameBytes > 0 {
			p.video.frames = padFrames(p.video.frames, cfg.VideoFrameBytes)
		}
	}
	return nil
}

// padFrames pads VP8 frames to at least n bytes, key frames to 3n.
func padFrames(frames []frame, n int) []frame {
	out := make([]frame, len(frames))
	for i, f := range frames {
		size := n
		if len(f.data) > 0 && f.data[0]&1 == 0 { // VP8 key frame (RFC 6386 §9.1)
			size = 3 * n
		}
		data := make([]byte, max(size, len(f.data)))
		copy(data, f.data)
		out[i] = frame{data: data, ticks: f.ticks}
	}
	return out
}

// Start runs the participant's goroutines until Stop.
func (p *Participant) Start(ctx context.Context) {
	loopCtx, cancel := context.WithCancel(p.log.WithContext(context.WithoutCancel(ctx)))
	p.cancel = cancel
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.loop(loopCtx)
	}()
	go func() {
		defer p.wg.Done()
		p.syncLoop(loopCtx)
	}()
	for _, src := range []*source{p.audio, p.video, p.screen} {
		if src == nil {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			src.run(loopCtx)
		}()
	}
}

// Stop leaves the call (hangs up every peer, removes the member entry) if
// still in it, then stops all goroutines and closes every peer connection.
func (p *Participant) Stop(ctx context.Context) error {
	var err error
	p.stopOnce.Do(func() {
		if p.cancel == nil {
			p.closeDevice()
			return
		}
		err = p.do(ctx, func(ctx context.Context) error {
			if p.joined {
				return p.leave(ctx)
			}
			return nil
		})
		p.cancel()
		p.wg.Wait()
		p.media.Wait()
		p.closeDevice()
	})
	return err
}

func (p *Participant) closeDevice() {
	if p.dev != nil {
		_ = p.dev.Close()
	}
}

// UserID is the participant's user.
func (p *Participant) UserID() id.UserID { return p.self.UserID }

// DeviceID is the participant's real device.
func (p *Participant) DeviceID() id.DeviceID { return p.self.DeviceID }

// Key is the participant's (user, device).
func (p *Participant) Key() signaling.DeviceKey { return p.self }

// Client is the participant's Matrix client.
func (p *Participant) Client() *mautrix.Client { return p.cli }

// Device is the Olm device (nil without Encrypt).
func (p *Participant) Device() *e2ee.Device { return p.dev }

// Snapshot returns a copy of the observable state.
func (p *Participant) Snapshot() Snapshot { return p.obs.snapshot() }

// Join enters the call: picks or creates the call event, publishes the
// member event and starts calling the devices it is responsible for.
func (p *Participant) Join(ctx context.Context) error { return p.do(ctx, p.join) }

// Leave hangs up every peer call (user_hangup) and removes the member entry.
func (p *Participant) Leave(ctx context.Context) error {
	return p.do(ctx, func(ctx context.Context) error {
		if !p.joined {
			return ErrNotJoined
		}
		return p.leave(ctx)
	})
}

// SetMuted sets the audio/video mute state: the sources stop sending and
// every peer gets m.call.sdp_stream_metadata_changed.
func (p *Participant) SetMuted(ctx context.Context, audio, video bool) error {
	return p.do(ctx, func(ctx context.Context) error { return p.setMuted(ctx, audio, video) })
}

// ReplayRamp makes a camera with Browser.RampUp change resolution twice
// more: its ramp (160x120) again from a key frame, then the camera from its
// key frame. A no-op without a ramp.
func (p *Participant) ReplayRamp() {
	if p.video != nil {
		p.video.replay.Store(true)
	}
}

// ShareScreen starts or stops a screen share: a new stream with purpose
// m.screenshare is added to (removed from) every peer connection and
// renegotiated with m.call.negotiate; the member feeds are updated.
func (p *Participant) ShareScreen(ctx context.Context, on bool) error {
	return p.do(ctx, func(ctx context.Context) error { return p.setScreenshare(ctx, on) })
}

// NewSession switches to a fresh session_id like a reloaded client: with
// hangup every peer call is hung up first (else the calls are dropped
// silently), then the member event is re-published with the new session.
func (p *Participant) NewSession(ctx context.Context, hangup bool) error {
	return p.do(ctx, func(ctx context.Context) error { return p.changeSession(ctx, hangup) })
}

// ReleaseInvites sends the invites held back by HoldInvites.
func (p *Participant) ReleaseInvites(ctx context.Context) error {
	return p.do(ctx, func(ctx context.Context) error {
		now := time.Now()
		for _, c := range p.sortedCalls() {
			if c.held {
				c.held = false
				c.sendDescAt = now
			}
		}
		p.cfg.HoldInvites = false
		return nil
	})
}

// do runs fn on the event loop and waits for it.
func (p *Participant) do(ctx context.Context, fn func(ctx context.Context) error) error {
	if p.cancel == nil {
		return fmt.Errorf("%w: not started", ErrStopped)
	}
	cmd := cmdMsg{ctx: p.log.WithContext(ctx), fn: fn, done: make(chan error, 1)}
	p.box.Push(cmd)
	select {
	case err := <-cmd.done:
		return err
	case <-p.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// syncLoop long-polls /sync, decrypts to-device events and posts batches.
func (p *Participant) syncLoop(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := p.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: p.since, Timeout: int(p.cfg.SyncTimeout.Milliseconds())})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Sync failed, retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		p.since = resp.NextBatch
		p.box.Push(p.batch(ctx, resp))
	}
}

func (p *Participant) batch(ctx context.Context, resp *mautrix.RespSync) syncBatch {
	var b syncBatch
	if p.dev != nil {
		b.received = p.dev.HandleSync(ctx, resp.ToDevice.Events, &resp.DeviceLists, &resp.DeviceOTKCount)
	} else {
		for _, evt := range resp.ToDevice.Events {
			if evt == nil || evt.Type.Type == event.ToDeviceEncrypted.Type {
				continue
			}
			b.received = append(b.received, e2ee.Received{
				Type:    event.Type{Type: evt.Type.Type, Class: event.ToDeviceEventType},
				Content: json.RawMessage(evt.Content.VeryRaw),
				Sender:  evt.Sender,
			})
		}
	}
	if room := resp.Rooms.Join[p.cfg.RoomID]; room != nil {
		for _, list := range [][]*event.Event{room.State.Events, room.Timeline.Events} {
			for _, evt := range list {
				if evt != nil && evt.StateKey != nil {
					b.state = append(b.state, evt)
				}
			}
		}
	}
	return b
}

// loop is the event loop: it owns all call state.
func (p *Participant) loop(ctx context.Context) {
	defer close(p.done)
	defer p.shutdown()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		p.tick(ctx, now)
		timer.Reset(time.Until(p.nextDeadline(now)))
		select {
		case <-ctx.Done():
			return
		case <-p.box.Notify():
			for _, m := range p.box.Take() {
				p.handle(ctx, m)
			}
		case <-timer.C:
		}
	}
}

func (p *Participant) handle(ctx context.Context, m any) {
	now := time.Now()
	switch m := m.(type) {
	case syncBatch:
		changed := false
		for _, evt := range m.state {
			changed = p.applyState(evt) || changed
		}
		if changed {
			p.reconcile(ctx, now)
		}
		for _, rcv := range m.received {
			p.handleSignal(ctx, rcv, now)
		}
	case cmdMsg:
		m.done <- m.fn(m.ctx)
	case iceCandMsg:
		p.onLocalCandidate(m, now)
	case iceStateMsg:
		p.onICEState(ctx, m, now)
	case pcStateMsg:
		p.onPCState(ctx, m, now)
	case trackMsg:
		p.onTrack(m)
	}
}

// tick does all time-driven work.
func (p *Participant) tick(ctx context.Context, now time.Time) {
	for _, c := range p.sortedCalls() {
		p.tickCall(ctx, c, now)
	}
	p.deliver(ctx, p.inbox.Expire(now), now)
	if !p.joined {
		return
	}
	if !p.renewAt.IsZero() && !now.Before(p.renewAt) {
		if err := p.publishMember(ctx); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to renew member event")
		}
	}
	if now.Sub(p.reconciled) >= maxLoopWait {
		p.reconcile(ctx, now)
	}
}

func (p *Participant) nextDeadline(now time.Time) time.Time {
	next := now.Add(maxLoopWait)
	consider := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	for _, c := range p.calls {
		if !c.held && !c.descSent {
			consider(c.sendDescAt)
		}
		consider(c.flushAt)
		if c.state == StateInviteSent {
			consider(c.inviteDeadline)
		}
	}
	if t, ok := p.inbox.NextDeadline(); ok {
		consider(t)
	}
	return next
}

// shutdown closes every peer connection without signalling (Stop has
// already left the call if it could).
func (p *Participant) shutdown() {
	for _, c := range p.sortedCalls() {
		p.closeCall(c)
	}
}

func (p *Participant) sortedCalls() []*peerCall {
	out := make([]*peerCall, 0, len(p.calls))
	for _, c := range p.calls {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *peerCall) int { return signaling.CompareIDs(string(a.id), string(b.id)) })
	return out
}

// newSession starts a fresh session id with its own seq counters and inbox.
func (p *Participant) newSession() {
	p.session = signaling.SessionID(random.String(10))
	claimed := p.self.DeviceID
	if p.cfg.ClaimDeviceID != "" {
		claimed = p.cfg.ClaimDeviceID
	}
	p.outbox = signaling.NewOutbox(claimed, p.session)
	var confs []signaling.ConfID
	if p.joined {
		confs = append(confs, p.conf)
	}
	p.inbox = signaling.NewInbox(signaling.InboxConfig{SessionID: p.session, Confs: confs})
	p.obs.update(func() { p.obs.session = p.session })
}

// applyState stores a room state event; it reports whether anything a call
// depends on changed.
func (p *Participant) applyState(evt *event.Event) bool {
	if evt.StateKey == nil {
		return false
	}
	t := evt.Type.Type
	if !signaling.IsCallMemberType(t) && !signaling.IsGroupCallType(t) && t != event.StateMember.Type {
		return false
	}
	if signaling.IsCallMemberType(t) && *evt.StateKey == p.self.UserID.String() {
		// Ignore the echo of an own member event older than the last one we
		// sent; the local copy is newer.
		if _, ours := p.ownEvents[evt.ID]; ours && evt.ID != p.lastOwn {
			return false
		}
	}
	p.state[stateKey{t, *evt.StateKey}] = evt
	return true
}

func (p *Participant) stateContent(t event.Type, key string) json.RawMessage {
	if evt := p.state[stateKey{t.Type, key}]; evt != nil {
		return json.RawMessage(evt.Content.VeryRaw)
	}
	return nil
}

func (p *Participant) eventsOf(match func(string) bool) []*event.Event {
	var out []*event.Event
	for k, evt := range p.state {
		if match(k.evtType) {
			out = append(out, evt)
		}
	}
	return out
}

func (p *Participant) roomJoined(user id.UserID) bool {
	raw := p.stateContent(event.StateMember, user.String())
	var c struct {
		Membership event.Membership `json:"membership"`
	}
	return raw != nil && json.Unmarshal(raw, &c) == nil && c.Membership == event.MembershipJoin
}

// participants returns the other active devices of the call, as js-sdk
// computes them.
func (p *Participant) participants(now time.Time) []signaling.Participant {
	var out []signaling.Participant
	for _, part := range signaling.Members(p.eventsOf(signaling.IsCallMemberType), p.conf, now) {
		if part.Key() == p.self || !p.roomJoined(part.UserID) {
			continue
		}
		out = append(out, part)
	}
	return out
}

func (p *Participant) join(ctx context.Context) error {
	if p.joined {
		return nil
	}
	// Dendrite's /sync trails the room server a little; /state does not.
	stateMap, err := p.cli.State(ctx, p.cfg.RoomID)
	if err != nil {
		return fmt.Errorf("failed to fetch room state: %w", err)
	}
	for _, byKey := range stateMap {
		for _, evt := range byKey {
			p.applyState(evt)
		}
	}
	conf := p.cfg.ConfID
	if conf == "" {
		call, err := signaling.PickCall(p.eventsOf(signaling.IsGroupCallType))
		switch {
		case err == nil:
			conf = call.ConfID
		case errors.Is(err, signaling.ErrNoActiveCall) && p.cfg.CreateCall:
			conf = signaling.ConfID(random.String(16))
		default:
			return fmt.Errorf("%w: %w", ErrNoCall, err)
		}
	}
	if p.cfg.CreateCall && p.stateContent(signaling.StateGroupCall, string(conf)) == nil {
		content := signaling.GroupCallContent{Intent: signaling.IntentRoom, Type: p.cfg.CallType}
		raw, err := content.MarshalJSON()
		if err != nil {
			return err
		}
		resp, err := p.cli.SendStateEvent(ctx, p.cfg.RoomID, signaling.StateGroupCall, string(conf), json.RawMessage(raw))
		if err != nil {
			return fmt.Errorf("failed to create the call event: %w", err)
		}
		p.applyState(localEvent(signaling.StateGroupCall, string(conf), p.self.UserID, resp.EventID, raw))
	}
	p.conf = conf
	p.inbox.AddConf(conf)
	p.joined = true
	if err := p.publishMember(ctx); err != nil {
		p.joined = false
		p.inbox.RemoveConf(conf)
		return err
	}
	p.obs.update(func() { p.obs.conf, p.obs.joined = conf, true })
	zerolog.Ctx(ctx).Info().Str("conf_id", string(conf)).Str("session_id", string(p.session)).Msg("Joined the call")
	p.reconcile(ctx, time.Now())
	return nil
}

func (p *Participant) leave(ctx context.Context) error {
	for _, c := range p.sortedCalls() {
		p.endCall(ctx, c, signaling.ReasonUserHangup, true, false)
	}
	var err error
	if !p.cfg.SkipMemberEvent {
		now := time.Now()
		raw, rerr := signaling.RemoveMemberDevice(p.stateContent(signaling.StateCallMember, p.self.UserID.String()), p.conf, p.self.DeviceID, now)
		if rerr == nil {
			rerr = p.sendMember(ctx, raw)
		}
		err = rerr
	}
	p.inbox.RemoveConf(p.conf)
	p.joined = false
	p.renewAt = time.Time{}
	p.obs.update(func() { p.obs.joined = false })
	zerolog.Ctx(ctx).Info().Str("conf_id", string(p.conf)).Msg("Left the call")
	return err
}

func (p *Participant) publishMember(ctx context.Context) error {
	if p.cfg.SkipMemberEvent {
		return nil
	}
	now := time.Now()
	purposes := []signaling.Purpose{signaling.PurposeUserMedia}
	if p.sharing {
		purposes = append(purposes, signaling.PurposeScreenshare)
	}
	dev := signaling.NewMemberDevice(p.self.DeviceID, p.session, now.Add(signaling.MemberValidity), purposes...)
	raw, err := signaling.SetMemberDevice(p.stateContent(signaling.StateCallMember, p.self.UserID.String()), p.conf, dev, now)
	if err != nil {
		return err
	}
	if err := p.sendMember(ctx, raw); err != nil {
		return err
	}
	p.renewAt = now.Add(signaling.MemberRenewAfter)
	return nil
}

func (p *Participant) sendMember(ctx context.Context, raw json.RawMessage) error {
	resp, err := p.cli.SendStateEvent(ctx, p.cfg.RoomID, signaling.StateCallMember, p.self.UserID.String(), raw)
	if err != nil {
		return fmt.Errorf("failed to send member event: %w", err)
	}
	p.ownEvents[resp.EventID] = struct{}{}
	p.lastOwn = resp.EventID
	p.applyState(localEvent(signaling.StateCallMember, p.self.UserID.String(), p.self.UserID, resp.EventID, raw))
	return nil
}

func localEvent(t event.Type, key string, sender id.UserID, evtID id.EventID, raw json.RawMessage) *event.Event {
	return &event.Event{
		Type: t, StateKey: &key, Sender: sender, ID: evtID, Timestamp: time.Now().UnixMilli(),
		Content: event.Content{VeryRaw: raw},
	}
}

// skip reports whether remote is a device this participant leaves alone
// (Config.SkipPeer).
func (p *Participant) skip(remote signaling.DeviceKey) bool {
	return p.cfg.SkipPeer != nil && p.cfg.SkipPeer(remote)
}

func (p *Participant) shouldCall(remote signaling.DeviceKey) bool {
	return p.cfg.InviteAll || signaling.ShouldInvite(p.self, remote)
}

// reconcile places the calls we are responsible for, replaces calls to
// devices whose session changed and drops calls to devices that left.
func (p *Participant) reconcile(ctx context.Context, now time.Time) {
	p.reconciled = now
	if !p.joined {
		return
	}
	listed := map[signaling.DeviceKey]bool{}
	for _, part := range p.participants(now) {
		key := part.Key()
		listed[key] = true
		c := p.current[key]
		if c != nil {
			c.listed = true
			if c.remoteSession != part.SessionID && p.shouldCall(key) {
				p.endCall(ctx, c, signaling.ReasonNewSession, true, false)
				c = nil
			}
		}
		if c != nil || !p.shouldCall(key) || p.skip(key) {
			continue
		}
		if r := p.retry[key]; r != nil && r.session == part.SessionID &&
			(now.Before(r.at) || r.count > signaling.MaxInviteRetries) {
			continue
		}
		p.placeCall(ctx, part, now)
	}
	for _, c := range p.sortedCalls() {
		if c.listed && !listed[c.remote] && p.current[c.remote] == c {
			p.endCall(ctx, c, ReasonMemberLeft, false, true)
		}
	}
}

func (p *Participant) setMuted(ctx context.Context, audio, video bool) error {
	p.audioMuted, p.videoMuted = audio, video
	p.audio.muted.Store(audio)
	if p.video != nil {
		p.video.muted.Store(video)
	}
	var errs []error
	for _, c := range p.sortedCalls() {
		if !c.descSent {
			continue // the invite/answer will carry the flags
		}
		msg := &signaling.MetadataChanged{Metadata: p.localMetadata(c), Unstable: p.cfg.UnstableMetadataEvent}
		if err := p.send(ctx, c, msg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Participant) setScreenshare(ctx context.Context, on bool) error {
	if p.screen == nil {
		return fmt.Errorf("%w: screen sharing needs Video", ErrBadConfig)
	}
	if on == p.sharing {
		return nil
	}
	p.sharing = on
	var errs []error
	for _, c := range p.sortedCalls() {
		if c.state != StateConnecting && c.state != StateConnected {
			continue
		}
		var err error
		if on {
			err = p.addScreenTrack(c)
		} else {
			err = p.removeScreenTrack(c)
		}
		if err == nil {
			err = p.renegotiate(ctx, c)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("call %s: %w", c.id, err))
		}
	}
	if p.joined {
		errs = append(errs, p.publishMember(ctx))
	}
	return errors.Join(errs...)
}

func (p *Participant) changeSession(ctx context.Context, hangup bool) error {
	for _, c := range p.sortedCalls() {
		p.endCall(ctx, c, signaling.ReasonUserHangup, hangup, false)
	}
	p.newSession()
	p.retry = map[signaling.DeviceKey]*retryState{}
	if !p.joined {
		return nil
	}
	if err := p.publishMember(ctx); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("session_id", string(p.session)).Msg("Changed session")
	p.reconcile(ctx, time.Now())
	return nil
}

// handleSignal checks a received to-device event and feeds it to the inbox.
func (p *Participant) handleSignal(ctx context.Context, rcv e2ee.Received, now time.Time) {
	if !signaling.IsCallEventType(rcv.Type.Type) {
		return
	}
	drop := func(from signaling.DeviceKey, reason string) {
		zerolog.Ctx(ctx).Debug().Stringer("from", from).Str("event_type", rcv.Type.Type).Str("reason", reason).Msg("Dropping signalling message")
		p.obs.update(func() {
			p.obs.drops = append(p.obs.drops, Drop{At: now, Sender: from, EventType: rcv.Type.Type, Reason: reason})
		})
	}
	p.obs.update(func() {
		if rcv.Encrypted {
			p.obs.rcvd.Encrypted++
		} else {
			p.obs.rcvd.Plaintext++
		}
	})
	msg, err := signaling.Parse(rcv.Type.Type, rcv.Content)
	if err != nil {
		drop(signaling.DeviceKey{UserID: rcv.Sender, DeviceID: rcv.SenderDevice}, err.Error())
		return
	}
	from := msg.Common().Sender(rcv.Sender)
	if rcv.Encrypted && rcv.SenderDevice != msg.Common().DeviceID {
		drop(from, fmt.Sprintf("olm sender device %s differs from device_id", rcv.SenderDevice))
		return
	}
	if !p.joined {
		drop(from, ErrNotJoined.Error())
		return
	}
	p.deliver(ctx, p.inbox.Push(signaling.Envelope{Sender: rcv.Sender, Message: msg}, now), now)
}

func (p *Participant) deliver(ctx context.Context, out signaling.Output, now time.Time) {
	for _, d := range out.Drops {
		from := d.Envelope.Message.Common().Sender(d.Envelope.Sender)
		reason := d.Err.Error()
		p.obs.update(func() {
			p.obs.drops = append(p.obs.drops, Drop{At: now, Sender: from, EventType: d.Envelope.Message.Type().Type, Reason: reason})
		})
	}
	for _, env := range out.Deliver {
		p.dispatch(ctx, env, now)
	}
}

// randomString returns n characters of [A-Za-z0-9].
