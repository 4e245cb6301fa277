package recording

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/stretchr/testify/require"
)

// fullDisk is a File that fails with ENOSPC once limit bytes were written.
type fullDisk struct {
	*os.File
	mu      sync.Mutex
	limit   int64
	written int64
}

func (f *fullDisk) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.written+int64(len(p)) > f.limit {
		n := int(f.limit - f.written)
		n, _ = f.File.Write(p[:n])
		f.written += int64(n)

		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	n, err := f.File.Write(p)
	f.written += int64(n)

	return n, err //nolint:wrapcheck // test fake
}

func (f *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.written >= f.limit {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}

	return f.File.WriteAt(p, off) //nolint:wrapcheck // test fake
}

// TestWriteErrorIsolated: a writer whose disk fills up returns an error
// wrapping ErrWriterFailed and ENOSPC from WriteRTP and Close, without a
// panic or a hang, while a second writer running in parallel finishes a
// valid file. The failed writer's .part can be repaired afterwards.
func TestWriteErrorIsolated(t *testing.T) {
	t.Parallel()
	audio := loadOpus(t)
	video := loadIVF(t, "vp8-320x240.ivf")
	cases := []struct {
		name  string
		video bool
		limit int64
	}{
		{name: "webm", video: true, limit: webmCuesReserve + 6_000},
		{name: "ogg", video: false, limit: 3000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var bad, good *StreamWriter
			newWriter := func(name string, create CreateFunc) *StreamWriter {
				cfg := StreamConfig{Dir: dir, BaseName: name, Create: create, Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1}}
				if tc.video {
					cfg.Video = &TrackParams{MimeType: MimeTypeVP8, SSRC: 2}
				}
				w, err := NewStreamWriter(testutil.Ctx(t), cfg)
				require.NoError(t, err)

				return w
			}
			bad = newWriter("bad", func(path string) (File, error) {
				f, err := CreateFile(path)
				if err != nil {
					return nil, err
				}

				return &fullDisk{File: f.(*os.File), limit: tc.limit}, nil //nolint:forcetypeassert // CreateFile returns *os.File
			})
			good = newWriter("good", nil)
			lists := [][]tpkt{packetizeAudio(audio, srcOpts{ssrc: 1}, t0)}
			if tc.video {
				lists = append(lists, packetizeVideo(video, srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30}, t0))
			}
			pkts := merge(lists...)

			var wg sync.WaitGroup
			var badErr, badCloseErr, goodErr, goodCloseErr error
			var goodRes []FileResult
			wg.Add(2)
			go func() {
				defer wg.Done()
				for _, p := range pkts {
					if err := bad.WriteRTP(p.kind, p.pkt, p.arrival); err != nil {
						badErr = err

						break
					}
				}
				_, badCloseErr = bad.Close(testutil.Ctx(t))
			}()
			go func() {
				defer wg.Done()
				goodErr = feed(good, pkts)
				goodRes, goodCloseErr = good.Close(testutil.Ctx(t))
			}()
			wg.Wait()

			require.ErrorIs(t, badErr, ErrWriterFailed, "WriteRTP reports the failure")
			require.ErrorIs(t, badErr, syscall.ENOSPC)
			require.ErrorIs(t, badCloseErr, ErrWriterFailed)
			// later calls keep failing fast
			require.ErrorIs(t, bad.WriteRTP(pkts[0].kind, pkts[0].pkt, pkts[0].arrival), ErrWriterFailed)

			require.NoError(t, goodErr)
			require.NoError(t, goodCloseErr)
			require.Len(t, goodRes, 1)
			checkFile(t, goodRes[0].Path, goodRes[0].Duration.Seconds())

			// The failed writer left its .part; Repair salvages what reached the disk.
			parts, err := filepath.Glob(filepath.Join(dir, "bad-*.part"))
			require.NoError(t, err)
			require.Len(t, parts, 1)
			res, err := Repair(testutil.Ctx(t), dir)
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.Positive(t, res[0].Duration)
			checkFile(t, res[0].Path, res[0].Duration.Seconds())
		})
	}
}
