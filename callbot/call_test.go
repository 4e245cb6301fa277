package callbot

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/transport/v5/test"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// The bot calls the devices it sorts before (js-sdk: the lower user ID, then
// device ID, places the call) and answers the others; both ends connect.
func TestWhoCallsWhom(t *testing.T) {
	lim := test.TimeOut(30 * time.Second)
	defer lim.Stop()
	h := newHarness(t, nil)
	h.join()

	// @zed sorts after @recorder_1: the bot calls.
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	inv, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	require.Equal(t, zed.session, inv.DestSessionID)
	require.Equal(t, zed.key.UserID, inv.Invitee)
	zed.answer(inv)
	sel, ok := h.fm.take(t, zed.key, "m.call.select_answer").(*signaling.SelectAnswer)
	require.True(t, ok)
	require.Equal(t, inv.CallID, sel.CallID)
	p := h.waitPeerState(zed.key, PeerConnected)
	require.True(t, p.Outgoing)
	zed.connected()

	// @alice sorts before it: the bot waits for her invite and answers.
	alice := h.remote("@alice:test", "ALICEDEV")
	alice.join(time.Now().Add(forever))
	alice.invite("alicecall1")
	ans, ok := h.fm.take(t, alice.key, "m.call.answer").(*signaling.Answer)
	require.True(t, ok)
	require.Equal(t, signaling.CallID("alicecall1"), ans.CallID)
	alice.setRemote(webrtcAnswer(ans.Answer.SDP))
	p = h.waitPeerState(alice.key, PeerConnected)
	require.False(t, p.Outgoing)
	alice.connected()
	require.Zero(t, h.fm.count(alice.key, "m.call.invite"), "the bot must not call a device that calls it")
}

// An unanswered invite times out, is hung up and placed again after the
// retry period, at most MaxInviteRetries times more.
func TestInviteRetries(t *testing.T) {
	h := newHarness(t, func(m *Manager) {
		m.inviteTimeout, m.retryPeriod = 100*time.Millisecond, 20*time.Millisecond
	})
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	var callIDs []signaling.CallID
	for range signaling.MaxInviteRetries + 1 {
		inv := h.fm.take(t, zed.key, "m.call.invite")
		hangup, ok := h.fm.take(t, zed.key, "m.call.hangup").(*signaling.Hangup)
		require.True(t, ok)
		require.Equal(t, inv.Common().CallID, hangup.CallID)
		require.Equal(t, signaling.ReasonInviteTimeout, hangup.EffectiveReason())
		require.NotContains(t, callIDs, inv.Common().CallID, "each attempt is a new call")
		callIDs = append(callIDs, inv.Common().CallID)
	}
	h.waitNoPeer(zed.key)
	require.Never(t, func() bool { return h.fm.count(zed.key, "m.call.invite") > signaling.MaxInviteRetries+1 },
		5*(100+20)*time.Millisecond, 10*time.Millisecond, "the bot gave up after the retries")
}

// Glare: both sides call at once; the call with the lower call ID wins
// (js-sdk's rule), on both sides.
func TestGlare(t *testing.T) {
	for _, tt := range []struct {
		name      string
		theirs    signaling.CallID
		keepTheir bool
	}{
		{"their call ID is lower: the bot hangs up its own and answers", "0000glare", true},
		{"their call ID is higher: the bot rejects theirs and keeps its own", "zzzzglare", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.join()
			zed := h.remote("@zed:test", "ZEDDEV")
			zed.join(time.Now().Add(forever))
			ours, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
			require.True(t, ok)
			zed.invite(tt.theirs)
			hangup, ok := h.fm.take(t, zed.key, "m.call.hangup").(*signaling.Hangup)
			require.True(t, ok)
			require.Equal(t, signaling.ReasonReplaced, hangup.EffectiveReason())
			if tt.keepTheir {
				require.Equal(t, ours.CallID, hangup.CallID, "the bot ends its own call")
				ans, ok := h.fm.take(t, zed.key, "m.call.answer").(*signaling.Answer)
				require.True(t, ok)
				require.Equal(t, tt.theirs, ans.CallID)
				zed.setRemote(webrtcAnswer(ans.Answer.SDP))
				require.False(t, h.waitPeerState(zed.key, PeerConnected).Outgoing)
			} else {
				require.Equal(t, tt.theirs, hangup.CallID, "the bot hangs up the incoming call")
				zed.answer(ours)
				require.True(t, h.waitPeerState(zed.key, PeerConnected).Outgoing)
				require.Zero(t, h.fm.count(zed.key, "m.call.answer"))
			}
			zed.connected()
		})
	}
}

// A device that rejoins with a new session gets its old call hung up and a
// new one placed to the new session.
func TestSessionChange(t *testing.T) {
	h := newHarness(t, nil)
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	first, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	zed.answer(first)
	h.waitPeerState(zed.key, PeerConnected)

	zed.session = "sess-new"
	zed.outbox = signaling.NewOutbox(zed.key.DeviceID, zed.session)
	zed.publish(time.Now().Add(forever))
	hangup, ok := h.fm.take(t, zed.key, "m.call.hangup").(*signaling.Hangup)
	require.True(t, ok)
	require.Equal(t, first.CallID, hangup.CallID)
	second, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	require.NotEqual(t, first.CallID, second.CallID)
	require.Equal(t, signaling.SessionID("sess-new"), second.DestSessionID)
	zed.answer(second)
	h.waitPeerState(zed.key, PeerConnected)
	zed.connected()
	require.Len(t, h.sink.participantsLeft(), 1)
}

// A member device whose expires_ts passes is dropped at that moment: no
// poll, no member event needed.
func TestMemberExpiry(t *testing.T) {
	h := newHarness(t, nil)
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	// expires_ts has millisecond resolution: compare against what is published.
	expires := time.Now().Add(300 * time.Millisecond).Truncate(time.Millisecond)
	zed.join(expires)
	inv, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	zed.answer(inv)
	hangup, ok := h.fm.take(t, zed.key, "m.call.hangup").(*signaling.Hangup)
	require.True(t, ok)
	require.False(t, time.Now().Before(expires), "hung up before the member expired")
	require.Equal(t, inv.CallID, hangup.CallID)
	h.waitNoPeer(zed.key)
	left := h.sink.participantsLeft()
	require.Len(t, left, 1)
	require.Equal(t, zed.key.DeviceID, left[0].DeviceID)
}

// Leaving hangs up every peer, takes the bot's device out of its member
// event, ends the call in the sink and says so in the room.
func TestLeave(t *testing.T) {
	h := newHarness(t, nil)
	h.join()
	require.Contains(t, string(h.fm.lastOwnMember()), string(botDevice))
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	inv, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	zed.answer(inv)
	h.waitPeerState(zed.key, PeerConnected)

	require.NoError(t, h.m.Leave(h.ctx, testRoom))
	hangup, ok := h.fm.take(t, zed.key, "m.call.hangup").(*signaling.Hangup)
	require.True(t, ok)
	require.Equal(t, signaling.ReasonUserHangup, hangup.EffectiveReason())
	require.NotContains(t, string(h.fm.lastOwnMember()), string(botDevice))
	require.Equal(t, 1, h.sink.left)
	require.Contains(t, h.fm.noticesText(), "Stopped recording")
	_, err := h.m.Status(h.ctx, testRoom)
	require.ErrorIs(t, err, ErrNotJoined)
	require.ErrorIs(t, h.m.Leave(h.ctx, testRoom), ErrNotJoined)
}

// A handler that runs long is reported while it runs; the call goes on
// once it returns.
func TestSlowHandlerIsLogged(t *testing.T) {
	h := newHarness(t, func(m *Manager) { m.slowHandler = 20 * time.Millisecond })
	hold := make(chan struct{})
	h.sink.hold = hold
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(300 * time.Millisecond))
	h.fm.take(t, zed.key, "m.call.invite")
	// At expiry ParticipantLeft blocks the loop until released.
	require.Eventually(t, func() bool { return strings.Contains(h.logs.String(), "Call loop handler is taking long") },
		waitFor, 5*time.Millisecond)
	close(hold)
	require.Eventually(t, func() bool { return strings.Contains(h.logs.String(), "Slow call loop handler finished") },
		waitFor, 5*time.Millisecond)
	h.waitNoPeer(zed.key)
}

// Leaving does not wait forever for a to-device send that hangs: the
// hangups get a bounded flush, then the member event, sink and notice follow.
func TestLeaveIsBoundedWhenSendingHangs(t *testing.T) {
	h := newHarness(t, func(m *Manager) { m.leaveFlush = 50 * time.Millisecond })
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	inv, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	zed.answer(inv)
	h.waitPeerState(zed.key, PeerConnected)

	block := make(chan struct{})
	h.fm.lock.Lock()
	h.fm.block = block
	h.fm.lock.Unlock()
	t.Cleanup(func() { close(block) }) // runs before the manager stops
	require.NoError(t, h.m.Leave(h.ctx, testRoom))
	require.Contains(t, h.logs.String(), "Timed out sending hangups")
	require.NotContains(t, string(h.fm.lastOwnMember()), string(botDevice))
	require.Equal(t, 1, h.sink.left)
}
