package recording

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
)

const mediaDir = "../testdata/media"

// loadOpus returns the Opus packets of the test Ogg file (one per page).
func loadOpus(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(mediaDir, "beeps-opus-48k-stereo.ogg"))
	require.NoError(t, err, "test media missing: run scripts/gen-testmedia.sh")
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	require.NoError(t, err)
	var pkts [][]byte
	for {
		payload, hdr, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if bytes.HasPrefix(payload, []byte("OpusTags")) || hdr.GranulePosition == 0 {
			continue
		}
		require.Equal(t, 960, OpusPacketSamples(payload), "test media must hold one 20 ms packet per page")
		pkts = append(pkts, append([]byte(nil), payload...))
	}
	require.NotEmpty(t, pkts)

	return pkts
}

// loadIVF returns the frames of an IVF test file.
func loadIVF(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(mediaDir, name))
	require.NoError(t, err, "test media missing: run scripts/gen-testmedia.sh")
	defer f.Close()
	r, _, err := ivfreader.NewWith(f)
	require.NoError(t, err)
	var frames [][]byte
	for {
		fr, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		frames = append(frames, append([]byte(nil), fr...))
	}
	require.NotEmpty(t, frames)

	return frames
}

// tpkt is one synthetic packet with its (sender) capture time and arrival.
type tpkt struct {
	kind    Kind
	pkt     *rtp.Packet
	sent    time.Duration // capture time since stream start
	arrival time.Time
	frame   int // index of the audio packet / video frame
}

type srcOpts struct {
	ssrc     uint32
	seq      uint16
	ts       uint32
	delay    time.Duration // network delay added to arrival
	codec    string        // video: MimeTypeVP8 / MimeTypeVP9
	fps      int
	firstIdx int // index of the first frame (for time offsets)
}

// packetizeAudio turns Opus packets into RTP (20 ms each).
func packetizeAudio(pkts [][]byte, o srcOpts, t0 time.Time) []tpkt {
	p := rtp.NewPacketizerWithOptions(1200, &codecs.OpusPayloader{}, rtp.NewFixedSequencer(o.seq), opusSampleRate,
		rtp.WithSSRC(o.ssrc), rtp.WithPayloadType(111), rtp.WithTimestamp(o.ts))
	var out []tpkt
	for i, data := range pkts {
		sent := time.Duration(o.firstIdx+i) * 20 * time.Millisecond
		for _, r := range p.Packetize(data, 960) {
			out = append(out, tpkt{kind: KindAudio, pkt: r, sent: sent, arrival: t0.Add(sent + o.delay), frame: o.firstIdx + i})
		}
	}

	return out
}

// packetizeVideo turns VP8/VP9 frames into RTP at o.fps.
func packetizeVideo(frames [][]byte, o srcOpts, t0 time.Time) []tpkt {
	var pl rtp.Payloader = &codecs.VP8Payloader{EnablePictureID: true}
	if o.codec == MimeTypeVP9 {
		pl = &codecs.VP9Payloader{}
	}
	step := uint32(90000 / o.fps)
	p := rtp.NewPacketizerWithOptions(1200, pl, rtp.NewFixedSequencer(o.seq), 90000,
		rtp.WithSSRC(o.ssrc), rtp.WithPayloadType(96), rtp.WithTimestamp(o.ts))
	var out []tpkt
	for i, data := range frames {
		sent := time.Duration(o.firstIdx+i) * time.Second / time.Duration(o.fps)
		pkts := p.Packetize(data, step)
		for j, r := range pkts {
			// spread a frame's packets over 1 ms so they are distinct
			at := t0.Add(sent + o.delay + time.Duration(j)*time.Millisecond/time.Duration(len(pkts)+1))
			out = append(out, tpkt{kind: KindVideo, pkt: r, sent: sent, arrival: at, frame: o.firstIdx + i})
		}
	}

	return out
}

// merge orders packets of several tracks by arrival (stable).
func merge(lists ...[]tpkt) []tpkt {
	var out []tpkt
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].arrival.Before(out[j].arrival) })

	return out
}

// feed writes all packets and returns the first error.
func feed(w *StreamWriter, pkts []tpkt) error {
	for _, p := range pkts {
		if err := w.WriteRTP(p.kind, p.pkt, p.arrival); err != nil {
			return err
		}
	}

	return nil
}

// ---- real tools (internal/testutil/mediacheck) ----

func run(t testing.TB, name string, args ...string) (string, string, error) {
	return mediacheck.Run(t, name, args...)
}

func mkvmergeCodecs(t testing.TB, path string) []string { return mediacheck.MkvmergeCodecs(t, path) }

// checkFile runs every tool check on a produced file; want is the expected
// duration (the RTP span written).
func checkFile(t testing.TB, path string, want float64) { mediacheck.Check(t, path, want, 0.1) }
