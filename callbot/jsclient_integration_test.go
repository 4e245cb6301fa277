//go:build integration

package callbot_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

const deadline = stack.Deadline

// TestRealClient: matrix-js-sdk 43 in headless Chromium and the bot in one
// call; the bot receives its audio and video.
func TestRealClient(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)

	js := jsclient.Start(t, jsclient.Options{HomeserverURL: s.HS.URL, UserID: alice.UserID, AccessToken: alice.AccessToken,
		DeviceID: alice.DeviceID, RoomID: roomID, Video: true})

	start := time.Now()
	reply := s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start"))
	require.Contains(t, reply, "Joining the call")
	recorder := s.App.AS.Users.UserID("1")

	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 20) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 20)
	}, deadline, 50*time.Millisecond, "bot did not receive the client's audio and video: %+v", obs.Tracks(""))
	t.Logf("!rec start to first RTP from the js-sdk client: %v", obs.FirstPacket(alice.UserID).Sub(start))

	st := js.WaitFor(t, deadline, "call with the recorder connected", func(st *jsclient.State) bool {
		for _, p := range st.Participants {
			if p.UserID == recorder {
				if call := st.Call(recorder, p.DeviceID); call != nil && call.Connected() {
					return true
				}
			}
		}
		return false
	})
	require.NotEmpty(t, st.Participants)

	t.Run("mute and unmute are reported with their times", func(t *testing.T) {
		before := time.Now()
		require.NoError(t, js.SetMicMuted(ctx, true))
		require.Eventually(t, func() bool { return hasChange(obs, alice.UserID, true) }, deadline, 50*time.Millisecond, "mute not reported")
		mid := time.Now()
		require.NoError(t, js.SetMicMuted(ctx, false))
		require.Eventually(t, func() bool { return hasChange(obs, alice.UserID, false) }, deadline, 50*time.Millisecond, "unmute not reported")
		changes := obs.Changes(alice.UserID)
		var muteAt, unmuteAt time.Time
		for _, c := range changes {
			if c.AudioMuted && muteAt.IsZero() {
				muteAt = c.At
			}
			if !c.AudioMuted && !muteAt.IsZero() {
				unmuteAt = c.At
			}
		}
		require.False(t, muteAt.Before(before), "mute time %v before the mute (%v)", muteAt, before)
		require.True(t, unmuteAt.After(muteAt))
		require.False(t, unmuteAt.Before(mid))
	})

	t.Run("screen share arrives by renegotiation with its purpose", func(t *testing.T) {
		require.NoError(t, js.SetScreensharing(ctx, true))
		require.Eventually(t, func() bool {
			return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeScreenshare, 10)
		}, deadline, 50*time.Millisecond, "no screen share track: %+v", obs.Tracks(alice.UserID))
		require.NoError(t, js.SetScreensharing(ctx, false))
	})

	status := s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec status"))
	require.Contains(t, status, "connected")
	require.Contains(t, status, string(alice.UserID))

	reply = s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop"))
	require.Contains(t, reply, "Left the call")
	js.WaitFor(t, deadline, "recorder gone from the call", func(st *jsclient.State) bool {
		for _, p := range st.Participants {
			if p.UserID == recorder {
				return false
			}
		}
		return true
	})
	require.Len(t, obs.Ended(), 1)
	recs, err := s.App.DB.Recording.List(ctx, storageFilterAll())
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "finished", string(recs[0].State))
	files, err := s.App.DB.File.GetAll(ctx, recs[0].ID)
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var kinds []string
	for _, f := range files {
		kinds = append(kinds, f.Kind+":"+strings.Join(f.Codecs, "+"))
	}
	t.Logf("recorded files: %v", kinds)
}

func storageFilterAll() storage.ListFilter { return storage.ListFilter{} }

// hasChange reports whether a stream change with that audio mute state was
// reported after a mute was seen (for false) or at all (for true).
func hasChange(obs *observer.Observer, user id.UserID, muted bool) bool {
	sawMute := false
	for _, c := range obs.Changes(user) {
		if c.AudioMuted {
			sawMute = true
			if muted {
				return true
			}
		} else if sawMute && !muted {
			return true
		}
	}
	return false
}
