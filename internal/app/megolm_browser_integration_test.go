//go:build integration

package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
)

// waitJSMessage waits until the page shows a message from sender containing
// want (a reply to replyTo when set) and returns it.
func waitJSMessage(t *testing.T, s *stack.Stack, js *jsclient.Client, sender id.UserID, replyTo id.EventID, want string) jsclient.Message {
	t.Helper()
	var found jsclient.Message
	require.Eventually(t, func() bool {
		msgs, err := js.Messages(s.Ctx())
		if err != nil {
			return false
		}
		for _, m := range msgs {
			if m.Sender == sender && strings.Contains(m.Body, want) && (replyTo == "" || m.ReplyTo == replyTo) {
				found = m
				return true
			}
		}
		return false
	}, stack.Deadline, 100*time.Millisecond, "%s shows no message from %s containing %q", js.UserID(), sender, want)
	return found
}

// TestMegolmRoomLegacyJSClients: two matrix-js-sdk 36 pages (legacy
// Olm/Megolm crypto, libolm) in a Megolm room with Olm-encrypted call
// signalling: the bot decrypts their commands, its replies and notices are
// Megolm-encrypted and decrypted by the pages, and the call is recorded.
func TestMegolmRoomLegacyJSClients(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.HS.CreateRoom(ctx, t, alice, homeserver.RoomOptions{
		Name: "Secret call", Encrypted: true, CallPowerLevelsZero: true, Invite: []id.UserID{bot, bob.UserID},
		EventLevels: map[string]int{"org.matrix.recorder.recording": 0},
	})
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, _ := membershipOf(ctx, alice, roomID, bot)
		return m == event.MembershipJoin
	}, stack.Deadline, 50*time.Millisecond, "bot did not join")

	start := func(cli *mautrix.Client) *jsclient.Client {
		return jsclient.Start(t, jsclient.Options{HomeserverURL: s.HS.URL, UserID: cli.UserID, AccessToken: cli.AccessToken,
			DeviceID: cli.DeviceID, RoomID: roomID, SDK: jsclient.SDK36, Crypto: jsclient.CryptoLegacy, E2EGroupCall: true})
	}
	ja := start(alice) // creates the group call
	jb := start(bob)

	cmd, err := ja.SendText(ctx, "!rec start")
	require.NoError(t, err)
	for _, js := range []*jsclient.Client{ja, jb} {
		reply := waitJSMessage(t, s, js, bot, cmd, "Joining the call")
		require.True(t, reply.Encrypted, "the reply was sent in the clear")
		require.False(t, reply.DecryptionFailure)
		require.Equal(t, "m.notice", reply.MsgType)
		notice := waitJSMessage(t, s, js, bot, "", "This call is being recorded**, started by "+string(alice.UserID))
		require.True(t, notice.Encrypted)
	}
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 50) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 50)
	}, stack.Deadline, 50*time.Millisecond, "the call's audio did not reach the recorder: %+v", obs.Tracks(""))

	cmd, err = jb.SendText(ctx, "!rec stop")
	require.NoError(t, err)
	reply := waitJSMessage(t, s, ja, bot, cmd, "Left the call")
	require.True(t, reply.Encrypted)
	stopped := waitJSMessage(t, s, jb, bot, "", "Recording stopped**: stopped by "+string(bob.UserID))
	require.True(t, stopped.Encrypted)
	require.Contains(t, stopped.Body, "recorded "+string(alice.UserID)+", "+string(bob.UserID))

	rec := waitStopped(t, s, roomID, 1)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	users := map[id.UserID]bool{}
	for _, f := range files {
		require.Positive(t, f.Bytes, f.Name)
		users[f.UserID] = true
	}
	require.True(t, users[alice.UserID] && users[bob.UserID], "files of both pages: %v", users)
}
