package mixdown

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
)

// synth makes a test input with ffmpeg: a sine of freq Hz (0: no audio)
// and, with video, a test pattern.
func synth(t *testing.T, path string, freq int, video bool, d time.Duration) {
	t.Helper()
	args := []string{"-nostdin", "-v", "error", "-y"}
	if freq > 0 {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency="+itoa(freq)+":sample_rate=48000:duration="+secs(d))
	}
	if video {
		args = append(args, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15:duration="+secs(d))
		args = append(args, "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k")
	}
	if freq > 0 {
		args = append(args, "-c:a", "libopus", "-b:a", "32k")
	}
	args = append(args, path)
	_, errOut, err := mediacheck.Run(t, "ffmpeg", args...)
	require.NoError(t, err, errOut)
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRunPlacesInputs: tones sound at their offsets and nowhere else, the
// outputs last the call's length, the WebM has one video and one audio
// stream.
func TestRunPlacesInputs(t *testing.T) {
	dir := t.TempDir()
	a, b, s := filepath.Join(dir, "a.ogg"), filepath.Join(dir, "b.webm"), filepath.Join(dir, "s.webm")
	synth(t, a, 600, false, 2*time.Second)
	synth(t, b, 1500, true, 3*time.Second)
	synth(t, s, 0, true, 2*time.Second)
	plan := Plan{Duration: 5 * time.Second, Inputs: []Input{
		{Path: a, Tile: "a", Label: "Alice's mic", Offset: 1500 * time.Millisecond, Duration: 2 * time.Second, Audio: true},
		{Path: b, Tile: "b", Label: "Bob: camera", Offset: 0, Audio: true, Video: true,
			VideoOff: [][2]time.Duration{{600 * time.Millisecond, 1200 * time.Millisecond}}},
		{Path: s, Tile: "s", Screen: true, Label: "Bob's screen", Offset: 2 * time.Second, Video: true},
	}}
	audio, video := filepath.Join(dir, "mix.ogg"), filepath.Join(dir, "mix.webm")
	var last float64
	require.NoError(t, Run(context.Background(), plan, dir, audio, video, func(p float64) { last = p }))
	require.Greater(t, last, 0.8)

	require.InDelta(t, 5, mediacheck.Duration(t, audio), 0.1)
	require.InDelta(t, 5, mediacheck.Duration(t, video), 0.1)
	streams := mediacheck.Streams(t, video)
	require.Len(t, streams, 2)
	kinds := map[string]string{}
	for _, st := range streams {
		kinds[st.CodecType] = st.CodecName
	}
	require.Equal(t, map[string]string{"video": "vp8", "audio": "opus"}, kinds)
	require.Len(t, mediacheck.Streams(t, audio), 1)
	if out := os.Getenv("MIXDOWN_KEEP"); out != "" {
		_, _, _ = mediacheck.Run(t, "ffmpeg", "-y", "-v", "error", "-ss", "2.5", "-i", video, "-frames:v", "1", out)
	}

	// The layout: the screen share is the large tile on the left from its
	// offset (2 s) on; the cameras (and name tiles) share the column on the right.
	before, during := frameAt(t, video, 1.6), frameAt(t, video, 3)
	require.True(t, before.isBackground(200, 270), "no screen before its offset")
	require.False(t, during.isBackground(200, 270), "the screen fills the large tile")
	require.False(t, before.isBackground(840, 405), "bob's camera in the column")
	require.True(t, before.isBackground(840, 280), "the camera keeps its aspect ratio (letterboxed)")
	require.True(t, frameAt(t, video, 0.9).isBackground(840, 405), "bob's camera was off")
	// Alice (audio only) has a name tile above bob's camera while she speaks.
	require.True(t, frameAt(t, video, 0.5).isBackground(840, 100), "no tile before alice's offset")
	require.False(t, during.isBackground(840, 100), "alice's name tile")
	require.True(t, frameAt(t, video, 4).isBackground(840, 100), "no tile after alice's file")

	pcm := mediacheck.DecodeAudio(t, audio)
	const on, off = 0.05, 0.01 // lavfi sine has amplitude 1/8
	require.Less(t, mediacheck.ToneLevel(pcm, 600, 0, 1.4), off, "a is silent before its offset")
	require.Greater(t, mediacheck.ToneLevel(pcm, 600, 1.6, 3.4), on, "a sounds after its offset")
	require.Less(t, mediacheck.ToneLevel(pcm, 600, 3.6, 5), off, "a is silent after its end")
	require.Greater(t, mediacheck.ToneLevel(pcm, 1500, 0.1, 2.9), on)
	require.Less(t, mediacheck.ToneLevel(pcm, 1500, 3.1, 5), off)
	vpcm := mediacheck.DecodeAudio(t, video)
	require.Greater(t, mediacheck.ToneLevel(vpcm, 600, 1.6, 3.4), on, "the WebM has the same mix")
}

type frame []byte

// isBackground: the pixel is the canvas colour 0x202020 (give or take
// the codec).
func (f frame) isBackground(x, y int) bool {
	i := (y*Width + x) * 3
	for _, c := range f[i : i+3] {
		if c < 0x18 || c > 0x28 {
			return false
		}
	}
	return true
}

// frameAt decodes the frame at sec seconds as RGB.
func frameAt(t *testing.T, path string, sec float64) frame {
	t.Helper()
	out, errOut, err := mediacheck.Run(t, "ffmpeg", "-nostdin", "-v", "error", "-ss", strconv.FormatFloat(sec, 'f', 2, 64), "-i", path,
		"-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
	require.NoError(t, err, errOut)
	require.Len(t, out, Width*Height*3)
	return frame(out)
}
