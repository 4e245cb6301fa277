package recording

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/storage/naming"
)

// Kind is a track kind.
type Kind string

// Track kinds.
const (
	KindAudio Kind = "audio"
	KindVideo Kind = "video"
)

// FileKind is the container of a recorded file.
type FileKind string

// Containers.
const (
	FileKindWebM FileKind = "webm"
	FileKindOgg  FileKind = "ogg"
)

// Supported codec MIME types (compared case-insensitively, as in pion).
const (
	MimeTypeOpus = "audio/opus"
	MimeTypeVP8  = "video/VP8"
	MimeTypeVP9  = "video/VP9"
)

// Defaults for StreamConfig.
const (
	DefaultSyncWait     = 1500 * time.Millisecond
	DefaultKeyframeWait = 5 * time.Second
	DefaultJitterDelay  = 400 * time.Millisecond
)

const (
	pliRetryInterval  = 300 * time.Millisecond // while waiting for a keyframe
	pliSafetyInterval = 4 * time.Second        // no keyframe for this long: ask
	pliSafetyThrottle = 500 * time.Millisecond
	// maxPending bounds samples held per track before the first file opens.
	maxPending = 1024
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

// TrackParams describes one negotiated track (from pion's TrackRemote.Codec()
// and SSRC()).
type TrackParams struct {
	MimeType  string // MimeTypeOpus, MimeTypeVP8 or MimeTypeVP9
	ClockRate uint32 // RTP clock rate; 0 means the codec's default (48000 / 90000)
	Channels  uint16 // Opus channels; 0 means 2
	SSRC      uint32 // media SSRC, to route SenderReport calls
}

// StreamConfig configures a StreamWriter.
type StreamConfig struct {
	// Dir is the directory the files are written to; it must exist.
	Dir string
	// BaseName is the file name prefix chosen by the caller. It must be a
	// naming.Safe result (naming.Safe(BaseName) == BaseName); files are
	// named BaseName-NNN.webm / .ogg with NNN the segment index.
	BaseName string
	// Audio and Video are the tracks of the stream; at least one is needed.
	Audio, Video *TrackParams
	// RequestKeyframe is called (never under a lock, from the goroutine that
	// called WriteRTP, SetMuted, AddTrack or NewStreamWriter) when the writer
	// needs a video keyframe; the caller sends a PLI. It may be nil.
	RequestKeyframe func()
	// Clock returns the current time; it is only used when an arrival or
	// event time is zero. Defaults to time.Now.
	Clock func() time.Time
	// Create creates a file; defaults to CreateFile.
	Create CreateFunc
	// FirstSegment is the index of the first file (for a writer that
	// continues a stream after a rejoin).
	FirstSegment int
	// SyncWait is how long (by arrival time) media is held before the first
	// file is opened, waiting for RTCP sender reports of all tracks so audio
	// and video can be aligned. Defaults to DefaultSyncWait.
	SyncWait time.Duration
	// KeyframeWait is how long a stream with video waits for the first
	// keyframe before it starts an audio-only Ogg file. Defaults to
	// DefaultKeyframeWait.
	KeyframeWait time.Duration
	// JitterDelay is how long a missing packet is waited for. Defaults to
	// DefaultJitterDelay.
	JitterDelay time.Duration
}

// Interval is a span of a file's timeline (offsets from its start).
type Interval struct {
	Kind  Kind          `json:"kind"`
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
}

// FileResult describes one finished file.
type FileResult struct {
	Path     string        `json:"path"`   // final path
	Kind     FileKind      `json:"kind"`   // webm or ogg
	Codecs   []string      `json:"codecs"` // MIME types, video first
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"duration"`
	// Start is the local wall-clock time of the file's time zero (media
	// time mapped to the local clock, see package doc). All files of a call,
	// of all participants, can be placed on one timeline with it.
	Start         time.Time  `json:"start"`
	Segment       int        `json:"segment"`
	Width         int        `json:"width,omitempty"`
	Height        int        `json:"height,omitempty"`
	MuteIntervals []Interval `json:"mute_intervals,omitempty"`
	// SenderReports reports whether the stream's tracks were mapped through
	// RTCP sender reports from the start (A/V aligned from the first frame);
	// otherwise arrival time was used until the reports came (align).
	SenderReports bool `json:"sender_reports"`
}

// Stats counts what a StreamWriter dropped or repaired.
type Stats struct {
	LostPackets      uint64 // given up after the jitter delay
	LatePackets      uint64 // arrived after their slot was given up
	DuplicatePackets uint64
	DroppedFrames    uint64 // video frames dropped (broken, or waiting for a keyframe)
	KeyframeRequests uint64
	SilenceSamples   int64 // 48 kHz samples of silence inserted into Ogg files
}

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

	pending   []pendingSample
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

type segment struct {
	index     int
	kind      FileKind
	path      string
	part      string
	file      *stickyFile
	start     time.Time
	ogg       *oggOpusWriter
	webm      *webmMuxer
	width     int
	height    int
	codecs    []string
	hasAudio  bool
	audioOpen bool  // WebM: the pre-skip silence has been written
	audioEnd  int64 // end of the last audio written, ns from start
	audioNext int64 // WebM: 48 kHz sample position where the next audio packet is due
	sender    bool
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
		cfg:     cfg,
		nextSeg: cfg.FirstSegment,
		log:     zerolog.Ctx(ctx).With().Str("stream", cfg.BaseName).Logger(),
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

// requestKeyframe calls the callback; never call it with s.mu held.
func (s *StreamWriter) requestKeyframe() {
	if s.cfg.RequestKeyframe != nil {
		s.cfg.RequestKeyframe()
	}
}

// unlock releases the lock and then fires a pending keyframe request.
func (s *StreamWriter) unlock() {
	want := s.wantKey
	s.wantKey = false
	s.mu.Unlock()
	if want {
		s.requestKeyframe()
	}
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
		s.deliver(t, t.ext, p.payload, false, 0, 0)

		return
	}
	f, ok, lostFrame := t.asm.push(p)
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

// checkKeyframe sends the periodic keyframe requests of the video track.
func (s *StreamWriter) checkKeyframe(now time.Time) {
	t := s.tracks[trackVideo]
	if t == nil || t.muted {
		return
	}
	switch {
	case t.needKey:
		s.maybePLI(t, now, pliRetryInterval)
	case !t.lastKey.IsZero() && now.Sub(t.lastKey) >= pliSafetyInterval:
		s.maybePLI(t, now, pliSafetyThrottle)
	}
}

func (s *StreamWriter) maybePLI(t *trackState, now time.Time, throttle time.Duration) {
	if t.muted || (!t.lastPLI.IsZero() && now.Sub(t.lastPLI) < throttle) {
		return
	}
	t.lastPLI = now
	s.wantKey = true
	s.stats.KeyframeRequests++
}

// wallOf maps an unwrapped RTP timestamp to wall-clock time.
func (t *trackState) wallOf(ext int64) time.Time {
	return t.anchorWall.Add(time.Duration((ext - t.anchorExt) * int64(time.Second) / t.clock))
}

// senderWall maps ext to the sender's NTP clock (needs srHave).
func (t *trackState) senderWall(ext int64) time.Time {
	d := int64(int32(uint32(ext) - t.srRTP)) //nolint:gosec // wrap intended

	return t.srNTP.Add(time.Duration(d * int64(time.Second) / t.clock))
}

// arrivalWall maps ext through the first packet's arrival time.
func (t *trackState) arrivalWall(ext int64) time.Time {
	return t.arrWall.Add(time.Duration((ext - t.arrExt) * int64(time.Second) / t.clock))
}

// decideDomain fixes how the stream's tracks are mapped when the first
// file opens. Times are always reported on the local clock (so files of
// different participants, whose clocks differ, share one call timeline).
// If every track going into the file has a sender report, all tracks are
// mapped through their reports (that is what aligns audio and video) and
// shifted onto the local clock by domainOffset = arrival - sender time of
// the reference track's first packet (audio if present). Otherwise tracks
// are mapped by arrival time and aligned later (align).
func (s *StreamWriter) decideDomain(in []*trackState) {
	s.senderDomain = len(in) > 0
	for _, t := range in {
		s.senderDomain = s.senderDomain && t.srHave
	}
	if s.senderDomain {
		ref := in[len(in)-1] // tracks are ordered video, audio
		s.domainOffset = ref.arrWall.Sub(ref.senderWall(ref.arrExt))
	}
}

// lockAnchor fixes a track's mapping when it is first written to a file.
func (s *StreamWriter) lockAnchor(t *trackState) {
	if t.anchorLocked {
		return
	}
	t.anchorLocked = true
	t.anchorExt = t.ext
	if s.senderDomain && t.srHave {
		t.anchorWall, t.aligned = t.senderWall(t.ext).Add(s.domainOffset), true

		return
	}
	t.anchorWall = t.arrivalWall(t.ext)
	s.align()
}

// align moves locked tracks that are not yet aligned onto sender time as
// soon as the reports allow it. In the sender domain a track goes to its own
// report's mapping. In the arrival domain audio is the reference: once both
// tracks have reports, video is moved so that the two keep the offset their
// reports give. Corrections only ever move a track later: if the track
// would have to move earlier, the other track moves later instead, so no
// written media has to be dropped (a P-frame dropped would break the
// picture); the file gets a short gap. Corrections smaller than
// srCorrectMin are not applied. With a single track there is nothing to
// align.
func (s *StreamWriter) align() {
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	if a == nil || v == nil || !a.anchorLocked || !v.anchorLocked {
		return
	}
	if !s.senderDomain && a.srHave && !a.aligned {
		a.aligned = true // the reference
	}
	for _, t := range []*trackState{a, v} {
		if !t.srHave || t.aligned {
			continue
		}
		o := a
		if t == a {
			o = v
		}
		var want time.Time
		switch {
		case s.senderDomain:
			want = t.senderWall(t.ext).Add(s.domainOffset)
		case t == v && a.aligned:
			off := a.wallOf(a.ext).Sub(a.senderWall(a.ext))
			want = t.senderWall(t.ext).Add(off)
		default:
			continue
		}
		t.aligned = true
		c := want.Sub(t.wallOf(t.ext))
		if c < srCorrectMin && c > -srCorrectMin {
			continue
		}
		s.log.Debug().Str("kind", string(t.kind)).Dur("correction", c).Msg("aligning tracks on sender reports")
		if c > 0 {
			t.anchorWall = t.anchorWall.Add(c)
		} else {
			o.anchorWall = o.anchorWall.Add(-c)
		}
	}
}

// SenderReport records an RTCP sender report (from rtcp.SenderReport:
// SSRC, NTPTime, RTPTime) for the track with that SSRC. Until a file is
// opened, reports move the track onto sender time so audio and video align;
// afterwards the mapping stays fixed (the file timeline is continuous).
func (s *StreamWriter) SenderReport(ssrc uint32, ntpTime uint64, rtpTime uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tracks {
		if t == nil || t.params.SSRC != ssrc {
			continue
		}
		t.srHave = true
		t.srNTP = ntpToTime(ntpTime)
		t.srRTP = rtpTime
	}
	s.align()
}

// ntpToTime converts a 64-bit NTP timestamp (seconds since 1900, 32.32
// fixed point) to time.Time.
func ntpToTime(ntp uint64) time.Time {
	const ntpEpochOffset = 2208988800
	sec := int64(ntp>>32) - ntpEpochOffset //nolint:gosec // fits
	frac := (ntp & 0xFFFFFFFF) * uint64(time.Second) >> 32

	return time.Unix(sec, int64(frac)) //nolint:gosec // < 1e9
}

// TimeToNTP converts t to a 64-bit NTP timestamp (for tests and callers
// that synthesise sender reports).
func TimeToNTP(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	sec := uint64(t.Unix() + ntpEpochOffset)                   //nolint:gosec // after 1900
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second) //nolint:gosec // < 1e9

	return sec<<32 | frac
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

	return st
}

// deliver routes one complete sample (an Opus packet or a video frame).
func (s *StreamWriter) deliver(t *trackState, ext int64, data []byte, key bool, w, h int) {
	if s.seg == nil {
		if t.kind == KindVideo && len(t.pending) == 0 && !key {
			s.stats.DroppedFrames++

			return // a file never starts before a keyframe
		}
		if len(t.pending) >= maxPending {
			s.pool.put(t.pending[0].buf)
			copy(t.pending, t.pending[1:])
			t.pending = t.pending[:len(t.pending)-1]
		}
		b := s.pool.get()
		*b = append((*b)[:0], data...)
		t.pending = append(t.pending, pendingSample{ext: ext, key: key, width: w, height: h, buf: b})

		return
	}
	if t.kind == KindVideo && key {
		switch {
		case s.seg.kind == FileKindOgg:
			s.rotate(t, ext, w, h) // video (re)appeared: switch to WebM
		case w != s.seg.width || h != s.seg.height:
			s.log.Info().Int("width", w).Int("height", h).Msg("resolution changed, starting a new file")
			s.rotate(t, ext, w, h)
		}
		if s.err != nil {
			return
		}
	}
	s.write(t, ext, data, key)
}

// tryStart opens the first file once enough is known: a keyframe (streams
// with video) and sender reports for A/V alignment, or the waits expired.
func (s *StreamWriter) tryStart(now time.Time, force bool) {
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	hasA := a != nil && len(a.pending) > 0
	hasV := v != nil && len(v.pending) > 0 // pending video starts with a keyframe
	if !hasA && !hasV {
		return
	}
	waited := now.Sub(s.first)
	synced := (a == nil || a.srHave) && (v == nil || v.srHave)
	syncOK := force || synced || waited >= s.cfg.SyncWait
	switch {
	case hasV && syncOK:
		s.start(FileKindWebM)
	case hasA && syncOK && (v == nil || force || waited >= s.cfg.KeyframeWait):
		s.start(FileKindOgg)
	}
}

// start opens the first segment and writes the pending samples into it.
func (s *StreamWriter) start(kind FileKind) {
	var in []*trackState
	for _, t := range s.tracks {
		if t == nil || len(t.pending) == 0 || (kind == FileKindOgg && t.kind == KindVideo) {
			continue
		}
		in = append(in, t)
	}
	s.decideDomain(in)
	var origin time.Time
	for _, t := range in {
		s.lockAnchor(t)
		if w := t.wallOf(t.pending[0].ext); origin.IsZero() || w.Before(origin) {
			origin = w
		}
	}
	v := s.tracks[trackVideo]
	width, height := 0, 0
	if kind == FileKindWebM {
		width, height = v.pending[0].width, v.pending[0].height
	}
	s.open(kind, origin, width, height)
	if s.err != nil {
		return
	}
	// Write pending samples in wall-clock order across tracks.
	for _, t := range s.tracks {
		if t == nil {
			continue
		}
		if kind == FileKindOgg && t.kind == KindVideo {
			s.dropPending(t)
		}
	}
	a := s.tracks[trackAudio]
	ai, vi := 0, 0
	for s.err == nil {
		var t *trackState
		var p pendingSample
		switch {
		case a != nil && ai < len(a.pending) && (v == nil || vi >= len(v.pending) || !a.wallOf(a.pending[ai].ext).After(v.wallOf(v.pending[vi].ext))):
			t, p = a, a.pending[ai]
			ai++
		case v != nil && vi < len(v.pending):
			t, p = v, v.pending[vi]
			vi++
		default:
		}
		if t == nil {
			break
		}
		if t.kind == KindVideo && p.key && (p.width != s.seg.width || p.height != s.seg.height) {
			s.rotate(t, p.ext, p.width, p.height)
			if s.err != nil {
				break
			}
		}
		s.write(t, p.ext, *p.buf, p.key)
	}
	for _, t := range s.tracks {
		if t == nil {
			continue
		}
		s.dropPending(t)
	}
}

// open creates a segment file starting at wall-clock origin.
func (s *StreamWriter) open(kind FileKind, origin time.Time, width, height int) {
	seg := &segment{index: s.nextSeg, kind: kind, start: origin, width: width, height: height, sender: s.senderDomain}
	s.nextSeg++
	ext := ".ogg"
	if kind == FileKindWebM {
		ext = ".webm"
	}
	seg.path = filepath.Join(s.cfg.Dir, fmt.Sprintf("%s-%03d%s", s.cfg.BaseName, seg.index, ext))
	seg.part = seg.path + ".part"
	if _, err := os.Lstat(seg.path); err == nil {
		s.fail(seg, fmt.Errorf("%w: %s", errTargetExists, seg.path))

		return
	}
	f, err := s.cfg.Create(seg.part)
	if err != nil {
		s.fail(nil, err)

		return
	}
	seg.file = &stickyFile{f: f}
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	if kind == FileKindWebM {
		seg.hasAudio = a != nil
		codec := "V_VP8"
		if v.asm.vp9 {
			codec = "V_VP9"
		}
		vs := &webmTrackSpec{codec: codec, width: width, height: height}
		var as *webmTrackSpec
		seg.codecs = append(seg.codecs, v.params.MimeType)
		if a != nil {
			as = &webmTrackSpec{channels: int(a.params.Channels)}
			seg.codecs = append(seg.codecs, MimeTypeOpus)
		}
		seg.webm, err = newWebMMuxer(seg.file, vs, as, origin, &s.pool)
	} else {
		seg.hasAudio = true
		seg.codecs = []string{MimeTypeOpus}
		var serial [4]byte
		_, _ = rand.Read(serial[:])
		seg.ogg, err = newOggOpusWriter(seg.file, binary.LittleEndian.Uint32(serial[:]), uint8(a.params.Channels), "matrix-recorder") //nolint:gosec // 1 or 2
		if err == nil {
			err = seg.file.err()
		}
	}
	if err != nil {
		s.fail(seg, err)

		return
	}
	s.seg = seg
	s.log.Debug().Str("path", seg.part).Str("kind", string(kind)).Time("start", origin).Msg("recording file opened")
}

// dropPending returns a track's held samples' buffers to the pool.
func (s *StreamWriter) dropPending(t *trackState) {
	for _, p := range t.pending {
		s.pool.put(p.buf)
	}
	t.pending = t.pending[:0]
}

// rotate finishes the current segment and opens a WebM one for a video
// keyframe at ext. Audio continues from where the previous file ended.
func (s *StreamWriter) rotate(v *trackState, ext int64, w, h int) {
	old := s.seg
	s.lockAnchor(v)
	keyWall := v.wallOf(ext)
	origin := keyWall
	if old != nil && old.hasAudio {
		audioEnd := old.start.Add(time.Duration(old.audioEnd))
		if old.webm != nil {
			// flush first so audioEnd covers everything queued
			if err := old.webm.drain(true); err != nil {
				s.fail(old, err)

				return
			}
			audioEnd = old.start.Add(time.Duration(old.audioEnd))
		}
		if audioEnd.Before(origin) && audioEnd.After(keyWall.Add(-rotateLookback)) {
			origin = audioEnd
		}
	}
	s.finish()
	if s.err != nil {
		return
	}
	s.open(FileKindWebM, origin, w, h)
}

// write puts one sample into the current segment.
func (s *StreamWriter) write(t *trackState, ext int64, data []byte, key bool) {
	seg := s.seg
	if seg == nil {
		return
	}
	s.lockAnchor(t)
	media := t.wallOf(ext).Sub(seg.start)
	if media < 0 {
		if t.kind == KindVideo {
			s.stats.DroppedFrames++
		}

		return
	}
	var err error
	if t.kind == KindAudio {
		pos := (int64(media)*opusSampleRate + int64(time.Second)/2) / int64(time.Second)
		n := int64(opusPacketSamples(data))
		switch {
		case seg.ogg != nil:
			var filled int64
			filled, err = seg.ogg.writePacket(pos, data)
			s.stats.SilenceSamples += filled
			if err == nil {
				err = seg.file.err()
			}
		case seg.webm != nil && seg.hasAudio:
			err = s.writeWebMAudio(seg, t.params.Channels > 1, pos, n, data)
		}
		if end := (pos + n) * int64(time.Second) / opusSampleRate; end > seg.audioEnd {
			seg.audioEnd = end
		}
	} else if seg.webm != nil {
		err = seg.webm.push(trackVideo, int64(media/time.Millisecond), key, data)
	}
	if err != nil {
		s.fail(seg, err)
	}
}

// writeWebMAudio puts an Opus packet whose first sample is at pos (48 kHz
// samples from the file's start) into a WebM segment. The track starts with
// the pre-skip's worth of silence (CodecDelay); a gap since the previous
// packet (mute, DTX, loss) is filled with silence frames so the audio
// timeline stays continuous, as in the Ogg writer.
func (s *StreamWriter) writeWebMAudio(seg *segment, stereo bool, pos, n int64, data []byte) error {
	if !seg.audioOpen {
		seg.audioOpen = true
		seg.audioNext = pos
		for i := range int64(opusPreSkip / 960) {
			if err := seg.webm.push(trackAudio, (pos+i*960)/48, false, opusSilence(960, stereo)); err != nil {
				return err
			}
		}
	}
	if gap := pos - seg.audioNext; gap >= 120 && gap <= oggMaxFill {
		for gap >= 120 {
			f := int64(960)
			for f > gap {
				f /= 2
			}
			if err := seg.webm.push(trackAudio, (seg.audioNext+opusPreSkip)/48, false, opusSilence(int(f), stereo)); err != nil {
				return err
			}
			seg.audioNext += f
			gap -= f
			s.stats.SilenceSamples += f
		}
	}
	seg.audioNext = max(seg.audioNext, pos+n)

	return seg.webm.push(trackAudio, (pos+opusPreSkip)/48, false, data)
}

// finish finalizes the current segment and records its result.
func (s *StreamWriter) finish() {
	seg := s.seg
	if seg == nil {
		return
	}
	s.seg = nil
	var err error
	var dur time.Duration
	if seg.webm != nil {
		err = seg.webm.close()
		dur = seg.webm.duration()
	} else {
		err = seg.ogg.close()
		if err == nil {
			err = seg.file.err()
		}
		dur = time.Duration(seg.ogg.duration() * int64(time.Second) / opusSampleRate)
	}
	if cerr := seg.file.closeFile(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fail(nil, fmt.Errorf("failed to finalize %s: %w", seg.part, err))

		return
	}
	if err := os.Rename(seg.part, seg.path); err != nil {
		s.fail(nil, fmt.Errorf("failed to rename %s: %w", seg.part, err))

		return
	}
	res := FileResult{
		Path: seg.path, Kind: seg.kind, Codecs: seg.codecs, Bytes: seg.file.size(), Duration: dur,
		Start: seg.start, Segment: seg.index, SenderReports: seg.sender,
	}
	if seg.kind == FileKindWebM {
		res.Width, res.Height = seg.width, seg.height
	}
	res.MuteIntervals = s.muteIntervals(seg.start, dur)
	s.results = append(s.results, res)
	s.log.Info().Str("path", res.Path).Dur("duration", dur).Int64("bytes", res.Bytes).Msg("recording file finished")
}

// muteIntervals clips the stream's mute spans to a file's timeline.
func (s *StreamWriter) muteIntervals(start time.Time, dur time.Duration) []Interval {
	var out []Interval
	end := start.Add(dur)
	for _, m := range s.mutes {
		me := m.end
		if me.IsZero() || me.After(end) {
			me = end
		}
		ms := m.start
		if ms.Before(start) {
			ms = start
		}
		if !me.After(ms) {
			continue
		}
		out = append(out, Interval{Kind: m.kind, Start: ms.Sub(start), End: me.Sub(start)})
	}

	return out
}

// fail marks the writer failed. The segment's file is closed (ebml-go's
// goroutine is released) and its .part is left for Repair.
func (s *StreamWriter) fail(seg *segment, err error) {
	if s.err != nil {
		return
	}
	s.err = fmt.Errorf("%w: %s: %w", ErrWriterFailed, s.cfg.BaseName, err)
	s.log.Debug().Err(err).Msg("recording writer failed") // returned to the caller, who logs it
	if seg == nil {
		seg = s.seg
	}
	s.seg = nil
	if seg != nil && seg.file != nil {
		if seg.webm != nil {
			_ = seg.webm.close()
		}
		_ = seg.file.closeFile()
	}
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
