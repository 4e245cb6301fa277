package livekit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit/framecrypt"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/mailbox"
)

const (
	// ConfID is what CallInfo.ConfID holds for MatrixRTC calls: the
	// application and scope of the session.
	ConfID signaling.ConfID = "m.call#m.room"
	// connectTimeout bounds getting a token and joining one SFU.
	connectTimeout = 20 * time.Second
	// reconnectDelay is the wait before the n-th reconnect in a row to an
	// SFU that dropped us: n-1 times this, the first one almost at once.
	reconnectDelay = 2 * time.Second
	firstReconnect = 200 * time.Millisecond
	// maxReconnects bounds reconnecting to one SFU in a row.
	maxReconnects = 5
	// leaveStateTimeout bounds removing the own membership.
	leaveStateTimeout = 10 * time.Second
	// leaveReadersTimeout bounds waiting for the track readers on leave.
	leaveReadersTimeout = 5 * time.Second
	// leaveSinkTimeout is the context deadline of the sink's CallLeft.
	leaveSinkTimeout = 30 * time.Second
	// topLayerWait bounds how long a simulcast camera's frames are dropped
	// while the SFU ramps up to the top layer (it starts low and switches
	// with a key frame): files then start at full resolution instead of with
	// a short low-resolution segment. After it, any layer is recorded.
	topLayerWait = 2500 * time.Millisecond
	// emptyCheck is how often the loop looks whether anyone is left.
	emptyCheck = time.Second
	// renewRetry is the wait before retrying a failed membership renewal.
	renewRetry = 30 * time.Second
	// keyWait is how long an encrypted track may wait for its publisher's
	// media key before the recorder re-sends its membership as a new join
	// (new created_ts): js-sdk then sends its key again. A key sent while
	// the recorder's device was unknown to the sender is lost for good
	// otherwise. At most maxKeyNudges times per call.
	keyWait      = 10 * time.Second
	maxKeyNudges = 3
	// indexWait is how long a track's frames wait for the key of a new
	// index (a rotation: js-sdk uses a new key 1 s after sending it, and a
	// loaded homeserver may take longer to deliver it) before they go on
	// and fail to decrypt.
	indexWait = 3 * time.Second
)

// Call is one joined MatrixRTC call. Its run goroutine owns every field
// below done; other goroutines only post messages.
type Call struct {
	m      *Manager
	roomID id.RoomID
	dev    Device
	info   callbot.CallInfo
	msgs   *mailbox.Box[any]
	done   chan struct{}
	// joinStarted is when Join was asked for (join time = first packet - this).
	joinStarted time.Time
	firstPacket atomic.Bool
	readers     sync.WaitGroup

	serviceURL string // the recorder's own focus
	ownCreated time.Time
	renewAt    time.Time
	members    map[string]matrixrtc.Membership // by LiveKit identity
	identityOf map[string]string               // state key → identity
	conns      map[string]*conn                // by service URL
	connecting map[string]bool
	reconnects map[string]int
	partsBySID map[string]*participant
	tracks     map[string]*track // by track SID
	toldE2EE   bool
	// keyNudges counts memberships re-sent for want of a key, the last at
	// lastNudge.
	keyNudges int
	lastNudge time.Time
	// emptySince is when the call was first seen without any member present
	// on an SFU (zero while someone is).
	emptySince  time.Time
	leaving     bool
	leaveReason string
}

// conn is one connection to an SFU, for one authorization service.
type conn struct {
	serviceURL string
	sfuURL     string
	room       *lksdk.Room
	sif        []byte // the room's server-injected-frame trailer (media E2EE)
	closed     atomic.Bool
}

// participant is a LiveKit participant the call has seen tracks of.
type participant struct {
	sid      string
	identity string
	conn     *conn
	info     callbot.PeerInfo // zero UserID until a membership names it
	gone     bool
	mutes    map[signaling.Purpose]*muteState
}

type muteState struct{ audio, video bool }

// track is one subscribed LiveKit track. Its reader goroutine reads it
// from the start and discards packets until a sink is set.
type track struct {
	sid     string
	p       *participant
	remote  *webrtc.TrackRemote
	pub     *lksdk.RemoteTrackPublication
	rp      *lksdk.RemoteParticipant
	purpose signaling.Purpose
	kind    webrtc.RTPCodecType
	vp8     bool // drop the SFU's blank key frames
	opus    bool // and its silence frames
	// topW×topH is the largest simulcast layer; until waitUntil, video is
	// dropped until a key frame of that size (0: not simulcast).
	topW, topH int
	waitUntil  time.Time
	// encrypted: frames are end-to-end encrypted; they are decrypted with
	// keys, the publisher's key ring, set with the sink.
	encrypted bool
	since     time.Time // subscribed

	lock    sync.Mutex
	sink    callbot.TrackSink
	keys    *framecrypt.Keys
	ended   bool
	pending []*rtcp.SenderReport
}

// Messages to the call loop.
type (
	stateMsg struct{ evt *event.Event }
	leaveMsg struct {
		reason string
		stop   callbot.StopReason // what CallLeft reports; "" keeps an earlier one
	}
	statusMsg struct{ reply chan callbot.CallStatus }
	subMsg    struct {
		conn   *conn
		remote *webrtc.TrackRemote
		pub    *lksdk.RemoteTrackPublication
		rp     *lksdk.RemoteParticipant
	}
	trackEndedMsg struct{ sid string }
	muteMsg       struct {
		pub   lksdk.TrackPublication
		rp    *lksdk.RemoteParticipant
		muted bool
		at    time.Time
	}
	participantGoneMsg struct {
		conn *conn
		sid  string
		at   time.Time
	}
	connectedMsg struct {
		serviceURL string
		conn       *conn
		err        error
	}
	disconnectedMsg struct {
		conn   *conn
		reason lksdk.DisconnectionReason
	}
	reconnectMsg struct{ serviceURL string }
	// keyMsg: a member's device sent a new media key (its first: first).
	keyMsg struct {
		from  deviceKey
		index uint8
		first bool
	}
)

// post delivers a message to the loop; it never blocks.
func (c *Call) post(msg any) { c.msgs.Push(msg) }

// prepare does everything before the call loop runs: the virtual user's
// device and room membership, the session's focus, the recorder's own
// membership and the SFU connections.
func (m *Manager) prepare(ctx context.Context, roomID id.RoomID, userID id.UserID, recordingID string) (*Call, error) {
	started := time.Now()
	log := zerolog.Ctx(ctx)
	state, err := m.mx.RoomState(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read room state: %w", err)
	}
	session := matrixrtc.Read(state, started)
	for key, why := range session.Ignored {
		log.Debug().Str("state_key", key).AnErr("reason", why).Msg("Ignoring MatrixRTC membership")
	}
	var others []matrixrtc.Membership
	for _, mem := range session.Members {
		if !m.isRecorder(mem.UserID) {
			others = append(others, mem)
		}
	}
	if len(others) == 0 {
		return nil, fmt.Errorf("%w: no MatrixRTC memberships", callbot.ErrNoCall)
	}
	var urls []string
	for _, u := range (matrixrtc.Session{Members: others}).ServiceURLs() {
		if m.allowed(u) {
			urls = append(urls, u)
		} else {
			log.Warn().Str("service_url", u).Msg("Not connecting to a focus that is not on the allow-list")
		}
	}
	if len(urls) == 0 {
		m.mx.SendNotice(ctx, roomID, "I can't join this call: its LiveKit focus is not one I'm allowed to connect to "+
			"(config `matrixrtc.allowed_hosts`).", "")
		return nil, ErrHostNotAllowed
	}
	pl, err := m.mx.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read power levels: %w", err)
	}
	if need, have := pl.GetEventLevel(matrixrtc.StateType), pl.GetUserLevel(userID); have < need {
		m.mx.SendNotice(ctx, roomID, fmt.Sprintf("I can't join the call: this room's power levels require level %d to send `%s` events, "+
			"and the recorder user %s has level %d. A room admin can lower the level for that event type.", need, matrixrtc.StateType.Type, userID, have), "")
		return nil, fmt.Errorf("%w: %s needs level %d, %s has %d", callbot.ErrPowerLevel, matrixrtc.StateType.Type, need, userID, have)
	}
	// The device's keys are on the server before the membership is
	// published: members send media keys only to devices they can query.
	dev, err := m.mx.Device(ctx, userID, m.toDeviceHandler(userID))
	if err != nil {
		return nil, fmt.Errorf("failed to start virtual user: %w", err)
	}
	if err = dev.JoinRoom(ctx, roomID); err != nil {
		return nil, fmt.Errorf("failed to bring %s into the room: %w", userID, err)
	}
	c := &Call{
		m: m, roomID: roomID, dev: dev, msgs: mailbox.New[any](), done: make(chan struct{}), joinStarted: started,
		serviceURL: urls[0], members: map[string]matrixrtc.Membership{}, identityOf: map[string]string{},
		conns: map[string]*conn{}, connecting: map[string]bool{}, reconnects: map[string]int{},
		partsBySID: map[string]*participant{}, tracks: map[string]*track{},
	}
	rejoin := recordingID != ""
	if !rejoin {
		recordingID = started.UTC().Format("20060102T150405Z") + "-" + strings.ToLower(random.String(8))
	}
	c.info = callbot.CallInfo{
		ID:     recordingID,
		RoomID: roomID, ConfID: ConfID, UserID: userID, DeviceID: dev.DeviceID(),
		SessionID: signaling.SessionID(matrixrtc.StateKey(userID, dev.DeviceID())), JoinedAt: started,
	}
	if rejoin {
		// The stopped process's membership has this state key: a
		// created_ts makes the new one a new event, not the old one
		// unchanged (and aging).
		c.ownCreated = started
	}
	for _, mem := range others {
		c.members[mem.Identity] = mem
		c.identityOf[mem.StateKey] = mem.Identity
	}
	if err = c.publishMembership(ctx); err != nil {
		return nil, err
	}
	var firstErr error
	for _, u := range urls {
		cn, err := c.connect(ctx, u)
		if err != nil {
			log.Warn().Err(err).Str("service_url", u).Msg("Failed to connect to an SFU of the call")
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		c.conns[u] = cn
	}
	if len(c.conns) == 0 {
		c.removeMembership(ctx)
		return nil, firstErr
	}
	log.Info().Dur("took", time.Since(started)).Int("sfus", len(c.conns)).Int("members", len(others)).Msg("Joined MatrixRTC call")
	return c, nil
}

// publishMembership sends (or renews) the recorder's own membership.
func (c *Call) publishMembership(ctx context.Context) error {
	// As js-sdk: the first join has no created_ts (the event's time is the
	// membership's); a renewal names the first join's time and extends
	// expires from it, so every renewal is a new event that lives on.
	expiry := c.m.cfg.MembershipExpiry
	expires := expiry
	if !c.ownCreated.IsZero() {
		expires += time.Since(c.ownCreated).Truncate(time.Second)
	}
	content := matrixrtc.OwnContent(c.dev.UserID(), c.dev.DeviceID(), c.roomID, c.serviceURL, expires, c.ownCreated)
	if err := c.dev.SetState(ctx, c.roomID, matrixrtc.StateType, matrixrtc.StateKey(c.dev.UserID(), c.dev.DeviceID()), content); err != nil {
		return fmt.Errorf("failed to publish the recorder's call membership: %w", err)
	}
	now := time.Now()
	if c.ownCreated.IsZero() {
		c.ownCreated = now
	}
	c.renewAt = now.Add(expiry * 3 / 4)
	return nil
}

// removeMembership writes {} over the recorder's membership.
func (c *Call) removeMembership(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveStateTimeout)
	defer cancel()
	if err := c.dev.SetState(ctx, c.roomID, matrixrtc.StateType, matrixrtc.StateKey(c.dev.UserID(), c.dev.DeviceID()), struct{}{}); err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to remove the recorder's call membership")
	}
}

// connect gets a token from the authorization service and joins its SFU.
// The room's callbacks only post to the loop.
func (c *Call) connect(ctx context.Context, serviceURL string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	tok, err := c.m.sfuToken(ctx, c.dev, c.roomID, serviceURL)
	if err != nil {
		return nil, err
	}
	cn := &conn{serviceURL: serviceURL, sfuURL: tok.URL}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(remote *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		c.post(subMsg{conn: cn, remote: remote, pub: pub, rp: rp})
	}
	cb.OnTrackMuted = func(pub lksdk.TrackPublication, p lksdk.Participant) {
		if rp, ok := p.(*lksdk.RemoteParticipant); ok {
			c.post(muteMsg{pub: pub, rp: rp, muted: true, at: time.Now()})
		}
	}
	cb.OnTrackUnmuted = func(pub lksdk.TrackPublication, p lksdk.Participant) {
		if rp, ok := p.(*lksdk.RemoteParticipant); ok {
			c.post(muteMsg{pub: pub, rp: rp, muted: false, at: time.Now()})
		}
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		c.post(participantGoneMsg{conn: cn, sid: rp.SID(), at: time.Now()})
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		c.post(disconnectedMsg{conn: cn, reason: reason})
	}
	room := lksdk.NewRoom(cb)
	room.SetLogger(newLogger(*zerolog.Ctx(ctx)))
	if err = room.JoinWithContextAndToken(ctx, tok.URL, tok.JWT, lksdk.WithAutoSubscribe(true)); err != nil {
		return nil, fmt.Errorf("%w: failed to join the SFU at %s: %w", ErrFocus, tok.URL, err)
	}
	cn.room = room
	cn.sif = room.SifTrailer()
	zerolog.Ctx(ctx).Debug().Str("sfu_url", tok.URL).Str("livekit_room", room.Name()).Msg("Connected to SFU")
	return cn, nil
}

func (cn *conn) close() {
	if cn.room != nil && !cn.closed.Swap(true) {
		cn.room.Disconnect()
	}
}

// run is the call's loop.
func (c *Call) run(ctx context.Context) {
	defer close(c.done)
	defer c.m.forget(c)
	c.m.sink.CallJoined(ctx, c.info)
	renew := time.NewTimer(time.Until(c.renewAt))
	defer renew.Stop()
	empty := time.NewTicker(emptyCheck)
	defer empty.Stop()
	for !c.leaving {
		select {
		case <-ctx.Done():
			c.leaving, c.leaveReason, c.info.StopReason = true, "recorder shutting down", callbot.StopShutdown
		case <-empty.C:
			c.checkEmpty(ctx)
			c.checkKeys(ctx)
		case <-renew.C:
			if err := c.publishMembership(ctx); err != nil {
				zerolog.Ctx(ctx).Err(err).Msg("Failed to renew the recorder's call membership")
				c.renewAt = time.Now().Add(renewRetry)
			}
			renew.Reset(time.Until(c.renewAt))
		case <-c.msgs.Notify():
			for _, msg := range c.msgs.Take() {
				c.handle(ctx, msg)
			}
		}
	}
	c.shutdown(ctx)
}

// checkKeys re-sends the recorder's membership as a new join when a
// member's encrypted track has waited keyWait for its key (see keyWait).
func (c *Call) checkKeys(ctx context.Context) {
	if c.keyNudges >= maxKeyNudges || time.Since(c.lastNudge) < keyWait {
		return
	}
	var waiting *participant
	for _, t := range c.tracks {
		if !t.encrypted || t.p.gone || t.p.info.UserID == "" || time.Since(t.since) < keyWait {
			continue
		}
		if keys, _ := c.m.keyring(c.roomID, deviceKey{t.p.info.UserID, t.p.info.DeviceID}, false); keys == nil || keys.Count() == 0 {
			waiting = t.p
			break
		}
	}
	if waiting == nil {
		return
	}
	c.keyNudges++
	c.lastNudge = time.Now()
	c.ownCreated = c.lastNudge
	zerolog.Ctx(ctx).Warn().Stringer("user_id", waiting.info.UserID).Stringer("device_id", waiting.info.DeviceID).
		Dur("waited", keyWait).Msg("No media key from a participant; re-sending the recorder's membership so members send their keys")
	if err := c.publishMembership(ctx); err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to re-send the recorder's call membership")
	}
}

// checkEmpty ends the recording once no call member has been on any SFU
// for EmptyGrace: everyone left (or crashed: a membership left behind
// without LiveKit presence does not keep the recorder in the call).
func (c *Call) checkEmpty(ctx context.Context) {
	present := false
	for _, cn := range c.conns {
		for _, rp := range cn.room.GetRemoteParticipants() {
			if _, ok := c.members[rp.Identity()]; ok {
				present = true
			}
		}
	}
	switch {
	case present || len(c.connecting) > 0:
		c.emptySince = time.Time{}
	case c.emptySince.IsZero():
		c.emptySince = time.Now()
	case time.Since(c.emptySince) >= c.m.cfg.EmptyGrace:
		zerolog.Ctx(ctx).Info().Msg("Everyone left the call")
		c.m.mx.SendNotice(ctx, c.roomID, "Everyone left the call, so I stopped recording.", "")
		c.leaving, c.leaveReason, c.info.StopReason = true, "everyone left", callbot.StopEmpty
	}
}

// shutdown leaves: membership removed, SFUs disconnected, readers and
// their files finished, the sink told.
func (c *Call) shutdown(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	log.Info().Str("reason", c.leaveReason).Msg("Leaving MatrixRTC call")
	c.removeMembership(ctx)
	for _, cn := range c.conns {
		cn.close()
	}
	done := make(chan struct{})
	go func() { c.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(leaveReadersTimeout):
		log.Warn().Msg("Track readers did not end in time")
	}
	now := time.Now()
	sinkCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveSinkTimeout)
	defer cancel()
	for _, p := range c.partsBySID {
		if p.info.UserID != "" && !p.gone {
			c.m.sink.ParticipantLeft(sinkCtx, p.info, now)
		}
	}
	if c.info.UserID != "" {
		c.m.sink.CallLeft(sinkCtx, c.info, now)
	}
}

func (c *Call) requestStatus(ctx context.Context) (callbot.CallStatus, error) {
	reply := make(chan callbot.CallStatus, 1)
	c.post(statusMsg{reply: reply})
	select {
	case st := <-reply:
		return st, nil
	case <-c.done:
		return callbot.CallStatus{}, callbot.ErrNotJoined
	case <-ctx.Done():
		return callbot.CallStatus{}, ctx.Err()
	}
}

func (c *Call) requestLeave(ctx context.Context, reason string, stop callbot.StopReason) error {
	c.post(leaveMsg{reason: reason, stop: stop})
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Call) baseStatus() callbot.CallStatus {
	return callbot.CallStatus{ID: c.info.ID, Kind: Kind, RoomID: c.roomID, ConfID: ConfID, UserID: c.info.UserID,
		DeviceID: c.info.DeviceID, SessionID: c.info.SessionID, JoinedAt: c.info.JoinedAt, Peers: []callbot.PeerStatus{}}
}

func (c *Call) status() callbot.CallStatus {
	st := c.baseStatus()
	for _, p := range c.partsBySID {
		if p.gone || p.info.UserID == "" {
			continue
		}
		ps := callbot.PeerStatus{PeerInfo: p.info, State: callbot.PeerConnected}
		for _, t := range c.tracks {
			if t.p == p {
				ps.Tracks = append(ps.Tracks, string(t.purpose)+"/"+t.kind.String()+"/"+t.remote.Codec().MimeType)
				ps.Encrypted = ps.Encrypted || t.encrypted
			}
		}
		if ps.Encrypted {
			if keys, _ := c.m.keyring(c.roomID, deviceKey{p.info.UserID, p.info.DeviceID}, false); keys != nil {
				ps.KeysHeld = keys.Count()
			}
			if ps.KeysHeld == 0 {
				ps.Note = "media is end-to-end encrypted and no key has arrived from this device yet: not recorded"
			}
		}
		sort.Strings(ps.Tracks)
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool {
		return st.Peers[i].UserID+id.UserID(st.Peers[i].DeviceID) < st.Peers[j].UserID+id.UserID(st.Peers[j].DeviceID)
	})
	// The others in the call: members present on an SFU (the room
	// controller's "alone" stop condition counts them).
	st.Participants = len(st.Peers)
	return st
}

func (c *Call) handle(ctx context.Context, msg any) {
	log := zerolog.Ctx(ctx)
	switch msg := msg.(type) {
	case leaveMsg:
		c.leaving, c.leaveReason = true, msg.reason
		if msg.stop != "" && c.info.StopReason == "" {
			c.info.StopReason = msg.stop
		}
	case statusMsg:
		msg.reply <- c.status()
	case stateMsg:
		c.handleState(ctx, msg.evt)
	case subMsg:
		c.handleSubscribed(ctx, msg)
	case trackEndedMsg:
		if t := c.tracks[msg.sid]; t != nil {
			delete(c.tracks, msg.sid)
			c.maybeParticipantLeft(ctx, t.p, time.Now())
		}
	case muteMsg:
		c.handleMute(ctx, msg)
	case participantGoneMsg:
		if p := c.partsBySID[msg.sid]; p != nil && p.conn == msg.conn {
			p.gone = true
			log.Info().Str("identity", p.identity).Msg("Participant left the SFU")
			c.maybeParticipantLeft(ctx, p, msg.at)
		}
	case connectedMsg:
		delete(c.connecting, msg.serviceURL)
		if msg.err != nil {
			log.Warn().Err(msg.err).Str("service_url", msg.serviceURL).Msg("Failed to connect to an SFU of the call")
			c.scheduleReconnect(ctx, msg.serviceURL)
			return
		}
		c.reconnects[msg.serviceURL] = 0
		c.conns[msg.serviceURL] = msg.conn
	case disconnectedMsg:
		if c.conns[msg.conn.serviceURL] != msg.conn {
			return
		}
		delete(c.conns, msg.conn.serviceURL)
		msg.conn.close()
		if msg.reason == lksdk.DuplicateIdentity {
			// Another recorder joined as this device: it records now.
			log.Error().Str("sfu_url", msg.conn.sfuURL).Msg("Another client joined the SFU with the recorder's identity; not reconnecting")
			if len(c.conns) == 0 {
				c.leaving, c.leaveReason = true, "identity taken over on the SFU"
			}
			return
		}
		log.Warn().Str("reason", string(msg.reason)).Str("sfu_url", msg.conn.sfuURL).Msg("Disconnected from SFU; reconnecting")
		c.scheduleReconnect(ctx, msg.conn.serviceURL)
	case reconnectMsg:
		c.ensureConn(ctx, msg.serviceURL)
	case keyMsg:
		log.Info().Stringer("user_id", msg.from.user).Stringer("device_id", msg.from.device).Uint8("key_index", msg.index).
			Msg("Media key of a participant")
		if msg.first {
			// Its video waited for the key: start it from a fresh key frame.
			for _, t := range c.tracks {
				if t.encrypted && t.kind == webrtc.RTPCodecTypeVideo && t.p.info.UserID == msg.from.user && t.p.info.DeviceID == msg.from.device {
					t.rp.WritePLI(t.remote.SSRC())
				}
			}
		}
	}
}

func (c *Call) scheduleReconnect(ctx context.Context, serviceURL string) {
	c.reconnects[serviceURL]++
	if c.reconnects[serviceURL] > maxReconnects {
		zerolog.Ctx(ctx).Error().Str("service_url", serviceURL).Msg("Giving up reconnecting to SFU")
		if len(c.conns) == 0 && len(c.connecting) == 0 {
			c.m.mx.SendNotice(ctx, c.roomID, "I lost the connection to the call's SFU and could not get back in; the recording ends here.", "")
			c.leaving, c.leaveReason = true, "SFU unreachable"
		}
		return
	}
	c.connecting[serviceURL] = true
	delay := max(firstReconnect, reconnectDelay*time.Duration(c.reconnects[serviceURL]-1))
	c.readers.Add(1) // the timer goroutine is owned like a reader: leave waits for it
	go func() {
		defer c.readers.Done()
		select {
		case <-time.After(delay):
			c.post(reconnectMsg{serviceURL: serviceURL})
		case <-c.done:
		case <-ctx.Done():
		}
	}()
}

// ensureConn connects to serviceURL in the background unless connected.
func (c *Call) ensureConn(ctx context.Context, serviceURL string) {
	if c.conns[serviceURL] != nil || (c.connecting[serviceURL] && c.reconnects[serviceURL] == 0) || c.leaving {
		return
	}
	if !c.m.allowed(serviceURL) {
		zerolog.Ctx(ctx).Warn().Str("service_url", serviceURL).Msg("Not connecting to a focus that is not on the allow-list")
		return
	}
	c.connecting[serviceURL] = true
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		cn, err := c.connect(ctx, serviceURL)
		select {
		case <-c.done:
			if cn != nil {
				cn.close()
			}
		default:
			c.post(connectedMsg{serviceURL: serviceURL, conn: cn, err: err})
		}
	}()
}

// handleState follows membership changes: new members may name a new SFU
// and make held tracks recordable.
func (c *Call) handleState(ctx context.Context, evt *event.Event) {
	if evt.StateKey == nil || !matrixrtc.IsRTCStateKey(*evt.StateKey) {
		return
	}
	log := zerolog.Ctx(ctx).With().Str("state_key", *evt.StateKey).Logger()
	mem, err := matrixrtc.Parse(evt, time.Now())
	if old, ok := c.identityOf[*evt.StateKey]; ok && err != nil {
		delete(c.identityOf, *evt.StateKey)
		delete(c.members, old)
	}
	switch {
	case err == nil:
	case errors.Is(err, matrixrtc.ErrLeft), errors.Is(err, matrixrtc.ErrNotMembership):
		return
	default:
		log.Info().AnErr("reason", err).Msg("Ignoring MatrixRTC membership")
		return
	}
	if c.m.isRecorder(mem.UserID) {
		return
	}
	c.members[mem.Identity] = mem
	c.identityOf[mem.StateKey] = mem.Identity
	log.Debug().Stringer("user_id", mem.UserID).Stringer("device_id", mem.DeviceID).Msg("MatrixRTC membership")
	c.ensureConn(ctx, mem.ServiceURL)
	for _, t := range c.tracks {
		if t.p.identity == mem.Identity && t.p.info.UserID == "" {
			c.attribute(t.p, mem)
		}
	}
	for _, t := range c.tracks {
		if t.p.identity == mem.Identity {
			c.startRecording(ctx, t)
		}
	}
}

func (c *Call) attribute(p *participant, mem matrixrtc.Membership) {
	p.info = callbot.PeerInfo{RoomID: c.roomID, ConfID: ConfID, CallID: signaling.CallID(p.sid), UserID: mem.UserID,
		DeviceID: mem.DeviceID, SessionID: signaling.SessionID(p.sid)}
}

func purposeOf(src lkp.TrackSource) signaling.Purpose {
	if src == lkp.TrackSource_SCREEN_SHARE || src == lkp.TrackSource_SCREEN_SHARE_AUDIO {
		return signaling.PurposeScreenshare
	}
	return signaling.PurposeUserMedia
}

func (c *Call) handleSubscribed(ctx context.Context, msg subMsg) {
	log := zerolog.Ctx(ctx).With().Str("identity", msg.rp.Identity()).Str("track_sid", msg.pub.SID()).
		Str("source", msg.pub.Source().String()).Logger()
	if c.leaving {
		return
	}
	p := c.partsBySID[msg.rp.SID()]
	if p == nil {
		p = &participant{sid: msg.rp.SID(), identity: msg.rp.Identity(), conn: msg.conn, mutes: map[signaling.Purpose]*muteState{}}
		c.partsBySID[p.sid] = p
		if mem, ok := c.members[p.identity]; ok {
			c.attribute(p, mem)
		}
	}
	t := &track{sid: msg.pub.SID(), p: p, remote: msg.remote, pub: msg.pub, rp: msg.rp, since: time.Now(),
		purpose: purposeOf(msg.pub.Source()), kind: msg.remote.Kind(),
		vp8:  strings.EqualFold(msg.remote.Codec().MimeType, webrtc.MimeTypeVP8),
		opus: strings.EqualFold(msg.remote.Codec().MimeType, webrtc.MimeTypeOpus)}
	if msg.pub.Kind() == lksdk.TrackKindVideo {
		if err := msg.pub.SetVideoQuality(lkp.VideoQuality_HIGH); err != nil {
			log.Warn().Err(err).Msg("Failed to ask for the top simulcast layer")
		}
		if layers := videoLayers(msg.pub.TrackInfo(), msg.remote.Codec().MimeType); len(layers) > 1 && t.vp8 {
			for _, l := range layers {
				if int(l.GetWidth())*int(l.GetHeight()) > t.topW*t.topH {
					t.topW, t.topH = int(l.GetWidth()), int(l.GetHeight())
				}
			}
			t.waitUntil = time.Now().Add(topLayerWait)
			log.Debug().Int("width", t.topW).Int("height", t.topH).Msg("Simulcast track: waiting for the top layer")
		}
	}
	msg.pub.OnRTCP(func(pkt rtcp.Packet) {
		if sr, ok := pkt.(*rtcp.SenderReport); ok && sr.SSRC == uint32(msg.remote.SSRC()) {
			t.queueSR(sr)
		}
	})
	enc := msg.pub.TrackInfo().GetEncryption()
	t.encrypted = enc == lkp.Encryption_GCM // before the reader starts: it reads it
	c.tracks[t.sid] = t
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		c.read(ctx, t)
	}()
	switch enc {
	case lkp.Encryption_NONE, lkp.Encryption_GCM:
	default:
		log.Warn().Str("encryption", enc.String()).Msg("Not recording a track encrypted with a scheme the recorder does not know")
		if !c.toldE2EE {
			c.toldE2EE = true
			c.m.mx.SendNotice(ctx, c.roomID, "Some of this call's media is end-to-end encrypted with a scheme I can't decrypt "+
				"("+enc.String()+"): those tracks are not recorded.", "")
		}
		return
	}
	if p.info.UserID == "" {
		log.Info().Msg("Not recording a track whose publisher has no MatrixRTC membership (yet)")
		return
	}
	c.startRecording(ctx, t)
}

// startRecording gives a track its sink (once).
func (c *Call) startRecording(ctx context.Context, t *track) {
	if enc := t.pub.TrackInfo().GetEncryption(); enc != lkp.Encryption_NONE && enc != lkp.Encryption_GCM {
		return
	}
	t.lock.Lock()
	started := t.sink != nil || t.ended
	t.lock.Unlock()
	if started {
		return
	}
	remote, rp := t.remote, t.rp
	rt := &callbot.RemoteTrack{Peer: t.p.info, StreamID: string(t.purpose), TrackID: t.sid, Kind: t.kind,
		Codec: remote.Codec(), SSRC: remote.SSRC(), Purpose: t.purpose, Started: time.Now(),
		RequestKeyframe: func() {
			if remote.Kind() == webrtc.RTPCodecTypeVideo {
				rp.WritePLI(remote.SSRC())
			}
		}}
	var keys *framecrypt.Keys
	if t.encrypted {
		codec, err := framecrypt.CodecOf(remote.Codec().MimeType)
		if err == nil {
			keys, err = c.m.keyring(c.roomID, deviceKey{t.p.info.UserID, t.p.info.DeviceID}, true)
		}
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("track_sid", t.sid).Msg("Not recording an encrypted track")
			return
		}
		rt.Transform = framecrypt.NewDecryptor(keys, codec, t.p.conn.sif)
	}
	// Mute state before the sink opens the stream, so it starts right.
	if t.pub.IsMuted() {
		c.setMute(ctx, t.p, t.purpose, t.kind, true, time.Now())
	}
	sink := c.m.sink.TrackStarted(ctx, rt)
	if sink == nil {
		return
	}
	if !t.setSink(sink, keys) {
		sink.Close()
		return
	}
	zerolog.Ctx(ctx).Info().Stringer("user_id", t.p.info.UserID).Stringer("device_id", t.p.info.DeviceID).
		Str("track_sid", t.sid).Str("purpose", string(t.purpose)).Str("codec", remote.Codec().MimeType).Msg("Recording track")
	if t.kind == webrtc.RTPCodecTypeVideo {
		rt.RequestKeyframe()
	}
}

func (c *Call) handleMute(ctx context.Context, msg muteMsg) {
	p := c.partsBySID[msg.rp.SID()]
	if p == nil || p.info.UserID == "" {
		return
	}
	kind := webrtc.RTPCodecTypeAudio
	if msg.pub.Kind() == lksdk.TrackKindVideo {
		kind = webrtc.RTPCodecTypeVideo
	}
	c.setMute(ctx, p, purposeOf(msg.pub.Source()), kind, msg.muted, msg.at)
}

func (c *Call) setMute(ctx context.Context, p *participant, purpose signaling.Purpose, kind webrtc.RTPCodecType, muted bool, at time.Time) {
	ms := p.mutes[purpose]
	if ms == nil {
		ms = &muteState{}
		p.mutes[purpose] = ms
	}
	if kind == webrtc.RTPCodecTypeVideo {
		ms.video = muted
	} else {
		ms.audio = muted
	}
	zerolog.Ctx(ctx).Debug().Stringer("user_id", p.info.UserID).Str("purpose", string(purpose)).Str("kind", kind.String()).
		Bool("muted", muted).Msg("Track mute changed")
	c.m.sink.StreamChanged(ctx, callbot.StreamChange{Peer: p.info, StreamID: string(purpose), Purpose: purpose,
		AudioMuted: ms.audio, VideoMuted: ms.video, At: at})
}

// maybeParticipantLeft tells the sink once a gone participant's tracks ended.
func (c *Call) maybeParticipantLeft(ctx context.Context, p *participant, at time.Time) {
	if !p.gone {
		return
	}
	for _, t := range c.tracks {
		if t.p == p {
			return
		}
	}
	delete(c.partsBySID, p.sid)
	if p.info.UserID != "" {
		c.m.sink.ParticipantLeft(ctx, p.info, at)
	}
}

// read is a track's reader goroutine: every packet goes to the sink once
// there is one; it ends when the track does (unsubscribed, SFU closed).
// Like the mesh reader it reuses one buffer and one packet, and a panic in
// the sink ends the recording of this track only (callbot.WriteSink).
func (c *Call) read(ctx context.Context, t *track) {
	log := zerolog.Ctx(ctx)
	onPanic := func(v any) {
		if c.m.met != nil {
			c.m.met.Panics.WithLabelValues("track").Inc()
		}
		log.Error().Str("stack", string(debug.Stack())).Any("panic", v).Str("track_sid", t.sid).
			Msg("Recording a track panicked; that track is no longer recorded")
	}
	defer func() {
		t.detach(onPanic)
		c.post(trackEndedMsg{sid: t.sid})
	}()
	buf := make([]byte, callbot.RTPReadBuffer)
	var pkt rtp.Packet
	var held heldPackets
	audio := t.kind == webrtc.RTPCodecTypeAudio
	sif := t.p.conn.sif
	waitIndex, waitSince, gaveUp := -1, time.Time{}, -1
	for {
		n, _, err := t.remote.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			continue // larger than any packet a peer may send; pion dropped it
		}
		if err != nil {
			return
		}
		if err = pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		now := time.Now()
		t.lock.Lock()
		sink, srs, keys := t.sink, t.pending, t.keys
		t.pending = nil
		t.lock.Unlock()
		if sink == nil {
			continue
		}
		if (t.vp8 && isBlankVP8(pkt.Payload)) || (t.opus && isBlankOpus(pkt.Payload)) {
			continue
		}
		if t.topW > 0 {
			if w, h, key := vp8KeyFrameSize(pkt.Payload); key && (w*h >= t.topW*t.topH || now.After(t.waitUntil)) {
				log.Debug().Str("track_sid", t.sid).Int("width", w).Int("height", h).Msg("Recording simulcast track from this key frame")
				t.topW = 0
			} else {
				continue
			}
		}
		for _, sr := range srs {
			sink.SenderReport(sr.NTPTime, sr.RTPTime, now)
		}
		if keys != nil {
			// Encrypted: frames wait (bounded) for the publisher's first key
			// (LiveKit delivers tracks before members send keys), and for
			// the key of an index a rotation brought in.
			if idx, ok := framecrypt.PacketKeyIndex(pkt.Payload, audio || pkt.Marker, sif); ok &&
				waitIndex < 0 && int(idx) != gaveUp && keys.Count() > 0 && !keys.Has(idx) && newerIndex(keys, idx) {
				waitIndex, waitSince = int(idx), now
			}
			if waitIndex >= 0 && keys.Has(uint8(waitIndex)) { //nolint:gosec // 0..255
				waitIndex = -1
			} else if waitIndex >= 0 && now.Sub(waitSince) > indexWait {
				log.Warn().Str("track_sid", t.sid).Int("key_index", waitIndex).Msg("No key for the index the track's frames use; going on without it")
				waitIndex, gaveUp = -1, waitIndex
			}
			if keys.Count() == 0 || waitIndex >= 0 {
				held.add(buf[:n], now)
				continue
			}
		}
		if err = held.flush(sink, &pkt, onPanic); err != nil {
			log.Err(err).Str("track_sid", t.sid).Msg("Track sink failed; no longer recording the track")
			t.detach(onPanic)
			continue
		}
		if !c.firstPacket.Swap(true) {
			log.Info().Dur("join_time", now.Sub(c.joinStarted)).Str("track_sid", t.sid).Msg("First packet recorded")
		}
		if err = callbot.WriteSink(sink, &pkt, now, onPanic); err != nil {
			log.Err(err).Str("track_sid", t.sid).Msg("Track sink failed; no longer recording the track")
			t.detach(onPanic)
		}
	}
}

// newerIndex reports whether a key index is a rotation past the latest
// key held (worth waiting for), not one from before it (frames a sender
// encrypted with a key the recorder was never given: it joined after).
func newerIndex(keys *framecrypt.Keys, idx uint8) bool {
	latest, ok := keys.Latest()
	return ok && idx-latest >= 1 && idx-latest < 128
}

// heldPackets are an encrypted track's packets from before its publisher's
// first key, kept (bounded, oldest dropped) to be written once it comes.
type heldPackets struct {
	pkts  [][]byte
	at    []time.Time
	bytes int
}

// The hold is bounded so that its flush fits the stream's write queue
// (archive: 1024 packets) together with the other track's.
const (
	maxHeldPackets = 600     // ~5 s of a 1 Mbit/s camera
	maxHeldBytes   = 2 << 20 // and at most this much
	maxHeldAge     = 5 * time.Second
)

func (h *heldPackets) add(raw []byte, at time.Time) {
	for len(h.pkts) > 0 && (len(h.pkts) >= maxHeldPackets || h.bytes+len(raw) > maxHeldBytes || at.Sub(h.at[0]) > maxHeldAge) {
		h.bytes -= len(h.pkts[0])
		h.pkts, h.at = h.pkts[1:], h.at[1:]
	}
	h.pkts = append(h.pkts, bytes.Clone(raw))
	h.at = append(h.at, at)
	h.bytes += len(raw)
}

// flush writes the held packets to the sink, in order, and forgets them.
func (h *heldPackets) flush(sink callbot.TrackSink, pkt *rtp.Packet, onPanic func(any)) error {
	if len(h.pkts) == 0 {
		return nil
	}
	pkts, at := h.pkts, h.at
	*h = heldPackets{}
	for i, raw := range pkts {
		if pkt.Unmarshal(raw) != nil {
			continue
		}
		if err := callbot.WriteSink(sink, pkt, at[i], onPanic); err != nil {
			return err
		}
	}
	return nil
}

// setSink installs the sink (and the key ring of an encrypted track)
// unless the track already ended.
func (t *track) setSink(s callbot.TrackSink, keys *framecrypt.Keys) bool {
	t.lock.Lock()
	defer t.lock.Unlock()
	if t.ended || t.sink != nil {
		return false
	}
	t.sink, t.keys = s, keys
	return true
}

// detach ends the track for recording: its sink is closed once.
func (t *track) detach(onPanic func(any)) {
	t.lock.Lock()
	s := t.sink
	t.sink, t.ended = nil, true
	t.lock.Unlock()
	if s != nil {
		callbot.CloseSink(s, onPanic)
	}
}

func (t *track) queueSR(sr *rtcp.SenderReport) {
	t.lock.Lock()
	defer t.lock.Unlock()
	if len(t.pending) < 16 {
		t.pending = append(t.pending, sr)
	}
}

// videoLayers are the simulcast layers of a track's codec (TrackInfo.codecs;
// the top-level layers field is deprecated).
func videoLayers(info *lkp.TrackInfo, mimeType string) []*lkp.VideoLayer {
	for _, c := range info.GetCodecs() {
		if strings.EqualFold(c.GetMimeType(), mimeType) {
			return c.GetLayers()
		}
	}
	if codecs := info.GetCodecs(); len(codecs) > 0 {
		return codecs[0].GetLayers()
	}
	return nil
}
