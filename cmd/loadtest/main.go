// Command loadtest measures what recording costs. For each point it starts
// a loopback Dendrite, the recorder binary and N simulated participants
// (internal/testutil/simpeer: Opus 20 ms and VP8 padded to about 1 Mbit/s at
// 30 fps, sent in real time) in K mesh calls; the participants send only to
// the recorder, not to each other, so the machine's work is the recorder's.
// The recorder joins every call at once through its HTTP API; after a
// warm-up a steady window is measured. Then the recording is stopped and the
// same senders are received by a bare pion joiner (a receive-only simpeer,
// receive and discard) in a process of its own, measured the same way: the
// same-run baseline every recorder cost is stated against. A Markdown
// report is written (and rewritten after each point).
//
//	loadtest -n 10,50 -call-size 5 -warmup 10s -window 30s -out loadtest-report.md
//
// Run it with nice on a shared machine, and read the numbers as contended.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Exit codes.
const (
	exitUsage = 2
	exitBuild = 10
	exitRun   = 11
)

// options are the command line.
type options struct {
	sizes      []int
	callSize   int
	warmup     time.Duration
	window     time.Duration
	videoBytes int
	out        string
	recorder   string
	baseline   bool
	keep       bool
	logLevel   string
	profile    string
	readyUsers int // appservice.ready_users; -1: one per call
	rtc        bool
}

func main() {
	if spec := os.Getenv(baselineEnv); spec != "" {
		os.Exit(baselineMain(spec, os.Stdin, os.Stdout))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("n", "10", "participants per point, comma-separated (one point each)")
	fs.IntVar(&o.callSize, "call-size", 5, "participants per mesh call (K = ceil(N / call-size) calls)")
	fs.DurationVar(&o.warmup, "warmup", 10*time.Second, "time after every participant was first written before the window")
	fs.DurationVar(&o.window, "window", 30*time.Second, "steady window measured, for the recorder and for the baseline")
	fs.IntVar(&o.videoBytes, "video-bytes", 4000, "VP8 frame size (key frames 3x): 4000 is ~1 Mbit/s at 30 fps")
	fs.StringVar(&o.out, "out", "loadtest-report.md", "Markdown report to write")
	fs.StringVar(&o.recorder, "recorder", "", "recorder binary (default: built from this checkout)")
	fs.BoolVar(&o.baseline, "baseline", true, "measure the bare pion joiner after the recorder")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directories (recordings, logs)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level of the load tool")
	fs.BoolVar(&o.rtc, "matrixrtc", false, "MatrixRTC calls on a LiveKit SFU on this machine (livekit-server --dev) instead of mesh calls; the baseline is a bare server-sdk-go subscriber")
	fs.IntVar(&o.readyUsers, "ready-users", -1, "virtual users the recorder sets up at start-up (appservice.ready_users); -1: one per call, at most 64")
	fs.StringVar(&o.profile, "profile", "", "directory for the recorder's CPU profile of each window and heap profile at its end (the report shows their top); profiling costs the recorder a little CPU")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("bad -n %q", s)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.callSize < 1 || o.window <= 0 || o.warmup < 0 {
		return o, errors.New("-call-size and -window must be positive, -warmup not negative")
	}
	return o, nil
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		_, _ = fmt.Fprintln(stderr, err)
		return exitUsage
	}
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(level).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(log.WithContext(context.Background()), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		log.Err(err).Msg("Failed to create the work directory")
		return exitRun
	}
	if !o.keep {
		defer os.RemoveAll(work)
	}
	if o.recorder == "" {
		o.recorder = filepath.Join(work, "recorder")
		if err := buildRecorder(ctx, o.recorder); err != nil {
			log.Err(err).Msg("Failed to build the recorder")
			return exitBuild
		}
	}
	rep := newReport(o, strings.Join(append([]string{"loadtest"}, args...), " "))
	code := 0
	for _, n := range o.sizes {
		res, err := runCmdPoint(ctx, o, n, work)
		if err != nil {
			log.Err(err).Int("n", n).Msg("Point failed")
			rep.failed(n, err)
			code = exitRun
		} else {
			rep.add(res)
		}
		if err := rep.write(o.out); err != nil {
			log.Err(err).Str("path", o.out).Msg("Failed to write the report")
			return exitRun
		}
		if ctx.Err() != nil {
			break
		}
	}
	log.Info().Str("path", o.out).Msg("Report written")
	if o.keep {
		log.Info().Str("dir", work).Msg("Work directory kept")
	}
	return code
}

// buildRecorder builds cmd/recorder of the module around the working
// directory.
func buildRecorder(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "goolm", "-o", out, "./cmd/recorder")
	cmd.Dir = moduleRoot()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/recorder: %w", err)
	}
	return nil
}

// moduleRoot is the closest directory above the working directory with a
// go.mod ("." if there is none: the build then says why).
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "."
		}
		dir = parent
	}
}

// runCmdPoint runs one point with the command's testing.TB stand-in.
func runCmdPoint(ctx context.Context, o options, n int, work string) (res pointResult, err error) {
	tb := newCmdTB(ctx, work)
	defer func() {
		if r := recover(); r != nil {
			if r != errFailNow { //nolint:errorlint // a sentinel panic value
				panic(r)
			}
		}
		tb.runCleanups()
		if tb.Failed() {
			err = tb.err()
		}
	}()
	return runPoint(ctx, tb, o, n), nil
}
