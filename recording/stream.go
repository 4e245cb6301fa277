package recording

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/storage/naming"
)

const (
	pliRetryInterval  = 300 * time.Millisecond // while waiting for a keyframe
	pliSafetyInterval = 4 * time.Second        // no keyframe for this long: ask
	pliSafetyThrottle = 500 * time.Millisecond
	// rotateBurst, rotateEvery and maxSegments bound the files a stream
	// makes on resolution changes (see mayRotate).
	rotateBurst = 5
	rotateEvery = 10 * time.Second
	maxSegments = 1000
	// maxPending and maxPendingBytes bound the samples held per track
	// before the first file opens.
	maxPending      = 1024
	maxPendingBytes = 16 << 20
	// discontinuity is how far RTP time may disagree with arrival time before
	// the track is re-anchored on arrival time.
	discontinuity = 10 * time.Second
	// rotateLookback bounds how far before a rotating keyframe a new segment
	// may start (to continue audio seamlessly from the previous file).
	rotateLookback = time.Second
	// srCorrectMin is the smallest late sender-report correction applied to
	// a track already written on arrival time.
	srCorrectMin = 40 * time.Millisecond
)

// StreamWriter records the tracks of one participant stream into a
// sequence of files (segments). It is safe for concurrent use (typically one
// goroutine per track calls WriteRTP, another SenderReport). It starts no
// goroutine of its own; ebml-go's internal goroutines end when Close (or a
// failure) finalizes the file.
type StreamWriter struct {
	mu      sync.Mutex
	cfg     StreamConfig
	log     zerolog.Logger
	tracks  [2]*trackState // trackVideo, trackAudio
	pool    bufPool
	seg     *segment
	nextSeg int
	results []FileResult
	mutes   []muteSpan
	stats   Stats
	err     error
	closed  bool
	first   time.Time // arrival of the first packet
	// clock domain of the stream's files, fixed when the first file opens
	senderDomain bool
	domainOffset time.Duration
	wantKey      bool // request a keyframe after unlocking
	// resolution changes that may start a file (see mayRotate)
	rotateTokens    float64
	rotateAt        time.Time
	rotationLimited bool
}

const (
	trackVideo = 0
	trackAudio = 1
)

type trackState struct {
	kind   Kind
	params TrackParams
	clock  int64
	jb     *jitterBuffer
	asm    *frameAssembler // video only

	ext         int64 // unwrapped RTP timestamp of the last released packet
	lastArrival time.Time

	srHave bool
	srNTP  time.Time
	srRTP  uint32

	// RTP time -> wall clock. Until the track is written to a file the
	// anchor is its first packet's arrival; when it is first written the
	// anchor is locked in the stream's clock domain (see lockAnchor), and
	// afterwards only align() moves it, at most once per sender report
	// history (aligned).
	anchorSet    bool
	anchorLocked bool
	aligned      bool // mapping agrees with the sender reports
	anchorExt    int64
	anchorWall   time.Time
	arrExt       int64 // first packet: unwrapped RTP time and arrival
	arrWall      time.Time

	pending      []pendingSample
	pendingBytes int
	// frames through params.Transform: its output buffer, and the
	// failures of the current burst (logged at its start and end)
	xbuf      []byte
	xfailures uint64
	carryLost uint64 // packets lost before padding, reported with the next media packet

	// video
	needKey bool
	lastPLI time.Time
	lastKey time.Time
	muted   bool
}

type pendingSample struct {
	ext           int64
	key           bool
	width, height int
	buf           *[]byte
}

type muteSpan struct {
	kind       Kind
	start, end time.Time // end zero while muted
}

// NewStreamWriter validates cfg and returns a writer. No file is created
// until media arrives. If the stream has video, a keyframe is requested
// right away. The logger is taken from ctx.
func NewStreamWriter(ctx context.Context, cfg StreamConfig) (*StreamWriter, error) {
	if cfg.Audio == nil && cfg.Video == nil {
		return nil, fmt.Errorf("%w: no track", ErrInvalidConfig)
	}
	if cfg.BaseName == "" || cfg.BaseName != naming.Safe(cfg.BaseName) {
		return nil, fmt.Errorf("%w: base name %q is not a naming.Safe result", ErrInvalidConfig, cfg.BaseName)
	}
	if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: directory %q not usable: %w", ErrInvalidConfig, cfg.Dir, err)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Create == nil {
		cfg.Create = CreateFile
	}
	if cfg.SyncWait <= 0 {
		cfg.SyncWait = DefaultSyncWait
	}
	if cfg.KeyframeWait <= 0 {
		cfg.KeyframeWait = DefaultKeyframeWait
	}
	if cfg.JitterDelay <= 0 {
		cfg.JitterDelay = DefaultJitterDelay
	}
	s := &StreamWriter{
		cfg:          cfg,
		nextSeg:      cfg.FirstSegment,
		log:          zerolog.Ctx(ctx).With().Str("stream", cfg.BaseName).Logger(),
		rotateTokens: rotateBurst,
	}
	if cfg.Audio != nil {
		if err := s.addTrack(KindAudio, *cfg.Audio); err != nil {
			return nil, err
		}
	}
	if cfg.Video != nil {
		if err := s.addTrack(KindVideo, *cfg.Video); err != nil {
			return nil, err
		}
		s.requestKeyframe()
	}

	return s, nil
}

// AddTrack adds a track to a running stream (for example video on a stream
// that started audio-only). A stream already writing an Ogg file switches to
// a new WebM segment at the first video keyframe.
func (s *StreamWriter) AddTrack(kind Kind, p TrackParams) error {
	s.mu.Lock()
	err := s.usable()
	if err == nil {
		err = s.addTrack(kind, p)
	}
	s.mu.Unlock()
	if err == nil && kind == KindVideo {
		s.requestKeyframe()
	}

	return err
}

func (s *StreamWriter) addTrack(kind Kind, p TrackParams) error {
	t := &trackState{kind: kind, params: p, needKey: true}
	isVP8, isVP9 := strings.EqualFold(p.MimeType, MimeTypeVP8), strings.EqualFold(p.MimeType, MimeTypeVP9)
	switch {
	case kind == KindAudio && strings.EqualFold(p.MimeType, MimeTypeOpus):
		t.params.MimeType = MimeTypeOpus // canonical spelling from here on
		if p.ClockRate == 0 {
			t.params.ClockRate = opusSampleRate
		}
		if p.Channels == 0 {
			t.params.Channels = 2
		}
		if t.params.Channels > 2 {
			return fmt.Errorf("%w: opus with %d channels", ErrUnsupportedCodec, p.Channels)
		}
		t.jb = newJitterBuffer(128, 50, s.cfg.JitterDelay)
	case kind == KindVideo && (isVP8 || isVP9):
		t.params.MimeType = MimeTypeVP8
		if isVP9 {
			t.params.MimeType = MimeTypeVP9
		}
		if p.ClockRate == 0 {
			t.params.ClockRate = 90000
		}
		t.jb = newJitterBuffer(1024, 256, s.cfg.JitterDelay)
		t.asm = &frameAssembler{vp9: isVP9}
	default:
		return fmt.Errorf("%w: %s track with %q", ErrUnsupportedCodec, kind, p.MimeType)
	}
	t.clock = int64(t.params.ClockRate)
	i := trackAudio
	if kind == KindVideo {
		i = trackVideo
	}
	if s.tracks[i] != nil {
		return fmt.Errorf("%w: %s track already present", ErrInvalidConfig, kind)
	}
	s.tracks[i] = t

	return nil
}

func (s *StreamWriter) usable() error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}

	return nil
}

func (s *StreamWriter) track(kind Kind) (*trackState, error) {
	i := trackAudio
	if kind == KindVideo {
		i = trackVideo
	}
	if t := s.tracks[i]; t != nil {
		return t, nil
	}

	return nil, fmt.Errorf("%w: no %s track", ErrInvalidConfig, kind)
}

// WriteRTP feeds one received RTP packet of the given track; arrival is its
// receive time (zero: Clock()). The packet is copied; the caller may reuse
// it. Reordering, duplicates and loss are handled here and are not errors.
// An error is returned only when the writer has failed (wrapping
// ErrWriterFailed), is closed (ErrClosed) or has no such track.
func (s *StreamWriter) WriteRTP(kind Kind, pkt *rtp.Packet, arrival time.Time) error {
	if arrival.IsZero() {
		arrival = s.cfg.Clock()
	}
	s.mu.Lock()
	defer s.unlock()
	if err := s.usable(); err != nil {
		return err
	}
	t, err := s.track(kind)
	if err != nil {
		return err
	}
	if s.first.IsZero() {
		s.first = arrival
	}
	// Padding-only packets (bandwidth probes) go in too: they take a
	// sequence number, and skipping them would look like loss.
	t.jb.push(pkt, arrival)
	for {
		p, ok := t.jb.pop(arrival, false)
		if !ok {
			break
		}
		s.process(t, p)
		if s.err != nil {
			return s.err
		}
	}
	s.checkKeyframe(arrival)
	if s.seg == nil {
		s.tryStart(arrival, false)
	}

	return s.err
}

// process handles one in-order packet.
func (s *StreamWriter) process(t *trackState, p jbPacket) {
	s.stats.LostPackets += p.lost
	if len(p.payload) == 0 {
		// Padding: no media and, from some senders, no meaningful
		// timestamp. A loss before it still concerns the next frame.
		t.carryLost += p.lost

		return
	}
	p.lost += t.carryLost
	t.carryLost = 0
	// Unwrap the 32-bit RTP timestamp against the previous released packet.
	if !t.anchorSet {
		t.anchorSet = true
		t.ext = 1<<32 | int64(p.ts)
		t.anchorExt, t.anchorWall = t.ext, p.arrival
		t.arrExt, t.arrWall = t.ext, p.arrival
	} else {
		prev := t.ext
		t.ext = prev + int64(int32(p.ts-uint32(prev))) //nolint:gosec // wrap intended
		// RTP time and arrival time disagree wildly: the sender jumped its
		// timestamps. Keep the timeline on arrival time.
		rtpDelta := time.Duration((t.ext - prev) * int64(time.Second) / t.clock)
		arrDelta := p.arrival.Sub(t.lastArrival)
		if d := rtpDelta - arrDelta; d > discontinuity || d < -discontinuity {
			wall := t.wallOf(prev).Add(arrDelta)
			t.anchorExt, t.anchorWall, t.aligned = t.ext, wall, false
			t.arrExt, t.arrWall = t.ext, p.arrival
			s.log.Warn().Str("kind", string(t.kind)).Dur("rtp_delta", rtpDelta).Dur("arrival_delta", arrDelta).
				Msg("RTP timestamp discontinuity, re-anchored on arrival time")
		}
	}
	t.lastArrival = p.arrival
	if t.kind == KindAudio {
		data, ok := s.transform(t, p.payload)
		if ok {
			s.deliver(t, t.ext, data, false, 0, 0)
		}

		return
	}
	f, ok, lostFrame := t.asm.push(p)
	if ok && t.params.Transform != nil {
		var data []byte
		if data, ok = s.transform(t, f.data); ok {
			f = t.asm.frame(data)
		} else {
			lostFrame = true // wait for a key frame, PLI
		}
	}
	if lostFrame && !t.needKey {
		t.needKey = true
		s.maybePLI(t, p.arrival, 0)
	}
	if !ok {
		if lostFrame {
			s.stats.DroppedFrames++
		}

		return
	}
	if t.needKey && !f.key {
		s.stats.DroppedFrames++

		return
	}
	if f.key {
		t.needKey = false
		t.lastKey = p.arrival
	}
	s.deliver(t, t.ext, f.data, f.key, f.width, f.height)
}

// transform passes a frame through the track's Transform, if it has one.
// A rejected frame is counted and skipped; a burst of them is logged once
// when it starts and once when frames pass again. An empty result (a
// zero-length frame) is not written.
func (s *StreamWriter) transform(t *trackState, frame []byte) ([]byte, bool) {
	if t.params.Transform == nil {
		return frame, true
	}
	out, err := t.params.Transform.TransformFrame(t.xbuf[:0], frame)
	if cap(out) > cap(t.xbuf) {
		t.xbuf = out[:0]
	}
	if err != nil {
		s.stats.UndecryptableFrames++
		if t.xfailures == 0 {
			s.log.Warn().Err(err).Str("kind", string(t.kind)).Msg("Frames cannot be decrypted; skipping them")
		}
		t.xfailures++

		return nil, false
	}
	if t.xfailures > 0 {
		s.log.Info().Str("kind", string(t.kind)).Uint64("skipped", t.xfailures).Msg("Frames decrypt again")
		t.xfailures = 0
	}

	return out, len(out) > 0
}

// SetMuted records that a track was muted or unmuted at the given time
// (zero: Clock()). Mute intervals are reported per file. Unmuting video
// asks for a keyframe and drops video until it arrives.
func (s *StreamWriter) SetMuted(kind Kind, muted bool, at time.Time) {
	if at.IsZero() {
		at = s.cfg.Clock()
	}
	s.mu.Lock()
	defer s.unlock()
	if muted {
		for _, m := range s.mutes {
			if m.kind == kind && m.end.IsZero() {
				return
			}
		}
		s.mutes = append(s.mutes, muteSpan{kind: kind, start: at})
	} else {
		for i := range s.mutes {
			if s.mutes[i].kind == kind && s.mutes[i].end.IsZero() {
				s.mutes[i].end = at
			}
		}
	}
	if kind == KindVideo && s.tracks[trackVideo] != nil {
		t := s.tracks[trackVideo]
		t.muted = muted
		if !muted {
			t.needKey = true
			t.lastPLI = time.Time{}
			s.maybePLI(t, at, 0)
		}
	}
}

// mayRotate says whether a resolution change may start a new file. Senders
// change resolution a few times while ramping up and when bandwidth
// changes: those get files of their own (rotateBurst at once, then one
// every rotateEvery). A sender alternating resolutions on every key frame,
// by fault or to make the recorder create thousands of files, gets no
// more: its frames go into the current file (decoders follow a key
// frame's own size), and a stream never makes more than maxSegments.
func (s *StreamWriter) mayRotate(t *trackState, ext int64) bool {
	now := t.wallOf(ext)
	if !s.rotateAt.IsZero() {
		s.rotateTokens = min(rotateBurst, s.rotateTokens+float64(now.Sub(s.rotateAt))/float64(rotateEvery))
	}
	s.rotateAt = now
	if s.rotateTokens >= 1 && s.nextSeg-s.cfg.FirstSegment < maxSegments {
		s.rotateTokens--
		return true
	}
	if !s.rotationLimited {
		s.rotationLimited = true
		s.log.Warn().Msg("Resolution changes too often; keeping the current file")
	}
	return false
}

// dropOldestPending gives up the oldest held sample; for video everything
// up to the next key frame goes with it, since held video must start with
// one.
func (s *StreamWriter) dropOldestPending(t *trackState) {
	n := 1
	if t.kind == KindVideo {
		for n < len(t.pending) && !t.pending[n].key {
			n++
		}
		s.stats.DroppedFrames += uint64(n) //nolint:gosec // small
	}
	for _, p := range t.pending[:n] {
		t.pendingBytes -= len(*p.buf)
		s.pool.put(p.buf)
	}
	t.pending = t.pending[:copy(t.pending, t.pending[n:])]
}

// Stats returns counters of what was dropped, lost or inserted so far.
func (s *StreamWriter) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.DuplicatePackets, st.LatePackets = 0, 0
	for _, t := range s.tracks {
		if t != nil {
			st.DuplicatePackets += t.jb.duplicates
			st.LatePackets += t.jb.late
		}
	}

	for _, r := range s.results {
		st.Bytes += r.Bytes
	}
	if s.seg != nil && s.seg.file != nil {
		st.Bytes += s.seg.file.size()
	}

	return st
}

// deliver routes one complete sample (an Opus packet or a video frame).
func (s *StreamWriter) deliver(t *trackState, ext int64, data []byte, key bool, w, h int) {
	if s.seg == nil {
		if t.kind == KindVideo && len(t.pending) == 0 && !key {
			s.stats.DroppedFrames++

			return // a file never starts before a keyframe
		}
		for len(t.pending) > 0 && (len(t.pending) >= maxPending || t.pendingBytes+len(data) > maxPendingBytes) {
			s.dropOldestPending(t)
		}
		if t.kind == KindVideo && len(t.pending) == 0 && !key {
			s.stats.DroppedFrames++

			return
		}
		b := s.pool.get()
		*b = append((*b)[:0], data...)
		t.pending = append(t.pending, pendingSample{ext: ext, key: key, width: w, height: h, buf: b})
		t.pendingBytes += len(data)

		return
	}
	if t.kind == KindVideo && key {
		switch {
		case s.seg.kind == FileKindOgg:
			s.rotate(t, ext, w, h) // video (re)appeared: switch to WebM
		case (w != s.seg.width || h != s.seg.height) && s.mayRotate(t, ext):
			s.log.Info().Int("width", w).Int("height", h).Msg("resolution changed, starting a new file")
			s.rotate(t, ext, w, h)
		}
		if s.err != nil {
			return
		}
	}
	s.write(t, ext, data, key)
}

// Close drains the jitter buffers, finalizes the current file (Cues,
// Duration, EOS), renames it from .part to its final name and returns all
// files written. After a failure it returns the files finished before it and
// the error (wrapping ErrWriterFailed). ctx carries the logger; Close does
// not block on anything but file I/O.
func (s *StreamWriter) Close(ctx context.Context) ([]FileResult, error) {
	_ = ctx
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.results, ErrClosed
	}
	s.closed = true
	if s.err == nil {
		now := s.cfg.Clock()
		for _, t := range s.tracks {
			if t == nil {
				continue
			}
			for s.err == nil {
				p, ok := t.jb.pop(now, true)
				if !ok {
					break
				}
				s.process(t, p)
			}
		}
		if s.seg == nil && s.err == nil {
			s.tryStart(now, true)
		}
		if s.err == nil {
			s.finish()
		}
	}
	for _, t := range s.tracks {
		if t == nil {
			continue
		}
		s.dropPending(t)
	}
	if s.err != nil {
		return s.results, s.err
	}

	return s.results, nil
}
