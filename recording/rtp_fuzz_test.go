package recording

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
)

// FuzzFrameAssembler: any sequence of RTP payloads (split from one input)
// assembles into frames without panicking, and frames stay bounded.
func FuzzFrameAssembler(f *testing.F) {
	f.Add(false, []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0xff, 0x10, 0x01, 0x02})
	f.Add(true, []byte{0x8c, 0x80, 0x01, 0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0})
	f.Add(true, []byte{0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(false, []byte{})
	f.Fuzz(func(t *testing.T, vp9 bool, data []byte) {
		a := frameAssembler{vp9: vp9}
		// Payloads of 1..16 bytes, the first byte of each says how long
		// and whether it ends a frame and its timestamp.
		for ts := uint32(0); len(data) > 0; {
			n := int(data[0]&0x0f) + 1
			marker, next := data[0]&0x10 != 0, data[0]&0x20 != 0
			data = data[1:]
			n = min(n, len(data))
			if next {
				ts += 3000
			}
			f, ok, _ := a.push(jbPacket{ts: ts, marker: marker, payload: data[:n]})
			if ok {
				require.LessOrEqual(t, len(f.data), maxFrameBytes)
			}
			data = data[n:]
		}
	})
}

// FuzzWriteRTP: arbitrary packets (Opus and VP8 tracks, any header values,
// payloads, padding) never make a StreamWriter panic, and what it writes
// still finalizes.
func FuzzWriteRTP(f *testing.F) {
	f.Add([]byte{0x80, 0x6f, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0xf8, 0xff, 0xfe})
	f.Add([]byte{0x80, 0xe0, 0x00, 0x01, 0, 0, 0x0b, 0xb8, 0, 0, 0, 2, 0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
	f.Add([]byte{0xa0, 0x60, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0x03})
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: t.TempDir(), BaseName: "fuzz", SyncWait: time.Millisecond, KeyframeWait: time.Millisecond,
			Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1}, Video: &TrackParams{MimeType: MimeTypeVP8, SSRC: 2}})
		require.NoError(t, err)
		t0 := time.Unix(1_700_000_000, 0)
		var pkt rtp.Packet
		for i := 0; len(data) >= 12; i++ {
			n := min(len(data), 12+int(data[len(data)-1])%64)
			if pkt.Unmarshal(data[:n]) == nil {
				kind := KindAudio
				if pkt.SSRC%2 == 0 {
					kind = KindVideo
				}
				require.NoError(t, w.WriteRTP(kind, &pkt, t0.Add(time.Duration(i)*10*time.Millisecond)))
			}
			data = data[n:]
		}
		_, err = w.Close(testutil.Ctx(t))
		require.NoError(t, err)
	})
}
