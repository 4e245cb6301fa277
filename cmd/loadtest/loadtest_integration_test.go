//go:build integration

package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
)

// TestMain lets the test binary be the baseline joiner's process too, as
// the command is (runBaseline re-executes it with baselineEnv set).
func TestMain(m *testing.M) {
	if spec := os.Getenv(baselineEnv); spec != "" {
		os.Exit(baselineMain(spec, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// TestLoadSmoke runs the load tool once per kind of call, small and short:
// it must run to the end, record every participant (mesh calls, then
// MatrixRTC calls on a LiveKit SFU), measure the baseline and write its
// report. It asserts no timing: numbers belong in BENCHMARKS.md.
func TestLoadSmoke(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "recorder")
	require.NoError(t, buildRecorder(testutil.Ctx(t), bin))
	for _, rtc := range []bool{false, true} {
		name := map[bool]string{false: "mesh", true: "matrixrtc"}[rtc]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := testutil.Ctx(t)
			o := options{
				sizes: []int{4}, callSize: 2, warmup: 2 * time.Second, window: 5 * time.Second,
				videoBytes: 4000, recorder: bin, baseline: true, out: filepath.Join(dir, "report.md"),
				readyUsers: -1, // as the command does: the calls are recorded by users set up at start-up
				rtc:        rtc,
			}
			res := runPoint(ctx, t, o, 4)
			require.Equal(t, 4, res.Recorded, "every participant has a stored file")
			require.Zero(t, res.NotStarted)
			require.Len(t, res.JoinToMedia, 4, "every participant's first media is found through the API")
			require.True(t, res.Baseline)
			require.NotZero(t, res.BaseReceived, "the baseline received the participants")
			rep := newReport(o, "smoke")
			rep.add(res)
			require.NoError(t, rep.write(o.out))
			data, err := os.ReadFile(o.out)
			require.NoError(t, err)
			require.Contains(t, string(data), "| 4 / 2 |")
		})
	}
}
