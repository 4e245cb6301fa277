//go:build integration

package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// recorderMemberships are the event IDs of the recorder user's non-empty
// MatrixRTC memberships in the room state, by state key.
func recorderMemberships(t *testing.T, cli *mautrix.Client, roomID id.RoomID, recorder id.UserID) map[string]id.EventID {
	t.Helper()
	state, err := cli.State(context.Background(), roomID)
	require.NoError(t, err)
	out := map[string]id.EventID{}
	for key, evt := range state[matrixrtc.StateType] {
		if !strings.HasPrefix(key, "_"+string(recorder)+"_") {
			continue
		}
		var content map[string]any
		require.NoError(t, json.Unmarshal(evt.Content.VeryRaw, &content))
		if len(content) > 0 {
			out[key] = evt.ID
		}
	}
	return out
}

// killedRTCRecorder starts alice (camera) in a MatrixRTC call, has the
// recorder binary record it, and kills the binary with SIGKILL once media
// is spooled. It returns the setup, alice, the room and the recorder user.
func killedRTCRecorder(t *testing.T) (*rtcSetup, *mautrix.Client, id.RoomID, id.UserID) {
	t.Helper()
	r := startRTC(t)
	s := r.s
	ctx := s.Ctx()
	bin := buildRecorder(t)
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	r.join(t, alice, roomID, true)
	s.StopApp(t)
	proc := startRecorder(t, s, bin, s.WriteConfig(t))
	s.Command(t, alice, roomID, "!rec start")
	spool := filepath.Join(s.Config.Recordings.Path, ".spool")
	require.Eventually(t, func() bool { return partBytes(spool) > 50_000 }, stack.Deadline, 100*time.Millisecond, "no media written")
	recorder := id.NewUserID(s.Config.Appservice.UserPrefix+"rtc1", s.Config.Homeserver.Domain)
	require.Len(t, recorderMemberships(t, alice, roomID, recorder), 1)
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGKILL))
	var exitErr *exec.ExitError
	require.True(t, errors.As(proc.wait(t, stack.Deadline), &exitErr), "the recorder dies from SIGKILL")
	return r, alice, roomID, recorder
}

// TestMatrixRTCKillAndRejoin: the recorder is killed with SIGKILL while
// recording a MatrixRTC call; the next start repairs its files, rejoins
// the call as the same device (its new membership replaces the stale one:
// no ghost member) and goes on with the same recording.
func TestMatrixRTCKillAndRejoin(t *testing.T) {
	r, alice, roomID, recorder := killedRTCRecorder(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	stale := recorderMemberships(t, alice, roomID, recorder)

	restarted := time.Now()
	s.StartApp(t)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 60)
	}, 20*time.Second, 50*time.Millisecond, "the restarted recorder records alice again")
	t.Logf("recording again %.2fs after the restart", time.Since(restarted).Seconds())
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateRecording, rec.State, "the same recording goes on")
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	require.Equal(t, recorder, st.UserID)
	now := recorderMemberships(t, alice, roomID, recorder)
	require.Len(t, now, 1, "one membership of the recorder, not a ghost beside it")
	for key, evtID := range now {
		require.Contains(t, stale, key, "the same device's state key")
		require.NotEqual(t, stale[key], evtID, "a fresh membership replaced the stale one")
	}
	waitMedia(t, obs, alice.UserID, time.Second)

	require.NoError(t, s.App.RTC.Leave(ctx, roomID))
	require.Eventually(t, func() bool {
		rec = onlyRecording(t, s, roomID)
		return rec.State != storage.StateRecording
	}, stack.Deadline, 50*time.Millisecond)
	require.Equal(t, storage.StateRepaired, rec.State, rec.Error)
	require.Equal(t, string(callbot.StopAsked), rec.StopReason)
	checkStoredFiles(t, s, rec, 2) // the repaired file and the one after the rejoin
	require.Empty(t, recorderMemberships(t, alice, roomID, recorder), "the membership goes on leave")
}

// TestMatrixRTCRestartAfterCallEnded: the recorder is killed and alice
// leaves while it is down; the next start closes the recording
// (recorder_restarted) and removes the membership the killed process left.
func TestMatrixRTCRestartAfterCallEnded(t *testing.T) {
	r, alice, roomID, recorder := killedRTCRecorder(t)
	s := r.s
	ctx := s.Ctx()
	require.NoError(t, r.participant(alice).Leave(ctx))
	require.Len(t, recorderMemberships(t, alice, roomID, recorder), 1, "the killed recorder left its membership")

	s.StartApp(t)
	var rec *storage.Recording
	require.Eventually(t, func() bool {
		rec = onlyRecording(t, s, roomID)
		return rec.State != storage.StateRecording
	}, stack.Deadline, 50*time.Millisecond, "the recording is not closed")
	require.Equal(t, storage.StateRepaired, rec.State, rec.Error)
	require.Equal(t, storage.StopRecorderRestarted, rec.StopReason)
	checkStoredFiles(t, s, rec, 1)
	require.Eventually(t, func() bool { return len(recorderMemberships(t, alice, roomID, recorder)) == 0 },
		stack.Deadline, 50*time.Millisecond, "the stale membership is removed")
	_, err := s.App.RTC.Status(ctx, roomID)
	require.True(t, errors.Is(err, callbot.ErrNotJoined), "rejoined a call that ended: %v", err)
}
