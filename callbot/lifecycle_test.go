package callbot

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
)

// TestJoinWhileStarting: the appservice may deliver a command (a retried
// `!rec start`) while the manager is still starting; Join then either
// waits its turn (ErrStopped until started) or joins, without a data race
// on the manager's background context (run with -race).
func TestJoinWhileStarting(t *testing.T) {
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	fm := newFakeMatrix()
	m, err := New(Options{Config: Config{WebRTC: config.WebRTCConfig{LoopbackOnly: true}, CommandPrefix: "!rec"}, Matrix: fm, Sink: &fakeSink{}})
	require.NoError(t, err)
	started := make(chan error, 1)
	go func() { started <- m.Start(ctx) }()
	deadline := time.Now().Add(waitFor)
	for {
		_, err = m.Join(ctx, testRoom)
		if !errors.Is(err, ErrStopped) || time.Now().After(deadline) {
			break
		}
	}
	require.NoError(t, err)
	require.NoError(t, <-started)
	stopCtx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	require.NoError(t, m.Stop(stopCtx))
}

// TestStopLeavesCallsInParallel: shutting down leaves every call at once;
// one call slow to leave (the homeserver slow to take the member event)
// does not use up the others' time.
func TestStopLeavesCallsInParallel(t *testing.T) {
	const slow = time.Second
	h := newHarness(t, func(m *Manager) { m.leaveState = slow })
	h.join()
	_, err := h.m.Join(h.ctx, "!room2:test")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h.fm.lock.Lock()
		defer h.fm.lock.Unlock()
		return len(h.fm.states) >= 2
	}, waitFor, 5*time.Millisecond)
	h.fm.lock.Lock()
	h.fm.blockState = make(chan struct{}) // never closed: each leave waits leaveState
	h.fm.lock.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, waitFor)
	defer cancel()
	start := time.Now()
	require.NoError(t, h.m.Stop(ctx))
	took := time.Since(start)
	require.Less(t, took, slow*3/2, "calls were left one after another (%s)", took)
	h.sink.lock.Lock()
	defer h.sink.lock.Unlock()
	require.Equal(t, 2, h.sink.left)
}

// TestRejoinReplacesTheStaleSession: after a restart the recorder rejoins
// as the same user and device with a new session; its member event then
// lists the device once, with the new session, and the call keeps the
// recording's ID. A call nobody is in any more is not rejoined.
func TestRejoinReplacesTheStaleSession(t *testing.T) {
	h := newHarness(t, nil)
	// What the killed process left: the bot's device in the member event.
	stale, err := signaling.SetMemberDevice(nil, testConf, signaling.NewMemberDevice(botDevice, "oldsession", time.Now().Add(forever), signaling.PurposeUserMedia), time.Now())
	require.NoError(t, err)
	key := string(botUser)
	h.fm.emit(h.ctx, &event.Event{Type: signaling.StateCallMember, StateKey: &key, Sender: botUser, RoomID: testRoom, Content: event.Content{VeryRaw: stale}})

	_, err = h.m.Rejoin(h.ctx, testRoom, botUser, testConf, "rec-before")
	require.ErrorIs(t, err, ErrNoCall, "nobody else is in the call")

	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	_, err = h.m.Rejoin(h.ctx, testRoom, botUser, "another-conf", "rec-before")
	require.ErrorIs(t, err, ErrNoCall, "the room's call is another one")
	st, err := h.m.Rejoin(h.ctx, testRoom, botUser, testConf, "rec-before")
	require.NoError(t, err)
	require.Equal(t, "rec-before", st.ID)
	require.NotEqual(t, signaling.SessionID("oldsession"), st.SessionID)
	require.Eventually(t, func() bool {
		own := h.fm.lastOwnMember()
		if own == nil {
			return false
		}
		mc, err := signaling.ParseMember(own)
		require.NoError(t, err)
		call, ok := mc.Call(testConf)
		return ok && len(call.Devices) == 1 && call.Devices[0].SessionID == st.SessionID
	}, waitFor, 5*time.Millisecond, "the stale session is not replaced")
}

// TestMemberRenewalCatchesUp: while the homeserver refuses (or cannot
// take) the member event, its renewal is retried, each attempt bounded in
// time so the call loop goes on; once the homeserver is back the renewal
// goes through.
func TestMemberRenewalCatchesUp(t *testing.T) {
	h := newHarness(t, func(m *Manager) {
		m.memberRenew, m.memberRetry, m.stateTimeout = 100*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond
	})
	h.join()
	h.fm.lock.Lock()
	h.fm.blockState = make(chan struct{}) // the homeserver hangs
	before := len(h.fm.states)
	h.fm.lock.Unlock()
	// The loop still answers while renewals hang and time out.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(h.ctx, 500*time.Millisecond)
		_, err := h.m.Status(ctx, testRoom)
		cancel()
		require.NoError(t, err, "the call loop is stuck in a member event renewal")
	}
	h.fm.lock.Lock()
	close(h.fm.blockState)
	h.fm.blockState = nil
	h.fm.lock.Unlock()
	require.Eventually(t, func() bool {
		h.fm.lock.Lock()
		defer h.fm.lock.Unlock()
		return len(h.fm.states) > before
	}, waitFor, 5*time.Millisecond, "the renewal did not catch up")
}

// TestPrepareUsers: the ready users are set up before any call, with the
// manager's handler, one after the other; a call then takes the first of
// them instead of setting up a user of its own; a cancelled context sets
// up none.
func TestPrepareUsers(t *testing.T) {
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	fm := newFakeMatrix()
	m, err := New(Options{Config: Config{WebRTC: config.WebRTCConfig{LoopbackOnly: true}, CommandPrefix: "!rec"}, Matrix: fm, Sink: &fakeSink{}})
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx))
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(ctx, waitFor)
		defer cancel()
		require.NoError(t, m.Stop(stopCtx))
	})

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	m.Prepare(cancelled, 2)
	fm.lock.Lock()
	require.Empty(t, fm.devices, "a cancelled preparation sets up no user")
	fm.lock.Unlock()

	m.Prepare(ctx, 2)
	fm.lock.Lock()
	require.Len(t, fm.devices, 2)
	for n := 1; n <= 2; n++ {
		dev := fm.devices[fm.VirtualUserID(n)]
		require.NotNil(t, dev, "user %d is set up", n)
		require.NotNil(t, dev.handler, "user %d's events reach the manager", n)
	}
	prepared := fm.devices[fm.VirtualUserID(1)]
	fm.lock.Unlock()

	st, err := m.Join(ctx, testRoom)
	require.NoError(t, err)
	require.Equal(t, fm.VirtualUserID(1), st.UserID, "the call takes the first ready user")
	fm.lock.Lock()
	defer fm.lock.Unlock()
	require.Len(t, fm.devices, 2, "no other user was set up for the call")
	require.Same(t, prepared, fm.devices[st.UserID])
}
