//go:build integration

package app_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// videoGap is the longest stretch without a video frame in a file.
func videoGap(t *testing.T, path string) float64 {
	t.Helper()
	out, errOut, err := mediacheck.Run(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
		"-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	var ts []float64
	for _, line := range strings.Fields(out) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(line, ","), 64)
		if err == nil {
			ts = append(ts, v)
		}
	}
	sort.Float64s(ts)
	gap := 0.0
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i]-ts[i-1])
	}
	return gap
}

// TestMatrixRTCE2EEBrowsers records an end-to-end encrypted MatrixRTC call
// of real clients as Element Call holds it in an encrypted room
// (matrix-js-sdk 43 MatrixRTCSession with its to-device key transport over
// Olm, livekit-client 2.21 frame encryption, in headless Chromium): alice
// and bob, then carol joining late; bob leaves, so the others rotate
// their keys. The recorder gets every key from the pages, decrypts every
// frame, and writes files that decode cleanly with audible audio and
// video without a gap across the rotation.
func TestMatrixRTCE2EEBrowsers(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	carol := s.HS.RegisterUser(ctx, t, "carol")
	bot := s.App.AS.BotUserID()
	roomID := s.HS.CreateRoom(ctx, t, alice, homeserver.RoomOptions{Name: "E2EE call", Encrypted: true,
		CallPowerLevelsZero: true, Invite: []id.UserID{bot, bob.UserID, carol.UserID}})
	for _, cli := range []*mautrix.Client{bob, carol} {
		_, err := cli.JoinRoomByID(ctx, roomID)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return s.App.AS.IsInRoom(ctx, roomID, bot) }, stack.Deadline, 50*time.Millisecond)
	page := func(cli *mautrix.Client) *jsclient.Client {
		return jsclient.Start(t, jsclient.Options{HomeserverURL: s.HS.URL, UserID: cli.UserID, AccessToken: cli.AccessToken,
			DeviceID: cli.DeviceID, RoomID: roomID, Video: true, MatrixRTCServiceURL: r.auth.URL, E2EE: true})
	}
	ja, jb := page(alice), page(bob)
	ja.WaitDecoding(t, stack.Deadline, jb.Identity(), 30, 48000)
	jb.WaitDecoding(t, stack.Deadline, ja.Identity(), 30, 48000)

	startAt := time.Now()
	status, body := r.api(t, http.MethodPost, "/api/v1/calls", fmt.Sprintf(`{"room_id":%q}`, roomID))
	require.Equal(t, http.StatusAccepted, status, string(body))
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	recorder := jsclient.Identity(st.UserID, st.DeviceID)
	for _, p := range []*jsclient.Client{ja, jb} {
		p.WaitKeySentTo(t, stack.Deadline, recorder)
	}
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "no decrypted media from the browsers")
	t.Logf("join time (API start → first packet written): %s", obs.FirstPacket("").Sub(startAt).Round(time.Millisecond))
	st, err = s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	for _, p := range st.Peers {
		require.True(t, p.Encrypted, "%s's media is end-to-end encrypted", p.UserID)
		require.Positive(t, p.KeysHeld, "the recorder holds %s's key", p.UserID)
	}

	// carol joins late.
	jc := page(carol)
	require.Eventually(t, func() bool {
		return obs.HasMedia(carol.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "the late joiner is recorded")
	waitMedia(t, obs, alice.UserID, 2*time.Second)

	// bob leaves: alice and carol rotate their keys, the recorder gets the
	// new ones and alice's file goes on, every frame decrypted.
	failedBefore := promtest.ToFloat64(s.App.Metrics.FramesUndecryptable)
	before := ja.WaitOwnKeySettled(t, stack.Deadline)
	require.NoError(t, jb.Leave(ctx))
	rotated := ja.WaitOwnKeyRotation(t, stack.Deadline, before)
	t.Logf("alice rotated her key from index %d to %d", before, rotated)
	waitMedia(t, obs, alice.UserID, 3*time.Second)

	stopAt := time.Now()
	status, body = r.api(t, http.MethodDelete, "/api/v1/calls/"+url.PathEscape(string(roomID)), "")
	require.Equal(t, http.StatusNoContent, status, string(body))
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	for _, p := range []*jsclient.Client{ja, jc} {
		require.NoError(t, p.Leave(ctx))
	}

	// The only frames that do not decrypt are a participant's first ones
	// after the recorder joined: encrypted with the key it had before the
	// join's rotation, which js-sdk sends to no newcomer.
	written := promtest.ToFloat64(s.App.Metrics.FramesWritten)
	failed := promtest.ToFloat64(s.App.Metrics.FramesUndecryptable)
	t.Logf("frames: %.0f written (decrypted), %.0f undecryptable (%.0f after the start): %.2f %% of received frames decrypted",
		written, failed, failed-failedBefore, 100*written/(written+failed))
	require.Zero(t, failed-failedBefore, "every frame decrypts across the late join and the leave's rotation")
	require.Less(t, failed, written/20, "few frames from before the recorder's key")

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	// A stream is one file, or several when its resolution changed (the
	// SFU starts a simulcast camera on a low layer and switches up).
	total, frames := map[id.UserID]float64{}, map[id.UserID]int{}
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		got := mediacheck.Duration(t, path)
		mediacheck.Check(t, path, got, 0.01) // decodes cleanly: decrypted frames, not ciphertext
		pcm := mediacheck.DecodeAudio(t, path)
		decoded := float64(len(pcm)) / mediacheck.AudioRate
		n := mediacheck.VideoFrames(t, path)
		gap := videoGap(t, path)
		t.Logf("%s: %s %.2fs, %d video frames, %.2fs audio, longest video gap %.2fs", f.UserID, f.Name, got, n, decoded, gap)
		require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "audio of %s is audible", f.Name)
		require.Less(t, gap, 1.5, "no gap in the video of %s (across bob's leave and the key rotation)", f.Name)
		total[f.UserID] += got
		frames[f.UserID] += n
	}
	for u, d := range total {
		require.Greater(t, float64(frames[u]), d*10, "video of %s has its frames", u)
	}
	aliceSession := ""
	for _, f := range files {
		if f.UserID == alice.UserID {
			aliceSession = f.SessionID
		}
	}
	want := stopAt.Sub(streamStart(obs, alice.UserID, aliceSession, signaling.PurposeUserMedia)).Seconds()
	require.InDelta(t, want, total[alice.UserID], 1.5, "alice's files last as long as she was recorded")

	for _, u := range []id.UserID{alice.UserID, bob.UserID, carol.UserID} {
		require.Positive(t, frames[u], "a file of %s, with video", u)
	}
}
