package recording

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/stretchr/testify/require"
)

// TestVideoAppearsLater: video that starts after KeyframeWait (camera off at
// first), or a video track added to an audio-only stream, gives an Ogg
// segment followed by a WebM segment that continues it on the same
// timeline.
func TestVideoAppearsLater(t *testing.T) {
	t.Parallel()
	audio := loadOpus(t)
	video := loadIVF(t, "vp8-320x240.ivf")
	for _, addLater := range []bool{false, true} {
		name := "declared"
		if addLater {
			name = "AddTrack"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var plis int
			cfg := StreamConfig{
				Dir: t.TempDir(), BaseName: "late", KeyframeWait: time.Second,
				Audio:           &TrackParams{MimeType: MimeTypeOpus, SSRC: 1},
				RequestKeyframe: func() { plis++ },
			}
			if !addLater {
				cfg.Video = &TrackParams{MimeType: MimeTypeVP8, SSRC: 2}
			}
			w, err := NewStreamWriter(testutil.Ctx(t), cfg)
			require.NoError(t, err)
			// video from frame 60 (t = 2 s, a keyframe)
			vp := packetizeVideo(video[60:], srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30, firstIdx: 60}, t0)
			pkts := merge(packetizeAudio(audio, srcOpts{ssrc: 1}, t0), vp)
			for _, p := range pkts {
				if addLater && p.kind == KindVideo && w.tracks[trackVideo] == nil {
					before := plis
					require.NoError(t, w.AddTrack(KindVideo, TrackParams{MimeType: MimeTypeVP8, SSRC: 2}))
					require.Equal(t, before+1, plis, "a keyframe is requested for a new video track")
				}
				require.NoError(t, w.WriteRTP(p.kind, p.pkt, p.arrival))
			}
			res, err := w.Close(testutil.Ctx(t))
			require.NoError(t, err)
			require.Len(t, res, 2)
			require.Equal(t, FileKindOgg, res[0].Kind)
			require.Equal(t, FileKindWebM, res[1].Kind)
			require.InDelta(t, 2.0, res[0].Duration.Seconds(), 0.1)
			require.InDelta(t, 2.0, res[1].Start.Sub(res[0].Start).Seconds(), 0.1)
			require.InDelta(t, 3.02, res[1].Duration.Seconds(), 0.1)
			checkFile(t, res[0].Path, res[0].Duration.Seconds())
			checkFile(t, res[1].Path, res[1].Duration.Seconds())
			require.ElementsMatch(t, []string{"VP8", "Opus"}, mkvmergeCodecs(t, res[1].Path))

			// and the manifest lists both on one timeline
			m := Manifest{RecordingID: "rec1", RoomID: "!room:example.org", ConfID: "conf", Started: res[0].Start}
			for _, r := range res {
				m.Tracks = append(m.Tracks, NewManifestTrack(&m, "@alice:example.org", "DEV", "usermedia", r))
			}
			require.NoError(t, WriteManifest(cfg.Dir, m))
			data, err := os.ReadFile(filepath.Join(cfg.Dir, ManifestFileName))
			require.NoError(t, err)
			var back Manifest
			require.NoError(t, json.Unmarshal(data, &back))
			require.Len(t, back.Tracks, 2)
			require.Equal(t, "late-001.webm", back.Tracks[1].File)
			require.InDelta(t, 2.0, back.Tracks[1].Offset.Seconds(), 0.1)
			require.Equal(t, res[1].Duration, back.Tracks[1].Duration)
		})
	}
}
