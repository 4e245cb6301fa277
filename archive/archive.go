// Package archive turns what the call bot receives into stored recordings:
// one recording.StreamWriter per participant stream, files spooled as
// "*.part" and handed to the storage.FileStore when finished, a row per
// recording and per file, and a manifest.json beside the files.
package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/storage/naming"
)

// spoolName is the folder under the recordings path where files are written
// before they are finalized. Its leading dot keeps it out of the store's keys.
const spoolName = ".spool"

// closeTimeout bounds how long leaving a call waits for writers to finalize.
const closeTimeout = 30 * time.Second

// Options configure a Recorder.
type Options struct {
	DB    *storage.DB
	Store storage.FileStore
	// Dir is the recordings path; the spool lives in Dir/.spool.
	Dir string
	// Create opens files (tests inject failures); nil means recording.CreateFile.
	Create recording.CreateFunc
	// Metrics, if set, count tracks, bytes and lost packets.
	Metrics *metrics.Metrics
	// Limits bound recordings on disk.
	Limits Limits
	// Log is the logger for work that outlives a call (limit stops).
	Log zerolog.Logger
	// Consent, if set, decides whose streams are written; the others are
	// listed as excluded in the manifest until Consented is called.
	Consent Consent
	// Events, if set, is told when a recording starts and ends.
	Events Events
	// Profiles, if set, names the room and the participants.
	Profiles Profiles
}

// Events is told when a recording starts and when it has ended (its files,
// rows and manifest are stored): webhooks and mixdowns start from here.
type Events interface {
	RecordingStarted(ctx context.Context, rec *storage.Recording)
	RecordingEnded(ctx context.Context, rec *storage.Recording)
}

// Profiles looks up names as they are now, so recordings keep the room's
// name and each participant's display name and avatar of recording time.
// Empty strings mean unknown.
type Profiles interface {
	RoomName(ctx context.Context, roomID id.RoomID) string
	Member(ctx context.Context, roomID id.RoomID, userID id.UserID) (displayName, avatarURL string)
}

// Recorder implements callbot.Sink.
type Recorder struct {
	db     *storage.DB
	store  storage.FileStore
	spool  string
	create recording.CreateFunc
	met    *metrics.Metrics
	gate   Consent
	events Events
	names  Profiles

	lock    sync.Mutex
	calls   map[id.RoomID]*callRec
	resumed map[storage.RecordingID]*callRec // recovered, waiting for the rejoin
	stopped bool
	// wg counts every goroutine the recorder starts (finishing streams,
	// storing segments); Stop waits for them.
	wg sync.WaitGroup
	// queueHigh is the most packets any stream's write queue has held.
	queueHigh atomic.Int64

	limits Limits
	disk   *diskUsage
	bgCtx  context.Context
	stops  sync.WaitGroup // OnLimit calls in flight
}

var _ callbot.Sink = (*Recorder)(nil)

// New makes a Recorder; call Recover before the call bot starts.
func New(opts Options) (*Recorder, error) {
	spool := filepath.Join(opts.Dir, spoolName)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create spool directory: %w", err)
	}
	r := &Recorder{db: opts.DB, store: opts.Store, spool: spool, create: opts.Create, met: opts.Metrics, gate: opts.Consent,
		events: opts.Events, names: opts.Profiles, calls: map[id.RoomID]*callRec{}, resumed: map[storage.RecordingID]*callRec{},
		limits: opts.Limits, bgCtx: opts.Log.WithContext(context.Background())}
	if opts.Limits.MaxDiskBytes > 0 {
		r.disk = newDiskUsage(opts.Dir)
	} else {
		r.disk = &diskUsage{dir: opts.Dir}
	}
	return r, nil
}

// WaitStops waits for the limit stops in flight (for shutdown and tests).
func (r *Recorder) WaitStops() { r.stops.Wait() }

// callRec is one recording in progress.
type callRec struct {
	r        *Recorder
	rec      *storage.Recording
	spoolDir string
	manifest recording.Manifest

	lock    sync.Mutex
	streams map[string]*streamRec // by call id + stream id
	bases   map[string]bool       // base names given out in this recording
	rows    []string              // file names recorded before a restart
	mutes   map[string]callbot.StreamChange
	closing sync.WaitGroup
	failed  error
	// bytes written by this recording's writers; limitHit once a limit
	// asked for it to stop.
	bytes    atomic.Int64
	limitHit atomic.Bool
	// excluded are the stand-ins of tracks of participants without consent.
	excluded map[id.UserID][]*excludedTrack
}

// streamRec is one participant stream and its writer.
type streamRec struct {
	c       *callRec
	key     string
	peer    callbot.PeerInfo
	purpose signaling.Purpose
	base    string
	log     zerolog.Logger
	w       *recording.StreamWriter // nil until ready is closed, and if it failed
	ready   chan struct{}           // closed once the writer is made (or failed)
	open    int                     // tracks not yet closed
	// queue takes the tracks' packets to the stream's writer goroutine
	// (with w; nil if the writer could not be made).
	queue *packetQueue
	// dropWarned is set once a full queue was logged.
	dropWarned atomic.Bool
	// stores counts the stream's segments being stored.
	stores sync.WaitGroup
	// reported is what was last added to the live metrics (see report).
	reportLock sync.Mutex
	reported   recording.Stats
	// recvPackets and recvBytes count the RTP packets (payload bytes) the
	// stream's tracks received; reportedRecv is what report added.
	recvPackets, recvBytes atomic.Uint64
	reportedRecv           [2]uint64
	// keyframe asks the stream's video track for a key frame; set when
	// the video track arrives (often after the audio track the writer
	// was created for).
	keyframe atomic.Pointer[func()]
}

// requestKeyframe is the writer's RequestKeyframe: it goes to the video
// track, whichever track the stream started with.
func (s *streamRec) requestKeyframe() {
	if f := s.keyframe.Load(); f != nil {
		(*f)()
	}
}

// streamMeta is written beside a stream's spooled files so a crash repair
// knows whose files they are.
type streamMeta struct {
	UserID    id.UserID           `json:"user_id"`
	DeviceID  id.DeviceID         `json:"device_id"`
	SessionID signaling.SessionID `json:"session_id"`
	Purpose   signaling.Purpose   `json:"purpose"`
}

// NewRecordingID mints a recording's ID (also its folder name): the UTC
// start time and a random suffix. The call bot gets it through
// callbot.Options.RecordingID, so a call and its recording share one ID
// from the start (the API returns it before the first file exists).
func NewRecordingID(joined time.Time) string {
	return joined.UTC().Format("20060102T150405Z") + "-" + strings.ToLower(random.String(8))
}

// CallJoined implements callbot.Sink: it starts a recording.
func (r *Recorder) CallJoined(ctx context.Context, call callbot.CallInfo) {
	log := zerolog.Ctx(ctx)
	recID := storage.RecordingID(call.ID)
	if err := storage.CheckKey(call.ID); err != nil {
		log.Err(err).Msg("Call has no usable recording ID (mint it with archive.NewRecordingID); it is not recorded")
		return
	}
	if r.disk.full(r.limits.MaxDiskBytes) {
		log.Error().Int64("max_disk_usage_bytes", r.limits.MaxDiskBytes).Msg("The recordings use all the disk space they may; this call is not recorded")
		r.requestStop(call.RoomID, StopReasonDiskFull)
		return
	}
	r.lock.Lock()
	c := r.resumed[recID]
	delete(r.resumed, recID)
	r.lock.Unlock()
	if c == nil {
		folder := string(recID)
		rec := r.db.Recording.New(recID, call.RoomID, folder, call.JoinedAt)
		rec.ConfID, rec.VirtualUser = string(call.ConfID), call.UserID
		if r.names != nil {
			rec.RoomName = r.names.RoomName(ctx, call.RoomID)
		}
		c = newCallRec(r, rec)
		c.manifest.RoomName = rec.RoomName
	} else {
		log.Info().Str("recording_id", string(recID)).Int("files", len(c.manifest.Tracks)).Msg("Continuing recording after a restart")
	}
	rec := c.rec
	if err := os.MkdirAll(c.spoolDir, 0o700); err != nil {
		log.Err(err).Msg("Failed to create spool folder; this call is not recorded")
		return
	}
	if err := rec.Save(ctx); err != nil {
		log.Err(err).Msg("Failed to store recording; this call is not recorded")
		return
	}
	if err := r.db.ActiveCall.Put(ctx, &storage.ActiveCall{RoomID: call.RoomID, RecordingID: recID, ConfID: string(call.ConfID),
		UserID: call.UserID, DeviceID: call.DeviceID, SessionID: string(call.SessionID), JoinedAt: call.JoinedAt}); err != nil {
		log.Warn().Err(err).Msg("Failed to store active call")
	}
	r.lock.Lock()
	r.calls[call.RoomID] = c
	r.lock.Unlock()
	log.Info().Str("recording_id", string(recID)).Msg("Recording started")
	if r.events != nil {
		r.events.RecordingStarted(ctx, rec)
	}
}

func newCallRec(r *Recorder, rec *storage.Recording) *callRec {
	return &callRec{
		r: r, rec: rec, spoolDir: filepath.Join(r.spool, rec.Folder),
		manifest: recording.Manifest{RecordingID: string(rec.ID), RoomID: string(rec.RoomID), ConfID: rec.ConfID, Started: rec.StartedAt},
		streams:  map[string]*streamRec{}, bases: map[string]bool{}, mutes: map[string]callbot.StreamChange{},
	}
}

// hold counts a goroutine (or a stream that will start some) for Stop;
// false once the recorder stops.
func (r *Recorder) hold() bool {
	r.lock.Lock()
	defer r.lock.Unlock()
	if r.stopped {
		return false
	}
	r.wg.Add(1)
	return true
}

// Stop waits (bounded by ctx) for every stream being finished and every
// file being stored; nothing new starts afterwards. Call it after the call
// bot stopped and before the database closes.
func (r *Recorder) Stop(ctx context.Context) error {
	r.lock.Lock()
	r.stopped = true
	r.lock.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("timed out waiting for recording files to be finalized: %w", ctx.Err())
	}
}

func (r *Recorder) call(roomID id.RoomID) *callRec {
	r.lock.Lock()
	defer r.lock.Unlock()
	return r.calls[roomID]
}

func streamKey(callID signaling.CallID, streamID string) string {
	return string(callID) + "\x00" + streamID
}

func shortPurpose(p signaling.Purpose) string {
	return strings.TrimPrefix(string(p), "m.")
}

// streamBaseName names a stream's files from who sent it: user, device,
// purpose and peer call. The names always pass the file store's rule.
func streamBaseName(peer callbot.PeerInfo, purpose signaling.Purpose) string {
	return naming.Safe(string(peer.UserID), string(peer.DeviceID), shortPurpose(purpose), string(peer.CallID))
}

func trackParams(t *callbot.RemoteTrack) (recording.Kind, recording.TrackParams) {
	kind := recording.KindAudio
	if t.Kind == webrtc.RTPCodecTypeVideo {
		kind = recording.KindVideo
	}
	return kind, recording.TrackParams{MimeType: t.Codec.MimeType, ClockRate: t.Codec.ClockRate, Channels: t.Codec.Channels, SSRC: uint32(t.SSRC),
		Transform: t.Transform}
}

// TrackStarted implements callbot.Sink: the first track of a stream opens
// its writer, the second is added to it.
func (r *Recorder) TrackStarted(ctx context.Context, t *callbot.RemoteTrack) callbot.TrackSink {
	c := r.call(t.Peer.RoomID)
	if c == nil {
		return nil
	}
	log := zerolog.Ctx(ctx).With().Str("recording_id", string(c.rec.ID)).Str("stream_id", t.StreamID).Logger()
	if r.gate != nil && !r.gate.Consented(ctx, t.Peer.RoomID, t.Peer.UserID) {
		log.Info().Stringer("user_id", t.Peer.UserID).Msg("Participant has not consented, not writing their stream")
		return c.exclude(t, log)
	}
	kind, params := trackParams(t)
	key := streamKey(t.Peer.CallID, t.StreamID)
	// The lock guards the maps only: creating the writer (files, a key
	// frame request that writes RTCP) and adding a track run without it.
	c.lock.Lock()
	s := c.streams[key]
	if s != nil {
		s.open++ // the stream stays until this track is added or released
		c.lock.Unlock()
		<-s.ready
		if kind == recording.KindVideo {
			s.keyframe.Store(&t.RequestKeyframe)
		}
		if s.w == nil {
			c.release(s)
			return nil
		}
		if err := s.w.AddTrack(kind, params); err != nil {
			log.Err(err).Str("kind", t.Kind.String()).Msg("Failed to add track to stream writer")
			c.release(s)
			return nil
		}
		return r.trackSink(s, kind, t)
	}
	if !r.hold() {
		c.lock.Unlock()
		return nil
	}
	c.closing.Add(1) // until finishStream ends
	s = &streamRec{c: c, key: key, peer: t.Peer, purpose: t.Purpose, base: c.uniqueBase(streamBaseName(t.Peer, t.Purpose)),
		open: 1, ready: make(chan struct{})}
	c.streams[key] = s
	c.lock.Unlock()
	s.log = log.With().Str("stream", s.base).Logger()
	cfg := recording.StreamConfig{Dir: c.spoolDir, BaseName: s.base, RequestKeyframe: s.requestKeyframe, Create: r.create, OnSegment: s.segmentDone}
	if kind == recording.KindVideo {
		s.keyframe.Store(&t.RequestKeyframe)
		cfg.Video = &params
	} else {
		cfg.Audio = &params
	}
	c.writeStreamMeta(ctx, s)
	w, err := recording.NewStreamWriter(log.WithContext(context.WithoutCancel(ctx)), cfg)
	var q *packetQueue
	if err == nil {
		q = newPacketQueue(queueSize)
	}
	c.lock.Lock()
	s.w, s.queue = w, q // nil on error: the tracks waiting for ready see that
	m, muted := c.mutes[key]
	c.lock.Unlock()
	close(s.ready)
	if err != nil {
		log.Err(err).Msg("Failed to start stream writer")
		c.release(s)
		return nil
	}
	// The stream's writer goroutine: it holds the stream's counts
	// (closing, the recorder's wg) and finishes the stream once the last
	// track ended and everything queued is written.
	go func() {
		defer c.recoverStream(s)
		s.writeQueued()
		c.finishStream(s)
	}()
	if muted {
		s.queueMute(m)
	}
	return r.trackSink(s, kind, t)
}

func (r *Recorder) trackSink(s *streamRec, kind recording.Kind, t *callbot.RemoteTrack) callbot.TrackSink {
	if r.met != nil {
		r.met.TracksRecording.Inc()
	}
	return &trackSink{s: s, kind: kind, ssrc: uint32(t.SSRC)}
}

// release drops one track's hold on its stream; the last one finishes the
// stream (closes the writer, waits for its files to be stored).
func (c *callRec) release(s *streamRec) {
	c.lock.Lock()
	s.open--
	last := s.open == 0
	if last && c.streams[s.key] == s {
		delete(c.streams, s.key)
	}
	c.lock.Unlock()
	if !last {
		return
	}
	if s.queue != nil {
		s.queue.close() // the writer goroutine finishes the stream
		return
	}
	// No writer: the stream holds its counts (closing, the recorder's
	// wg) from its creation until finishStream ends.
	go func() {
		defer c.recoverStream(s)
		c.finishStream(s)
	}()
}

// uniqueBase returns base, or base with a counter if another stream of
// this recording (another stream with the same purpose, a screen share
// started again, names that mapped alike) already has it: every writer
// gets names of its own. Call with c.lock held.
func (c *callRec) uniqueBase(base string) string {
	name := base
	for n := 2; c.bases[name]; n++ {
		name = naming.Safe(base, strconv.Itoa(n))
	}
	c.bases[name] = true
	return name
}

func (c *callRec) writeStreamMeta(ctx context.Context, s *streamRec) {
	data, _ := json.Marshal(streamMeta{UserID: s.peer.UserID, DeviceID: s.peer.DeviceID, SessionID: s.peer.SessionID, Purpose: s.purpose})
	if err := os.WriteFile(filepath.Join(c.spoolDir, s.base+".json"), data, 0o600); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to write stream metadata for crash repair")
	}
}

// queueMute hands a mute change to the stream's writer goroutine.
func (s *streamRec) queueMute(m callbot.StreamChange) {
	s.queued(!s.queue.pushMute(m), 0, false)
}

func (s *streamRec) applyMute(m callbot.StreamChange) {
	s.w.SetMuted(recording.KindAudio, m.AudioMuted, m.At)
	s.w.SetMuted(recording.KindVideo, m.VideoMuted, m.At)
}

// trackSink feeds one track into its stream's writer, through the
// stream's queue: the track's reader never waits for the disk.
type trackSink struct {
	s    *streamRec
	kind recording.Kind
	ssrc uint32
}

// WriteRTP queues a copy of the packet. A full queue drops it (counted);
// once the writer failed, its error is returned and the reader stops.
func (ts *trackSink) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	s := ts.s
	s.recvPackets.Add(1)
	s.recvBytes.Add(uint64(len(pkt.Payload)))
	dropped, depth, high, err := s.queue.push(ts.kind, pkt, arrival)
	if err != nil {
		return err
	}
	s.queued(dropped, depth, high)
	return nil
}

// queued reports a push into the stream's queue to the metrics.
func (s *streamRec) queued(dropped bool, depth int, high bool) {
	if high {
		s.c.r.noteQueueDepth(depth)
	}
	if dropped {
		if met := s.c.r.met; met != nil {
			met.WriteQueueDropped.Inc()
		}
		if s.dropWarned.CompareAndSwap(false, true) {
			s.log.Warn().Int("queue", queueSize).Msg("The stream's writer fell behind, its queue is full: dropping packets")
		}
	}
}

// writeQueued is the stream's writer goroutine: it writes what its tracks
// queued, until the last track ended and the queue is empty.
// After the writer's first error (a failed file, a contained panic) it
// writes nothing more, and the tracks' readers get that error.
func (s *streamRec) writeQueued() {
	var n uint64
	var failed error
	for {
		p, mutes, ok := s.queue.next()
		if !ok {
			return
		}
		for _, m := range mutes {
			if failed == nil {
				if failed = s.applyMuteSafely(m); failed != nil {
					s.queue.fail(failed)
				}
			}
		}
		if p == nil {
			continue
		}
		if failed == nil {
			failed = s.writePacket(p)
		}
		s.queue.done(failed)
		if n++; n%reportEvery == 0 {
			s.report()
		}
	}
}

// writePacket writes one queued packet or sender report. A panic in the
// writer (a parser bug on hostile media) is contained to the stream:
// logged with its stack, counted, and the stream takes no more packets;
// its files are finished as far as they got.
func (s *streamRec) writePacket(p *queuedPacket) (err error) {
	defer s.containPanic(&err)
	if p.sr {
		s.w.SenderReport(p.ssrc, p.ntp, p.rtpTime)
		return nil
	}
	err = s.w.WriteRTP(p.kind, &p.pkt, p.arrival)
	if err != nil && errors.Is(err, recording.ErrWriterFailed) {
		s.c.fail(err)
	}
	return err
}

// applyMuteSafely applies a queued mute change, containing a panic like
// writePacket.
func (s *streamRec) applyMuteSafely(m callbot.StreamChange) (err error) {
	defer s.containPanic(&err)
	s.applyMute(m)
	return nil
}

// containPanic, deferred, turns a panic in the stream's writer into *err
// after logging and counting it.
func (s *streamRec) containPanic(err *error) {
	v := recover()
	if v == nil {
		return
	}
	s.log.Error().Str("stack", string(debug.Stack())).Any("panic", v).Msg("Writing the stream panicked; it is no longer recorded")
	if met := s.c.r.met; met != nil {
		met.Panics.WithLabelValues("stream").Inc()
	}
	*err = fmt.Errorf("%w: writing %s panicked: %v", errStreamPanicked, s.base, v)
}

// errStreamPanicked is what a stream whose writer panicked returns.
var errStreamPanicked = errors.New("stream writer panicked")

// noteQueueDepth raises the recorder-wide high-water mark of the write
// queues to depth.
func (r *Recorder) noteQueueDepth(depth int) {
	for {
		cur := r.queueHigh.Load()
		if int64(depth) <= cur {
			return
		}
		if r.queueHigh.CompareAndSwap(cur, int64(depth)) {
			if r.met != nil {
				r.met.WriteQueueHighWater.Set(float64(depth))
			}
			return
		}
	}
}

// reportEvery is how many packets of a stream go by between updates of the
// live metrics (loss, bytes, frames written move while recording, not only
// when a file closes).
const reportEvery = 256

// report adds what the stream's writer did since the last report to the
// metrics, and checks the recording's disk limits.
func (s *streamRec) report() {
	if s.w == nil {
		return
	}
	st := s.w.Stats()
	s.reportLock.Lock()
	recv := [2]uint64{s.recvPackets.Load(), s.recvBytes.Load()} // under the lock: never behind reportedRecv
	prev, prevRecv := s.reported, s.reportedRecv
	s.reported, s.reportedRecv = st, recv
	s.reportLock.Unlock()
	if met := s.c.r.met; met != nil {
		met.PacketsReceived.Add(float64(recv[0] - prevRecv[0]))
		met.BytesReceived.Add(float64(recv[1] - prevRecv[1]))
		if d := st.LostPackets - prev.LostPackets; d > 0 {
			met.PacketsLost.Add(float64(d))
		}
		if d := st.Bytes - prev.Bytes; d > 0 {
			met.BytesWritten.Add(float64(d))
		}
		if d := st.FramesWritten - prev.FramesWritten; d > 0 {
			met.FramesWritten.Add(float64(d))
		}
		if d := st.UndecryptableFrames - prev.UndecryptableFrames; d > 0 {
			met.FramesUndecryptable.Add(float64(d))
		}
	}
	if d := st.Bytes - prev.Bytes; d > 0 {
		s.c.checkLimits(d)
	}
}

// SenderReport queues the report behind the track's packets: it needs the
// writer's lock, and the track's RTCP reader must not wait for the disk
// either (in callbot it shares a lock with the RTP reader).
func (ts *trackSink) SenderReport(ntpTime uint64, rtpTime uint32, _ time.Time) {
	ts.s.queued(ts.s.queue.pushReport(ts.ssrc, ntpTime, rtpTime))
}

// Close ends the track; the last track of a stream finalizes its files.
func (ts *trackSink) Close() {
	if ts.s.c.r.met != nil {
		ts.s.c.r.met.TracksRecording.Dec()
	}
	ts.s.c.release(ts.s)
}

// segmentDone is the writer's OnSegment: each file is stored as soon as it
// is finalized, so a crash later in the stream cannot lose it. It runs
// under the writer's lock and only starts the storing.
func (s *streamRec) segmentDone(f recording.FileResult) {
	c := s.c
	// The stream holds counts of its own until finishStream ends, so
	// these Adds never race a Wait at zero.
	c.closing.Add(1)
	c.r.wg.Add(1)
	s.stores.Add(1)
	go func() {
		defer c.r.wg.Done()
		defer c.closing.Done()
		defer s.stores.Done()
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		c.storeFile(s.log.WithContext(ctx), s.peer, s.purpose, f, storage.StateFinished)
	}()
}

func (c *callRec) fail(err error) {
	c.lock.Lock()
	defer c.lock.Unlock()
	if c.failed == nil {
		c.failed = err
	}
}

// recoverStream contains a panic while finishing a stream (a bug, maybe
// on hostile media) to that stream: logged with its stack, counted, and
// the recording marked failed with the reason; its spooled parts stay for
// repair.
func (c *callRec) recoverStream(s *streamRec) {
	v := recover()
	if v == nil {
		return
	}
	s.log.Error().Str("stack", string(debug.Stack())).Any("panic", v).Msg("Finishing a stream panicked; its files stay in the spool")
	if c.r.met != nil {
		c.r.met.Panics.WithLabelValues("stream").Inc()
	}
	c.fail(fmt.Errorf("finishing %s failed: %v", s.base, v))
}

// finishStream closes a writer; its files are stored by segmentDone.
func (c *callRec) finishStream(s *streamRec) {
	defer c.r.wg.Done()
	defer c.closing.Done()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	log := s.log
	if s.w == nil { // the writer could not be made: nothing was written
		_ = os.Remove(filepath.Join(c.spoolDir, s.base+".json"))
		return
	}
	_, err := s.w.Close(log.WithContext(ctx)) // its files are stored by segmentDone
	s.report()
	st := s.w.Stats()
	qHigh, qDropped := s.queue.stats()
	log.Info().Int("queue_high_water", qHigh).Uint64("queue_dropped", qDropped).Uint64("lost_packets", st.LostPackets).Uint64("late_packets", st.LatePackets).
		Uint64("duplicate_packets", st.DuplicatePackets).Uint64("dropped_frames", st.DroppedFrames).
		Uint64("keyframe_requests", st.KeyframeRequests).Int64("silence_samples", st.SilenceSamples).Uint64("undecryptable_frames", st.UndecryptableFrames).
		Uint64("frames_written", st.FramesWritten).Int64("bytes", st.Bytes).Msg("Stream writer closed")
	if err != nil {
		log.Err(err).Msg("Stream writer failed")
		c.fail(err)
	}
	s.stores.Wait()
	_ = os.Remove(filepath.Join(c.spoolDir, s.base+".json"))
}

// storeFile hands a finished file to the store and records it. A file is
// never lost to a store failure: a name already taken is stored under
// another name, a transient error is retried, and a file the store still
// refuses stays in the spool with a failed row and the reason on the
// recording.
func (c *callRec) storeFile(ctx context.Context, peer callbot.PeerInfo, purpose signaling.Purpose, f recording.FileResult, state storage.RecordingState) {
	log := zerolog.Ctx(ctx)
	name, err := c.put(ctx, filepath.Base(f.Path), f.Path)
	if err != nil {
		log.Err(err).Str("file", name).Str("spool_path", f.Path).Msg("Failed to store recording file; it stays in the spool")
		c.fail(fmt.Errorf("file %s could not be stored (%w); it is kept at %s", name, err, f.Path))
		state = storage.StateFailed
	}
	row := c.r.db.File.New(c.rec.ID, name)
	row.UserID, row.DeviceID, row.SessionID, row.Purpose = peer.UserID, peer.DeviceID, string(peer.SessionID), string(purpose)
	row.Kind, row.Codecs, row.Bytes, row.Duration, row.StartedAt = string(f.Kind), f.Codecs, f.Bytes, f.Duration, f.Start
	row.Segment, row.Width, row.Height, row.State = f.Segment, f.Width, f.Height, state
	if c.r.names != nil {
		row.DisplayName, row.AvatarURL = c.r.names.Member(ctx, c.rec.RoomID, peer.UserID)
	}
	for _, iv := range f.MuteIntervals {
		row.MuteIntervals = append(row.MuteIntervals, storage.Interval{Start: f.Start.Add(iv.Start), End: f.Start.Add(iv.End)})
	}
	if err := saveRow(ctx, row); err != nil {
		log.Err(err).Str("file", name).Msg("Failed to record file")
		c.fail(fmt.Errorf("file %s is stored but could not be recorded: %w", name, err))
	}
	f.Path = name
	c.lock.Lock()
	mt := recording.NewManifestTrack(&c.manifest, string(peer.UserID), string(peer.DeviceID), string(purpose), f)
	mt.DisplayName, mt.AvatarURL = row.DisplayName, row.AvatarURL
	c.manifest.Tracks = append(c.manifest.Tracks, mt)
	c.lock.Unlock()
	if err == nil {
		log.Info().Str("file", name).Dur("duration", f.Duration).Int64("bytes", f.Bytes).Msg("Stored recording file")
	}
}

// saveRow saves a file row, retrying a failing database a few times: a
// stored file without its row is invisible.
func saveRow(ctx context.Context, row *storage.RecordingFile) error {
	pause := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := row.Save(ctx)
		if err == nil || attempt >= storeRetries {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause *= 2
	}
}

// storeRetries is how often a failing Put is tried (with a doubling pause).
const storeRetries = 3

// put stores a local file under name, or under a name of its own if name
// is taken, and returns the name it was stored as.
func (c *callRec) put(ctx context.Context, name, path string) (string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	pause := 100 * time.Millisecond
	for attempt, alt := 1, 2; ; attempt++ {
		err := c.r.store.Put(ctx, c.rec.Folder, name, path)
		switch {
		case err == nil:
			return name, nil
		case errors.Is(err, storage.ErrExists) && alt < 100:
			name = naming.Safe(stem, strconv.Itoa(alt)) + ext
			alt++
			attempt--
			continue
		case errors.Is(err, storage.ErrBadKey) || errors.Is(err, storage.ErrExists) || attempt >= storeRetries:
			return name, err
		}
		select {
		case <-ctx.Done():
			return name, err
		case <-time.After(pause):
		}
		pause *= 2
	}
}

// StreamChanged implements callbot.Sink: mute changes go to the writer.
func (r *Recorder) StreamChanged(_ context.Context, change callbot.StreamChange) {
	c := r.call(change.Peer.RoomID)
	if c == nil {
		return
	}
	key := streamKey(change.Peer.CallID, change.StreamID)
	c.lock.Lock()
	c.mutes[key] = change
	s := c.streams[key]
	var w *recording.StreamWriter
	if s != nil {
		w = s.w
	}
	c.lock.Unlock()
	// To the stream's writer goroutine: this is the call's loop, which
	// must not wait for a stalled disk (a mute change takes the writer's
	// lock and may ask for a key frame).
	if w != nil {
		s.queueMute(change)
	}
}

// ParticipantLeft implements callbot.Sink; streams end with their tracks.
// The peer call's remembered mute states go with it, so a long call with
// many rejoins keeps no state for calls that ended.
func (r *Recorder) ParticipantLeft(_ context.Context, p callbot.PeerInfo, _ time.Time) {
	c := r.call(p.RoomID)
	if c == nil {
		return
	}
	prefix := streamKey(p.CallID, "")
	c.lock.Lock()
	defer c.lock.Unlock()
	for key := range c.mutes {
		if strings.HasPrefix(key, prefix) {
			delete(c.mutes, key)
		}
	}
}

// CallLeft implements callbot.Sink: waits for the writers, writes the
// manifest and closes the recording.
func (r *Recorder) CallLeft(ctx context.Context, call callbot.CallInfo, at time.Time) {
	r.lock.Lock()
	c := r.calls[call.RoomID]
	delete(r.calls, call.RoomID)
	r.lock.Unlock()
	if c == nil {
		return
	}
	log := zerolog.Ctx(ctx).With().Str("recording_id", string(c.rec.ID)).Logger()
	done := make(chan struct{})
	go func() { c.closing.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		log.Error().Msg("Timed out finalizing stream writers")
		c.fail(errors.New("timed out finalizing files"))
	}
	c.lock.Lock()
	failed := c.failed
	c.lock.Unlock()
	if failed != nil {
		// A failed writer leaves its part behind: repair and store it now.
		c.salvage(log.WithContext(ctx))
	}
	c.lock.Lock()
	c.manifest.Ended = at
	c.manifest.StopReason = string(call.StopReason)
	c.rec.StopReason = string(call.StopReason)
	c.lock.Unlock()
	c.rec.EndedAt = at
	c.rec.State = storage.StateFinished
	c.lock.Lock()
	if c.manifest.Repaired {
		// It went on after a crash: some files were repaired, and there
		// is a gap in the recording.
		c.rec.State = storage.StateRepaired
	}
	c.lock.Unlock()
	if failed != nil {
		c.rec.State, c.rec.Error = storage.StateFailed, failed.Error()
	}
	if err := c.writeManifest(ctx); err != nil {
		log.Err(err).Msg("Failed to write manifest")
	}
	if err := c.rec.Save(ctx); err != nil {
		log.Err(err).Msg("Failed to store recording end")
	}
	if err := r.db.ActiveCall.Delete(ctx, call.RoomID); err != nil {
		log.Warn().Err(err).Msg("Failed to remove active call")
	}
	c.cleanSpool(ctx)
	log.Info().Str("state", string(c.rec.State)).Int("files", len(c.manifest.Tracks)).Msg("Recording ended")
	if r.events != nil {
		r.events.RecordingEnded(ctx, c.rec)
	}
}

// writeManifest writes the manifest and stores it, replacing an older one
// (a recording continued after a restart, or repaired again).
func (c *callRec) writeManifest(ctx context.Context) error {
	c.lock.Lock()
	m := c.manifest
	m.Tracks = append([]recording.ManifestTrack(nil), c.manifest.Tracks...)
	c.lock.Unlock()
	if err := recording.WriteManifest(c.spoolDir, m); err != nil {
		return err
	}
	local := filepath.Join(c.spoolDir, recording.ManifestFileName)
	if rp, ok := c.r.store.(storage.Replacer); ok {
		return rp.Replace(ctx, c.rec.Folder, recording.ManifestFileName, local)
	}
	return c.r.store.Put(ctx, c.rec.Folder, recording.ManifestFileName, local)
}
