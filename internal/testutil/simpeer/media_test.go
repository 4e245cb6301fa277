package simpeer

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The test clips are 5 s long: the frame durations taken from the files
// must add up to exactly that in RTP clock ticks, so that looped audio and
// video stay together (their beeps and flashes are aligned in the clips).
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
	require.Equal(t, uint64(5*opusClockRate), sum(audio))
	require.Equal(t, uint64(5*videoClockRate), sum(video))
	require.Len(t, video.frames, 150)
	for _, f := range audio.frames {
		require.Equal(t, uint32(960), f.ticks, "20 ms Opus frames")
	}
}
