package recording

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/stretchr/testify/require"
)

const (
	crashDirEnv = "RECORDER_TEST_CRASH_DIR"
	crashSecs   = 3 // seconds of media written before the kill
)

// crashChild is TestCrashRepair in its re-executed child process: it records
// a WebM (VP8+Opus) and an Ogg stream for crashSecs seconds of media, prints
// READY and blocks until it is killed (or its stdin closes).
func crashChild(t *testing.T, dir string) {
	audio := loadOpus(t)
	video := loadIVF(t, "vp8-320x240.ivf")
	nA, nV := crashSecs*50, crashSecs*30
	ctx := testutil.Ctx(t)
	av, err := NewStreamWriter(ctx, StreamConfig{
		Dir: dir, BaseName: "crash-av",
		Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 1},
		Video: &TrackParams{MimeType: MimeTypeVP8, SSRC: 2},
	})
	require.NoError(t, err)
	ao, err := NewStreamWriter(ctx, StreamConfig{Dir: dir, BaseName: "crash-a", Audio: &TrackParams{MimeType: MimeTypeOpus, SSRC: 3}})
	require.NoError(t, err)
	require.NoError(t, feed(av, merge(packetizeAudio(audio[:nA], srcOpts{ssrc: 1}, t0),
		packetizeVideo(video[:nV], srcOpts{ssrc: 2, codec: MimeTypeVP8, fps: 30}, t0))))
	require.NoError(t, feed(ao, packetizeAudio(audio[:nA], srcOpts{ssrc: 3}, t0)))
	_, _ = fmt.Fprintln(os.Stdout, "READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // killed here
	t.Fatal("child was not killed")
}

// TestCrashRepair SIGKILLs a process in the middle of recording, then
// repairs the orphaned .part files: both must play to (almost) the last
// second written, pass the tool checks, and Repair must report them.
func TestCrashRepair(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashRepair$", "-test.count=1") //nolint:gosec // our own test binary
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	ready := false
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.TrimSpace(sc.Text()) == "READY" {
			ready = true

			break
		}
	}
	require.True(t, ready, "child did not get ready: %s\n%s", strings.Join(lines, "\n"), stderr.String())
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	err = cmd.Wait()
	require.Error(t, err, "child must die from the signal")

	parts, err := filepath.Glob(filepath.Join(dir, "*.part"))
	require.NoError(t, err)
	require.Len(t, parts, 2, "both writers leave a .part")
	// Unrepaired, the WebM has no usable Duration (ebml-go's placeholder).
	for _, p := range parts {
		if strings.HasSuffix(p, ".webm.part") {
			out, _, _ := run(t, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", "-f", "webm", p)
			t.Logf("killed %s: ffprobe duration %q", filepath.Base(p), strings.TrimSpace(out))
			require.Contains(t, []string{"0.000000", "N/A", ""}, strings.TrimSpace(out), "a killed WebM has no real duration yet")
		}
	}

	res, err := Repair(testutil.Ctx(t), dir)
	require.NoError(t, err)
	require.Len(t, res, 2)
	for _, r := range res {
		require.False(t, r.Removed)
		require.FileExists(t, r.Path)
		require.NoFileExists(t, r.Part)
		require.NotContains(t, r.Path, ".part")
		t.Logf("repaired %s: %v, %d bytes", filepath.Base(r.Path), r.Duration, r.Bytes)
		// plays to its last written second: at most the jitter/interleave
		// queue and one unflushed Ogg page (200 ms) are lost
		require.InDelta(t, crashSecs-0.25, r.Duration.Seconds(), 0.3, "%s", r.Path)
		checkFile(t, r.Path, r.Duration.Seconds())
		if r.Kind == FileKindWebM {
			require.ElementsMatch(t, []string{"VP8", "Opus"}, mkvmergeCodecs(t, r.Path))
		}
	}
	left, err := filepath.Glob(filepath.Join(dir, "*.part"))
	require.NoError(t, err)
	require.Empty(t, left)

	// Repair is idempotent: nothing left to do.
	res, err = Repair(testutil.Ctx(t), dir)
	require.NoError(t, err)
	require.Empty(t, res)
}

// TestRepairEmptyAndGarbage: a part with only headers is removed, one that
// is not media at all is reported and kept.
func TestRepairEmptyAndGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// An Ogg with only the two header pages.
	f, err := os.Create(filepath.Join(dir, "empty-000.ogg.part"))
	require.NoError(t, err)
	_, err = newOggOpusWriter(f, 1, 2, "test")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "junk-000.webm.part"), []byte("not a webm"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.txt.part"), []byte("ignored"), 0o600))

	res, err := Repair(testutil.Ctx(t), dir)
	require.ErrorIs(t, err, ErrNotRepairable)
	require.Len(t, res, 1)
	require.True(t, res[0].Removed)
	require.NoFileExists(t, filepath.Join(dir, "empty-000.ogg.part"))
	require.FileExists(t, filepath.Join(dir, "junk-000.webm.part"))
	require.FileExists(t, filepath.Join(dir, "other.txt.part"))
}
