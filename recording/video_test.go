package recording

import (
	"testing"

	"github.com/pion/rtp/codecs"
	"github.com/stretchr/testify/require"
)

// TestVP9FlexibleModeReferences: flexible-mode VP9 carries reference indices
// (P_DIFF) in every inter frame; the reused packet must not accumulate them,
// and every frame must come out whole.
func TestVP9FlexibleModeReferences(t *testing.T) {
	frames := loadIVF(t, "vp9-320x240.ivf")
	pay := &codecs.VP9Payloader{FlexibleMode: true, InitialPictureIDFn: func() uint16 { return 1 }}
	a := frameAssembler{vp9: true}
	got := 0
	for i, frame := range frames {
		payloads := pay.Payload(1200, frame)
		if key, _, _ := vp9Keyframe(frame, true); !key {
			// pion's payloader leaves P clear; a real flexible-mode sender
			// marks inter frames (P=1) and names their reference (P_DIFF=1,
			// N=0) after the 2-byte picture id.
			for j, pl := range payloads {
				withRef := append([]byte{pl[0] | 0x40, pl[1], pl[2], 1 << 1}, pl[3:]...)
				payloads[j] = withRef
			}
		}
		for j, pl := range payloads {
			f, ok, lost := a.push(jbPacket{ts: uint32(i * 3000), marker: j == len(payloads)-1, payload: pl})
			require.False(t, lost, "frame %d reported lost", i)
			require.LessOrEqual(t, len(a.vp9pkt.PDiff), 3, "reference indices accumulate across packets")
			if ok {
				got++
				if i == 0 {
					require.True(t, f.key, "the first frame is a keyframe")
				}
			}
		}
	}
	require.Equal(t, len(frames), got)
}
