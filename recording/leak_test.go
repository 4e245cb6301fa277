package recording

import (
	"os"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/pion/transport/v5/test"

	"github.com/stretchr/testify/require"
)

// TestNoGoroutineLeak runs sequentially (parallel tests are paused
// meanwhile) and checks that finished and failed WebM writers leave no
// goroutine behind (ebml-go runs three per open file).
func TestNoGoroutineLeak(t *testing.T) {
	defer test.CheckRoutines(t)()
	defer test.TimeOut(time.Minute).Stop()
	audio := loadOpus(t)
	video := loadIVF(t, "vp8-320x240.ivf")
	pkts := merge(packetizeAudio(audio[:100], srcOpts{ssrc: 1}, t0),
		packetizeVideo(video[:60], srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30}, t0))
	for _, limit := range []int64{0, webmCuesReserve + 2000} {
		dir := t.TempDir()
		cfg := StreamConfig{
			Dir: dir, BaseName: "leak",
			Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1}, Video: &TrackParams{MimeType: MimeTypeVP8, SSRC: 2},
		}
		if limit > 0 {
			cfg.Create = func(path string) (File, error) {
				f, err := CreateFile(path)
				if err != nil {
					return nil, err
				}

				return &fullDisk{File: f.(*os.File), limit: limit}, nil //nolint:forcetypeassert // *os.File
			}
		}
		w, err := NewStreamWriter(testutil.Ctx(t), cfg)
		require.NoError(t, err)
		ferr := feed(w, pkts)
		_, cerr := w.Close(testutil.Ctx(t))
		if limit > 0 {
			require.ErrorIs(t, ferr, ErrWriterFailed)
			require.ErrorIs(t, cerr, ErrWriterFailed)
		} else {
			require.NoError(t, ferr)
			require.NoError(t, cerr)
		}
	}
}
