package recording

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ebmlGoroutines counts goroutines running ebml-go code.
func ebmlGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/at-wat/ebml-go") {
			n++
		}
	}

	return n
}

// TestNoGoroutineLeak runs sequentially (parallel tests are paused
// meanwhile) and checks that finished and failed WebM writers leave no
// ebml-go goroutine behind (ebml-go runs three per open file).
func TestNoGoroutineLeak(t *testing.T) {
	require.Zero(t, ebmlGoroutines())
	defer func() {
		// goroutines that were released may need a moment to retire
		require.Eventually(t, func() bool { return ebmlGoroutines() == 0 }, 2*time.Second, time.Millisecond,
			"ebml-go goroutines leaked")
	}()
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
		w, err := NewStreamWriter(testCtx(t), cfg)
		require.NoError(t, err)
		ferr := feed(w, pkts)
		_, cerr := w.Close(testCtx(t))
		if limit > 0 {
			require.ErrorIs(t, ferr, ErrWriterFailed)
			require.ErrorIs(t, cerr, ErrWriterFailed)
		} else {
			require.NoError(t, ferr)
			require.NoError(t, cerr)
		}
	}
}
