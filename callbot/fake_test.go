package callbot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v5/test"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// waitFor bounds every wait of the in-process tests.
const waitFor = 10 * time.Second

const (
	testRoom   id.RoomID           = "!room:test"
	testConf   signaling.ConfID    = "conf1"
	botUser    id.UserID           = "@recorder_1:test"
	botDevice  id.DeviceID         = "RECBOT"
	memberType                     = "org.matrix.msc3401.call.member"
	callType                       = "org.matrix.msc3401.call"
	forever    time.Duration       = time.Hour
	noSession  signaling.SessionID = ""
)

// sent is one to-device message a fake device sent.
type sent struct {
	from id.UserID
	to   signaling.DeviceKey
	msg  signaling.Message
	// encrypt is what the bot asked for: Olm where the keys can be had.
	encrypt bool
}

// fakeMatrix is the Matrix side in memory (like livekit's servicefakes):
// one room with its state and members, the virtual users' devices, the
// notices. Nothing talks to a homeserver.
type fakeMatrix struct {
	lock     sync.Mutex
	handlers map[event.Type][]func(context.Context, *event.Event)
	state    mautrix.RoomStateMap
	joined   map[id.UserID]bool
	devices  map[id.UserID]*fakeDevice
	remotes  map[signaling.DeviceKey]*remote
	notices  []string
	log      []sent
	taken    map[int]bool
	changed  chan struct{} // closed and replaced on every new message
	states   []json.RawMessage
	// block, when set, makes SendToDevice wait for it to close.
	block chan struct{}
	// blockState, when set, makes SetState wait for it to close (or for
	// its context).
	blockState chan struct{}
}

func newFakeMatrix() *fakeMatrix {
	fm := &fakeMatrix{
		handlers: map[event.Type][]func(context.Context, *event.Event){}, state: mautrix.RoomStateMap{},
		joined: map[id.UserID]bool{}, devices: map[id.UserID]*fakeDevice{}, remotes: map[signaling.DeviceKey]*remote{},
		taken: map[int]bool{}, changed: make(chan struct{}),
	}
	key := string(testConf)
	fm.state[signaling.StateGroupCall] = map[string]*event.Event{key: {
		Type: signaling.StateGroupCall, StateKey: &key, RoomID: testRoom, Sender: "@creator:test", Timestamp: time.Now().UnixMilli(),
		Content: event.Content{VeryRaw: json.RawMessage(`{"m.intent":"m.room","m.type":"m.video"}`)},
	}}
	return fm
}

var _ Matrix = (*fakeMatrix)(nil)

func (fm *fakeMatrix) VirtualUserID(n int) id.UserID {
	return id.UserID(fmt.Sprintf("@recorder_%d:test", n))
}

func (fm *fakeMatrix) Device(_ context.Context, userID id.UserID, handler ToDeviceHandler) (Device, error) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	if dev := fm.devices[userID]; dev != nil {
		return dev, nil
	}
	dev := &fakeDevice{fm: fm, userID: userID, deviceID: botDevice, handler: handler}
	fm.devices[userID] = dev
	return dev, nil
}

func (fm *fakeMatrix) OnRoomEvent(evtType event.Type, handler func(context.Context, *event.Event)) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	fm.handlers[evtType] = append(fm.handlers[evtType], handler)
}

func (fm *fakeMatrix) IsInRoom(_ context.Context, _ id.RoomID, userID id.UserID) bool {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	return fm.joined[userID]
}

func (fm *fakeMatrix) LoadMembers(context.Context, id.RoomID) error { return nil }

func (fm *fakeMatrix) PowerLevels(context.Context, id.RoomID) (*event.PowerLevelsEventContent, error) {
	return &event.PowerLevelsEventContent{Events: map[string]int{memberType: 0}}, nil
}

func (fm *fakeMatrix) TURNServer(context.Context) (*mautrix.RespTurnServer, error) {
	return &mautrix.RespTurnServer{}, nil
}

func (fm *fakeMatrix) SendNotice(_ context.Context, _ id.RoomID, markdown string, _ id.EventID) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	fm.notices = append(fm.notices, markdown)
}

// emit applies a room event to the state and hands it to the handlers, as
// the appservice does with a transaction's events.
func (fm *fakeMatrix) emit(ctx context.Context, evt *event.Event) {
	fm.lock.Lock()
	if fm.state[evt.Type] == nil {
		fm.state[evt.Type] = map[string]*event.Event{}
	}
	fm.state[evt.Type][*evt.StateKey] = evt
	if evt.Type == event.StateMember {
		fm.joined[id.UserID(*evt.StateKey)] = evt.Content.AsMember().Membership == event.MembershipJoin
	}
	handlers := fm.handlers[evt.Type]
	fm.lock.Unlock()
	for _, h := range handlers {
		h(ctx, evt)
	}
}

func (fm *fakeMatrix) record(s sent) {
	fm.lock.Lock()
	fm.log = append(fm.log, s)
	close(fm.changed)
	fm.changed = make(chan struct{})
	r := fm.remotes[s.to]
	fm.lock.Unlock()
	if r != nil {
		r.received(s.msg)
	}
}

// take waits for the first message not taken yet that matches, and takes it.
func (fm *fakeMatrix) take(t *testing.T, to signaling.DeviceKey, evtType string) signaling.Message {
	t.Helper()
	return fm.takeSent(t, to, evtType).msg
}

// takeSent is take with how the message was sent.
func (fm *fakeMatrix) takeSent(t *testing.T, to signaling.DeviceKey, evtType string) sent {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		fm.lock.Lock()
		for i, s := range fm.log {
			if !fm.taken[i] && s.to == to && s.msg.Type().Type == evtType {
				fm.taken[i] = true
				fm.lock.Unlock()
				return s
			}
		}
		changed := fm.changed
		fm.lock.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %s sent to %s within %s", evtType, to, waitFor)
			return sent{}
		}
	}
}

// count is how many messages of a type went to a device.
func (fm *fakeMatrix) count(to signaling.DeviceKey, evtType string) int {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	n := 0
	for _, s := range fm.log {
		if s.to == to && s.msg.Type().Type == evtType {
			n++
		}
	}
	return n
}

func (fm *fakeMatrix) noticesText() string {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	return strings.Join(fm.notices, "\n")
}

func (fm *fakeMatrix) lastOwnMember() json.RawMessage {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	if len(fm.states) == 0 {
		return nil
	}
	return fm.states[len(fm.states)-1]
}

// fakeDevice is a virtual user's device in memory.
type fakeDevice struct {
	fm       *fakeMatrix
	userID   id.UserID
	deviceID id.DeviceID
	handler  ToDeviceHandler
}

func (fd *fakeDevice) UserID() id.UserID     { return fd.userID }
func (fd *fakeDevice) DeviceID() id.DeviceID { return fd.deviceID }

func (fd *fakeDevice) JoinRoom(_ context.Context, _ id.RoomID) error {
	fd.fm.lock.Lock()
	defer fd.fm.lock.Unlock()
	fd.fm.joined[fd.userID] = true
	return nil
}

func (fd *fakeDevice) RoomState(context.Context, id.RoomID) (mautrix.RoomStateMap, error) {
	fd.fm.lock.Lock()
	defer fd.fm.lock.Unlock()
	out := mautrix.RoomStateMap{}
	for t, byKey := range fd.fm.state {
		out[t] = map[string]*event.Event{}
		for k, evt := range byKey {
			out[t][k] = evt
		}
	}
	return out, nil
}

func (fd *fakeDevice) SetState(ctx context.Context, _ id.RoomID, evtType event.Type, stateKey string, content any) error {
	fd.fm.lock.Lock()
	block := fd.fm.blockState
	fd.fm.lock.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	fd.fm.lock.Lock()
	defer fd.fm.lock.Unlock()
	if evtType.Type == memberType && stateKey == string(fd.userID) {
		fd.fm.states = append(fd.fm.states, raw)
	}
	return nil
}

func (fd *fakeDevice) SendToDevice(_ context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error {
	fd.fm.lock.Lock()
	block := fd.fm.block
	fd.fm.lock.Unlock()
	if block != nil {
		<-block
	}
	for user, devices := range msgs {
		for device, content := range devices {
			msg, err := signaling.Parse(evtType.Type, content)
			if err != nil {
				return fmt.Errorf("bot sent an invalid %s: %w", evtType.Type, err)
			}
			fd.fm.record(sent{from: fd.userID, to: signaling.DeviceKey{UserID: user, DeviceID: device}, msg: msg, encrypt: encrypt})
		}
	}
	return nil
}

// remote is another participant: a member event, signalling through the
// fake, and a real pion peer connection over loopback.
type remote struct {
	t       *testing.T
	h       *harness
	key     signaling.DeviceKey
	session signaling.SessionID
	outbox  *signaling.Outbox
	// olm makes its messages arrive Olm-encrypted from its device.
	olm bool

	lock      sync.Mutex
	pc        *webrtc.PeerConnection
	remoteSet bool
	pending   []webrtc.ICECandidateInit
}

// received applies the bot's candidates to the connection (from the bot's
// sender goroutine), holding them until the remote description is set.
func (r *remote) received(msg signaling.Message) {
	cands, ok := msg.(*signaling.Candidates)
	if !ok {
		return
	}
	r.lock.Lock()
	defer r.lock.Unlock()
	for _, c := range cands.Candidates {
		if c.IsEndOfCandidates() {
			continue
		}
		init := webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex}
		if r.remoteSet {
			_ = r.pc.AddICECandidate(init)
		} else {
			r.pending = append(r.pending, init)
		}
	}
}

// join puts the device into the call's member state (and the user into the
// room) with an expiry.
func (r *remote) join(expires time.Time) {
	ctx := r.h.ctx
	key := string(r.key.UserID)
	r.h.fm.emit(ctx, &event.Event{
		Type: event.StateMember, StateKey: &key, Sender: r.key.UserID, RoomID: testRoom,
		Content: event.Content{Parsed: &event.MemberEventContent{Membership: event.MembershipJoin}},
	})
	r.publish(expires)
}

// publish (re)sends the member event with the current session.
func (r *remote) publish(expires time.Time) {
	now := time.Now()
	content, err := signaling.SetMemberDevice(nil, testConf, signaling.NewMemberDevice(r.key.DeviceID, r.session, expires, signaling.PurposeUserMedia), now)
	require.NoError(r.t, err)
	key := string(r.key.UserID)
	r.h.fm.emit(r.h.ctx, &event.Event{
		Type: signaling.StateCallMember, StateKey: &key, Sender: r.key.UserID, RoomID: testRoom,
		Timestamp: now.UnixMilli(), Content: event.Content{VeryRaw: content},
	})
}

// send delivers a signalling message to the bot's device, stamped like a
// client would.
func (r *remote) send(msg signaling.Message, callID signaling.CallID) {
	r.outbox.Stamp(msg, testConf, callID, r.h.botSession())
	content, err := signaling.Marshal(msg)
	require.NoError(r.t, err)
	rcv := e2ee.Received{Type: msg.Type(), Content: content, Sender: r.key.UserID}
	if r.olm {
		rcv.Encrypted, rcv.SenderDevice = true, r.key.DeviceID
	}
	r.h.device().handler(r.h.ctx, []e2ee.Received{rcv})
}

func (r *remote) newPC() *webrtc.PeerConnection {
	api, closer, err := NewAPI(config.WebRTCConfig{LoopbackOnly: true}, APIOptions{Log: zerolog.Nop()})
	require.NoError(r.t, err)
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	require.NoError(r.t, err)
	r.t.Cleanup(func() {
		_ = pc.Close()
		_ = closer()
	})
	r.lock.Lock()
	r.pc, r.remoteSet, r.pending = pc, false, nil
	r.lock.Unlock()
	return pc
}

// setRemote sets the remote description and the candidates that waited.
func (r *remote) setRemote(desc webrtc.SessionDescription) {
	r.lock.Lock()
	defer r.lock.Unlock()
	require.NoError(r.t, r.pc.SetRemoteDescription(desc))
	r.remoteSet = true
	for _, c := range r.pending {
		_ = r.pc.AddICECandidate(c)
	}
	r.pending = nil
}

// localDescription sets desc and returns it with every candidate in it.
func (r *remote) localDescription(pc *webrtc.PeerConnection, desc webrtc.SessionDescription) string {
	gathered := webrtc.GatheringCompletePromise(pc)
	require.NoError(r.t, pc.SetLocalDescription(desc))
	select {
	case <-gathered:
	case <-time.After(waitFor):
		r.t.Fatal("candidate gathering did not complete")
	}
	return pc.LocalDescription().SDP
}

// answer answers the bot's invite with a real connection.
func (r *remote) answer(inv *signaling.Invite) {
	pc := r.newPC()
	r.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: inv.Offer.SDP})
	answer, err := pc.CreateAnswer(nil)
	require.NoError(r.t, err)
	sdp := r.localDescription(pc, answer)
	r.send(&signaling.Answer{Answer: event.CallData{SDP: sdp, Type: event.CallDataTypeAnswer}}, inv.CallID)
}

// invite calls the bot with a real offer.
func (r *remote) invite(callID signaling.CallID) {
	pc := r.newPC()
	_, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	require.NoError(r.t, err)
	offer, err := pc.CreateOffer(nil)
	require.NoError(r.t, err)
	sdp := r.localDescription(pc, offer)
	r.send(&signaling.Invite{
		Offer: event.CallData{SDP: sdp, Type: event.CallDataTypeOffer}, Lifetime: int64(signaling.InviteTimeout / time.Millisecond),
		Invitee: botUser,
	}, callID)
}

// connected waits for the remote's connection to connect.
func (r *remote) connected() {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		r.lock.Lock()
		defer r.lock.Unlock()
		return r.pc != nil && r.pc.ConnectionState() == webrtc.PeerConnectionStateConnected
	}, waitFor, 5*time.Millisecond, "remote %s did not connect", r.key)
}

// fakeSink records what the call bot reports.
type fakeSink struct {
	DiscardSink
	lock    sync.Mutex
	joined  int
	left    int
	peers   []PeerInfo // ParticipantLeft
	changes int        // StreamChanged
	// hold, when set, makes ParticipantLeft wait for it to close.
	hold chan struct{}
}

func (fs *fakeSink) CallJoined(context.Context, CallInfo) {
	fs.lock.Lock()
	defer fs.lock.Unlock()
	fs.joined++
}

func (fs *fakeSink) StreamChanged(context.Context, StreamChange) {
	fs.lock.Lock()
	defer fs.lock.Unlock()
	fs.changes++
}

func (fs *fakeSink) streamChanges() int {
	fs.lock.Lock()
	defer fs.lock.Unlock()
	return fs.changes
}

func (fs *fakeSink) CallLeft(context.Context, CallInfo, time.Time) {
	fs.lock.Lock()
	defer fs.lock.Unlock()
	fs.left++
}

func (fs *fakeSink) ParticipantLeft(_ context.Context, p PeerInfo, _ time.Time) {
	fs.lock.Lock()
	hold := fs.hold
	fs.peers = append(fs.peers, p)
	fs.lock.Unlock()
	if hold != nil {
		<-hold
	}
}

func (fs *fakeSink) participantsLeft() []PeerInfo {
	fs.lock.Lock()
	defer fs.lock.Unlock()
	return append([]PeerInfo(nil), fs.peers...)
}

// syncBuffer is a log sink the test can read while the bot writes.
type syncBuffer struct {
	lock sync.Mutex
	buf  bytes.Buffer
}

func (sb *syncBuffer) Write(p []byte) (int, error) {
	sb.lock.Lock()
	defer sb.lock.Unlock()
	return sb.buf.Write(p)
}

func (sb *syncBuffer) String() string {
	sb.lock.Lock()
	defer sb.lock.Unlock()
	return sb.buf.String()
}

// harness is a Manager on the fake Matrix side, joined to the room's call.
type harness struct {
	t    *testing.T
	ctx  context.Context
	fm   *fakeMatrix
	sink *fakeSink
	m    *Manager
	logs *syncBuffer
}

// newHarness starts a manager; tune adjusts its timings before it joins.
func newHarness(t *testing.T, tune func(m *Manager)) *harness {
	t.Helper()
	// Registered first, so it runs after every other cleanup: the manager,
	// the calls and every peer connection must be gone by then.
	t.Cleanup(test.CheckRoutines(t))
	logs := &syncBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.DebugLevel)
	h := &harness{t: t, ctx: log.WithContext(context.Background()), fm: newFakeMatrix(), sink: &fakeSink{}, logs: logs}
	m, err := New(Options{
		Config: Config{WebRTC: config.WebRTCConfig{LoopbackOnly: true}, CommandPrefix: "!rec"},
		Matrix: h.fm, Sink: h.sink,
	})
	require.NoError(t, err)
	if tune != nil {
		tune(m)
	}
	require.NoError(t, m.Start(h.ctx))
	h.m = m
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(h.ctx, waitFor)
		defer cancel()
		require.NoError(t, m.Stop(ctx))
	})
	return h
}

// join joins the room's call and waits until the member event is out.
func (h *harness) join() CallStatus {
	h.t.Helper()
	st, err := h.m.Join(h.ctx, testRoom)
	require.NoError(h.t, err)
	require.Eventually(h.t, func() bool { return h.fm.lastOwnMember() != nil }, waitFor, 5*time.Millisecond)
	return st
}

func (h *harness) device() *fakeDevice {
	h.fm.lock.Lock()
	defer h.fm.lock.Unlock()
	return h.fm.devices[botUser]
}

func (h *harness) botSession() signaling.SessionID {
	st, err := h.m.Status(h.ctx, testRoom)
	require.NoError(h.t, err)
	return st.SessionID
}

func (h *harness) remote(userID id.UserID, deviceID id.DeviceID) *remote {
	r := &remote{t: h.t, h: h, key: signaling.DeviceKey{UserID: userID, DeviceID: deviceID}, session: "sess-" + signaling.SessionID(deviceID)}
	r.outbox = signaling.NewOutbox(deviceID, r.session)
	h.fm.lock.Lock()
	h.fm.remotes[r.key] = r
	h.fm.lock.Unlock()
	return r
}

// peer is the bot's view of its peer call with key; ok false without one.
func (h *harness) peer(key signaling.DeviceKey) (PeerStatus, bool) {
	st, err := h.m.Status(h.ctx, testRoom)
	require.NoError(h.t, err)
	for _, p := range st.Peers {
		if p.UserID == key.UserID && p.DeviceID == key.DeviceID {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// waitPeerState waits for the bot's peer call with key to reach state.
func (h *harness) waitPeerState(key signaling.DeviceKey, state PeerState) PeerStatus {
	h.t.Helper()
	var got PeerStatus
	require.Eventually(h.t, func() bool {
		p, ok := h.peer(key)
		got = p
		return ok && p.State == state
	}, waitFor, 5*time.Millisecond, "peer call with %s did not reach %s", key, state)
	return got
}

// waitNoPeer waits until the bot has no peer call with key.
func (h *harness) waitNoPeer(key signaling.DeviceKey) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		_, ok := h.peer(key)
		return !ok
	}, waitFor, 5*time.Millisecond, "peer call with %s did not end", key)
}

func webrtcAnswer(sdp string) webrtc.SessionDescription {
	return webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}
}
