package recording

import (
	"fmt"
	"time"

	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/at-wat/ebml-go/webm"
)

const (
	// webmCuesReserve is the space reserved after the header for Cues. A cue
	// is ~20 bytes; with a cluster per keyframe (>= 1 s apart) this covers
	// well over an hour, and ebml-go thins the cues out if it runs out.
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

// webmMuxer writes one WebM file through ebml-go, interleaving the tracks by
// timestamp itself (ebml-go's default sorter silently drops late frames) and
// enforcing per-track monotonic timestamps.
type webmMuxer struct {
	file    *stickyFile
	ws      []webm.BlockWriteCloser // by index: 0 video, 1 audio (nil if absent)
	queues  [2][]webmFrame
	last    [2]int64 // last written ts per track, -1 before the first
	newest  int64
	queued  int // bytes in queues
	first   int64
	lastAny int64

	pool     *bufPool
	inflight *[]byte // handed to ebml-go, reusable after the next Write
}

type webmTrackSpec struct {
	codec         string // "V_VP8", "V_VP9"
	width, height int
	channels      int
}

func newWebMMuxer(file *stickyFile, video *webmTrackSpec, audio *webmTrackSpec, start time.Time, pool *bufPool) (*webmMuxer, error) {
	m := &webmMuxer{file: file, last: [2]int64{-1, -1}, first: -1, pool: pool}
	var tracks []webm.TrackEntry
	var idx []int
	if video != nil {
		tracks = append(tracks, webm.TrackEntry{
			Name: "video", TrackNumber: webmVideoTrack, TrackUID: webmVideoTrack,
			CodecID: video.codec, TrackType: 1,
			Video: &webm.Video{PixelWidth: uint64(video.width), PixelHeight: uint64(video.height)}, //nolint:gosec // small
		})
		idx = append(idx, 0)
	}
	if audio != nil {
		ch := uint8(audio.channels) //nolint:gosec // 1 or 2
		tracks = append(tracks, webm.TrackEntry{
			Name: "audio", TrackNumber: webmAudioTrack, TrackUID: webmAudioTrack,
			CodecID: "A_OPUS", TrackType: 2,
			CodecPrivate: opusHead(ch, opusPreSkip),
			CodecDelay:   uint64(opusPreSkip) * uint64(time.Second) / opusSampleRate,
			SeekPreRoll:  opusSeekPreRoll,
			Audio:        &webm.Audio{SamplingFrequency: opusSampleRate, Channels: uint64(ch)},
		})
		idx = append(idx, 1)
	}
	info := *webm.DefaultSegmentInfo // ebml-go mutates it (Duration): use a copy
	info.MuxingApp = "matrix-recorder (ebml-go)"
	info.WritingApp = "matrix-recorder"
	info.DateUTC = start.UTC()
	opts := []mkvcore.BlockWriterOption{
		mkvcore.WithSegmentInfo(&info),
		mkvcore.WithSeekHead(true),
		mkvcore.WithCues(webmCuesReserve),
		mkvcore.WithBlockInterceptor(nil), // we interleave ourselves
		mkvcore.WithOnErrorHandler(m.onError),
		mkvcore.WithOnFatalHandler(m.onFatal),
	}
	if video != nil {
		opts = append(opts, mkvcore.WithMinMaxClusterDuration(webmVideoTrack, webmMinCluster, webmMaxCluster))
	} else {
		opts = append(opts, mkvcore.WithMinMaxClusterDuration(webmAudioTrack, webmMinCluster, webmMinCluster*5))
	}
	ws, err := webm.NewSimpleBlockWriter(file, tracks, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to start webm writer: %w", err)
	}
	m.ws = make([]webm.BlockWriteCloser, 2)
	for i, w := range ws {
		m.ws[idx[i]] = w
	}

	return m, nil
}

// onError receives non-fatal ebml-go errors (e.g. ErrIgnoreOldFrame). Our
// interleaving keeps frames in order, so there is nothing to do; installing
// it keeps ebml-go from panicking.
func (m *webmMuxer) onError(error) {}

// onFatal receives marshal errors; I/O errors never reach it because the
// sticky file swallows them. Recorded on the file so err() reports it.
func (m *webmMuxer) onFatal(err error) {
	m.file.mu.Lock()
	if m.file.e == nil {
		m.file.e = fmt.Errorf("webm writer: %w", err)
	}
	m.file.mu.Unlock()
}

// push queues a frame (data is copied into a pooled buffer) and writes what
// can be interleaved.
func (m *webmMuxer) push(track int, ts int64, key bool, data []byte) error {
	if m.ws[track] == nil {
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
		if !all && m.ws[other] != nil && len(m.queues[other]) == 0 && m.newest-m.queues[t][0].ts < webmInterleave {
			return m.file.err()
		}
		f := m.queues[t][0]
		copy(m.queues[t], m.queues[t][1:])
		m.queues[t] = m.queues[t][:len(m.queues[t])-1]
		m.queued -= len(*f.buf)
		if err := m.write(t, f); err != nil {
			return err
		}
	}
}

func (m *webmMuxer) write(t int, f webmFrame) error {
	if err := m.file.err(); err != nil {
		m.pool.put(f.buf)

		return err
	}
	if _, err := m.ws[t].Write(f.key, f.ts, *f.buf); err != nil {
		m.pool.put(f.buf)

		return fmt.Errorf("failed to write webm block: %w", err)
	}
	// ebml-go hands frames to its goroutine over an unbuffered channel: once
	// this Write returned, the previous frame has been marshalled.
	if m.inflight != nil {
		m.pool.put(m.inflight)
	}
	m.inflight = f.buf
	m.last[t] = f.ts
	if m.first < 0 {
		m.first = f.ts
	}
	m.lastAny = f.ts

	return nil
}

// close writes all queued frames and finalizes the file (Cues, Duration).
// It does not close the underlying file.
func (m *webmMuxer) close() error {
	err := m.drain(true)
	for _, w := range m.ws {
		if w != nil {
			_ = w.Close() // always nil; the last Close waits for finalization
		}
	}
	if m.inflight != nil {
		m.pool.put(m.inflight)
		m.inflight = nil
	}
	if err != nil {
		return err
	}

	return m.file.err()
}

// duration is what ebml-go writes as Duration: last minus first timestamp.
func (m *webmMuxer) duration() time.Duration {
	if m.first < 0 {
		return 0
	}

	return time.Duration(m.lastAny-m.first) * time.Millisecond
}

// bufPool is a free list of byte slices owned by one StreamWriter (no
// locking; the writer's mutex guards it).
type bufPool struct{ free []*[]byte }

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
	if cap(*b) > 1<<20 {
		return // don't keep huge keyframe buffers around
	}
	p.free = append(p.free, b)
}
