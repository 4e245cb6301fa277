package recording

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
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

// TestFrameSizeIsBounded: packets of one timestamp that never carry a
// marker (a hostile or broken sender) must not grow a frame without bound;
// the frame is dropped as broken and the next frame comes out whole.
func TestFrameSizeIsBounded(t *testing.T) {
	a := frameAssembler{}
	chunk := make([]byte, 1000)
	chunk[0] = 0x10 // VP8 descriptor: S=1, partition 0
	cont := make([]byte, 1000)
	for i := range 100_000 {
		pl := cont
		if i == 0 {
			pl = chunk
		}
		_, ok, _ := a.push(jbPacket{ts: 1, payload: pl})
		require.False(t, ok)
	}
	require.LessOrEqual(t, cap(a.buf), 2*maxFrameBytes, "frame buffer bounded (append may round capacity up)")
	_, ok, lost := a.push(jbPacket{ts: 1, marker: true, payload: cont})
	require.False(t, ok, "an oversized frame is not written")
	require.True(t, lost)
	key := append([]byte{0x10}, vp8KeyframeHeader(320, 240)...)
	f, ok, _ := a.push(jbPacket{ts: 2, marker: true, payload: key})
	require.True(t, ok)
	require.True(t, f.key)
}

// vp8KeyframeHeader is the start of a VP8 key frame of that size.
func vp8KeyframeHeader(w, h int) []byte {
	return []byte{0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, byte(w), byte(w >> 8), byte(h), byte(h >> 8), 0, 0}
}

// TestPendingIsBounded: video held before the first file opens (waiting for
// sender reports) is bounded in bytes, and what is held still starts with a
// key frame.
func TestPendingIsBounded(t *testing.T) {
	w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: t.TempDir(), BaseName: "pending", SyncWait: time.Hour,
		Video: &TrackParams{MimeType: MimeTypeVP8, SSRC: 2}})
	require.NoError(t, err)
	t0 := time.Now()
	frame := make([]byte, 20_000)
	frame[0], frame[1] = 0x10, 0x01 // descriptor S=1; VP8 inter frame
	for i := range 3000 {
		pl := frame
		if i%500 == 0 {
			pl = append([]byte{0x10}, vp8KeyframeHeader(320, 240)...)
			pl = append(pl, make([]byte, 20_000)...)
		}
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true, SSRC: 2}, Payload: pl}
		require.NoError(t, w.WriteRTP(KindVideo, pkt, t0.Add(time.Duration(i)*time.Millisecond)))
	}
	v := w.tracks[trackVideo]
	require.LessOrEqual(t, v.pendingBytes, maxPendingBytes)
	require.NotEmpty(t, v.pending)
	require.True(t, v.pending[0].key, "held video starts with a key frame")
	_, err = w.Close(testutil.Ctx(t))
	require.NoError(t, err)
}
