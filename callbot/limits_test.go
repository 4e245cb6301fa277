package callbot

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
)

// invitesTo counts the invites the bot sent to any device of user.
func (fm *fakeMatrix) invitesTo(user id.UserID) int {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	n := 0
	for _, s := range fm.log {
		if s.to.UserID == user && s.msg.Type().Type == "m.call.invite" {
			n++
		}
	}
	return n
}

// publishMany writes a member event for user listing n devices, all in
// session sess.
func (h *harness) publishMany(user id.UserID, n int, sess string) {
	h.t.Helper()
	devices := make([]map[string]any, n)
	for i := range devices {
		devices[i] = map[string]any{"device_id": fmt.Sprintf("D%05d", i), "session_id": sess,
			"expires_ts": time.Now().Add(forever).UnixMilli(), "feeds": []map[string]string{{"purpose": "m.usermedia"}}}
	}
	content, err := json.Marshal(map[string]any{"m.calls": []map[string]any{{"m.call_id": string(testConf), "m.devices": devices}}})
	require.NoError(h.t, err)
	key := string(user)
	h.fm.lock.Lock()
	h.fm.joined[user] = true
	h.fm.lock.Unlock()
	h.fm.emit(h.ctx, &event.Event{Type: signaling.StateCallMember, StateKey: &key, Sender: user, RoomID: testRoom,
		Timestamp: time.Now().UnixMilli(), Content: event.Content{VeryRaw: content}})
}

// TestHostileMemberEvent: one member event listing 2000 devices, rewritten
// with a new session for every device again and again, makes the recorder
// call at most MaxDevicesPerUser devices, with a bounded number of invites
// and goroutines.
func TestHostileMemberEvent(t *testing.T) {
	h := newHarness(t, func(m *Manager) { m.inviteTimeout, m.retryPeriod = 50*time.Millisecond, 10*time.Millisecond })
	h.join()
	before := runtime.NumGoroutine()
	const user = id.UserID("@zed:test")
	for round := range 5 {
		h.publishMany(user, 2000, fmt.Sprintf("s%d", round))
		require.Eventually(t, func() bool { return h.fm.invitesTo(user) >= signaling.MaxDevicesPerUser*(round+1) || round > 0 },
			waitFor, 5*time.Millisecond)
	}
	// Every invite times out and is retried up to MaxInviteRetries times,
	// per device; session rotation does not buy more.
	maxInvites := signaling.MaxDevicesPerUser * (signaling.MaxInviteRetries + 2)
	require.Eventually(t, func() bool {
		st, err := h.m.Status(h.ctx, testRoom)
		require.NoError(t, err)
		return len(st.Peers) == 0 && h.fm.invitesTo(user) >= signaling.MaxDevicesPerUser*(signaling.MaxInviteRetries+1)
	}, waitFor, 10*time.Millisecond, "the retries run out")
	invites := h.fm.invitesTo(user)
	t.Logf("2000 devices x 5 sessions: %d invites, goroutines %d -> %d", invites, before, runtime.NumGoroutine())
	require.LessOrEqual(t, invites, maxInvites)
	require.Less(t, runtime.NumGoroutine(), before+50)
}

// TestPeersPerCallLimit: beyond limits.max_peers_per_call no peer
// connection is made, whoever calls.
func TestPeersPerCallLimit(t *testing.T) {
	h := newHarness(t, func(m *Manager) { m.cfg.Limits = config.LimitsConfig{MaxPeersPerCall: 2} })
	h.join()
	for _, u := range []id.UserID{"@x1:test", "@x2:test", "@x3:test"} {
		r := h.remote(u, "DEV")
		r.join(time.Now().Add(forever))
	}
	require.Eventually(t, func() bool {
		return h.fm.invitesTo("@x1:test")+h.fm.invitesTo("@x2:test")+h.fm.invitesTo("@x3:test") >= 2
	},
		waitFor, 5*time.Millisecond)
	st, err := h.m.Status(h.ctx, testRoom)
	require.NoError(t, err)
	require.Len(t, st.Peers, 2)
	require.Contains(t, h.logs.String(), "max_peers_per_call")
}

// TestCallsPerRecorderLimit: limits.max_calls bounds the calls joined at once.
func TestCallsPerRecorderLimit(t *testing.T) {
	h := newHarness(t, func(m *Manager) { m.cfg.Limits = config.LimitsConfig{MaxCalls: 1} })
	h.join()
	_, err := h.m.Join(h.ctx, "!other:test")
	require.ErrorIs(t, err, ErrTooManyCalls)
}

// TestStreamMetadataBounded: a peer describing thousands of streams in its
// metadata makes the recorder keep and report at most maxStreamsPerPeer.
func TestStreamMetadataBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	inv, ok := h.fm.take(t, zed.key, "m.call.invite").(*signaling.Invite)
	require.True(t, ok)
	zed.answer(inv)
	h.waitPeerState(zed.key, PeerConnected)
	meta := signaling.StreamMetadata{}
	for i := range 5000 {
		meta[fmt.Sprintf("stream%d", i)] = signaling.StreamInfo{Purpose: signaling.PurposeUserMedia, AudioMuted: true}
	}
	zed.send(&signaling.MetadataChanged{Metadata: meta}, inv.CallID)
	require.Eventually(t, func() bool { return h.sink.streamChanges() >= maxStreamsPerPeer }, waitFor, 5*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(h.logs.String(), "stream_metadata") }, waitFor, 5*time.Millisecond)
	require.LessOrEqual(t, h.sink.streamChanges(), maxStreamsPerPeer)
	zed.connected()
}
