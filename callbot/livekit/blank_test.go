package livekit

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIsBlankVP8(t *testing.T) {
	// Payload descriptor with a 15-bit picture id, then LiveKit's blank frame.
	desc := []byte{0x90, 0x80, 0x80, 0x01}
	blank := append(append([]byte{}, desc...), vp8Blank8x8...)
	blank = append(blank, 0x00, 0x47, 0x08, 0x85)
	require.True(t, isBlankVP8(blank))
	// A real 320x240 key frame is kept.
	real := append(append([]byte{}, desc...), 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x00)
	require.False(t, isBlankVP8(real))
	// A continuation packet is kept.
	require.False(t, isBlankVP8([]byte{0x80, 0x80, 0x01, 0x10, 0x02}))
	require.False(t, isBlankVP8(nil))
}

func TestIsBlankOpus(t *testing.T) {
	silence := make([]byte, opusSilenceLen)
	copy(silence, []byte{0xf8, 0xff, 0xfe})
	require.True(t, isBlankOpus(silence))
	require.True(t, isBlankOpus(append(silence, 'L', 'K', 'R', 'O', 'C', 'K', 'S')), "with a SIF trailer")
	require.False(t, isBlankOpus([]byte{0xf8, 0xff, 0xfe}), "a real encoder's 3-byte silence frame is audio")
	speech := append([]byte{}, silence...)
	speech[40] = 1
	require.False(t, isBlankOpus(speech))
}

func TestVP8KeyFrameSize(t *testing.T) {
	desc := []byte{0x90, 0x80, 0x80, 0x01}
	key := append(append([]byte{}, desc...), 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0x00)
	w, h, ok := vp8KeyFrameSize(key)
	require.True(t, ok)
	require.Equal(t, 640, w)
	require.Equal(t, 360, h)
	delta := append(append([]byte{}, desc...), 0x11, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0x00)
	_, _, ok = vp8KeyFrameSize(delta)
	require.False(t, ok)
}
