//go:build integration

package app_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// TestMatrixRTCBrowsers records a MatrixRTC call of two real clients
// (matrix-js-sdk 43 MatrixRTCSession + livekit-client 2.21 in headless
// Chromium, publishing fake camera and microphone with simulcast, as
// Element Call does) and one simulated participant for about 15 s: one
// browser mutes its microphone, the other shares its screen. Every stream
// is in a file the media tools accept, as long as it was recorded, with
// audible audio, and the camera is recorded at the top simulcast layer.
func TestMatrixRTCBrowsers(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	carol := s.HS.RegisterUser(ctx, t, "carol")
	roomID := s.CallRoom(t, alice, bob.UserID, carol.UserID)
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	browsers := map[id.UserID]*jsclient.Client{}
	for _, cli := range []struct {
		user  id.UserID
		token string
		dev   id.DeviceID
	}{{alice.UserID, alice.AccessToken, alice.DeviceID}, {bob.UserID, bob.AccessToken, bob.DeviceID}} {
		browsers[cli.user] = jsclient.Start(t, jsclient.Options{HomeserverURL: s.HS.URL, UserID: cli.user, AccessToken: cli.token,
			DeviceID: cli.dev, RoomID: roomID, Video: true, MatrixRTCServiceURL: r.auth.URL})
	}
	r.join(t, carol, roomID, false)
	for user, js := range browsers {
		st, err := js.RTCState(ctx)
		require.NoError(t, err)
		data, _ := json.Marshal(st.Membership)
		t.Logf("%s: membership %s; LiveKit identity %q; publications %+v; times %v", user, data, st.LiveKit.Identity, st.Publications, st.Times)
	}

	startAt := time.Now()
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining the call")
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(carol.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "no media from the browsers")
	t.Logf("join time (!rec start → first packet): %s", obs.FirstPacket("").Sub(startAt).Round(time.Millisecond))

	waitMedia(t, obs, alice.UserID, 4*time.Second)
	require.NoError(t, browsers[alice.UserID].SetMicMuted(ctx, true))
	require.NoError(t, browsers[bob.UserID].SetScreensharing(ctx, true))
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeScreenshare, 30)
	}, stack.Deadline, 50*time.Millisecond, "no screen share from bob's browser")
	waitMedia(t, obs, alice.UserID, 3*time.Second)
	require.NoError(t, browsers[alice.UserID].SetMicMuted(ctx, false))
	require.NoError(t, browsers[bob.UserID].SetScreensharing(ctx, false))
	screenEnd := time.Now()
	// About 15 s of call in all, on the media clock.
	if rest := 16*time.Second - time.Since(startAt); rest > 0 {
		waitMedia(t, obs, alice.UserID, rest)
	}

	stopAt := time.Now()
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	for _, js := range browsers {
		require.NoError(t, js.Leave(ctx))
	}

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	// A stream is one file, or several when its resolution changed (the
	// SFU starts a simulcast camera on a low layer and switches up): then
	// the segments together last as long as the stream was recorded.
	type streamFiles struct {
		files []*storage.RecordingFile
		total float64
	}
	streams := map[string]*streamFiles{}
	seen := map[string]bool{}
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		if dir := os.Getenv("RTC_KEEP_FILES"); dir != "" {
			data, _ := os.ReadFile(path)
			_ = os.WriteFile(filepath.Join(dir, f.Name), data, 0o600)
		}
		got := mediacheck.Duration(t, path)
		t.Logf("%s %s: %s %v %.2fs, %d bytes, mutes %v", f.UserID, f.Purpose, f.Name, f.Codecs, got, f.Bytes, f.MuteIntervals)
		mediacheck.Check(t, path, got, 0.01)
		key := f.SessionID + "/" + f.Purpose
		if streams[key] == nil {
			streams[key] = &streamFiles{}
		}
		streams[key].files = append(streams[key].files, f)
		streams[key].total += got
		seen[string(f.UserID)+"/"+f.Purpose+"/"+f.Kind] = true
		if f.Purpose == string(signaling.PurposeUserMedia) {
			pcm := mediacheck.DecodeAudio(t, path)
			decoded := float64(len(pcm)) / mediacheck.AudioRate
			require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "audio of %s must be audible", f.Name)
		}
	}
	for key, sf := range streams {
		f := sf.files[0]
		kind := webrtc.RTPCodecTypeAudio
		if f.Kind == "webm" {
			kind = webrtc.RTPCodecTypeVideo
		}
		tr := trackOf(obs, f.UserID, f.SessionID, kind, signaling.Purpose(f.Purpose))
		require.NotNil(t, tr, "observed track for %s", f.Name)
		end := stopAt
		if f.Purpose == string(signaling.PurposeScreenshare) {
			end = screenEnd
		}
		want := end.Sub(streamStart(obs, f.UserID, f.SessionID, signaling.Purpose(f.Purpose))).Seconds()
		t.Logf("stream %s of %s: %d file(s), %.2fs (recorded %.2fs)", key, f.UserID, len(sf.files), sf.total, want)
		require.InDelta(t, want, sf.total, 1, "stream %s of %s", key, f.UserID)
		if f.UserID == alice.UserID && f.Purpose == string(signaling.PurposeUserMedia) {
			var muted bool
			for _, ff := range sf.files {
				muted = muted || len(ff.MuteIntervals) > 0
			}
			require.True(t, muted, "alice's microphone mute is recorded")
			last := sf.files[0]
			for _, ff := range sf.files {
				if ff.StartedAt.After(last.StartedAt) {
					last = ff
				}
			}
			out, errOut, err := mediacheck.Run(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", storedPath(s, rec, last.Name))
			require.NoError(t, err, errOut)
			t.Logf("alice's camera in %s: %s", last.Name, out)
			require.Contains(t, out, "640,360", "the top simulcast layer is recorded")
		}
	}
	for _, want := range []string{
		string(alice.UserID) + "/m.usermedia/webm", string(bob.UserID) + "/m.usermedia/webm",
		string(bob.UserID) + "/m.screenshare/webm", string(carol.UserID) + "/m.usermedia/ogg",
	} {
		require.True(t, seen[want], "missing %s in %v", want, seen)
	}
}
