//go:build integration

package app_test

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// cameraFramesSent is what the browser reports as sent on its camera track
// to the device (RTCOutboundRtpStreamStats.framesSent). js-sdk sends each
// peer a clone of the camera track, so it is the call's first video stream.
func cameraFramesSent(t *testing.T, js *jsclient.Client, user id.UserID, device id.DeviceID) int64 {
	t.Helper()
	st, err := js.State(t.Context())
	require.NoError(t, err)
	call := st.Call(user, device)
	require.NotNil(t, call)
	for _, out := range call.OutboundStreams {
		if out.Kind == "video" {
			t.Logf("camera to %s: %+v", device, out)
			return out.FramesSent
		}
	}
	require.Fail(t, "no outbound video", "%+v", call)
	return 0
}

// TestRealBrowserRecording: a matrix-js-sdk 43 client in headless Chromium
// (fake camera and microphone, a device id with punctuation) is recorded;
// the camera file holds the frames the browser sent, the audio is
// continuous and audible, and the mute span is silent.
func TestRealBrowserRecording(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	// Clients may choose any device id; random js-sdk/Dendrite ones contain '-' and '_'.
	const device = id.DeviceID("AL-ICE_x.y~1")
	alice := s.HS.RegisterUserDevice(ctx, t, "alice", device)
	roomID := s.CallRoom(t, alice)
	js := jsclient.Start(t, jsclient.Options{HomeserverURL: s.HS.URL, UserID: alice.UserID, AccessToken: alice.AccessToken,
		DeviceID: alice.DeviceID, RoomID: roomID, Video: true})

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	key := s.BotKey(t, roomID)
	js.WaitFor(t, stack.Deadline, "call with the recorder connected", func(st *jsclient.State) bool {
		return st.Call(key.UserID, key.DeviceID).Connected()
	})
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10)
	}, stack.Deadline, 50*time.Millisecond)

	// Let the first key frame reach the file, then count what is sent from here.
	waitMedia(t, obs, alice.UserID, 2*time.Second)
	sentBefore := cameraFramesSent(t, js, key.UserID, key.DeviceID)
	waitMedia(t, obs, alice.UserID, 3*time.Second)
	require.NoError(t, js.SetMicMuted(ctx, true))
	waitMedia(t, obs, alice.UserID, 3*time.Second)
	require.NoError(t, js.SetMicMuted(ctx, false))
	waitMedia(t, obs, alice.UserID, 3*time.Second)
	sentAfter := cameraFramesSent(t, js, key.UserID, key.DeviceID)

	// A screen share stopped and started again: two streams, two files.
	for i := 1; i <= 2; i++ {
		require.NoError(t, js.SetScreensharing(ctx, true))
		require.Eventually(t, func() bool { return screenTracks(obs, alice.UserID) >= i }, stack.Deadline, 50*time.Millisecond,
			"screen share %d not received", i)
		waitMedia(t, obs, alice.UserID, time.Second)
		require.NoError(t, js.SetScreensharing(ctx, false))
	}

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	var cam *storage.RecordingFile
	shares := 0
	for _, f := range files {
		if f.Purpose == string(signaling.PurposeScreenshare) {
			shares++
			mediacheck.Check(t, storedPath(s, rec, f.Name), mediacheck.Duration(t, storedPath(s, rec, f.Name)), 0.01)
		}
		t.Logf("file %s: %s %v %v, %d bytes, mutes %v", f.Name, f.Kind, f.Codecs, f.Duration, f.Bytes, f.MuteIntervals)
		require.Equal(t, device, f.DeviceID)
		if f.Purpose == string(signaling.PurposeUserMedia) && f.Kind == "webm" {
			require.Nil(t, cam, "one camera file expected")
			cam = f
		}
	}
	require.NotNil(t, cam, "no camera file for %s", device)
	require.Equal(t, 2, shares, "both screen shares are kept")
	path := storedPath(s, rec, cam.Name)
	dur := mediacheck.Duration(t, path)
	mediacheck.Check(t, path, dur, 0.01)

	frames := mediacheck.VideoFrames(t, path)
	sent := sentAfter - sentBefore
	t.Logf("camera: %d frames in the file (%.2f s); the browser sent %d in all, %d in the window counted",
		frames, dur, sentAfter, sent)
	require.GreaterOrEqual(t, float64(frames), 0.9*float64(sent),
		"the file must hold at least 90%% of the frames sent after the first key frame")

	pcm := mediacheck.DecodeAudio(t, path)
	decoded := float64(len(pcm)) / mediacheck.AudioRate
	t.Logf("audio: %.2f s decoded of a %.2f s file, peak %d", decoded, dur, mediacheck.Peak(pcm, 0, decoded))
	require.InDelta(t, dur, decoded, 0.3, "audio must be continuous over the file")
	require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "audio must be audible")
	require.Len(t, cam.MuteIntervals, 1, "the mute is recorded")
	m := cam.MuteIntervals[0]
	from, to := m.Start.Sub(cam.StartedAt).Seconds(), m.End.Sub(cam.StartedAt).Seconds()
	peak := mediacheck.Peak(pcm, from+0.3, to-0.3)
	t.Logf("mute %.2f-%.2f s: peak %d", from, to, peak)
	require.Less(t, peak, 100, "the mute span must be silent")
}

// screenTracks counts the screen-share video tracks received from user
// that carried media.
func screenTracks(obs *observer.Observer, user id.UserID) int {
	n := 0
	for _, tr := range obs.Tracks(user) {
		if tr.Info.Purpose == signaling.PurposeScreenshare && tr.Info.Kind == webrtc.RTPCodecTypeVideo && tr.Packets >= 10 {
			n++
		}
	}
	return n
}

// TestRecordBrowserLikeParticipant: a simulated participant that behaves
// like a browser where it matters (padding probes, key frames only on
// request, a resolution change during ramp-up, 2 % loss and reordering on
// the wire with NACK) is recorded without losing its camera: the files hold
// at least 90 % of the frames sent after the first key frame, with no storm
// of key frame requests.
func TestRecordBrowserLikeParticipant(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	bob := s.HS.RegisterUserDevice(ctx, t, "bob", "b0b_Dev-1.~")
	roomID := s.CallRoom(t, bob)
	browser := simpeer.Browser{Probes: true, KeyframesOnRequest: true, RampUp: true, Loss: 0.02, Reorder: 0.02, Seed: time.Now().UnixNano()}
	t.Logf("network seed %d", browser.Seed)
	pb := s.Sim(t, roomID, bob, stack.SimOptions{Video: true, CreateCall: true, Tweak: func(c *simpeer.Config) { c.Browser = browser }})

	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pb)
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10)
	}, stack.Deadline, 50*time.Millisecond)
	// Count the frames sent once the recording has its first key frame.
	waitMedia(t, obs, bob.UserID, 2*time.Second)
	before := pb.Snapshot()
	waitMedia(t, obs, bob.UserID, 6*time.Second)
	snap := pb.Snapshot()
	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	frames, sizes := 0, map[[2]int]bool{}
	var span time.Duration
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		n := mediacheck.VideoFrames(t, path)
		t.Logf("file %s: %dx%d %v, %d frames", f.Name, f.Width, f.Height, f.Duration, n)
		mediacheck.Check(t, path, mediacheck.Duration(t, path), 0.01)
		frames += n
		span += f.Duration
		sizes[[2]int{f.Width, f.Height}] = true
	}
	require.True(t, sizes[[2]int{320, 240}], "the full resolution is recorded")
	sent := snap.FramesSent["video"] - before.FramesSent["video"]
	plis := snap.KeyframeRequests["video"]
	t.Logf("camera: %d frames sent in all, %d in the window counted, %d written in %v; %d padding packets; %d key frame requests",
		snap.FramesSent["video"], sent, frames, span, snap.PaddingPackets["video"], plis)
	require.NotZero(t, snap.PaddingPackets["video"])
	require.GreaterOrEqual(t, float64(frames), 0.9*float64(sent), "frames written")
	require.LessOrEqual(t, plis, uint64(span/time.Second)+3, "no storm of key frame requests")
}
