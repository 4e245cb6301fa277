package recording

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWebMCuesBounded: a file of many hours keeps a bounded list of cues
// (every other one dropped at the bound, the first kept, in time order),
// not one ~90-byte cue per cluster for the whole call; the file written
// still seeks near its end through them.
func TestWebMCuesBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long.webm")
	f, err := os.Create(path)
	require.NoError(t, err)
	var pool bufPool
	m, err := newWebMMuxer(&stickyFile{f: f}, &webmTrackSpec{codec: "V_VP8", width: 320, height: 240}, nil, t0, &pool)
	require.NoError(t, err)
	key := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}
	const clusters = 3 * webmMaxCues // a key frame every 1.1 s: a cluster each, ~7.5 h
	for i := range int64(clusters) {
		require.NoError(t, m.push(trackVideo, i*1100, true, key))
	}
	require.LessOrEqual(t, len(m.cues), webmMaxCues)
	require.Greater(t, len(m.cues), webmMaxCues/4)
	require.Zero(t, m.cues[0].time, "the first cluster keeps its cue")
	for i := 1; i < len(m.cues); i++ {
		require.Greater(t, m.cues[i].time, m.cues[i-1].time)
		require.Greater(t, m.cues[i].pos, m.cues[i-1].pos)
	}
	require.NoError(t, m.close())
	require.NoError(t, f.Close())

	// A player seeking to the last minutes lands there (the packets are
	// read, not decoded: the frames are headers only).
	end := float64(clusters-1) * 1.1
	out, _, err := run(t, "ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", strconv.FormatFloat(end-120, 'f', 0, 64)+"%+1",
		"-show_entries", "packet=pts_time", "-of", "csv=p=0", path)
	require.NoError(t, err)
	first := strings.Fields(out)
	require.NotEmpty(t, first, "packets after the seek")
	at, err := strconv.ParseFloat(strings.TrimSuffix(first[0], ","), 64)
	require.NoError(t, err)
	require.InDelta(t, end-120, at, 60, "the seek lands near its target")
}
