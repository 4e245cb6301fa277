package mixdown

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// ErrFFmpeg wraps a failed ffmpeg run.
var ErrFFmpeg = errors.New("ffmpeg failed")

// Nice is the niceness mixdowns run at: they must not starve live recording.
const Nice = 10

// Run executes the plan with ffmpeg (niced), writing audioOut and, if the
// plan has video, videoOut. progress gets 0..1 as ffmpeg reports it.
func Run(ctx context.Context, p Plan, dir, audioOut, videoOut string, progress func(float64)) error {
	args, err := Args(p, dir, audioOut, videoOut)
	if err != nil {
		return err
	}
	bin, err := exec.LookPath("ffmpeg")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFFmpeg, err)
	}
	if nice, err := exec.LookPath("nice"); err == nil {
		args = append([]string{"-n", strconv.Itoa(Nice), bin}, args...)
		bin = nice
	}
	cmd := exec.CommandContext(ctx, bin, args...) //nolint:gosec // fixed binary, arguments built here
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 8 << 10}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFFmpeg, err)
	}
	zerolog.Ctx(ctx).Debug().Strs("args", args).Msg("Running ffmpeg for a mixdown")
	if err = cmd.Start(); err != nil {
		return fmt.Errorf("%w: %w", ErrFFmpeg, err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "out_time_us=")
		if !ok || progress == nil || p.Duration <= 0 {
			continue
		}
		if us, err := strconv.ParseInt(v, 10, 64); err == nil {
			progress(min(1, max(0, float64(us)/float64(p.Duration.Microseconds()))))
		}
	}
	if err = cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrFFmpeg, ctx.Err())
		}
		return fmt.Errorf("%w: %w: %s", ErrFFmpeg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// limitedWriter keeps the first n bytes (ffmpeg's first error is the useful one).
type limitedWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int
}

func (lw *limitedWriter) Write(b []byte) (int, error) {
	if lw.n > 0 {
		k := min(len(b), lw.n)
		_, _ = lw.w.Write(b[:k])
		lw.n -= k
	}
	return len(b), nil
}
