//go:build integration

package callbot_test

import (
	"encoding/json"
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
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
)

func peerOf(t *testing.T, s *stack.Stack, roomID id.RoomID, user id.UserID) (callbot.PeerStatus, bool) {
	t.Helper()
	st, err := s.App.Calls.Status(s.Ctx(), roomID)
	if err != nil {
		return callbot.PeerStatus{}, false
	}
	for _, p := range st.Peers {
		if p.UserID == user {
			return p, true
		}
	}
	return callbot.PeerStatus{}, false
}

func requireMedia(t *testing.T, obs *observer.Observer, user id.UserID, video bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		return obs.HasMedia(user, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 25) &&
			(!video || obs.HasMedia(user, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 25))
	}, deadline, 50*time.Millisecond, "media of %s did not reach the bot: %+v", user, obs.Tracks(user))
}

// TestBotInCall: the bot answers a lower user id and calls a higher one,
// over Olm and plaintext; then a peer joins late, one leaves, one changes
// session, and the call is terminated.
func TestBotInCall(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice") // sorts below @recorder_1: alice calls the bot
	zoe := s.HS.RegisterUser(ctx, t, "zoe")     // sorts above: the bot calls zoe
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.CallRoom(t, alice, zoe.UserID, bob.UserID)

	pa := s.Sim(t, roomID, alice, stack.SimOptions{Encrypt: true, CreateCall: true, Video: true})
	pz := s.Sim(t, roomID, zoe, stack.SimOptions{Video: true})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	key := s.BotKey(t, roomID)

	var ca, cz simpeer.CallInfo
	require.Eventually(t, func() bool {
		var okA, okZ bool
		ca, okA = stack.ConnectedTo(pa, key)
		cz, okZ = stack.ConnectedTo(pz, key)
		return okA && okZ
	}, deadline, 50*time.Millisecond, "peers did not connect to the bot")
	require.True(t, ca.Outbound, "alice (lower id) places the call to the bot")
	require.False(t, cz.Outbound, "the bot places the call to zoe (higher id)")
	requireMedia(t, obs, alice.UserID, true)
	requireMedia(t, obs, zoe.UserID, true)
	require.Positive(t, pa.Snapshot().Received.Encrypted, "the bot encrypts to a device with keys")
	require.Positive(t, pz.Snapshot().Received.Plaintext, "the bot falls back to plaintext for a device without keys")
	// Both peers receive the bot's listed (muted) stream, so clients keep the call.
	require.NotEmpty(t, ca.RemoteMetadata)
	for _, info := range ca.RemoteMetadata {
		require.Equal(t, signaling.PurposeUserMedia, info.Purpose)
	}

	t.Run("a peer joins after the bot", func(t *testing.T) {
		// bob speaks like Hydrogen: metadata changes under the unstable name.
		pb := s.Sim(t, roomID, bob, stack.SimOptions{Tweak: func(c *simpeer.Config) { c.UnstableMetadataEvent = true }})
		require.Eventually(t, func() bool { _, ok := stack.ConnectedTo(pb, key); return ok }, deadline, 50*time.Millisecond)
		requireMedia(t, obs, bob.UserID, false)
		require.NoError(t, pb.SetMuted(ctx, true, false))
		require.Eventually(t, func() bool {
			for _, c := range obs.Changes(bob.UserID) {
				if c.AudioMuted {
					return true
				}
			}
			return false
		}, deadline, 50*time.Millisecond, "mute under org.matrix.call.sdp_stream_metadata_changed not reported")
	})

	t.Run("a peer leaves", func(t *testing.T) {
		require.NoError(t, pz.Leave(ctx))
		require.Eventually(t, func() bool { _, ok := peerOf(t, s, roomID, zoe.UserID); return !ok }, deadline, 50*time.Millisecond)
		require.Eventually(t, func() bool {
			for _, l := range obs.Left() {
				if l.UserID == zoe.UserID {
					return true
				}
			}
			return false
		}, deadline, 50*time.Millisecond)
	})

	t.Run("a peer changes session", func(t *testing.T) {
		old, ok := peerOf(t, s, roomID, alice.UserID)
		require.True(t, ok)
		require.NoError(t, pa.NewSession(ctx, false))
		newSession := pa.Snapshot().SessionID
		require.NotEqual(t, old.SessionID, newSession)
		require.Eventually(t, func() bool {
			p, ok := peerOf(t, s, roomID, alice.UserID)
			return ok && p.SessionID == newSession && p.State == callbot.PeerConnected
		}, deadline, 50*time.Millisecond, "bot did not reconnect to the new session")
		c, ok := stack.ConnectedTo(pa, key)
		require.True(t, ok)
		require.NotEqual(t, old.CallID, c.CallID)
	})

	t.Run("the call is terminated", func(t *testing.T) {
		conf := pa.Snapshot().ConfID
		_, err := alice.SendStateEvent(ctx, roomID, signaling.StateGroupCall, string(conf), map[string]any{
			"m.intent": "m.room", "m.type": "m.video", "m.terminated": "call_ended",
		})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, deadline, 50*time.Millisecond, "bot did not leave")
		var member json.RawMessage
		require.NoError(t, alice.StateEvent(ctx, roomID, signaling.StateCallMember, string(key.UserID), &member))
		content, err := signaling.ParseMember(member)
		require.NoError(t, err)
		if call, ok := content.Call(conf); ok {
			for _, d := range call.Devices {
				require.NotEqual(t, key.DeviceID, d.DeviceID, "bot's device still listed after leaving")
			}
		}
	})
}

// TestGlare: the bot and a peer invite each other at the same moment;
// exactly one call survives on both sides.
func TestGlare(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	zed := s.HS.RegisterUser(ctx, t, "zed") // the bot is responsible for calling zed
	roomID := s.CallRoom(t, alice, zed.UserID)
	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	pz := s.Sim(t, roomID, zed, stack.SimOptions{Tweak: func(c *simpeer.Config) { c.InviteAll, c.HoldInvites = true, true }})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	key := s.BotKey(t, roomID)
	// zed prepares its own invite to the bot as soon as it sees the bot; send
	// it while the bot's invite to zed is in flight or pending.
	require.Eventually(t, func() bool {
		for _, c := range pz.Snapshot().Calls {
			if c.Remote == key && c.Outbound {
				return true
			}
		}
		return false
	}, deadline, 10*time.Millisecond, "zed did not prepare an invite")
	require.NoError(t, pz.ReleaseInvites(ctx))

	var survivor simpeer.CallInfo
	require.Eventually(t, func() bool {
		var ok bool
		survivor, ok = stack.ConnectedTo(pz, key)
		p, botOK := peerOf(t, s, roomID, zed.UserID)
		return ok && botOK && p.State == callbot.PeerConnected && p.CallID == survivor.CallID
	}, deadline, 50*time.Millisecond, "no single surviving call")
	live := 0
	for _, c := range pz.Snapshot().Calls {
		if c.Remote == key && !c.Ended() {
			live++
		}
	}
	require.Equal(t, 1, live, "zed has more than one live call with the bot")
	requireMedia(t, obs, zed.UserID, false)
	t.Logf("glare: zed saw %d glare event(s); surviving call %s", pz.Snapshot().Glare, survivor.CallID)
}

// TestSpoofedSignalling: call events from a user outside the call, from a
// device the member event does not list, and from an Olm device other than
// the claimed one are ignored and counted.
func TestSpoofedSignalling(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	mallory := s.HS.RegisterUser(ctx, t, "mallory")
	eve := s.HS.RegisterUser(ctx, t, "eve")
	outsider := s.HS.RegisterUser(ctx, t, "outsider")
	roomID := s.CallRoom(t, alice, mallory.UserID, eve.UserID)
	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	key := s.BotKey(t, roomID)
	calls := s.App.Calls

	t.Run("user in the room but not in the call", func(t *testing.T) {
		before := calls.Ignored(callbot.IgnoredNotInCall)
		s.Sim(t, roomID, mallory, stack.SimOptions{Tweak: func(c *simpeer.Config) { c.SkipMemberEvent, c.InviteAll = true, true }})
		require.Eventually(t, func() bool { return calls.Ignored(callbot.IgnoredNotInCall) > before }, deadline, 50*time.Millisecond)
		_, ok := peerOf(t, s, roomID, mallory.UserID)
		require.False(t, ok)
	})

	t.Run("Olm sender device differs from the claimed device", func(t *testing.T) {
		before := calls.Ignored(callbot.IgnoredWrongOlmDevice)
		s.Sim(t, roomID, eve, stack.SimOptions{Encrypt: true, Tweak: func(c *simpeer.Config) { c.ClaimDeviceID, c.InviteAll = "FORGEDDEV", true }})
		require.Eventually(t, func() bool { return calls.Ignored(callbot.IgnoredWrongOlmDevice) > before }, deadline, 50*time.Millisecond)
		_, ok := peerOf(t, s, roomID, eve.UserID)
		require.False(t, ok)
	})

	t.Run("user not in the room", func(t *testing.T) {
		before := calls.Ignored(callbot.IgnoredNotInRoom)
		_, err := outsider.SendToDevice(ctx, signaling.EventInvite, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			key.UserID: {key.DeviceID: {Raw: map[string]any{
				"call_id": "spoof1", "party_id": "OUTSIDERDEV", "version": "1", "conf_id": string(mustConf(t, s, roomID)),
				"device_id": "OUTSIDERDEV", "seq": 0, "lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0\r\n"},
			}}},
		}})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return calls.Ignored(callbot.IgnoredNotInRoom) > before }, deadline, 50*time.Millisecond)
	})

	// The real participant is unaffected.
	p, ok := peerOf(t, s, roomID, alice.UserID)
	require.True(t, ok)
	require.Equal(t, callbot.PeerConnected, p.State)
}

func mustConf(t *testing.T, s *stack.Stack, roomID id.RoomID) signaling.ConfID {
	t.Helper()
	st, err := s.App.Calls.Status(s.Ctx(), roomID)
	require.NoError(t, err)
	return st.ConfID
}

// TestPowerLevelsForbidJoining: in a room where members may not send call
// member events, the bot says so and does not join.
func TestPowerLevelsForbidJoining(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.HS.CreateRoom(ctx, t, alice, homeserver.RoomOptions{Name: "Strict", Invite: []id.UserID{bot}})
	require.Eventually(t, func() bool {
		var m event.MemberEventContent
		return alice.StateEvent(ctx, roomID, event.StateMember, string(bot), &m) == nil && m.Membership == event.MembershipJoin
	}, deadline, 50*time.Millisecond)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "no group call",
		"a room without a call gets a clear answer")
	_, err := alice.SendStateEvent(ctx, roomID, signaling.StateGroupCall, "conf1", map[string]any{"m.intent": "m.room", "m.type": "m.video"})
	require.NoError(t, err)
	s.Command(t, alice, roomID, "!rec start")
	require.Eventually(t, func() bool {
		resp, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 20)
		if err != nil {
			return false
		}
		for _, evt := range resp.Chunk {
			_ = evt.Content.ParseRaw(evt.Type)
			if evt.Sender == bot && evt.Type == event.EventMessage {
				body := evt.Content.AsMessage().Body
				if strings.Contains(body, "org.matrix.msc3401.call.member") && strings.Contains(body, "level 50") {
					return true
				}
			}
		}
		return false
	}, deadline, 50*time.Millisecond, "bot did not explain the power level problem")
	_, err = s.App.Calls.Status(ctx, roomID)
	require.ErrorIs(t, err, callbot.ErrNotJoined)
}

// TestMemberExpiry: a device whose member entry expires (a client that died
// without leaving) is called while listed and dropped when it expires.
func TestMemberExpiry(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	zz := s.HS.RegisterUser(ctx, t, "zz") // sorts above the bot: the bot calls it
	roomID := s.CallRoom(t, alice, zz.UserID)
	s.Sim(t, roomID, alice, stack.SimOptions{CreateCall: true})
	_, err := zz.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	conf := mustConf(t, s, roomID)

	// zz's client publishes its device with a short expiry and then dies.
	expires := time.Now().Add(4 * time.Second)
	_, err = zz.SendStateEvent(ctx, roomID, signaling.StateCallMember, string(zz.UserID), map[string]any{
		"m.calls": []any{map[string]any{"m.call_id": string(conf), "m.devices": []any{map[string]any{
			"device_id": "GHOSTDEV", "session_id": "ghost-session", "expires_ts": expires.UnixMilli(),
			"feeds": []any{map[string]any{"purpose": "m.usermedia"}},
		}}}},
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, ok := peerOf(t, s, roomID, zz.UserID)
		return ok && p.DeviceID == "GHOSTDEV" && p.State == callbot.PeerInviteSent
	}, deadline, 50*time.Millisecond, "the bot did not call the listed device")
	require.Eventually(t, func() bool {
		_, ok := peerOf(t, s, roomID, zz.UserID)
		return !ok
	}, deadline, 50*time.Millisecond, "the expired device was not dropped")
	require.False(t, time.Now().Before(expires), "dropped before its expiry")
	var left bool
	for _, l := range obs.Left() {
		left = left || l.DeviceID == "GHOSTDEV"
	}
	require.True(t, left)
}
