package recording

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// discardFile is a File that drops everything (measures the write path,
// not the disk).
type discardFile struct{}

func (discardFile) Write(p []byte) (int, error)            { return len(p), nil }
func (discardFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discardFile) Sync() error                            { return nil }
func (discardFile) Close() error                           { return nil }

// benchStream loops over one 5 s cycle of packets, restamping sequence
// numbers, timestamps and arrival times in place so the benchmark itself
// does not allocate. b.N counts packets.
func benchStream(b *testing.B, video bool) { benchStreamSized(b, video, false, false) }

// pad1M pads VP8 frames to about 1 Mbit/s at 30 fps, the camera bitrate of a
// call participant: key frames 12 000 bytes, the others 3 900 (the writer
// never decodes past the frame header, so zero padding is as good as media).
func pad1M(frames [][]byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		n := 3900
		if len(f) > 0 && f[0]&1 == 0 {
			n = 12000
		}
		out[i] = append(append(make([]byte, 0, max(n, len(f))), f...), make([]byte, max(0, n-len(f)))...)
	}

	return out
}

// benchStreamSized is benchStream with the video at ~1 Mbit/s when big, and
// the file really written (to the test's temporary directory) when disk.
func benchStreamSized(b *testing.B, video, big, disk bool) {
	b.Helper()
	audio := loadOpus(b)
	lists := [][]tpkt{packetizeAudio(audio, srcOpts{ssrc: 1}, t0)}
	cfg := StreamConfig{
		Dir: b.TempDir(), BaseName: "bench", Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1},
		Create: func(path string) (File, error) {
			if disk {
				return CreateFile(path)
			}
			// the file exists (Close renames it) but its content is dropped
			f, err := CreateFile(path)
			if err != nil {
				return nil, err
			}

			return discardFile{}, f.Close()
		},
	}
	if video {
		frames := loadIVF(b, "vp8-320x240.ivf")
		if big {
			frames = pad1M(frames)
		}
		lists = append(lists, packetizeVideo(frames, srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30}, t0))
		cfg.Video = &TrackParams{MimeType: MimeTypeVP8, SSRC: 2}
	}
	pkts := merge(lists...)
	var nA, nV uint16
	for _, p := range pkts {
		if p.kind == KindAudio {
			nA++
		} else {
			nV++
		}
	}
	base := make([]tpkt, len(pkts))
	for i, p := range pkts {
		c := *p.pkt
		base[i] = p
		base[i].pkt = &c
	}
	w, err := NewStreamWriter(context.Background(), cfg)
	require.NoError(b, err)
	const cycle = 5 * time.Second
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := i / len(base)
		j := i % len(base)
		p := pkts[j]
		src := base[j]
		if src.kind == KindAudio {
			p.pkt.SequenceNumber = src.pkt.SequenceNumber + uint16(k)*nA //nolint:gosec // wraps on purpose
			p.pkt.Timestamp = src.pkt.Timestamp + uint32(k)*48000*5      //nolint:gosec // wraps on purpose
		} else {
			p.pkt.SequenceNumber = src.pkt.SequenceNumber + uint16(k)*nV //nolint:gosec // wraps on purpose
			p.pkt.Timestamp = src.pkt.Timestamp + uint32(k)*90000*5      //nolint:gosec // wraps on purpose
		}
		if err := w.WriteRTP(p.kind, p.pkt, src.arrival.Add(time.Duration(k)*cycle)); err != nil {
			b.Fatal(err) //nolint:forbidigo // benchmark
		}
	}
	b.StopTimer()
	_, err = w.Close(context.Background())
	require.NoError(b, err)
}

// BenchmarkOggWrite: audio-only stream, RTP in, Ogg pages out.
func BenchmarkOggWrite(b *testing.B) { benchStream(b, false) }

// BenchmarkWebMWrite: VP8 + Opus stream, RTP in, WebM blocks out.
func BenchmarkWebMWrite(b *testing.B) { benchStream(b, true) }

// BenchmarkWebMWrite1M: VP8 at ~1 Mbit/s 30 fps (a key frame a second) +
// Opus 20 ms, RTP in, WebM blocks out. b.N counts RTP packets.
func BenchmarkWebMWrite1M(b *testing.B) { benchStreamSized(b, true, true, false) }

// BenchmarkWebMWrite1MDisk: BenchmarkWebMWrite1M into a real file (the
// write(2) calls counted too).
func BenchmarkWebMWrite1MDisk(b *testing.B) { benchStreamSized(b, true, true, true) }

// BenchmarkWebMMuxer: the WebM muxer alone, fed one second of frames in
// timestamp order (30 VP8 frames at ~1 Mbit/s, 50 Opus packets) per 80
// iterations. b.N counts frames.
func BenchmarkWebMMuxer(b *testing.B) {
	audio := loadOpus(b)[10]
	video := pad1M(loadIVF(b, "vp8-320x240.ivf"))
	var pool bufPool
	m, err := newWebMMuxer(&stickyFile{f: discardFile{}}, &webmTrackSpec{codec: "V_VP8", width: 320, height: 240},
		&webmTrackSpec{channels: 2}, t0, &pool)
	require.NoError(b, err)
	b.ReportAllocs()
	b.SetBytes(int64(len(audio)*50+len(video[0])+29*len(video[1])) / 80)
	b.ResetTimer()
	var na, nv int64
	for range b.N {
		// audio every 20 ms, video every 33.3 ms, whichever is due first
		if na*20 <= nv*1000/30 {
			if err := m.push(trackAudio, na*20, false, audio); err != nil {
				b.Fatal(err) //nolint:forbidigo // benchmark
			}
			na++

			continue
		}
		f := video[nv%30]
		if err := m.push(trackVideo, nv*1000/30, nv%30 == 0, f); err != nil {
			b.Fatal(err) //nolint:forbidigo // benchmark
		}
		nv++
	}
	b.StopTimer()
	require.NoError(b, m.close())
}

// BenchmarkOggPageWriter: the page writer alone.
func BenchmarkOggPageWriter(b *testing.B) {
	o, err := newOggOpusWriter(discardFile{}, 1, 2, "bench")
	require.NoError(b, err)
	pkt := loadOpus(b)[10]
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := o.writePacket(int64(i)*960, pkt); err != nil {
			b.Fatal(err) //nolint:forbidigo // benchmark
		}
	}
}
