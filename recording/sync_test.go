package recording

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"

	"github.com/stretchr/testify/require"
)

// TestAVSync records a stream whose audio beeps and video flashes happen
// together at the sender. Audio and video have unrelated random RTP origins,
// video arrives 280 ms later than audio (jitter buffer, network), and RTCP
// sender reports map both to the sender's NTP clock. In the WebM, every beep
// onset must be within 40 ms of its flash. Without sender reports the same
// stream is ~280 ms off, which shows the check can fail.
func TestAVSync(t *testing.T) {
	t.Parallel()
	audio := loadOpus(t)
	cases := []struct {
		name    string
		codec   string
		file    string
		reports bool
		srAt    time.Duration // when the sender reports arrive
		from    float64       // check flashes from this file time on
		want    float64       // expected flash - beep offset (s)
	}{
		{name: "vp8 with sender reports", codec: MimeTypeVP8, file: "vp8-320x240.ivf", reports: true, srAt: 400 * time.Millisecond},
		{name: "vp9 with sender reports", codec: MimeTypeVP9, file: "vp9-320x240.ivf", reports: true, srAt: 400 * time.Millisecond},
		{name: "vp8 without sender reports (control)", codec: MimeTypeVP8, file: "vp8-320x240.ivf", reports: false, want: 0.28},
		// reports after SyncWait: the file starts on arrival time and is
		// corrected once when they come
		{name: "vp8 late sender reports", codec: MimeTypeVP8, file: "vp8-320x240.ivf", reports: true, srAt: 2200 * time.Millisecond, from: 2.4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(len(tc.name)), 42))                                                       //nolint:gosec // test data
			ao := srcOpts{ssrc: rng.Uint32(), seq: uint16(rng.Uint32()), ts: rng.Uint32(), delay: 20 * time.Millisecond} //nolint:gosec // test
			vo := srcOpts{
				ssrc: rng.Uint32(), seq: uint16(rng.Uint32()), ts: rng.Uint32(), //nolint:gosec // test
				delay: 300 * time.Millisecond, codec: tc.codec, fps: 30,
			}
			pkts := merge(packetizeAudio(audio, ao, t0), packetizeVideo(loadIVF(t, tc.file), vo, t0))
			dir := t.TempDir()
			w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{
				Dir: dir, BaseName: "sync",
				Audio: &TrackParams{MimeType: MimeTypeOpus, ClockRate: 48000, Channels: 2, SSRC: ao.ssrc},
				Video: &TrackParams{MimeType: tc.codec, ClockRate: 90000, SSRC: vo.ssrc},
			})
			require.NoError(t, err)
			// The sender's NTP clock is unrelated to the local clock.
			sender := t0.Add(-3 * time.Hour)
			srAt := t0.Add(tc.srAt)
			sent := false
			for _, p := range pkts {
				if tc.reports && !sent && p.arrival.After(srAt) {
					sent = true
					w.SenderReport(ao.ssrc, TimeToNTP(sender.Add(250*time.Millisecond)), ao.ts+250*48)
					w.SenderReport(vo.ssrc, TimeToNTP(sender.Add(350*time.Millisecond)), vo.ts+350*90)
				}
				require.NoError(t, w.WriteRTP(p.kind, p.pkt, p.arrival))
			}
			res, err := w.Close(testutil.Ctx(t))
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Equal(t, tc.reports && tc.from == 0, res[0].SenderReports)
			// the file start is on the local clock (audio arrives 20 ms after capture)
			require.WithinDuration(t, t0.Add(ao.delay), res[0].Start, 5*time.Millisecond, "file start on the local clock")
			checkFile(t, res[0].Path, res[0].Duration.Seconds())

			beeps := mediacheck.BeepOnsets(t, res[0].Path)
			require.NotEmpty(t, beeps, "no beep found")
			flashes := mediacheck.FlashOnsets(t, res[0].Path)
			require.GreaterOrEqual(t, len(flashes), 3, "flashes %v", flashes)
			for _, f := range flashes {
				if f < tc.from {
					continue
				}
				b := mediacheck.Nearest(beeps, f-tc.want)
				t.Logf("flash %.3f beep %.3f offset %.1f ms", f, b, (f-b)*1000)
				require.InDelta(t, tc.want, f-b, 0.040, "flash at %.3f s, nearest beep at %.3f s (beeps %v)", f, b, beeps)
			}
		})
	}
}
