package recording

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// xorTransform stands in for media E2EE: the sender XORs every byte of a
// frame (the clear header too, so a frame's key-ness is only known after
// the transform) and appends a key index; index 0xff has no key.
type xorTransform struct{ calls atomic.Int64 }

func xorFrame(frame []byte, index byte) []byte {
	out := make([]byte, 0, len(frame)+1)
	for _, b := range frame {
		out = append(out, b^0x5a)
	}
	return append(out, index)
}

var errNoToyKey = errors.New("no key for index 0xff")

func (x *xorTransform) TransformFrame(dst, frame []byte) ([]byte, error) {
	x.calls.Add(1)
	if len(frame) == 0 || frame[len(frame)-1] == 0xff {
		return dst[:0], errNoToyKey
	}
	dst = dst[:0]
	for _, b := range frame[:len(frame)-1] {
		dst = append(dst, b^0x5a)
	}
	return dst, nil
}

// Frames pass through the track's transform before they are written: the
// file holds the clear frames (it decodes), frames the transform rejects
// are skipped and counted, and video resumes at the next key frame it asks
// for.
func TestFrameTransform(t *testing.T) {
	t.Parallel()
	audio := loadOpus(t)
	video := loadIVF(t, "vp8-320x240.ivf")
	var encA, encV [][]byte
	badAudio, badVideo := 0, 0
	for i, p := range audio {
		idx := byte(0)
		if i >= 100 && i < 110 {
			idx, badAudio = 0xff, badAudio+1
		}
		encA = append(encA, xorFrame(p, idx))
	}
	for i, f := range video {
		idx := byte(1)
		if i >= 40 && i < 45 {
			idx, badVideo = 0xff, badVideo+1
		}
		encV = append(encV, xorFrame(f, idx))
	}
	t0 := time.Unix(1_700_000_000, 0)
	pkts := merge(packetizeAudio(encA, srcOpts{ssrc: 1}, t0), packetizeVideo(encV, srcOpts{ssrc: 2, fps: 30}, t0))
	var ax, vx xorTransform
	var plis atomic.Int64
	w, err := NewStreamWriter(context.Background(), StreamConfig{Dir: t.TempDir(), BaseName: "e2ee",
		Audio:           &TrackParams{MimeType: MimeTypeOpus, SSRC: 1, Transform: &ax},
		Video:           &TrackParams{MimeType: MimeTypeVP8, SSRC: 2, Transform: &vx},
		RequestKeyframe: func() { plis.Add(1) }, Clock: func() time.Time { return pkts[len(pkts)-1].arrival }})
	require.NoError(t, err)
	require.NoError(t, feed(w, pkts))
	st := w.Stats()
	res, err := w.Close(context.Background())
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Equal(t, FileKindWebM, res[0].Kind)
	span := float64(len(audio)) * 0.020
	checkFile(t, res[0].Path, span) // decodes cleanly: clear frames, not the XORed ones
	require.EqualValues(t, len(audio), ax.calls.Load())
	require.EqualValues(t, len(video), vx.calls.Load())
	require.EqualValues(t, badAudio+badVideo, st.UndecryptableFrames)
	require.Positive(t, plis.Load(), "an undecryptable video frame asks for a key frame")
	require.Less(t, st.FramesWritten, uint64(len(audio)+len(video)))
	require.Greater(t, st.FramesWritten, uint64(len(audio)-badAudio+40))
}
