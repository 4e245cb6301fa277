package recording

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/storage/naming"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) //nolint:gochecknoglobals // test epoch

type writerCase struct {
	name     string
	video    string // "", MimeTypeVP8, MimeTypeVP9
	audio    bool
	aOpts    srcOpts
	vOpts    srcOpts
	mutate   func(t *testing.T, pkts []tpkt) []tpkt // reorder, drop, ...
	mute     *[2]time.Duration                      // audio mute interval (from t0)
	videoSrc func(t *testing.T) [][]byte
	check    func(t *testing.T, res []FileResult, st Stats, plis int64)
}

func TestStreamWriter(t *testing.T) {
	t.Parallel()
	audio := loadOpus(t)
	span := float64(len(audio)) * 0.020 // RTP span of the audio
	vp8 := loadIVF(t, "vp8-320x240.ivf")
	vspan := float64(len(vp8)) / 30

	oneFile := func(kind FileKind, dur float64) func(t *testing.T, res []FileResult, st Stats, plis int64) {
		return func(t *testing.T, res []FileResult, _ Stats, _ int64) {
			t.Helper()
			require.Len(t, res, 1)
			require.Equal(t, kind, res[0].Kind)
			require.InDelta(t, dur, res[0].Duration.Seconds(), 0.1)
			checkFile(t, res[0].Path, dur)
		}
	}

	cases := []writerCase{
		{name: "ogg clean", audio: true, check: oneFile(FileKindOgg, span)},
		{
			name: "ogg reorder duplicate loss", audio: true,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				p = swapEvery(p, 7)
				p = duplicateEvery(p, 11)
				return dropIdx(p, 50, 51, 120)
			},
			check: func(t *testing.T, res []FileResult, st Stats, _ int64) {
				t.Helper()
				oneFile(FileKindOgg, span)(t, res, st, 0)
				require.EqualValues(t, 3, st.LostPackets)
				require.NotZero(t, st.DuplicatePackets)
			},
		},
		{
			name: "ogg seq and timestamp wrap", audio: true,
			aOpts: srcOpts{seq: 65500, ts: 0xFFFFFFFF - 48000*2},
			check: oneFile(FileKindOgg, span),
		},
		{
			name: "ogg 3s mute gap", audio: true,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				return dropSent(p, KindAudio, time.Second, 4*time.Second)
			},
			mute: &[2]time.Duration{time.Second, 4 * time.Second},
			check: func(t *testing.T, res []FileResult, st Stats, _ int64) {
				t.Helper()
				oneFile(FileKindOgg, span)(t, res, st, 0)
				require.Len(t, res[0].MuteIntervals, 1)
				require.InDelta(t, 1.0, res[0].MuteIntervals[0].Start.Seconds(), 0.05)
				require.InDelta(t, 4.0, res[0].MuteIntervals[0].End.Seconds(), 0.05)
				require.InDelta(t, 3.0, float64(st.SilenceSamples)/48000, 0.05)
			},
		},
		{
			name: "ogg DTX gap", audio: true,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				return dropSent(p, KindAudio, 2*time.Second, 3*time.Second+500*time.Millisecond)
			},
			check: func(t *testing.T, res []FileResult, st Stats, _ int64) {
				t.Helper()
				oneFile(FileKindOgg, span)(t, res, st, 0)
				require.Empty(t, res[0].MuteIntervals)
				require.InDelta(t, 1.5, float64(st.SilenceSamples)/48000, 0.05)
			},
		},
		{name: "webm vp8 clean", audio: true, video: MimeTypeVP8, check: oneFile(FileKindWebM, span)},
		{name: "webm vp9 clean", audio: true, video: MimeTypeVP9, check: oneFile(FileKindWebM, span)},
		{name: "webm vp8 video only", video: MimeTypeVP8, check: oneFile(FileKindWebM, vspan-1.0/30)},
		{
			name: "webm reorder duplicate loss wrap", audio: true, video: MimeTypeVP8,
			aOpts: srcOpts{seq: 65400, ts: 0xFFFFFFFF - 48000},
			vOpts: srcOpts{seq: 65300, ts: 0xFFFFFFFF - 90000*2},
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				p = swapEvery(p, 5)
				p = duplicateEvery(p, 13)
				// lose one packet of video frame 40: frames until the keyframe at 60 are dropped
				return dropFirst(p, func(x tpkt) bool { return x.kind == KindVideo && x.frame == 40 })
			},
			check: func(t *testing.T, res []FileResult, st Stats, plis int64) {
				t.Helper()
				oneFile(FileKindWebM, span)(t, res, st, 0)
				require.EqualValues(t, 1, st.LostPackets)
				require.GreaterOrEqual(t, st.DroppedFrames, uint64(19))
				require.GreaterOrEqual(t, plis, int64(2), "PLI at start and on loss")
			},
		},
		{
			// Chrome probes bandwidth with padding-only packets on the media
			// SSRC (no RTX): they take sequence numbers but carry nothing.
			name: "webm vp8 padding probes", audio: true, video: MimeTypeVP8,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				return padVideo(p, 10, 5)
			},
			check: func(t *testing.T, res []FileResult, st Stats, plis int64) {
				t.Helper()
				oneFile(FileKindWebM, span)(t, res, st, 0)
				require.Zero(t, st.LostPackets, "padding is not loss")
				require.Zero(t, st.DroppedFrames)
				require.LessOrEqual(t, plis, int64(2), "the PLI at start and at most one safety PLI, none for padding")
				require.Equal(t, len(vp8), mediacheck.VideoFrames(t, res[0].Path))
			},
		},
		{
			// Browsers sometimes capture two frames well under 1 ms apart (a
			// key frame on request right after a frame): distinct WebM times.
			name: "webm vp8 frames under 1 ms apart", audio: true, video: MimeTypeVP8,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				var prevTS uint32
				for i, x := range p {
					if x.kind != KindVideo {
						continue
					}
					if x.frame == 9 {
						prevTS = x.pkt.Timestamp
					}
					if x.frame == 10 || x.frame == 40 {
						c := *x.pkt
						c.Timestamp = prevTS + 45 // 0.5 ms after the previous frame
						p[i].pkt = &c
					}
					if x.frame == 39 {
						prevTS = x.pkt.Timestamp
					}
				}
				return p
			},
			check: func(t *testing.T, res []FileResult, st Stats, plis int64) {
				t.Helper()
				oneFile(FileKindWebM, span)(t, res, st, 0)
				require.Equal(t, len(vp8), mediacheck.VideoFrames(t, res[0].Path))
			},
		},
		{
			name: "webm 3s audio mute", audio: true, video: MimeTypeVP8,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				return dropSent(p, KindAudio, time.Second, 4*time.Second)
			},
			mute: &[2]time.Duration{time.Second, 4 * time.Second},
			check: func(t *testing.T, res []FileResult, st Stats, _ int64) {
				t.Helper()
				oneFile(FileKindWebM, span)(t, res, st, 0)
				require.Len(t, res[0].MuteIntervals, 1)
				// The audio track is continuous: the mute is silence, not a hole
				// (players and mixers without aresample=async would shift audio).
				pcm := mediacheck.DecodeAudio(t, res[0].Path)
				require.InDelta(t, res[0].Duration.Seconds(), float64(len(pcm))/mediacheck.AudioRate, 0.1, "decoded audio")
				require.InDelta(t, 3.0, float64(st.SilenceSamples)/48000, 0.05)
				require.Less(t, mediacheck.Peak(pcm, 1.2, 3.8), 50, "the mute span is silent")
			},
		},
		{
			name: "missing first keyframe", audio: true, video: MimeTypeVP8,
			mutate: func(t *testing.T, p []tpkt) []tpkt {
				t.Helper()
				return dropFirst(p, func(x tpkt) bool { return x.kind == KindVideo && x.frame == 0 })
			},
			check: func(t *testing.T, res []FileResult, st Stats, plis int64) {
				t.Helper()
				oneFile(FileKindWebM, span)(t, res, st, 0)
				// PLI at start, then repeated (300 ms throttle) until the keyframe at 1 s
				require.GreaterOrEqual(t, plis, int64(3))
				require.LessOrEqual(t, plis, int64(6))
				require.GreaterOrEqual(t, st.DroppedFrames, uint64(29))
				first := firstVideoPacket(t, res[0].Path)
				require.Contains(t, first, "K", "first video block must be a keyframe")
			},
		},
		{
			name: "resolution change starts a new segment", audio: true, video: MimeTypeVP8,
			videoSrc: func(t *testing.T) [][]byte {
				t.Helper()
				small := loadIVF(t, "vp8-160x120.ivf")
				return append(append([][]byte(nil), vp8[:90]...), small[90:]...)
			},
			check: func(t *testing.T, res []FileResult, _ Stats, _ int64) {
				t.Helper()
				require.Len(t, res, 2)
				require.Equal(t, []int{320, 240, 160, 120}, []int{res[0].Width, res[0].Height, res[1].Width, res[1].Height})
				require.Equal(t, 0, res[0].Segment)
				require.Equal(t, 1, res[1].Segment)
				checkFile(t, res[0].Path, res[0].Duration.Seconds())
				checkFile(t, res[1].Path, res[1].Duration.Seconds())
				require.InDelta(t, span, res[0].Duration.Seconds()+res[1].Duration.Seconds(), 0.15)
				// the second file starts where the first ends, on one timeline
				gap := res[1].Start.Sub(res[0].Start.Add(res[0].Duration))
				require.InDelta(t, 0, gap.Seconds(), 0.1)
				require.InDelta(t, 3.0, res[1].Start.Sub(res[0].Start).Seconds(), 0.1)
			},
		},
		{
			// A sender alternating resolutions on every key frame (every
			// 5th frame here) cannot make a file per key frame; nothing is
			// lost, the frames go into the files there are.
			name: "alternating resolutions are bounded", audio: true, video: MimeTypeVP8,
			videoSrc: func(t *testing.T) [][]byte {
				t.Helper()
				small := loadIVF(t, "vp8-160x120.ivf")
				out := make([][]byte, 4*len(vp8)) // 20 s, a key frame a second
				for i := range out {
					out[i] = vp8[i%len(vp8)]
					if (i/30)%2 == 1 {
						out[i] = small[i%len(vp8)]
					}
				}
				return out
			},
			check: func(t *testing.T, res []FileResult, _ Stats, _ int64) {
				t.Helper()
				// 19 changes in 20 s: the burst, then one per rotateEvery.
				require.LessOrEqual(t, len(res), 1+rotateBurst+2, "files")
				frames := 0
				for _, r := range res {
					checkFile(t, r.Path, r.Duration.Seconds())
					frames += mediacheck.VideoFrames(t, r.Path)
				}
				require.Equal(t, 4*len(vp8), frames, "every frame is written")
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var plis atomic.Int64
			cfg := StreamConfig{
				Dir: dir, BaseName: naming.Safe("@alice:example.org", "DEV", tc.name),
				RequestKeyframe: func() { plis.Add(1) },
				Clock:           func() time.Time { return t0.Add(time.Hour) },
			}
			var lists [][]tpkt
			if tc.audio {
				o := tc.aOpts
				o.ssrc = 1111
				cfg.Audio = &TrackParams{MimeType: MimeTypeOpus, ClockRate: 48000, Channels: 2, SSRC: o.ssrc}
				lists = append(lists, packetizeAudio(audio, o, t0))
			}
			if tc.video != "" {
				o := tc.vOpts
				o.ssrc, o.codec, o.fps = 2222, tc.video, 30
				frames := vp8
				if tc.video == MimeTypeVP9 {
					frames = loadIVF(t, "vp9-320x240.ivf")
				}
				if tc.videoSrc != nil {
					frames = tc.videoSrc(t)
				}
				cfg.Video = &TrackParams{MimeType: tc.video, ClockRate: 90000, SSRC: o.ssrc}
				lists = append(lists, packetizeVideo(frames, o, t0))
			}
			pkts := merge(lists...)
			if tc.mutate != nil {
				pkts = tc.mutate(t, pkts)
			}
			w, err := NewStreamWriter(testutil.Ctx(t), cfg)
			require.NoError(t, err)
			if tc.mute != nil {
				muteAt, unmuteAt := t0.Add(tc.mute[0]), t0.Add(tc.mute[1])
				var before, after []tpkt
				for _, p := range pkts {
					if p.arrival.Before(muteAt) {
						before = append(before, p)
					} else {
						after = append(after, p)
					}
				}
				require.NoError(t, feed(w, before))
				w.SetMuted(KindAudio, true, muteAt)
				w.SetMuted(KindAudio, false, unmuteAt)
				require.NoError(t, feed(w, after))
			} else {
				require.NoError(t, feed(w, pkts))
			}
			res, err := w.Close(testutil.Ctx(t))
			require.NoError(t, err)
			for _, r := range res {
				require.FileExists(t, r.Path)
				require.NoFileExists(t, r.Path+".part")
				st, err := os.Stat(r.Path)
				require.NoError(t, err)
				require.Equal(t, st.Size(), r.Bytes)
				require.Equal(t, dir, filepath.Dir(r.Path))
			}
			tc.check(t, res, w.Stats(), plis.Load())
		})
	}
}

// ---- packet list mutations ----

// padVideo inserts k padding-only packets (RTP padding bit, no payload)
// after the last packet of every nth video frame, renumbering the video
// packets after them, as a browser's bandwidth probe does.
func padVideo(p []tpkt, n, k int) []tpkt {
	var out []tpkt
	var shift uint16
	for _, x := range p {
		if x.kind != KindVideo {
			out = append(out, x)
			continue
		}
		c := *x.pkt
		c.SequenceNumber += shift
		x.pkt = &c
		out = append(out, x)
		if c.Marker && x.frame%n == 0 {
			for i := range k {
				pad := &rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, PayloadType: c.PayloadType,
					SequenceNumber: c.SequenceNumber + uint16(i) + 1, Timestamp: c.Timestamp, SSRC: c.SSRC}, PaddingSize: 255}
				out = append(out, tpkt{kind: KindVideo, pkt: pad, sent: x.sent, arrival: x.arrival.Add(time.Duration(i+1) * 100 * time.Microsecond), frame: x.frame})
			}
			shift += uint16(k)
		}
	}

	return out
}

func swapEvery(p []tpkt, n int) []tpkt {
	p = append([]tpkt(nil), p...)
	for i := n; i+1 < len(p); i += n {
		p[i], p[i+1] = p[i+1], p[i]
	}

	return p
}

func duplicateEvery(p []tpkt, n int) []tpkt {
	var out []tpkt
	for i, x := range p {
		out = append(out, x)
		if i%n == n-1 {
			d := x
			d.arrival = d.arrival.Add(time.Millisecond)
			out = append(out, d)
		}
	}

	return out
}

// dropIdx drops audio packets by index.
func dropIdx(p []tpkt, idx ...int) []tpkt {
	drop := map[int]bool{}
	for _, i := range idx {
		drop[i] = true
	}
	var out []tpkt
	for _, x := range p {
		if x.kind == KindAudio && drop[x.frame] {
			continue
		}
		out = append(out, x)
	}

	return out
}

func dropSent(p []tpkt, kind Kind, from, to time.Duration) []tpkt {
	var out []tpkt
	for _, x := range p {
		if x.kind == kind && x.sent >= from && x.sent < to {
			continue
		}
		out = append(out, x)
	}

	return out
}

func dropFirst(p []tpkt, match func(tpkt) bool) []tpkt {
	var out []tpkt
	done := false
	for _, x := range p {
		if !done && match(x) {
			done = true

			continue
		}
		out = append(out, x)
	}

	return out
}

func firstVideoPacket(t *testing.T, path string) string {
	t.Helper()
	out, errOut, err := run(t, "ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags",
		"-read_intervals", "%+#1", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)

	return out
}
