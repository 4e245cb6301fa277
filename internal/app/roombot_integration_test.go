//go:build integration

package app_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/rooms"
	"github.com/matrix-recorder/recorder/storage"
)

// recorderName is the recorder user's display name in the room.
func recorderName(t *testing.T, s *stack.Stack, cli *mautrix.Client, roomID id.RoomID, user id.UserID) string {
	t.Helper()
	var m event.MemberEventContent
	require.NoError(t, cli.StateEvent(s.Ctx(), roomID, event.StateMember, string(user), &m))
	return m.Displayname
}

// marker is the recording state event's content ({} when not recording).
func marker(s *stack.Stack, cli *mautrix.Client, roomID id.RoomID, user id.UserID) (map[string]any, bool) {
	var content map[string]any
	if err := cli.StateEvent(s.Ctx(), roomID, rooms.StateRecording, string(user), &content); err != nil {
		return nil, false
	}
	return content, true
}

// waitStopped waits for the room's only recording to have ended and returns it.
func waitStopped(t *testing.T, s *stack.Stack, roomID id.RoomID, n int) *storage.Recording {
	t.Helper()
	var rec *storage.Recording
	require.Eventually(t, func() bool {
		recs, err := s.App.DB.Recording.List(s.Ctx(), storage.ListFilter{RoomID: roomID})
		if err != nil || len(recs) != n || recs[0].EndedAt.IsZero() {
			return false
		}
		rec = recs[0]
		return true
	}, stack.Deadline, 50*time.Millisecond, "recording %d did not stop", n)
	return rec
}

// TestRecordingVisibility: start → a notice saying who started it, the
// recorder's display name "… ● REC" and the org.matrix.recorder.recording
// state event; status shows it; stop → a notice with duration, participants
// and files, the display name and the state event restored, the reason stored.
func TestRecordingVisibility(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.CallRoom(t, alice, bob.UserID)
	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	s.Sim(t, roomID, bob, stack.SimOptions{Encrypt: true})

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	s.WaitNotice(t, alice, roomID, "This call is being recorded**, started by @alice:localhost")
	st, err := s.App.Calls.Status(ctx, roomID)
	require.NoError(t, err)
	rec := st.UserID
	require.Eventually(t, func() bool {
		return strings.HasSuffix(recorderName(t, s, alice, roomID, rec), rooms.RecSuffix)
	}, stack.Deadline, 50*time.Millisecond, "display name does not say REC")
	require.Eventually(t, func() bool {
		m, ok := marker(s, alice, roomID, rec)
		return ok && m["recording_id"] == st.ID && m["started_by"] == string(alice.UserID) && m["started_at"] != nil
	}, stack.Deadline, 50*time.Millisecond, "no recording state event")
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 20) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 20)
	}, stack.Deadline, 50*time.Millisecond)
	status := s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec status"))
	require.Contains(t, status, "Recording** the mesh call since")
	require.Contains(t, status, "started by @alice:localhost")
	require.Contains(t, status, "received so far")

	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec stop")), "Left the call")
	s.WaitNotice(t, alice, roomID, "Recording stopped**: stopped by @bob:localhost. It lasted")
	s.WaitNotice(t, alice, roomID, "recorded @alice:localhost, @bob:localhost, 2 file(s)")
	require.Eventually(t, func() bool {
		m, ok := marker(s, alice, roomID, rec)
		return ok && len(m) == 0 && !strings.HasSuffix(recorderName(t, s, alice, roomID, rec), rooms.RecSuffix)
	}, stack.Deadline, 50*time.Millisecond, "state event or display name not restored")
	stopped := waitStopped(t, s, roomID, 1)
	require.Equal(t, string(callbot.StopAsked), stopped.StopReason)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec status")), "Not recording. The last recording")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec list 1")), "stopped on request")
}

// TestAutoRecord: with auto on, a call that starts is recorded without a
// command; the setting survives a restart, and the live call is recorded
// again by the new process without a command.
func TestAutoRecord(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec auto on")), "every call that starts")

	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	s.BotKey(t, roomID)
	s.WaitNotice(t, alice, roomID, "This call is being recorded** (started automatically: auto-record is on")

	s.RestartApp(t)
	require.Eventually(t, func() bool {
		recs, err := s.App.DB.Recording.List(ctx, storage.ListFilter{RoomID: roomID})
		return err == nil && len(recs) == 2 && recs[0].EndedAt.IsZero() && recs[1].StopReason == string(callbot.StopShutdown)
	}, stack.Deadline, 50*time.Millisecond, "no new recording after the restart")
	s.BotKey(t, roomID)

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec auto off")), "Auto-record is off")
	room, err := s.App.DB.Room.Get(ctx, roomID)
	require.NoError(t, err)
	require.False(t, room.AutoRecord)
}

// TestStopConditions: each stop condition stops the recording with its
// reason stored and told: the recorder alone, no media, the maximum
// duration (with a notice), the call terminated.
func TestStopConditions(t *testing.T) {
	s := stack.Start(t, stack.Options{StopCheckInterval: 200 * time.Millisecond, Configure: func(c *config.Config) {
		c.Recording.EmptyTimeout, c.Recording.NoMediaTimeout, c.Recording.MaxDuration = 2*time.Second, 3*time.Second, 0
	}})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})

	t.Run("empty", func(t *testing.T) {
		require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
		waitConnected(t, s, roomID, pa)
		require.NoError(t, pa.Leave(ctx))
		rec := waitStopped(t, s, roomID, 1)
		require.Equal(t, string(callbot.StopEmpty), rec.StopReason)
		s.WaitNotice(t, alice, roomID, "everyone else left the call (2s alone)")
	})

	t.Run("no media", func(t *testing.T) {
		require.NoError(t, pa.Join(ctx))
		require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
		waitConnected(t, s, roomID, pa)
		require.NoError(t, pa.SetMuted(ctx, true, true))
		rec := waitStopped(t, s, roomID, 2)
		require.Equal(t, string(callbot.StopNoMedia), rec.StopReason)
		s.WaitNotice(t, alice, roomID, "no audio or video arrived for 3s")
		require.NoError(t, pa.SetMuted(ctx, false, false))
	})

	// Restarts with another config happen here, not in a subtest: the app
	// started by a subtest is stopped when it ends.
	s.Config.Recording.MaxDuration = 2 * time.Second
	s.RestartApp(t)
	t.Run("max duration", func(t *testing.T) {
		require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
		rec := waitStopped(t, s, roomID, 3)
		require.Equal(t, string(callbot.StopMaxDuration), rec.StopReason)
		s.WaitNotice(t, alice, roomID, "reached its maximum length of 2s")
		s.WaitNotice(t, alice, roomID, "the maximum recording length of 2s was reached")
	})

	s.Config.Recording.MaxDuration = 0
	s.RestartApp(t)
	t.Run("call terminated", func(t *testing.T) {
		require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
		s.BotKey(t, roomID)
		status, err := s.App.Calls.Status(ctx, roomID)
		require.NoError(t, err)
		var content map[string]any
		require.NoError(t, alice.StateEvent(ctx, roomID, signaling.StateGroupCall, string(status.ConfID), &content))
		content["m.terminated"] = "call_ended"
		_, err = alice.SendStateEvent(ctx, roomID, signaling.StateGroupCall, string(status.ConfID), content)
		require.NoError(t, err)
		rec := waitStopped(t, s, roomID, 4)
		require.Equal(t, string(callbot.StopCallEnded), rec.StopReason)
		s.WaitNotice(t, alice, roomID, "the call ended")
	})
}

// TestRequireConsent: with recording.require_consent, a participant who has
// not consented is named in the start notice and not written (the manifest
// lists them as excluded); after `!rec consent` their files start.
func TestRequireConsent(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs, Configure: func(c *config.Config) { c.Recording.RequireConsent = true }})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.CallRoom(t, alice, bob.UserID)
	pa := s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	pb := s.Sim(t, roomID, bob, stack.SimOptions{})

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec consent")), "recorded from now on")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	s.WaitNotice(t, alice, roomID, "Not recorded: @bob:localhost.")
	waitConnected(t, s, roomID, pa, pb)
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 100)
	}, stack.Deadline, 50*time.Millisecond, "bob sends no media")
	consentAt := time.Now()
	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec consent")), "recorded from now on")
	require.Eventually(t, func() bool {
		st, _, ok := s.App.Rooms.RoomStatus(ctx, roomID)
		return ok && st.Bytes > 0 && time.Since(consentAt) > 2*time.Second
	}, stack.Deadline, 50*time.Millisecond)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	rec := waitStopped(t, s, roomID, 1)

	data, err := os.ReadFile(storedPath(s, rec, recording.ManifestFileName))
	require.NoError(t, err)
	var m recording.Manifest
	require.NoError(t, json.Unmarshal(data, &m))
	require.Len(t, m.Excluded, 1)
	require.Equal(t, string(bob.UserID), m.Excluded[0].UserID)
	require.False(t, m.Excluded[0].Until.IsZero(), "bob's consent ends his exclusion")
	var aliceOffset, bobOffset time.Duration = -1, -1
	for _, tr := range m.Tracks {
		switch tr.UserID {
		case string(alice.UserID):
			aliceOffset = tr.Offset
		case string(bob.UserID):
			bobOffset = tr.Offset
		}
	}
	require.GreaterOrEqual(t, aliceOffset, time.Duration(0), "alice was recorded")
	require.Greater(t, bobOffset, aliceOffset+time.Second, "bob's file starts after his consent, not with the call")
	require.GreaterOrEqual(t, m.Started.Add(bobOffset), m.Excluded[0].Until.Add(-time.Second))
}

// TestPermissions: start, stop and auto need the power level to start a
// call (and commands.min_power_level); config admins need neither; the
// refusal says what was missing; everyone may use status, list, help and
// consent; notices are never answered.
func TestPermissions(t *testing.T) {
	s := stack.Start(t, stack.Options{Permissions: map[string]config.PermissionLevel{
		"*": config.PermissionUser, "@carol:localhost": config.PermissionAdmin,
	}})
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	carol := s.HS.RegisterUser(ctx, t, "carol")
	// Call events need level 50 (state_default) here; alice created the room (100).
	roomID := s.HS.CreateRoom(ctx, t, alice, homeserver.RoomOptions{Name: "Strict", Invite: []id.UserID{bot, bob.UserID, carol.UserID}})
	for _, cli := range []*mautrix.Client{bob, carol} {
		_, err := cli.JoinRoomByID(ctx, roomID)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		m, _ := membershipOf(ctx, alice, roomID, bot)
		return m == event.MembershipJoin
	}, deadline, 50*time.Millisecond, "bot did not join")

	for _, cmd := range []string{"start", "stop", "auto on"} {
		reply := s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec "+cmd))
		require.Contains(t, reply, "You need power level 50 in this room to ", cmd)
		require.Contains(t, reply, "the level to start calls (`org.matrix.msc3401.call`) here is 50); you have 0", cmd)
	}
	for cmd, want := range map[string]string{"status": "Not recording", "list": "no recordings", "help": "commands", "consent": "Noted"} {
		require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec "+cmd)), want, cmd)
	}
	// The room creator has the level; a config admin bypasses it. Both get
	// past the permission check to the call bot.
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "no group call")
	require.Contains(t, s.WaitReply(t, carol, roomID, s.Command(t, carol, roomID, "!rec start")), "no group call")
	require.Contains(t, s.WaitReply(t, carol, roomID, s.Command(t, carol, roomID, "!rec stop")), "not being recorded")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec frobnicate")), "Unknown command")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec list many")), "Usage: `!rec list [n]`")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec auto maybe")), "Usage: `!rec auto on`")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec auto off")), "Auto-record is off")

	// A notice (another bot's) is never answered.
	notice, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgNotice, Body: "!rec start"})
	require.NoError(t, err)
	last := s.Command(t, bob, roomID, "!rec status")
	s.WaitReply(t, bob, roomID, last)
	for _, evt := range botMessages(ctx, t, bob, roomID, bot) {
		require.NotEqual(t, notice.EventID, evt.Content.AsMessage().RelatesTo.GetReplyTo(), "bot answered a notice")
	}

	// commands.min_power_level raises the bar above the room's call level.
	s.Config.Commands.MinPowerLevel = 100
	s.RestartApp(t)
	_, err = alice.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", map[string]any{
		"users":  map[string]int{string(alice.UserID): 100, string(bob.UserID): 50},
		"events": map[string]int{"org.matrix.msc3401.call": 50},
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		pl, err := s.App.AS.PowerLevels(ctx, roomID)
		return err == nil && pl.GetUserLevel(bob.UserID) == 50
	}, deadline, 50*time.Millisecond)
	reply := s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec start"))
	require.Contains(t, reply, "You need power level 100 in this room to start a recording (this recorder requires at least 100); you have 50")
}
