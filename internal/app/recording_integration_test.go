//go:build integration

package app_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/pgtest"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/rooms"
	"github.com/matrix-recorder/recorder/storage"
)

// storedPath is where the local file store keeps a recording's file.
func storedPath(s *stack.Stack, rec *storage.Recording, name string) string {
	return filepath.Join(s.Config.Recordings.Path, rec.Folder, name)
}

func waitConnected(t *testing.T, s *stack.Stack, roomID id.RoomID, peers ...*simpeer.Participant) {
	t.Helper()
	key := s.BotKey(t, roomID)
	require.Eventually(t, func() bool {
		for _, p := range peers {
			if _, ok := stack.ConnectedTo(p, key); !ok {
				return false
			}
		}
		return true
	}, stack.Deadline, 50*time.Millisecond, "participants did not connect to the recorder")
}

// waitMedia waits until d more of user's camera media has reached the bot,
// measured on the media clock (RTP time).
func waitMedia(t *testing.T, obs *observer.Observer, user id.UserID, d time.Duration) {
	t.Helper()
	target := obs.Span(user, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia) + d
	require.Eventually(t, func() bool {
		return obs.Span(user, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia) >= target
	}, stack.Deadline, 20*time.Millisecond, "%s's media stopped arriving", user)
}

// waitAudio waits until d more of user's microphone media has reached the
// bot, on the media clock.
func waitAudio(t *testing.T, obs *observer.Observer, user id.UserID, d time.Duration) {
	t.Helper()
	target := obs.Span(user, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia) + d
	require.Eventually(t, func() bool {
		return obs.Span(user, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia) >= target
	}, stack.Deadline, 20*time.Millisecond, "%s's audio stopped arriving", user)
}

func onlyRecording(t *testing.T, s *stack.Stack, roomID id.RoomID) *storage.Recording {
	t.Helper()
	recs, err := s.App.DB.Recording.List(s.Ctx(), storage.ListFilter{RoomID: roomID})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	return recs[0]
}

// TestRecordThreeParticipants: an audio-only participant, one that mutes
// for a few seconds and one that adds a screen share are recorded; every
// file passes the media checks and lasts as long as the participant was
// recorded.
func TestRecordThreeParticipants(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	zoe := s.HS.RegisterUser(ctx, t, "zoe")
	roomID := s.CallRoom(t, alice, bob.UserID, zoe.UserID)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true, Encrypt: true}) // audio only
	pb := s.Sim(t, roomID, bob, stack.SimOptions{Video: true})
	pz := s.Sim(t, roomID, zoe, stack.SimOptions{Video: true, Encrypt: true})

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pa, pb, pz)
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10) &&
			obs.HasMedia(zoe.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 10)
	}, stack.Deadline, 50*time.Millisecond)

	// bob mutes his microphone for 3 s; zoe shares her screen meanwhile.
	muteStart := time.Now()
	require.NoError(t, pb.SetMuted(ctx, true, false))
	require.NoError(t, pz.ShareScreen(ctx, true))
	require.Eventually(t, func() bool {
		return obs.HasMedia(zoe.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeScreenshare, 30)
	}, stack.Deadline, 50*time.Millisecond, "no screen share")
	// The mute lasts while 3 s of zoe's camera media arrive: that gap is
	// what the recording has to keep.
	waitMedia(t, obs, zoe.UserID, 3*time.Second)
	require.NoError(t, pb.SetMuted(ctx, false, false))
	mutedFor := time.Since(muteStart)
	require.NoError(t, pz.ShareScreen(ctx, false))
	waitMedia(t, obs, zoe.UserID, time.Second) // one more second of media after the unmute
	stopAt := time.Now()
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	listed := s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec list"))
	require.Contains(t, listed, string(rec.ID))
	require.Contains(t, listed, fmt.Sprintf("finished, %d file(s)", len(files)))
	byUser := map[id.UserID][]*storage.RecordingFile{}
	for _, f := range files {
		byUser[f.UserID] = append(byUser[f.UserID], f)
		path := storedPath(s, rec, f.Name)
		// Expected length: from the participant's first packet to the stop
		// (user media) or the time the writer saw (screen share).
		want := stopAt.Sub(obs.FirstPacket(f.UserID)).Seconds()
		if f.Purpose == string(signaling.PurposeScreenshare) {
			want = f.Duration.Seconds()
		}
		t.Logf("%s: %s %v %.2fs (want %.2fs), %d bytes", f.UserID, f.Name, f.Codecs, mediacheck.Duration(t, path), want, f.Bytes)
		mediacheck.Check(t, path, want, 0.5)
	}
	require.Len(t, byUser[alice.UserID], 1)
	require.Equal(t, "ogg", byUser[alice.UserID][0].Kind, "audio-only participant is recorded to Ogg Opus")
	require.Len(t, byUser[bob.UserID], 1)
	require.Equal(t, "webm", byUser[bob.UserID][0].Kind)
	require.NotEmpty(t, byUser[bob.UserID][0].MuteIntervals, "bob's mute is recorded")
	mute := byUser[bob.UserID][0].MuteIntervals[0]
	require.InDelta(t, mutedFor.Seconds(), mute.End.Sub(mute.Start).Seconds(), 0.5, "mute interval length")
	purposes := map[string]bool{}
	for _, f := range byUser[zoe.UserID] {
		purposes[f.Purpose] = true
	}
	require.True(t, purposes[string(signaling.PurposeUserMedia)] && purposes[string(signaling.PurposeScreenshare)],
		"zoe's camera and screen share are separate files: %v", purposes)

	// The manifest beside the files says the same.
	data, err := os.ReadFile(storedPath(s, rec, recording.ManifestFileName))
	require.NoError(t, err)
	var manifest recording.Manifest
	require.NoError(t, json.Unmarshal(data, &manifest))
	require.Equal(t, string(rec.ID), manifest.RecordingID)
	require.Len(t, manifest.Tracks, len(files))
	for _, tr := range manifest.Tracks {
		_, err := os.Stat(storedPath(s, rec, tr.File))
		require.NoError(t, err, "manifest lists a missing file %s", tr.File)
	}
}

// TestWriteErrorFailsOnlyThatRecording: a disk-full error in one call's
// files marks that recording failed; a second call records normally.
func TestWriteErrorFailsOnlyThatRecording(t *testing.T) {
	create := func(path string) (recording.File, error) {
		f, err := recording.CreateFile(path)
		if err != nil || !strings.Contains(filepath.Base(path), "doomed") {
			return f, err
		}
		return &fullDisk{File: f}, nil
	}
	obs := observer.New()
	s := stack.Start(t, stack.Options{Create: create, Observer: obs})
	ctx := s.Ctx()
	doomed := s.HS.RegisterUser(ctx, t, "doomed")
	fine := s.HS.RegisterUser(ctx, t, "fine")
	roomA := s.CallRoom(t, doomed)
	roomB := s.CallRoom(t, fine)
	pd := s.Sim(t, roomA, doomed, stack.SimOptions{CreateCall: true, Video: true})
	pf := s.Sim(t, roomB, fine, stack.SimOptions{CreateCall: true, Video: true})
	s.WaitReply(t, doomed, roomA, s.Command(t, doomed, roomA, "!rec start"))
	s.WaitReply(t, fine, roomB, s.Command(t, fine, roomB, "!rec start"))
	waitConnected(t, s, roomA, pd)
	waitConnected(t, s, roomB, pf)
	require.Eventually(t, func() bool {
		return obs.HasMedia(fine.UserID, webrtc.RTPCodecTypeVideo, "", 60) && obs.HasMedia(doomed.UserID, webrtc.RTPCodecTypeVideo, "", 60)
	}, stack.Deadline, 50*time.Millisecond)
	s.WaitReply(t, doomed, roomA, s.Command(t, doomed, roomA, "!rec stop"))
	s.WaitReply(t, fine, roomB, s.Command(t, fine, roomB, "!rec stop"))
	require.Eventually(t, func() bool {
		a, b := onlyRecording(t, s, roomA), onlyRecording(t, s, roomB)
		return a.State != storage.StateRecording && b.State != storage.StateRecording
	}, stack.Deadline, 50*time.Millisecond)
	a, b := onlyRecording(t, s, roomA), onlyRecording(t, s, roomB)
	require.Equal(t, storage.StateFailed, a.State)
	require.Contains(t, a.Error, "no space left")
	require.Equal(t, storage.StateFinished, b.State, b.Error)
	files, err := s.App.DB.File.GetAll(ctx, b.ID)
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		mediacheck.Check(t, storedPath(s, b, f.Name), mediacheck.Duration(t, storedPath(s, b, f.Name)), 0.01)
	}
}

// fullDisk fails every write after the first few kilobytes, like a full disk.
type fullDisk struct {
	recording.File
	written int
}

func (fd *fullDisk) Write(p []byte) (int, error) {
	if fd.written > 4096 {
		return 0, &os.PathError{Op: "write", Path: "doomed", Err: syscall.ENOSPC}
	}
	fd.written += len(p)
	return fd.File.Write(p)
}

func (fd *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if fd.written > 4096 {
		return 0, &os.PathError{Op: "write", Path: "doomed", Err: syscall.ENOSPC}
	}
	return fd.File.WriteAt(p, off)
}

// TestKillDuringRecording: the recorder binary is killed with SIGKILL while
// recording; the next start repairs every file, rejoins the call that is
// still going on within 10 s and continues the same recording with new
// files; every file plays, the repaired ones to about where they stopped.
func TestKillDuringRecording(t *testing.T) {
	// The recorder binary records; started is when the participants
	// connected to it.
	c := startBinCall(t, nil)
	s, ctx, alice, roomID, recorder, pa, pz := c.s, c.ctx, c.alice, c.roomID, c.recorder, c.pa, c.pz
	started, spool := c.connected, c.spool

	// Let it write a few seconds, then kill it mid-file.
	c.waitSpooled(t)
	// About 3 s of media before the kill: alice sends 50 Opus packets a second.
	sent := pa.Snapshot().SentPackets["audio"]
	require.Eventually(t, func() bool { return pa.Snapshot().SentPackets["audio"] >= sent+150 }, stack.Deadline,
		20*time.Millisecond, "alice stopped sending")
	killedAt := time.Now()
	require.NoError(t, c.proc.cmd.Process.Signal(syscall.SIGKILL))
	err := c.proc.wait(t, stack.Deadline)
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "recorder should die from SIGKILL: %v", err)
	require.Positive(t, partBytes(spool), "parts must be left behind by the kill")

	// The next start repairs what the killed process left and rejoins.
	restarted := time.Now()
	s.StartApp(t)
	var rejoinedAt time.Time
	require.Eventually(t, func() bool {
		for _, p := range []*simpeer.Participant{pa, pz} {
			c, ok := p.Snapshot().Current(signaling.DeviceKey{UserID: recorder, DeviceID: s.BotKey(t, roomID).DeviceID})
			if !ok || c.State != simpeer.StateConnected || c.ConnectedAt.Before(restarted) {
				return false
			}
			if c.ConnectedAt.After(rejoinedAt) {
				rejoinedAt = c.ConnectedAt
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "participants are not connected to the restarted recorder within 10 s")
	t.Logf("rejoined %.2fs after the restart", rejoinedAt.Sub(restarted).Seconds())
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateRecording, rec.State, "the same recording goes on")
	sent = pa.Snapshot().SentPackets["audio"]
	require.Eventually(t, func() bool { return pa.Snapshot().SentPackets["audio"] >= sent+100 }, stack.Deadline,
		20*time.Millisecond, "alice stopped sending")
	require.NoError(t, s.App.Calls.Leave(ctx, roomID))
	require.Eventually(t, func() bool {
		rec = onlyRecording(t, s, roomID)
		return rec.State != storage.StateRecording
	}, stack.Deadline, 50*time.Millisecond)
	require.Equal(t, storage.StateRepaired, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 4, "per participant: the repaired file and the one after the rejoin")
	repaired := 0
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		got := mediacheck.Duration(t, path)
		mediacheck.Check(t, path, got, 0.01)
		t.Logf("%s: %s %s, %.2fs", f.UserID, f.Name, f.State, got)
		if f.State == storage.StateRepaired {
			repaired++
			written := killedAt.Sub(started).Seconds()
			// Clusters and pages still in the writer's buffers at the kill are lost.
			require.InDelta(t, written, got, 1.5, "repaired file does not play to where it stopped")
		}
	}
	require.Equal(t, 2, repaired)
	require.Equal(t, 0, partBytes(spool), "parts left")
	_, err = os.Stat(storedPath(s, rec, recording.ManifestFileName))
	require.NoError(t, err)
	// The recording went on after the restart and ended when it was left.
	require.Equal(t, string(callbot.StopAsked), rec.StopReason)

	// The room no longer shows the recording as running.
	s.WaitNotice(t, alice, roomID, "Recording stopped")
	require.Eventually(t, func() bool {
		var marker map[string]any
		return alice.StateEvent(ctx, roomID, rooms.StateRecording, string(recorder), &marker) == nil && len(marker) == 0
	}, stack.Deadline, 50*time.Millisecond, "the recording state event is still up")
	require.Eventually(t, func() bool {
		var m event.MemberEventContent
		return alice.StateEvent(ctx, roomID, event.StateMember, string(recorder), &m) == nil && !strings.HasSuffix(m.Displayname, rooms.RecSuffix)
	}, stack.Deadline, 50*time.Millisecond, "the recorder's display name still says it records")
}

func partBytes(dir string) int {
	total := 0
	_ = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(path, ".part") {
			total += int(info.Size())
		}
		return nil
	})
	return total
}

// TestAPIRecordsCall: the operator API starts and stops a recording, lists
// it and serves a file with a Range request.
func TestAPIRecordsCall(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{API: true, Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true, Video: true})

	api := func(method, path, body string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, s.APIURL()+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+stack.APIToken)
		if strings.HasPrefix(path, "/api/v1/recordings/") && strings.Contains(path, "/files/") {
			req.Header.Set("Range", "bytes=0-99")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, data
	}

	resp, body := api(http.MethodPost, "/api/v1/calls", fmt.Sprintf(`{"room_id":%q}`, roomID))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	var started struct {
		RecordingID string `json:"recording_id"`
	}
	require.NoError(t, json.Unmarshal(body, &started))
	require.NotEmpty(t, started.RecordingID)
	resp, body = api(http.MethodPost, "/api/v1/calls", fmt.Sprintf(`{"room_id":%q}`, roomID))
	require.Equal(t, http.StatusConflict, resp.StatusCode, string(body))
	// The room is told it is being recorded, though nobody there asked.
	s.WaitNotice(t, alice, roomID, "This call is being recorded** (started by the recorder's operator)")

	waitConnected(t, s, roomID, pa)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, "", 60)
	}, stack.Deadline, 50*time.Millisecond)
	resp, body = api(http.MethodGet, "/api/v1/calls", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), string(roomID))

	resp, body = api(http.MethodDelete, "/api/v1/calls/"+url.PathEscape(string(roomID)), "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode, string(body))
	s.WaitNotice(t, alice, roomID, "Recording stopped**: stopped on request")

	var list struct {
		Recordings []struct {
			ID     string `json:"id"`
			State  string `json:"state"`
			Tracks []struct {
				File string `json:"file"`
				Kind string `json:"kind"`
			} `json:"tracks"`
		} `json:"recordings"`
	}
	require.Eventually(t, func() bool {
		resp, body := api(http.MethodGet, "/api/v1/recordings?room_id="+url.QueryEscape(string(roomID)), "")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.NoError(t, json.Unmarshal(body, &list))
		return len(list.Recordings) == 1 && list.Recordings[0].State == "finished"
	}, stack.Deadline, 100*time.Millisecond, "recording not listed as finished")
	require.Equal(t, started.RecordingID, list.Recordings[0].ID)
	require.NotEmpty(t, list.Recordings[0].Tracks)
	file := list.Recordings[0].Tracks[0].File
	resp, body = api(http.MethodGet, "/api/v1/recordings/"+started.RecordingID+"/files/"+url.PathEscape(file), "")
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Len(t, body, 100)
	require.Equal(t, "video/webm", resp.Header.Get("Content-Type"))
	require.Equal(t, []byte{0x1a, 0x45, 0xdf, 0xa3}, body[:4], "a WebM starts with the EBML magic")
}

// TestPostgresBackend: the whole recorder on PostgreSQL, including the
// mautrix state and crypto stores, records an encrypted call.
func TestPostgresBackend(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs, DatabaseType: "postgres", DatabaseURI: pgtest.Start(t)})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true, Encrypt: true, Video: true})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pa)
	require.Positive(t, pa.Snapshot().Received.Encrypted, "signalling to alice was Olm-encrypted")
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, "", 60)
	}, stack.Deadline, 50*time.Millisecond)
	s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop"))
	require.Eventually(t, func() bool { return onlyRecording(t, s, roomID).State == storage.StateFinished },
		stack.Deadline, 50*time.Millisecond)
	files, err := s.App.DB.File.GetAll(ctx, onlyRecording(t, s, roomID).ID)
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.Equal(t, "webm", files[0].Kind)
}
