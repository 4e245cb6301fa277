// Package rooms is what the recorder does in a room around a recording:
// it announces a recording (a notice, the recorder user's display name and
// a namespaced state event that clients can show as a badge) and its end,
// records rooms automatically when auto-record is on, keeps track of consent
// and stops a recording when its stop conditions are met (the recorder
// alone, no media, maximum duration).
//
// The Controller sits between the chat commands and the call bot: commands
// start and stop through it, and it observes the call bot as one more
// callbot.Sink.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/mailbox"
	"github.com/matrix-recorder/recorder/storage"
)

// StateRecording marks an active recording in the room: state key = the
// recorder user, content = Marker while recording, {} after.
var StateRecording = event.Type{Type: "org.matrix.recorder.recording", Class: event.StateEventType}

// RecSuffix is appended to the recorder user's room display name while it
// records.
const RecSuffix = " ● REC"

// Marker is the content of StateRecording while a recording runs.
type Marker struct {
	RecordingID string    `json:"recording_id"`
	StartedAt   int64     `json:"started_at"` // ms since the epoch
	StartedBy   id.UserID `json:"started_by,omitempty"`
}

// Calls is what the controller needs of the call bot (*callbot.Manager).
type Calls interface {
	Join(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
	LeaveFor(ctx context.Context, roomID id.RoomID, reason callbot.StopReason) error
	Status(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
}

// Matrix is what the controller needs of the Matrix side (*appservice.Service).
type Matrix interface {
	SendNotice(ctx context.Context, roomID id.RoomID, markdown string, replyTo id.EventID)
	MemberDisplayName(ctx context.Context, roomID id.RoomID, userID id.UserID) string
	SetMemberDisplayName(ctx context.Context, roomID id.RoomID, userID id.UserID, name string) error
	SendStateAs(ctx context.Context, roomID id.RoomID, userID id.UserID, evtType event.Type, stateKey string, content any) error
	JoinedPeople(ctx context.Context, roomID id.RoomID) ([]id.UserID, error)
	IsVirtualUser(userID id.UserID) bool
	On(evtType event.Type, handler func(ctx context.Context, evt *event.Event))
}

// Settings are the per-room settings (storage).
type Settings interface {
	SetAutoRecord(ctx context.Context, roomID id.RoomID, on bool) error
	AutoRecord(ctx context.Context, roomID id.RoomID) (bool, error)
	AutoRecordRooms(ctx context.Context) ([]id.RoomID, error)
	PutConsent(ctx context.Context, roomID id.RoomID, userID id.UserID, at time.Time) error
	HasConsent(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error)
}

// Recordings reads what a finished recording holds (storage).
type Recordings interface {
	Get(ctx context.Context, id storage.RecordingID) (*storage.Recording, error)
	GetAllFor(ctx context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error)
}

// ConsentListener is told when someone consents (the archive starts their
// files).
type ConsentListener interface {
	Consented(ctx context.Context, roomID id.RoomID, userID id.UserID)
}

// Options configure a Controller.
type Options struct {
	Config        config.RecordingConfig
	CommandPrefix string
	Calls         Calls
	Matrix        Matrix
	Settings      Settings
	Recordings    Recordings
	Consent       ConsentListener
	// CheckInterval is how often stop conditions are checked (default 1 s).
	CheckInterval time.Duration
	// RecordingLink, if set, links a recording (by id) on the web page
	// in the stop notice; "" for none.
	RecordingLink func(recordingID string) string
}

// Controller owns the recorder's behaviour in rooms. Its goroutines: one
// worker for announcements and one watchdog per recording, all ended by Stop.
type Controller struct {
	cfg      config.RecordingConfig
	prefix   string
	calls    Calls
	mx       Matrix
	settings Settings
	recs     Recordings
	consent  ConsentListener
	interval time.Duration
	link     func(recordingID string) string

	jobs *mailbox.Box[func(ctx context.Context)]

	lock      sync.Mutex
	active    map[id.RoomID]*activeRec
	starters  map[id.RoomID]id.UserID // who asked for the next start
	operator  map[id.RoomID]bool      // the next start is the operator's (API)
	autoStart map[id.RoomID]bool      // the next start is auto-record's
	stoppers  map[id.RoomID]id.UserID // who asked for the stop
	suppress  map[id.RoomID]bool      // auto-record waits for a new group call
	lastStops map[id.RoomID]*storage.Recording

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup
}

// activeRec is one running recording as the controller sees it.
type activeRec struct {
	info      callbot.CallInfo
	startedBy id.UserID
	auto      bool // started by auto-record
	// byOperator: started through the API
	byOperator bool
	lastMedia  atomic.Int64 // unix nanos
	bytes      atomic.Int64
	done       chan struct{}

	lock       sync.Mutex
	recorded   map[id.UserID]bool
	prevName   string
	markerSent bool
}

// New builds a Controller and registers its room event handlers.
func New(opts Options) *Controller {
	c := &Controller{
		cfg: opts.Config, prefix: opts.CommandPrefix, calls: opts.Calls, mx: opts.Matrix, settings: opts.Settings,
		recs: opts.Recordings, consent: opts.Consent, interval: opts.CheckInterval, link: opts.RecordingLink,
		jobs:   mailbox.New[func(ctx context.Context)](),
		active: map[id.RoomID]*activeRec{}, starters: map[id.RoomID]id.UserID{}, operator: map[id.RoomID]bool{}, autoStart: map[id.RoomID]bool{}, stoppers: map[id.RoomID]id.UserID{},
		suppress: map[id.RoomID]bool{}, lastStops: map[id.RoomID]*storage.Recording{},
	}
	if c.interval <= 0 {
		c.interval = time.Second
	}
	for _, t := range []event.Type{signaling.StateCallMember, signaling.StateCallMemberStable} {
		opts.Matrix.On(event.Type{Type: t.Type, Class: event.StateEventType}, c.handleCallMember)
	}
	for _, t := range []event.Type{signaling.StateGroupCall, signaling.StateGroupCallStable} {
		opts.Matrix.On(event.Type{Type: t.Type, Class: event.StateEventType}, c.handleGroupCall)
	}
	return c
}

// SetCalls gives the controller the call bot (built after the controller,
// which is one of its sinks). Call it before Start.
func (c *Controller) SetCalls(calls Calls) { c.calls = calls }

// Start runs the worker and joins the live calls of auto-record rooms.
func (c *Controller) Start(ctx context.Context) {
	c.bgCtx, c.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.work(c.bgCtx)
	}()
}

// JoinAutoRecordRooms joins the live calls of the rooms with auto-record
// on; call it once the Matrix side runs (the recorder users need it).
func (c *Controller) JoinAutoRecordRooms(ctx context.Context) {
	rooms, err := c.settings.AutoRecordRooms(ctx)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to read auto-record rooms")
		return
	}
	for _, roomID := range rooms {
		c.autoJoin(zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Logger().WithContext(ctx), roomID)
	}
}

// Stop finishes the queued announcements (bounded by ctx) and ends the
// controller's goroutines. Stop the call bot first: its last stops are
// announced here.
func (c *Controller) Stop(ctx context.Context) {
	if c.bgCancel == nil {
		return
	}
	drained := make(chan struct{})
	c.jobs.Push(func(context.Context) { close(drained) })
	select {
	case <-drained:
	case <-ctx.Done():
	}
	c.bgCancel()
	c.wg.Wait()
}

func (c *Controller) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.jobs.Notify():
			for _, job := range c.jobs.Take() {
				job(ctx)
			}
		}
	}
}

// Ref is a short reference for an error: the room is told it, the log line
// carries it.
func Ref() string {
	return random.String(6)
}

// StartRecording joins the room's call on behalf of by.
func (c *Controller) StartRecording(ctx context.Context, roomID id.RoomID, by id.UserID) (callbot.CallStatus, error) {
	c.lock.Lock()
	c.starters[roomID] = by
	c.lock.Unlock()
	st, err := c.calls.Join(ctx, roomID)
	if err != nil {
		c.lock.Lock()
		delete(c.starters, roomID)
		c.lock.Unlock()
	}
	return st, err
}

// StartForOperator joins the room's call for the operator (the API): such a
// recording is stopped by recorder admins or the API only, unless
// configured otherwise.
func (c *Controller) StartForOperator(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	c.lock.Lock()
	c.operator[roomID] = true
	c.lock.Unlock()
	st, err := c.calls.Join(ctx, roomID)
	if err != nil {
		c.lock.Lock()
		delete(c.operator, roomID)
		c.lock.Unlock()
	}
	return st, err
}

// StopRecording stops the room's recording on behalf of by.
func (c *Controller) StopRecording(ctx context.Context, roomID id.RoomID, by id.UserID) error {
	c.lock.Lock()
	c.stoppers[roomID] = by
	c.lock.Unlock()
	err := c.calls.LeaveFor(ctx, roomID, callbot.StopAsked)
	if err != nil {
		c.lock.Lock()
		delete(c.stoppers, roomID)
		c.lock.Unlock()
	}
	return err
}

// Status is the controller's view of a room's recording.
type Status struct {
	Call      callbot.CallStatus
	StartedBy id.UserID
	// ByOperator: started through the API (not by a member, not by
	// auto-record).
	ByOperator bool
	Recorded   []id.UserID // participants whose media arrived
	Bytes      int64       // media bytes received so far
}

// RoomStatus returns the running recording's status, or ok=false and the
// last stopped recording (nil if none since start).
func (c *Controller) RoomStatus(ctx context.Context, roomID id.RoomID) (Status, *storage.Recording, bool) {
	c.lock.Lock()
	ar := c.active[roomID]
	last := c.lastStops[roomID]
	c.lock.Unlock()
	if ar == nil {
		return Status{}, last, false
	}
	st, err := c.calls.Status(ctx, roomID)
	if err != nil {
		return Status{}, last, false
	}
	out := Status{Call: st, StartedBy: ar.startedBy, ByOperator: ar.byOperator, Bytes: ar.bytes.Load()}
	ar.lock.Lock()
	for u := range ar.recorded {
		out.Recorded = append(out.Recorded, u)
	}
	ar.lock.Unlock()
	return out, nil, true
}

// SetAuto switches auto-record for the room; switched on, it also joins a
// call that is already live. It returns the join's error when that failed
// for another reason than there being no call or a recording already.
func (c *Controller) SetAuto(ctx context.Context, roomID id.RoomID, on bool) (joined bool, err error) {
	if err = c.settings.SetAutoRecord(ctx, roomID, on); err != nil {
		return false, fmt.Errorf("failed to store auto-record: %w", err)
	}
	if !on {
		return false, nil
	}
	c.lock.Lock()
	delete(c.suppress, roomID)
	c.lock.Unlock()
	_, err = c.joinAuto(ctx, roomID)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, callbot.ErrNoCall), errors.Is(err, callbot.ErrAlreadyJoined):
		return false, nil
	default:
		return false, err
	}
}

// Consent records userID's consent in the room and starts their files in a
// running recording.
func (c *Controller) Consent(ctx context.Context, roomID id.RoomID, userID id.UserID) error {
	if err := c.settings.PutConsent(ctx, roomID, userID, time.Now()); err != nil {
		return fmt.Errorf("failed to store consent: %w", err)
	}
	if c.consent != nil {
		c.consent.Consented(ctx, roomID, userID)
	}
	return nil
}

// Consented implements archive.Consent.
func (c *Controller) Consented(ctx context.Context, roomID id.RoomID, userID id.UserID) bool {
	ok, err := c.settings.HasConsent(ctx, roomID, userID)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to read consent; not recording the participant")
	}
	return ok
}

// handleCallMember starts an auto-recording when someone joins a call in an
// auto-record room.
func (c *Controller) handleCallMember(ctx context.Context, evt *event.Event) {
	if c.bgCtx == nil || c.mx.IsVirtualUser(evt.Sender) {
		return
	}
	// A MatrixRTC membership (Element Call): application m.call, not empty.
	var rtc struct {
		Application string `json:"application"`
		DeviceID    string `json:"device_id"`
	}
	if json.Unmarshal(evt.Content.VeryRaw, &rtc) == nil && rtc.Application == "m.call" && rtc.DeviceID != "" {
		c.autoJoin(ctx, evt.RoomID)
		return
	}
	content, err := signaling.ParseMember(evt.Content.VeryRaw)
	if err != nil {
		return
	}
	hasDevice := false
	for _, call := range content.Calls {
		if len(call.Devices) > 0 {
			hasDevice = true
		}
	}
	if !hasDevice {
		return
	}
	c.autoJoin(ctx, evt.RoomID)
}

// handleGroupCall: a new (or ended) group call lifts the auto-record pause
// after a stop.
func (c *Controller) handleGroupCall(ctx context.Context, evt *event.Event) {
	c.lock.Lock()
	delete(c.suppress, evt.RoomID)
	c.lock.Unlock()
}

func (c *Controller) autoJoin(ctx context.Context, roomID id.RoomID) {
	log := zerolog.Ctx(ctx)
	c.lock.Lock()
	busy, suppressed := c.active[roomID] != nil, c.suppress[roomID]
	c.lock.Unlock()
	if busy || suppressed {
		return
	}
	on, err := c.settings.AutoRecord(ctx, roomID)
	if err != nil {
		log.Err(err).Msg("Failed to read auto-record setting")
		return
	}
	if !on {
		return
	}
	_, err = c.joinAuto(ctx, roomID)
	switch {
	case err == nil:
		log.Info().Msg("Auto-record joined the call")
	case errors.Is(err, callbot.ErrNoCall), errors.Is(err, callbot.ErrAlreadyJoined), errors.Is(err, callbot.ErrPowerLevel):
	default:
		ref := Ref()
		log.Err(err).Str("ref", ref).Msg("Auto-record failed to join the call")
		c.mx.SendNotice(ctx, roomID, fmt.Sprintf("Auto-record could not join the call: %s (reference `%s`).", PlainError(err), ref), "")
	}
}

// joinAuto joins the room's call for auto-record.
func (c *Controller) joinAuto(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	c.lock.Lock()
	c.autoStart[roomID] = true
	c.lock.Unlock()
	st, err := c.calls.Join(ctx, roomID)
	if err != nil {
		c.lock.Lock()
		delete(c.autoStart, roomID)
		c.lock.Unlock()
	}
	return st, err
}

// PlainError says what went wrong without internals.
func PlainError(err error) string {
	switch {
	case errors.Is(err, callbot.ErrNoCall):
		return "there is no group call in this room"
	case errors.Is(err, callbot.ErrAlreadyJoined):
		return "this room is already being recorded"
	case errors.Is(err, callbot.ErrPowerLevel):
		return "the room's power levels do not let the recorder join calls"
	case errors.Is(err, callbot.ErrStopped):
		return "the recorder is shutting down"
	default:
		return "the homeserver or the recorder refused something"
	}
}

// CallJoined implements callbot.Sink: the recording is announced and
// watched.
func (c *Controller) CallJoined(ctx context.Context, call callbot.CallInfo) {
	ar := &activeRec{info: call, done: make(chan struct{}), recorded: map[id.UserID]bool{}}
	ar.lastMedia.Store(time.Now().UnixNano())
	c.lock.Lock()
	ar.startedBy, ar.auto, ar.byOperator = c.starters[call.RoomID], c.autoStart[call.RoomID], c.operator[call.RoomID]
	delete(c.starters, call.RoomID)
	delete(c.operator, call.RoomID)
	delete(c.autoStart, call.RoomID)
	c.active[call.RoomID] = ar
	c.lock.Unlock()
	c.jobs.Push(func(ctx context.Context) { c.announceStart(logCtx(ctx, call), ar) })
	if c.bgCtx != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.watch(logCtx(c.bgCtx, call), ar)
		}()
	}
}

func logCtx(ctx context.Context, call callbot.CallInfo) context.Context {
	return zerolog.Ctx(ctx).With().Stringer("room_id", call.RoomID).Str("recording_id", call.ID).Logger().WithContext(ctx)
}

// CallLeft implements callbot.Sink: the end is announced (the archive has
// stored the recording by now: it comes first in the sink chain).
func (c *Controller) CallLeft(ctx context.Context, call callbot.CallInfo, at time.Time) {
	c.lock.Lock()
	ar := c.active[call.RoomID]
	if ar != nil && ar.info.ID == call.ID {
		delete(c.active, call.RoomID)
	}
	by := c.stoppers[call.RoomID]
	delete(c.stoppers, call.RoomID)
	switch call.StopReason {
	case callbot.StopAsked, callbot.StopNoMedia, callbot.StopMaxDuration, callbot.StopRemoved, callbot.StopSizeLimit, callbot.StopDiskFull:
		c.suppress[call.RoomID] = true
	}
	c.lock.Unlock()
	if ar == nil {
		return
	}
	close(ar.done)
	ar.info.StopReason = call.StopReason
	c.jobs.Push(func(ctx context.Context) { c.announceStop(logCtx(ctx, call), ar, by, at) })
}

// TrackStarted implements callbot.Sink: media arrival feeds the no-media
// check, the status' byte count and who is recorded.
func (c *Controller) TrackStarted(_ context.Context, t *callbot.RemoteTrack) callbot.TrackSink {
	c.lock.Lock()
	ar := c.active[t.Peer.RoomID]
	c.lock.Unlock()
	if ar == nil {
		return nil
	}
	return &mediaTap{ar: ar, user: t.Peer.UserID}
}

// StreamChanged implements callbot.Sink.
func (c *Controller) StreamChanged(context.Context, callbot.StreamChange) {}

// ParticipantLeft implements callbot.Sink.
func (c *Controller) ParticipantLeft(context.Context, callbot.PeerInfo, time.Time) {}

type mediaTap struct {
	ar   *activeRec
	user id.UserID
	seen bool
}

func (mt *mediaTap) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	mt.ar.lastMedia.Store(arrival.UnixNano())
	mt.ar.bytes.Add(int64(len(pkt.Payload)))
	if !mt.seen {
		mt.seen = true
		mt.ar.lock.Lock()
		mt.ar.recorded[mt.user] = true
		mt.ar.lock.Unlock()
	}
	return nil
}

func (mt *mediaTap) SenderReport(uint64, uint32, time.Time) {}

func (mt *mediaTap) Close() {}
