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
func benchStream(b *testing.B, video bool) {
	b.Helper()
	audio := loadOpus(b)
	lists := [][]tpkt{packetizeAudio(audio, srcOpts{ssrc: 1}, t0)}
	cfg := StreamConfig{
		Dir: b.TempDir(), BaseName: "bench", Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1},
		Create: func(path string) (File, error) {
			// the file exists (Close renames it) but its content is dropped
			f, err := CreateFile(path)
			if err != nil {
				return nil, err
			}

			return discardFile{}, f.Close()
		},
	}
	if video {
		lists = append(lists, packetizeVideo(loadIVF(b, "vp8-320x240.ivf"), srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30}, t0))
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
