//go:build integration

package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// inKindInviteTimeout shortens how long the recorder's own invites wait for
// an answer, so an invite the page cannot read is retried within the test.
const inKindInviteTimeout = 10 * time.Second

// callEventsFrom lists the m.call.* to-device events the page received from
// user in the call callID ("" for every call), and those it received from
// user Olm-encrypted whatever their call.
func callEventsFrom(st *jsclient.State, user id.UserID, callID string) (calls, encrypted []jsclient.ToDeviceEvent) {
	for _, ev := range st.ToDeviceReceived {
		if ev.Sender != user {
			continue
		}
		if ev.Encrypted {
			encrypted = append(encrypted, ev)
		}
		if strings.HasPrefix(ev.Type, "m.call.") && (callID == "" || ev.CallID == callID) {
			calls = append(calls, ev)
		}
	}
	return calls, encrypted
}

// testAnswerInKind: a device first in the call from a matrix-js-sdk 36 page
// with legacy crypto (Olm-encrypted call signalling), then, after that page
// left and closed, from a matrix-js-sdk 43 page without crypto (plaintext
// signalling) with the same user and device id. The recorder talks Olm to
// the first and plaintext to the second; the second connects and its
// camera and microphone land in a file that plays.
func testAnswerInKind(t *testing.T, localpart string, recorderCalls bool) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs, InviteTimeout: inKindInviteTimeout, Configure: func(c *config.Config) {
		c.Recording.EmptyTimeout = 5 * time.Minute // the recording outlives the gap between the pages
	}})
	ctx := s.Ctx()
	const device = id.DeviceID("SAMEDEVICE")
	user := s.HS.RegisterUserDevice(ctx, t, localpart, device)
	roomID := s.CallRoom(t, user)
	opts := jsclient.Options{HomeserverURL: s.HS.URL, UserID: user.UserID, AccessToken: user.AccessToken,
		DeviceID: device, RoomID: roomID}

	opts.Video = true // the first page creates the group call: m.video
	legacyOpts := opts
	legacyOpts.SDK, legacyOpts.Crypto, legacyOpts.E2EGroupCall = jsclient.SDK36, jsclient.CryptoLegacy, true
	legacy := jsclient.Start(t, legacyOpts)
	require.Contains(t, s.WaitReply(t, user, roomID, s.Command(t, user, roomID, "!rec start")), "Joining")
	key := s.BotKey(t, roomID)
	require.Equal(t, recorderCalls, signaling.ShouldInvite(key, signaling.DeviceKey{UserID: user.UserID, DeviceID: device}),
		"who calls: recorder %s, page %s", key.UserID, user.UserID)
	st := legacy.WaitFor(t, stack.Deadline, "js-sdk 36 call with the recorder connected", func(st *jsclient.State) bool {
		return st.Call(key.UserID, key.DeviceID).Connected()
	})
	calls, enc := callEventsFrom(st, key.UserID, "")
	require.NotEmpty(t, calls, "the js-sdk 36 page got no call events from the recorder: %+v", st.ToDeviceReceived)
	require.Len(t, enc, len(calls), "the recorder must talk Olm to a page that does: %+v", calls)
	require.Eventually(t, func() bool {
		return obs.HasMedia(user.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 50)
	}, stack.Deadline, 50*time.Millisecond, "the js-sdk 36 page's audio did not reach the recorder")
	require.NoError(t, legacy.Close(ctx))

	plain := jsclient.Start(t, opts)
	// The recorder may first try the kind the device used last; an
	// unanswered invite is retried in the other kind.
	st = plain.WaitFor(t, stack.Deadline+inKindInviteTimeout+signaling.RetryInterval, "js-sdk 43 call with the recorder connected",
		func(st *jsclient.State) bool { return st.Call(key.UserID, key.DeviceID).Connected() })
	call := st.Call(key.UserID, key.DeviceID)
	calls, enc = callEventsFrom(st, key.UserID, call.CallID)
	t.Logf("js-sdk 43 page: call %s (%s), %d call events from the recorder, %d Olm-encrypted events in all",
		call.CallID, call.Direction, len(calls), len(enc))
	require.NotEmpty(t, calls, "the connected call got no events from the recorder")
	for _, ev := range calls {
		require.False(t, ev.Encrypted, "the recorder must answer a plaintext page in plaintext: %+v", ev)
	}

	require.Eventually(t, func() bool {
		return obs.HasMedia(user.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10)
	}, stack.Deadline, 50*time.Millisecond, "the js-sdk 43 page's camera did not reach the recorder")
	waitMedia(t, obs, user.UserID, 2*time.Second)
	sentBefore := cameraFramesSent(t, plain, key.UserID, key.DeviceID)
	waitMedia(t, obs, user.UserID, 4*time.Second)
	sentAfter := cameraFramesSent(t, plain, key.UserID, key.DeviceID)

	require.Contains(t, s.WaitReply(t, user, roomID, s.Command(t, user, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	var cam *storage.RecordingFile
	for _, f := range files {
		t.Logf("file %s: session %s %s %s %v %v, %d bytes", f.Name, f.SessionID, f.Purpose, f.Kind, f.Codecs, f.Duration, f.Bytes)
		require.Equal(t, device, f.DeviceID)
		if f.SessionID == st.SessionID && f.Purpose == string(signaling.PurposeUserMedia) && f.Kind == "webm" {
			require.Nil(t, cam, "one camera file of the js-sdk 43 page expected")
			cam = f
		}
	}
	require.NotNil(t, cam, "no camera file of the js-sdk 43 page (session %s)", st.SessionID)
	path := storedPath(s, rec, cam.Name)
	dur := mediacheck.Duration(t, path)
	mediacheck.Check(t, path, dur, 0.01)
	frames := mediacheck.VideoFrames(t, path)
	sent := sentAfter - sentBefore
	t.Logf("camera: %d frames in the file (%.2f s); %d sent in the window counted", frames, dur, sent)
	require.GreaterOrEqual(t, float64(frames), 0.9*float64(sent), "the file must hold at least 90%% of the frames sent")
	pcm := mediacheck.DecodeAudio(t, path)
	decoded := float64(len(pcm)) / mediacheck.AudioRate
	require.InDelta(t, dur, decoded, 0.3, "audio must be continuous over the file")
	require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "audio must be audible")
}

// TestAnswerInKindPageCalls: the page's user sorts before the recorder's,
// so the page places the calls and the recorder answers each in its kind.
func TestAnswerInKindPageCalls(t *testing.T) { testAnswerInKind(t, "alice", false) }

// TestAnswerInKindRecorderCalls: the page's user sorts after the
// recorder's, so the recorder places the calls: Olm to the device that
// answered in Olm; the js-sdk 43 page on the same device cannot read that,
// so it must be reached in plaintext.
func TestAnswerInKindRecorderCalls(t *testing.T) { testAnswerInKind(t, "zoe", true) }
