//go:build integration

package app_test

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// TestHomeserverOutage: Dendrite is stopped for 20 s mid-call and started
// again. Media keeps flowing peer to peer and is recorded without a gap
// (one file per participant, as long as the call); afterwards the bot is
// still in the member event, answers commands, and its device's sync works
// again: a participant who arrives after the outage is called and recorded.
func TestHomeserverOutage(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	zoe := s.HS.RegisterUser(ctx, t, "zoe")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.CallRoom(t, alice, zoe.UserID, bob.UserID)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	pz := s.Sim(t, roomID, zoe, stack.SimOptions{Video: true})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pa, pz)
	waitMedia(t, obs, zoe.UserID, time.Second)
	bot := s.BotKey(t, roomID)

	s.HS.Stop(t)
	down := time.Now()
	// 20 s of zoe's camera on the media clock while the homeserver is down.
	waitMedia(t, obs, zoe.UserID, 20*time.Second)
	s.HS.Start(t)
	up := time.Now()
	t.Logf("homeserver down for %.1fs", up.Sub(down).Seconds())
	for _, p := range []*simpeer.Participant{pa, pz} {
		_, ok := stack.ConnectedTo(p, bot)
		require.True(t, ok, "a peer call broke during the outage")
	}

	// The appservice side works again.
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec status")), string(bot.UserID))
	require.Contains(t, memberDevices(t, s, alice, roomID, bot.UserID), bot.DeviceID, "the bot left the member event")
	// So does its device's to-device path: bob arrives and is recorded.
	pb := s.Sim(t, roomID, bob, stack.SimOptions{Video: true})
	waitConnected(t, s, roomID, pb)
	t.Logf("a command answered and a new participant connected %.1fs after the homeserver came back", time.Since(up).Seconds())
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "bob's media does not arrive after the outage")

	stopAt := time.Now()
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	rec := onlyRecording(t, s, roomID)
	require.Eventually(t, func() bool { rec = onlyRecording(t, s, roomID); return rec.State != storage.StateRecording },
		stack.Deadline, 50*time.Millisecond)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 3, "one file per participant: no break in the recording")
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		want := stopAt.Sub(obs.FirstPacket(f.UserID)).Seconds()
		t.Logf("%s: %s %.2fs (want %.2fs)", f.UserID, f.Name, mediacheck.Duration(t, path), want)
		mediacheck.Check(t, path, want, 0.5)
	}
}
