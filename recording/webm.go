package recording

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"
)

const (
	// webmCuesReserve is the space reserved after the header for Cues. A cue
	// is ~20 bytes; with a cluster per keyframe (>= 1 s apart) this covers
	// well over an hour; writeCues thins the cues out if they do not fit.
	webmCuesReserve = 128 * 1024
	// webmMinCluster / webmMaxCluster bound cluster length in ms: a new
	// cluster (and cue) starts at the first video keyframe after 1 s, and
	// at the latest after 32.767 s (int16 block timecodes).
	webmMinCluster = 1000
	webmMaxCluster = 32767
	// webmInterleave is how far (ms) one track may run ahead of another
	// before the lagging track's frames are written regardless.
	webmInterleave = 500
	// webmMaxQueued bounds the bytes waiting for interleaving.
	webmMaxQueued = 8 << 20
	// opusSeekPreRoll is the Matroska SeekPreRoll for Opus (80 ms in ns).
	opusSeekPreRoll = 80_000_000
	webmVideoTrack  = 1
	webmAudioTrack  = 2
)

// webmFrame is a frame queued for interleaving.
type webmFrame struct {
	ts  int64 // ms
	key bool
	buf *[]byte
}

// Crash-loss window and fsync policy of the WebM writer. Blocks are encoded
// into the muxer's buffer and handed to the file (one write(2)) when the
// buffer spans webmFlushSpan ms of media or holds webmFlushBytes, whichever
// comes first, and when the file is finalized. A process that is killed
// therefore loses at most the buffer (webmFlushSpan of media, ~25 KB at
// 1 Mbit/s) on top of the interleaving queue; Repair recovers every block
// before it. Nothing is fsynced while recording: what was written survives a
// crash of the process but not of the machine; the file is fsynced once,
// when it is finalized (stickyFile.closeFile), before it is renamed.
const (
	webmFlushSpan  = 200 // ms of media
	webmFlushBytes = 64 << 10
	// webmMaxBufKeep is the largest buffer kept between flushes (a huge
	// key frame's buffer is dropped after it was written).
	webmMaxBufKeep = 1 << 20
)

// EBML ids written by the muxer itself (the header and Cues go through
// ebml-go's Marshal once per file).
var (
	ebmlClusterUnknown = []byte{0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	// durationPattern is the Duration element with an 8-byte float.
	durationPattern = []byte{0x44, 0x89, 0x88}
)

// cuePoint is a cluster's cue as the muxer keeps it until the Cues are
// written: 24 bytes and no pointer (a webmCue with its slice is ~90 and
// grew the heap by 5 MB in a ten-minute load run of 100 participants).
type cuePoint struct {
	time, pos uint64
	track     uint8
}

// webmMaxCues bounds the cues a file keeps: about what the reserve holds
// (~20 bytes a cue point encoded). At the bound every other cue is dropped,
// as writeCues would do to fit them anyway, so a call of many hours keeps
// at most 200 KB of cues per file.
const webmMaxCues = 8192

// webmCue is one cue point as written: a cluster's time and position.
type webmCue struct {
	CueTime           uint64                  `ebml:"CueTime"`
	CueTrackPositions []webmCueTrackPositions `ebml:"CueTrackPositions"`
}

type webmCueTrackPositions struct {
	CueTrack           uint64 `ebml:"CueTrack"`
	CueClusterPosition uint64 `ebml:"CueClusterPosition"`
}

type webmSeek struct {
	SeekID       []byte `ebml:"SeekID"`
	SeekPosition uint64 `ebml:"SeekPosition,size=8"`
}

// webmHeader is everything before the first Cluster: EBML header, and the
// Segment (unknown size) with its SeekHead (fixed-size positions, so they
// can be filled in after a first pass), Info and Tracks.
type webmHeader struct {
	Header  webm.EBMLHeader `ebml:"EBML"`
	Segment struct {
		SeekHead struct {
			Seek []webmSeek `ebml:"Seek"`
		} `ebml:"SeekHead"`
		Info   webm.Info   `ebml:"Info"`
		Tracks webm.Tracks `ebml:"Tracks"`
	} `ebml:"Segment,size=unknown"`
}

// webmMuxer writes one WebM file: the header and Cues through ebml-go, the
// Clusters and SimpleBlocks directly into a reused buffer (no reflection and
// no allocation per block). It interleaves the tracks by timestamp itself
// and enforces per-track monotonic timestamps. It is used under the
// StreamWriter's lock, from one goroutine at a time, and starts none.
type webmMuxer struct {
	file    *stickyFile
	has     [2]bool // by index: 0 video, 1 audio
	queues  [2][]webmFrame
	last    [2]int64 // last written ts per track, -1 before the first
	newest  int64
	queued  int // bytes in queues
	first   int64
	lastAny int64

	pool *bufPool

	// the file layout
	buf        []byte // encoded blocks not yet written
	bufFrom    int64  // ts of the first block in buf
	off        int64  // file offset of buf[0]
	segData    int64  // file offset of the Segment's data (SeekHead)
	cuesAt     int64  // file offset of the space reserved for Cues
	durationAt int64  // file offset of the Duration element, 0 if none
	cluster    int64  // ts (ms) the current cluster starts at, -1 before the first
	mainTrack  int    // the track whose key frames start clusters
	maxCluster int64
	cues       []cuePoint
	closed     bool
}

type webmTrackSpec struct {
	codec         string // "V_VP8", "V_VP9"
	width, height int
	channels      int
}

func newWebMMuxer(file *stickyFile, video *webmTrackSpec, audio *webmTrackSpec, start time.Time, pool *bufPool) (*webmMuxer, error) {
	m := &webmMuxer{
		file: file, last: [2]int64{-1, -1}, first: -1, pool: pool, cluster: -1,
		mainTrack: trackVideo, maxCluster: webmMaxCluster,
	}
	var h webmHeader
	h.Header = *webm.DefaultEBMLHeader
	if video != nil {
		m.has[trackVideo] = true
		h.Segment.Tracks.TrackEntry = append(h.Segment.Tracks.TrackEntry, webm.TrackEntry{
			Name: "video", TrackNumber: webmVideoTrack, TrackUID: webmVideoTrack,
			CodecID: video.codec, TrackType: 1,
			Video: &webm.Video{PixelWidth: uint64(video.width), PixelHeight: uint64(video.height)}, //nolint:gosec // small
		})
	} else {
		// audio only: clusters of at most 5 s (audio has no key frames)
		m.mainTrack, m.maxCluster = trackAudio, webmMinCluster*5
	}
	if audio != nil {
		m.has[trackAudio] = true
		ch := uint8(audio.channels) //nolint:gosec // 1 or 2
		h.Segment.Tracks.TrackEntry = append(h.Segment.Tracks.TrackEntry, webm.TrackEntry{
			Name: "audio", TrackNumber: webmAudioTrack, TrackUID: webmAudioTrack,
			CodecID: "A_OPUS", TrackType: 2,
			CodecPrivate: opusHead(ch, opusPreSkip),
			CodecDelay:   uint64(opusPreSkip) * uint64(time.Second) / opusSampleRate,
			SeekPreRoll:  opusSeekPreRoll,
			Audio:        &webm.Audio{SamplingFrequency: opusSampleRate, Channels: uint64(ch)},
		})
	}
	h.Segment.Info = *webm.DefaultSegmentInfo
	h.Segment.Info.MuxingApp = "matrix-recorder"
	h.Segment.Info.WritingApp = "matrix-recorder"
	h.Segment.Info.DateUTC = start.UTC()
	// a non-zero placeholder so Duration is written (8 bytes), patched at the end
	h.Segment.Info.Duration = math.SmallestNonzeroFloat64
	head, err := m.header(&h)
	if err != nil {
		return nil, fmt.Errorf("failed to start webm writer: %w", err)
	}
	m.cuesAt = int64(len(head))
	head = appendVoid(head, webmCuesReserve)
	if _, err := file.Write(head); err != nil {
		return nil, fmt.Errorf("failed to write webm header: %w", err)
	}
	m.off = int64(len(head))

	return m, file.err()
}

// header marshals the header twice: once to learn where Info, Tracks and
// the reserved Cues space land, once with the SeekHead pointing at them
// (the positions have a fixed size, so the layout does not move).
func (m *webmMuxer) header(h *webmHeader) ([]byte, error) {
	h.Segment.SeekHead.Seek = []webmSeek{
		{SeekID: ebml.ElementInfo.Bytes()},
		{SeekID: ebml.ElementTracks.Bytes()},
		{SeekID: ebml.ElementCues.Bytes()},
	}
	var segPos, infoPos, tracksPos uint64
	hook := func(e *ebml.Element) {
		switch e.Name {
		case "SeekHead":
			segPos = e.Position
		case "Info":
			infoPos = e.Position
		case "Tracks":
			tracksPos = e.Position
		}
	}
	var buf bytes.Buffer
	if err := ebml.Marshal(h, &buf, ebml.WithElementWriteHooks(hook)); err != nil {
		return nil, fmt.Errorf("failed to marshal webm header: %w", err)
	}
	end := uint64(buf.Len()) //nolint:gosec // small
	h.Segment.SeekHead.Seek[0].SeekPosition = infoPos - segPos
	h.Segment.SeekHead.Seek[1].SeekPosition = tracksPos - segPos
	h.Segment.SeekHead.Seek[2].SeekPosition = end - segPos
	buf.Reset()
	if err := ebml.Marshal(h, &buf); err != nil {
		return nil, fmt.Errorf("failed to marshal webm header: %w", err)
	}
	if uint64(buf.Len()) != end { //nolint:gosec // small
		return nil, fmt.Errorf("%w: webm header size changed", errBadEBML)
	}
	m.segData = int64(segPos) //nolint:gosec // small
	if i := bytes.Index(buf.Bytes(), durationPattern); i >= 0 {
		m.durationAt = int64(i)
	}

	return buf.Bytes(), nil
}

// push queues a frame (data is copied into a pooled buffer) and writes what
// can be interleaved.
func (m *webmMuxer) push(track int, ts int64, key bool, data []byte) error {
	if !m.has[track] {
		return nil
	}
	prev := m.last[track]
	if q := m.queues[track]; len(q) > 0 {
		prev = q[len(q)-1].ts
	}
	switch {
	case ts < prev:
		return nil // non-monotonic on this track
	case ts == prev && track == trackVideo:
		// Two frames within one millisecond (a key frame sent on request
		// right after a frame): players need distinct frame times.
		ts++
	}
	b := m.pool.get()
	*b = append((*b)[:0], data...)
	m.queues[track] = append(m.queues[track], webmFrame{ts: ts, key: key, buf: b})
	m.queued += len(data)
	if ts > m.newest {
		m.newest = ts
	}

	// A track whose timestamps stand still must not make the queue grow.
	return m.drain(m.queued > webmMaxQueued)
}

// drain writes queued frames in timestamp order. A frame is written when
// every other track has a later frame queued, or when it is more than
// webmInterleave ms behind the newest frame seen (the other track is silent).
func (m *webmMuxer) drain(all bool) error {
	for {
		t := -1
		for i := range 2 {
			if len(m.queues[i]) == 0 {
				continue
			}
			if t < 0 || m.queues[i][0].ts < m.queues[t][0].ts {
				t = i
			}
		}
		if t < 0 {
			return m.file.err()
		}
		other := 1 - t
		if !all && m.has[other] && len(m.queues[other]) == 0 && m.newest-m.queues[t][0].ts < webmInterleave {
			return m.file.err()
		}
		f := m.queues[t][0]
		copy(m.queues[t], m.queues[t][1:])
		m.queues[t] = m.queues[t][:len(m.queues[t])-1]
		m.queued -= len(*f.buf)
		err := m.write(t, f)
		m.pool.put(f.buf)
		if err != nil {
			return err
		}
	}
}

// write encodes one frame as a SimpleBlock (in a new Cluster when due) into
// the buffer, and flushes the buffer when the crash-loss window is full.
// Frames arrive in timestamp order across tracks (drain).
func (m *webmMuxer) write(t int, f webmFrame) error {
	if err := m.file.err(); err != nil {
		return err
	}
	if m.first < 0 {
		m.first = f.ts
	}
	rel := f.ts - m.cluster
	if m.cluster < 0 || rel >= m.maxCluster || (t == m.mainTrack && f.key && rel >= webmMinCluster) {
		m.startCluster(t, f.ts)
		rel = 0
	}
	number := byte(webmVideoTrack)
	if t == trackAudio {
		number = webmAudioTrack
	}
	var flags byte
	if f.key {
		flags = 0x80
	}
	data := *f.buf
	if len(m.buf) == 0 {
		m.bufFrom = f.ts
	}
	m.buf = append(m.buf, 0xA3) // SimpleBlock
	m.buf = appendSize(m.buf, uint64(4+len(data)))
	m.buf = append(m.buf, 0x80|number, byte(rel>>8), byte(rel), flags) // track (1-byte vint), int16 timecode, flags
	m.buf = append(m.buf, data...)
	m.last[t] = f.ts
	m.lastAny = f.ts
	if len(m.buf) >= webmFlushBytes || f.ts-m.bufFrom >= webmFlushSpan {
		m.flush()
	}

	return m.file.err()
}

// startCluster opens a cluster (unknown size, as ebml-go writes them) at ts
// and notes its cue.
func (m *webmMuxer) startCluster(t int, ts int64) {
	m.cluster = ts
	number := uint64(webmVideoTrack)
	if t == trackAudio {
		number = webmAudioTrack
	}
	pos := m.off + int64(len(m.buf)) - m.segData
	if len(m.cues) >= webmMaxCues {
		m.cues = thinCues(m.cues)
	}
	m.cues = append(m.cues, cuePoint{time: uint64(ts - m.first), pos: uint64(pos), track: uint8(number)}) //nolint:gosec // ts >= first, pos positive, track 1 or 2
	m.buf = append(m.buf, ebmlClusterUnknown...)
	m.buf = append(m.buf, 0xE7)                   // Timecode
	m.buf = appendUint(m.buf, uint64(ts-m.first)) //nolint:gosec // ts >= first
}

// flush hands the buffer to the file.
func (m *webmMuxer) flush() {
	if len(m.buf) == 0 {
		return
	}
	_, _ = m.file.Write(m.buf) // sticky: the error is read through file.err()
	m.off += int64(len(m.buf))
	if cap(m.buf) > webmMaxBufKeep {
		m.buf = nil
	} else {
		m.buf = m.buf[:0]
	}
}

// close writes all queued frames and finalizes the file (Cues, Duration).
// It does not close the underlying file.
func (m *webmMuxer) close() error {
	if m.closed {
		return m.file.err()
	}
	m.closed = true
	err := m.drain(true)
	m.flush()
	if err != nil {
		return err
	}
	if m.first >= 0 {
		if err := m.writeCues(); err != nil {
			return err
		}
		if m.durationAt > 0 {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], math.Float64bits(float64(m.lastAny-m.first)))
			_, _ = m.file.WriteAt(b[:], m.durationAt+3)
		}
	}

	return m.file.err()
}

// writeCues writes the Cues into the reserved space, thinned out (every
// other cue dropped) until they fit, as ebml-go does.
func (m *webmMuxer) writeCues() error {
	cues := make([]webmCue, len(m.cues))
	for i, c := range m.cues {
		cues[i] = webmCue{CueTime: c.time, CueTrackPositions: []webmCueTrackPositions{{CueTrack: uint64(c.track), CueClusterPosition: c.pos}}}
	}
	var buf bytes.Buffer
	for {
		c := struct {
			Cues struct {
				CuePoint []webmCue `ebml:"CuePoint"`
			} `ebml:"Cues"`
		}{}
		c.Cues.CuePoint = cues
		buf.Reset()
		if err := ebml.Marshal(&c, &buf); err != nil {
			return fmt.Errorf("failed to marshal webm cues: %w", err)
		}
		rest := webmCuesReserve - buf.Len()
		if rest == 0 || rest >= 9 {
			out := buf.Bytes()
			if rest > 0 {
				out = appendVoid(out, rest)
			}
			_, _ = m.file.WriteAt(out, m.cuesAt)

			return nil
		}
		if len(cues) == 1 {
			return nil // no room even for one cue: the Void stays
		}
		cues = thinCues(cues)
	}
}

// thinCues keeps every other cue, the first one included, in place.
func thinCues[C any](cues []C) []C {
	n := 0
	for i := 0; i < len(cues); i += 2 {
		cues[n] = cues[i]
		n++
	}
	return cues[:n]
}

// duration is what is written as Duration: last minus first timestamp.
func (m *webmMuxer) duration() time.Duration {
	if m.first < 0 {
		return 0
	}

	return time.Duration(m.lastAny-m.first) * time.Millisecond
}

// appendVoid appends a Void element of exactly n (>= 9) bytes.
func appendVoid(b []byte, n int) []byte {
	size := uint64(n - 9) //nolint:gosec // n >= 9
	b = append(b, 0xEC, 0x01)
	for shift := 48; shift >= 0; shift -= 8 {
		b = append(b, byte(size>>shift))
	}

	return append(b, make([]byte, n-9)...)
}

// appendSize appends v as an EBML data size in as few bytes as it fits
// (the all-ones value of a length is reserved for "unknown").
func appendSize(b []byte, v uint64) []byte {
	n := 1
	for n < 8 && v >= 1<<(7*n)-1 {
		n++
	}
	v |= 1 << (7 * n) // the length marker
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}

	return b
}

// appendUint appends an unsigned integer element body: its size and the
// value in as few bytes as it fits (at least one).
func appendUint(b []byte, v uint64) []byte {
	n := 1
	for n < 8 && v>>(8*n) != 0 {
		n++
	}
	b = append(b, 0x80|byte(n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}

	return b
}

// bufPool is a free list of byte slices owned by one StreamWriter (no
// locking; the writer's mutex guards it). It keeps at most bufPoolKeep
// buffers (each grown to the frames it held: a few KB of video each): enough
// for the interleaving queue in steady state, while the
// burst held before a file starts (SyncWait, KeyframeWait: a hundred
// frames and more) is given back to the garbage collector instead of
// staying with the stream for the rest of the call.
type bufPool struct{ free []*[]byte }

const bufPoolKeep = 8

func (p *bufPool) get() *[]byte {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]

		return b
	}
	b := make([]byte, 0, 2048)

	return &b
}

func (p *bufPool) put(b *[]byte) {
	if cap(*b) > 1<<20 || len(p.free) >= bufPoolKeep {
		return // don't keep huge keyframe buffers, or a start-up burst, around
	}
	p.free = append(p.free, b)
}
