package recording

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWebMCuesBounded: a file of many hours keeps a bounded list of cues
// (every other one dropped at the bound, the first kept, in time order),
// not one ~90-byte cue per cluster for the whole call.
func TestWebMCuesBounded(t *testing.T) {
	var pool bufPool
	m, err := newWebMMuxer(&stickyFile{f: discardFile{}}, &webmTrackSpec{codec: "V_VP8", width: 320, height: 240}, nil, t0, &pool)
	require.NoError(t, err)
	key := []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}
	for i := range int64(3 * webmMaxCues) { // a key frame every 1.1 s: a cluster each, ~2.75 h
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
}
