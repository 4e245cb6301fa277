//go:build integration

package app_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
)

// TestDiskFullStopsRecording: with the recordings at their disk limit the
// recorder does not record a call: it says so in the room and leaves.
func TestDiskFullStopsRecording(t *testing.T) {
	var recordings string
	s := stack.Start(t, stack.Options{Configure: func(c *config.Config) {
		c.Recordings.MaxDiskUsageMB = 1
		recordings = c.Recordings.Path
		require.NoError(t, os.MkdirAll(recordings, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(recordings, "old-recording.bin"), make([]byte, 1<<20), 0o600))
	}})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	s.WaitNotice(t, alice, roomID, "no disk space left")
	require.Eventually(t, func() bool { return len(s.App.Calls.Calls(ctx)) == 0 }, stack.Deadline, 50*time.Millisecond, "the recorder left")
}
