//go:build integration

package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// buildRecorder builds the recorder binary into a temporary folder.
func buildRecorder(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "recorder")
	out, err := exec.Command("go", "build", "-tags", "goolm", "-o", bin, "../../cmd/recorder").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// binProc is the recorder binary running on the stack's config.
type binProc struct {
	cmd    *exec.Cmd
	exited chan error
}

// startRecorder runs the binary (its log appended to recorder.log in the
// stack's folder) and waits until it listens for transactions.
func startRecorder(t *testing.T, s *stack.Stack, bin, cfgPath string) *binProc {
	t.Helper()
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "recorder.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	cmd := exec.Command(bin, "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	p := &binProc{cmd: cmd, exited: make(chan error, 1)}
	go func() {
		p.exited <- cmd.Wait()
		_ = logFile.Close()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-p.exited
		p.exited <- err
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(s.Dir, "recorder.log"))
			t.Logf("recorder log:\n%s", data)
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get(s.Config.Appservice.Address + "/_matrix/mau/live")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}, stack.Deadline, 50*time.Millisecond, "recorder binary did not start")
	return p
}

// wait waits for the process to exit and returns its error.
func (p *binProc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		return err
	case <-time.After(within):
		t.Fatalf("recorder did not exit within %s", within)
		return nil
	}
}

// connectedSince waits until every participant has a connected call with
// the recorder user that connected after since, and returns the latest
// connect time.
func connectedSince(t *testing.T, recorder id.UserID, since time.Time, within time.Duration, peers ...*simpeer.Participant) time.Time {
	t.Helper()
	var latest time.Time
	require.Eventually(t, func() bool {
		latest = time.Time{}
		for _, p := range peers {
			ok := false
			for _, c := range p.Snapshot().Calls {
				if c.Remote.UserID == recorder && c.State == simpeer.StateConnected && !c.ConnectedAt.Before(since) {
					ok = true
					if c.ConnectedAt.After(latest) {
						latest = c.ConnectedAt
					}
				}
			}
			if !ok {
				return false
			}
		}
		return true
	}, within, 50*time.Millisecond, "participants are not connected to the recorder")
	return latest
}

// memberDevices lists the devices user's call member event has in the
// room's call.
func memberDevices(t *testing.T, s *stack.Stack, cli *mautrix.Client, roomID id.RoomID, user id.UserID) []id.DeviceID {
	t.Helper()
	var raw map[string]any
	require.NoError(t, cli.StateEvent(s.Ctx(), roomID, signaling.StateCallMember, string(user), &raw))
	var out []id.DeviceID
	data, err := json.Marshal(raw)
	require.NoError(t, err)
	mc, err := signaling.ParseMember(data)
	require.NoError(t, err)
	for _, call := range mc.Calls {
		for _, d := range call.Devices {
			if !d.Expired(time.Now()) {
				out = append(out, d.DeviceID)
			}
		}
	}
	return out
}

// binCall is a call of alice (audio) and zoe (audio and video), simulated,
// recorded by the recorder binary: the start of every process test.
type binCall struct {
	s         *stack.Stack
	ctx       context.Context
	bin       string
	cfgPath   string
	alice     *mautrix.Client
	roomID    id.RoomID
	recorder  id.UserID
	pa, pz    *simpeer.Participant
	proc      *binProc
	spool     string
	connected time.Time
}

// startBinCall builds and starts the binary, has alice start a recording
// and waits until both participants are connected to the recorder. zoe's
// simulator config goes through tweak when it is not nil.
func startBinCall(t *testing.T, tweak func(*simpeer.Config)) *binCall {
	t.Helper()
	c := &binCall{bin: buildRecorder(t), s: stack.Start(t, stack.Options{})}
	s := c.s
	c.ctx = s.Ctx()
	c.alice = s.HS.RegisterUser(c.ctx, t, "alice")
	zoe := s.HS.RegisterUser(c.ctx, t, "zoe")
	c.roomID = s.CallRoom(t, c.alice, zoe.UserID)
	c.pa = s.Sim(t, c.roomID, c.alice, stack.SimOptions{CreateCall: true})
	c.pz = s.Sim(t, c.roomID, zoe, stack.SimOptions{Video: true, Tweak: tweak})
	s.StopApp(t)
	c.cfgPath = s.WriteConfig(t)
	c.recorder = id.NewUserID(s.Config.Appservice.UserPrefix+"1", s.Config.Homeserver.Domain)
	c.spool = filepath.Join(s.Config.Recordings.Path, ".spool")
	c.proc = startRecorder(t, s, c.bin, c.cfgPath)
	s.Command(t, c.alice, c.roomID, "!rec start")
	c.connected = connectedSince(t, c.recorder, time.Time{}, stack.Deadline, c.pa, c.pz)
	return c
}

// waitSpooled waits until the spool holds some media, and then for two
// more seconds of alice's audio: the WebM writer writes in batches of up
// to 64 KiB, so the first bytes on disk can come well under a second into
// a file.
func (c *binCall) waitSpooled(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return partBytes(c.spool) > 30_000 }, stack.Deadline, 100*time.Millisecond, "no media written")
	sent := c.pa.Snapshot().SentPackets["audio"]
	require.Eventually(t, func() bool { return c.pa.Snapshot().SentPackets["audio"] >= sent+100 }, stack.Deadline,
		20*time.Millisecond, "alice stopped sending")
}

// checkStoredFiles checks that rec has n files and that each plays whole.
func checkStoredFiles(t *testing.T, s *stack.Stack, rec *storage.Recording, n int) {
	t.Helper()
	files, err := s.App.DB.File.GetAll(s.Ctx(), rec.ID)
	require.NoError(t, err)
	require.Len(t, files, n)
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		mediacheck.Check(t, path, mediacheck.Duration(t, path), 0.01)
	}
}

// TestSigtermMidCall: SIGTERM while recording a call: within the shutdown
// timeout the peers get hangups, the member event no longer lists the
// recorder's device, every file is finalized (no parts) and the process
// exits 0.
func TestSigtermMidCall(t *testing.T) {
	c := startBinCall(t, nil)
	s, ctx, alice, roomID, recorder, proc := c.s, c.ctx, c.alice, c.roomID, c.recorder, c.proc
	require.NotEmpty(t, memberDevices(t, s, alice, roomID, recorder))
	c.waitSpooled(t)

	termAt := time.Now()
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	err := proc.wait(t, config.ShutdownTimeout+2*time.Second)
	took := time.Since(termAt)
	t.Logf("exited %.2fs after SIGTERM: %v", took.Seconds(), err)
	require.NoError(t, err, "exit code")
	require.LessOrEqual(t, took, config.ShutdownTimeout)

	for _, p := range []*simpeer.Participant{c.pa, c.pz} {
		var hungUp bool
		for _, c := range p.Snapshot().Calls {
			if c.Remote.UserID == recorder && c.Ended() && c.EndedByRemote {
				hungUp = true
			}
		}
		require.True(t, hungUp, "the recorder did not hang up")
	}
	require.Empty(t, memberDevices(t, s, alice, roomID, recorder), "the member event still lists the recorder's device")
	require.Equal(t, 0, partBytes(c.spool), "parts left")

	// The next start finds a finished recording and nothing to rejoin.
	s.StartApp(t)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	checkStoredFiles(t, s, rec, 2)
	calls, err := s.App.DB.ActiveCall.GetAll(ctx)
	require.NoError(t, err)
	require.Empty(t, calls)
	_, err = s.App.Calls.Status(ctx, roomID)
	require.True(t, errors.Is(err, callbot.ErrNotJoined), "rejoined a call it left: %v", err)
}

// TestRestartAfterCallEnded: the recorder is killed, the participants
// leave while it is down; at the next start its recording is repaired and
// closed with stop reason recorder_restarted, and it does not rejoin.
func TestRestartAfterCallEnded(t *testing.T) {
	c := startBinCall(t, nil)
	s, ctx, alice, roomID, recorder, proc, spool := c.s, c.ctx, c.alice, c.roomID, c.recorder, c.proc, c.spool
	c.waitSpooled(t)
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGKILL))
	_ = proc.wait(t, stack.Deadline)
	require.NoError(t, c.pa.Leave(ctx))
	require.NoError(t, c.pz.Leave(ctx))

	s.StartApp(t)
	var rec *storage.Recording
	require.Eventually(t, func() bool {
		rec = onlyRecording(t, s, roomID)
		return rec.State != storage.StateRecording
	}, stack.Deadline, 50*time.Millisecond, "the recording is not closed")
	require.Equal(t, storage.StateRepaired, rec.State, rec.Error)
	require.Equal(t, storage.StopRecorderRestarted, rec.StopReason)
	checkStoredFiles(t, s, rec, 2)
	require.Equal(t, 0, partBytes(spool))
	_, err := s.App.Calls.Status(ctx, roomID)
	require.ErrorIs(t, err, callbot.ErrNotJoined)
	require.Empty(t, memberDevices(t, s, alice, roomID, recorder), "a stale member entry of the recorder is left")
}

// TestSecondSignalExitsAtOnce: a shutdown stuck on a homeserver that does
// not answer (hangups and the member event cannot go out) is cut short by
// a second signal: the process exits at once with 130.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	c := startBinCall(t, nil)
	s, proc := c.s, c.proc

	s.HS.Pause(t)
	defer s.HS.Resume(t)
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool {
		data, _ := os.ReadFile(filepath.Join(s.Dir, "recorder.log"))
		return strings.Contains(string(data), "Shutting down")
	}, stack.Deadline, 10*time.Millisecond, "the recorder does not shut down")
	select {
	case err := <-proc.exited:
		proc.exited <- err
		t.Fatalf("the shutdown did not wait for the homeserver: %v", err)
	default:
	}
	second := time.Now()
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	err := proc.wait(t, 2*time.Second)
	t.Logf("exited %.3fs after the second signal: %v", time.Since(second).Seconds(), err)
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 130, exitErr.ExitCode())
}

// TestSigtermWithFrozenHomeserver: the homeserver answers nothing while the
// recorder shuts down: the leave cannot tell anyone, but the shutdown still
// ends within the shutdown timeout (plus the writers' own deadline at
// most) and every file is finalized.
func TestSigtermWithFrozenHomeserver(t *testing.T) {
	c := startBinCall(t, nil)
	s, proc, spool := c.s, c.proc, c.spool
	c.waitSpooled(t)

	s.HS.Pause(t)
	termAt := time.Now()
	require.NoError(t, proc.cmd.Process.Signal(syscall.SIGTERM))
	err := proc.wait(t, 2*config.ShutdownTimeout)
	took := time.Since(termAt)
	t.Logf("exited %.2fs after SIGTERM with the homeserver frozen: %v", took.Seconds(), err)
	require.LessOrEqual(t, took, config.ShutdownTimeout+time.Second)
	require.Equal(t, 0, partBytes(spool), "parts left")
	s.HS.Resume(t)
}
