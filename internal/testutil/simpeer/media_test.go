package simpeer

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The test clips are 5 s long: the frame durations taken from the files
// must add up to that in RTP clock ticks.
func TestLoadMediaTiming(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "testdata", "media")
	audio, err := loadOpus(filepath.Join(dir, AudioFile))
	require.NoError(t, err)
	video, err := loadVP8(filepath.Join(dir, VideoFile))
	require.NoError(t, err)
	sum := func(s *source) (n uint64) {
		for _, f := range s.frames {
			n += uint64(f.ticks)
		}
		return n
	}
	require.InDelta(t, 5*opusClockRate, sum(audio), opusClockRate/10)
	require.InDelta(t, 5*videoClockRate, sum(video), videoClockRate/10)
	require.Len(t, video.frames, 150)
	for _, f := range audio.frames {
		require.Equal(t, uint32(960), f.ticks, "20 ms Opus frames")
	}
}
