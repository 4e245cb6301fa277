package recording

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// TestJitterBufferKeepsFewBuffers: in-order packets through a video-sized
// window leave no payload buffer in the slots and one or two on the free
// list, not one per slot of the window.
func TestJitterBufferKeepsFewBuffers(t *testing.T) {
	j := newJitterBuffer(1024, 256, 400*time.Millisecond)
	payload := make([]byte, 1200)
	for i := range 3000 {
		pkt := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i) * 3000}, Payload: payload} //nolint:gosec // test
		require.True(t, j.push(pkt, t0.Add(time.Duration(i)*time.Millisecond)))
		p, ok := j.pop(t0.Add(time.Duration(i)*time.Millisecond), false)
		require.True(t, ok)
		require.Len(t, p.payload, 1200)
	}
	held := 0
	for _, s := range j.slots {
		if s.payload != nil {
			held++
		}
	}
	require.Zero(t, held, "slots keep no buffer once released")
	require.LessOrEqual(t, len(j.free), 2)
}
