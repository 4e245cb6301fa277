//go:build integration

package app_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// chaosKills is how often the chaos test kills the recorder.
const chaosKills = 5

// TestChaosKills: a call is recorded while the recorder binary is killed
// with SIGKILL at random moments (seed logged; CHAOS_SEED repeats a run).
// After each start it rejoins within 10 s; at the end there is one
// recording, every file plays, every row has its file and every stored file
// its row, no part is left, and each participant's files cover the call
// except the restart gaps.
func TestChaosKills(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err)
	}
	t.Logf("chaos seed %d (CHAOS_SEED=%d repeats it)", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, seed))

	// zoe's camera can switch to 160x120 and back on request
	// (ReplayRamp): a new segment at each switch.
	c := startBinCall(t, func(c *simpeer.Config) { c.Browser.RampUp = true })
	s, ctx, alice, roomID, recorder, pa, pz, proc := c.s, c.ctx, c.alice, c.roomID, c.recorder, c.pa, c.pz, c.proc
	connectedAt := c.connected
	// recorded is the span the files should cover: from each (re)connect
	// to the next kill.
	var recorded time.Duration
	var rejoins []time.Duration
	for i := range chaosKills {
		// At least 2 s: a stream's first file opens once the sender
		// reports are in (up to recording.DefaultSyncWait, 1.5 s); media
		// held before that is in memory only.
		wait := time.Duration(2000+rnd.IntN(2500)) * time.Millisecond
		// Wait on the media clock: alice sends 50 Opus packets a second.
		sent := pa.Snapshot().SentPackets["audio"]
		require.Eventually(t, func() bool {
			return pa.Snapshot().SentPackets["audio"] >= sent+uint64(wait/(20*time.Millisecond))
		}, stack.Deadline, 10*time.Millisecond, "alice stopped sending")
		if i == 0 {
			// The first kill comes right after a resolution change: zoe
			// switches to 160x120, and the kill follows as soon as the
			// segment before the switch is stored.
			stored := zoeSegments(s)
			pz.ReplayRamp()
			require.Eventually(t, func() bool { return zoeSegments(s) > stored }, stack.Deadline, 5*time.Millisecond,
				"zoe's segment is not stored at the resolution change")
			t.Logf("kill 1 comes right after zoe's resolution change: her first segment is in the store")
		}
		killedAt := time.Now()
		require.NoError(t, proc.cmd.Process.Signal(syscall.SIGKILL))
		_ = proc.wait(t, stack.Deadline)
		recorded += killedAt.Sub(connectedAt)
		t.Logf("kill %d after %.2fs of recording", i+1, killedAt.Sub(connectedAt).Seconds())

		started := time.Now()
		proc = startRecorder(t, s, c.bin, c.cfgPath)
		connectedAt = connectedSince(t, recorder, started, 10*time.Second, pa, pz)
		rejoins = append(rejoins, connectedAt.Sub(started))
		t.Logf("restart %d: rejoined %.2fs after the start (%.2fs after the kill)", i+1,
			connectedAt.Sub(started).Seconds(), connectedAt.Sub(killedAt).Seconds())
	}
	sent := pa.Snapshot().SentPackets["audio"]
	require.Eventually(t, func() bool { return pa.Snapshot().SentPackets["audio"] >= sent+100 }, stack.Deadline,
		10*time.Millisecond, "alice stopped sending")
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, proc.wait(t, 15*time.Second))
	recorded += time.Since(connectedAt)

	s.StartApp(t)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateRepaired, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	byUser := map[id.UserID][]*storage.RecordingFile{}
	names := map[string]bool{recording.ManifestFileName: true}
	for _, f := range files {
		byUser[f.UserID] = append(byUser[f.UserID], f)
		names[f.Name] = true
		path := storedPath(s, rec, f.Name)
		got := mediacheck.Duration(t, path)
		mediacheck.Check(t, path, got, 0.01)
	}
	entries, err := os.ReadDir(filepath.Join(s.Config.Recordings.Path, rec.Folder))
	require.NoError(t, err)
	for _, e := range entries {
		require.True(t, names[e.Name()], "stored file %s has no row", e.Name())
	}
	require.Equal(t, 0, partBytes(filepath.Join(s.Config.Recordings.Path, ".spool")), "parts left")
	for _, user := range []id.UserID{alice.UserID, pz.UserID()} {
		fs := byUser[user]
		sort.Slice(fs, func(i, j int) bool { return fs[i].StartedAt.Before(fs[j].StartedAt) })
		var covered time.Duration
		for _, f := range fs {
			covered += f.Duration
		}
		for _, f := range fs {
			t.Logf("%s: %s %s at +%.2fs, %.2fs", user, f.Name, f.State, f.StartedAt.Sub(rec.StartedAt).Seconds(), f.Duration.Seconds())
		}
		t.Logf("%s: %d files, %.2fs of %.2fs recorded", user, len(fs), covered.Seconds(), recorded.Seconds())
		// One file per run of the recorder. zoe's first run has the
		// segment before the resolution change, and one after it if the
		// kill came late enough for media to reach it (an empty one is
		// removed).
		if user == alice.UserID {
			require.Len(t, fs, chaosKills+1, "one file per run of the recorder")
		} else {
			require.GreaterOrEqual(t, len(fs), chaosKills+1, "a file per run of the recorder")
		}
		// Each kill loses what was buffered (up to about a second) and
		// each start the first moments before media flows again.
		require.InDelta(t, recorded.Seconds(), covered.Seconds(), 1.5*float64(chaosKills+1), "%s's files do not cover the call", user)
	}
	var longest time.Duration
	for _, r := range rejoins {
		longest = max(longest, r)
	}
	t.Logf("%d kills, rejoin after start: longest %.2fs; %d files checked", chaosKills, longest.Seconds(), len(files))
}

// zoeSegments counts zoe's stored WebM files.
func zoeSegments(s *stack.Stack) int {
	m, _ := filepath.Glob(filepath.Join(s.Config.Recordings.Path, "*", "zoe_*.webm"))
	return len(m)
}
