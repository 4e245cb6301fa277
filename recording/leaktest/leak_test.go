// Package leaktest checks that stream writers leave no goroutine behind. It
// is a package of its own so that pion's CheckRoutines sees only this test's
// goroutines (the recording package's parallel tests would be counted).
package leaktest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/transport/v5/test"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/recording"
)

const mediaDir = "../../testdata/media"

// fullDisk fails writes past limit bytes with ENOSPC.
type fullDisk struct {
	*os.File
	limit, written int64
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if f.written+int64(len(p)) > f.limit {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	n, err := f.File.Write(p)
	f.written += int64(n)
	return n, err //nolint:wrapcheck // test fake
}

// packets returns 2 s of the test media as RTP: Opus (SSRC 1) and VP8
// (SSRC 2), ordered by capture time.
func packets(t *testing.T) []struct {
	kind recording.Kind
	pkt  *rtp.Packet
	at   time.Duration
} {
	t.Helper()
	type tp = struct {
		kind recording.Kind
		pkt  *rtp.Packet
		at   time.Duration
	}
	var out []tp
	af, err := os.Open(filepath.Join(mediaDir, "beeps-opus-48k-stereo.ogg"))
	require.NoError(t, err)
	defer af.Close()
	or, _, err := oggreader.NewWith(af)
	require.NoError(t, err)
	ap := rtp.NewPacketizer(1200, 111, 1, &codecs.OpusPayloader{}, rtp.NewRandomSequencer(), 48000)
	for i := 0; i < 100; {
		payload, hdr, err := or.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if bytes.HasPrefix(payload, []byte("OpusTags")) || hdr.GranulePosition == 0 {
			continue
		}
		for _, p := range ap.Packetize(payload, 960) {
			out = append(out, tp{recording.KindAudio, p, time.Duration(i) * 20 * time.Millisecond})
		}
		i++
	}
	vf, err := os.Open(filepath.Join(mediaDir, "vp8-320x240.ivf"))
	require.NoError(t, err)
	defer vf.Close()
	ir, _, err := ivfreader.NewWith(vf)
	require.NoError(t, err)
	vp := rtp.NewPacketizer(1200, 96, 2, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewRandomSequencer(), 90000)
	var video []tp
	for i := range 60 {
		frame, _, err := ir.ParseNextFrame()
		require.NoError(t, err)
		for _, p := range vp.Packetize(frame, 3000) {
			video = append(video, tp{recording.KindVideo, p, time.Duration(i) * time.Second / 30})
		}
	}
	// merge by time
	merged := make([]tp, 0, len(out)+len(video))
	for len(out) > 0 || len(video) > 0 {
		if len(video) == 0 || (len(out) > 0 && out[0].at <= video[0].at) {
			merged, out = append(merged, out[0]), out[1:]
		} else {
			merged, video = append(merged, video[0]), video[1:]
		}
	}
	return merged
}

// TestNoGoroutineLeak: finished and failed WebM writers leave no goroutine
// behind (ebml-go runs three per open file).
func TestNoGoroutineLeak(t *testing.T) {
	defer test.CheckRoutines(t)()
	defer test.TimeOut(time.Minute).Stop()
	pkts := packets(t)
	t0 := time.Now()
	// The second writer fails just past the Cues reserve.
	for _, limit := range []int64{0, 128*1024 + 2000} {
		cfg := recording.StreamConfig{
			Dir: t.TempDir(), BaseName: "leak",
			Audio: &recording.TrackParams{MimeType: recording.MimeTypeOpus, SSRC: 1}, Video: &recording.TrackParams{MimeType: recording.MimeTypeVP8, SSRC: 2},
		}
		if limit > 0 {
			cfg.Create = func(path string) (recording.File, error) {
				f, err := recording.CreateFile(path)
				if err != nil {
					return nil, err
				}
				return &fullDisk{File: f.(*os.File), limit: limit}, nil //nolint:forcetypeassert // *os.File
			}
		}
		w, err := recording.NewStreamWriter(testutil.Ctx(t), cfg)
		require.NoError(t, err)
		var ferr error
		for _, p := range pkts {
			if ferr = w.WriteRTP(p.kind, p.pkt, t0.Add(p.at)); ferr != nil {
				break
			}
		}
		_, cerr := w.Close(testutil.Ctx(t))
		if limit > 0 {
			require.ErrorIs(t, ferr, recording.ErrWriterFailed)
			require.ErrorIs(t, cerr, recording.ErrWriterFailed)
		} else {
			require.NoError(t, ferr)
			require.NoError(t, cerr)
		}
	}
}
