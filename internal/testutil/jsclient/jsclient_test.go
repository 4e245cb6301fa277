//go:build integration

package jsclient_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
)

const (
	connectTimeout = 30 * time.Second
	changeTimeout  = 15 * time.Second
)

func jsOptions(hs *homeserver.Server, cli *mautrix.Client, roomID id.RoomID) jsclient.Options {
	return jsclient.Options{
		HomeserverURL: hs.URL,
		UserID:        cli.UserID,
		AccessToken:   cli.AccessToken,
		DeviceID:      cli.DeviceID,
		RoomID:        roomID,
		Video:         true,
	}
}

// connectedWithMedia reports whether the peer call with other is connected and
// has received audio and video RTP.
func connectedWithMedia(other *jsclient.Client) func(*jsclient.State) bool {
	return func(st *jsclient.State) bool {
		pc := st.Call(other.UserID(), other.DeviceID())
		return st.HasParticipant(other.UserID(), other.DeviceID()) && pc.Connected() &&
			pc.PacketsReceived("audio") > 0 && pc.PacketsReceived("video") > 0 &&
			pc.PacketsSent("audio") > 0 && pc.PacketsSent("video") > 0
	}
}

// room starts Dendrite, registers alice and bob and returns a room they are both
// in, with call power levels 0 (js-sdk's member event needs that).
func room(ctx context.Context, t *testing.T) (*homeserver.Server, *mautrix.Client, *mautrix.Client, id.RoomID) {
	t.Helper()
	hs := homeserver.Start(t, homeserver.Options{})
	alice := hs.RegisterUser(ctx, t, "alice")
	bob := hs.RegisterUser(ctx, t, "bob")
	roomID := hs.CreateRoom(ctx, t, alice, homeserver.RoomOptions{
		Name:                "call",
		Invite:              []id.UserID{bob.UserID},
		CallPowerLevelsZero: true,
	})
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	return hs, alice, bob, roomID
}

// TestTwoClients runs two js-sdk clients in one group call: the first creates
// it, the second joins; both must connect over loopback and receive each
// other's audio and video; a mute must show up on the other side; after one
// leaves, the other must see it go.
func TestTwoClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()

	hs, alice, bob, roomID := room(ctx, t)
	t.Logf("homeserver and room ready after %s", time.Since(start).Round(time.Millisecond))

	ja := jsclient.Start(t, jsOptions(hs, alice, roomID))
	stA, err := ja.State(ctx)
	require.NoError(t, err)
	require.Equal(t, jsclient.GroupCallEntered, stA.GroupCallState)
	require.NotEmpty(t, stA.GroupCallID)
	t.Logf("alice entered (created call %s) after %s; enter() took %d ms",
		stA.GroupCallID, time.Since(start).Round(time.Millisecond), stA.EnteredAfterMs)

	jb := jsclient.Start(t, jsOptions(hs, bob, roomID))
	stB, err := jb.State(ctx)
	require.NoError(t, err)
	require.Equal(t, stA.GroupCallID, stB.GroupCallID, "bob must join alice's call, not create another")
	t.Logf("bob entered after %s; enter() took %d ms", time.Since(start).Round(time.Millisecond), stB.EnteredAfterMs)

	stA = ja.WaitFor(t, connectTimeout, "alice connected to bob with media", connectedWithMedia(jb))
	stB = jb.WaitFor(t, connectTimeout, "bob connected to alice with media", connectedWithMedia(ja))
	t.Logf("both connected with media after %s", time.Since(start).Round(time.Millisecond))

	callA := stA.Call(jb.UserID(), jb.DeviceID())
	callB := stB.Call(ja.UserID(), ja.DeviceID())
	// "@alice" < "@bob": alice places the call.
	assert.Equal(t, "outbound", callA.Direction)
	assert.Equal(t, "inbound", callB.Direction)
	assert.Equal(t, callA.CallID, callB.CallID)
	for name, pc := range map[string]*jsclient.PeerCall{"alice": callA, "bob": callB} {
		// The pages accept only 127.x remote candidates, but Chromium may still pair
		// its own non-loopback host socket with the peer's 127.0.0.1 (a
		// peer-reflexive pair, routed over lo): one end is always loopback.
		require.NotNil(t, pc.CandidatePair, "%s: no selected candidate pair", name)
		assert.True(t, strings.HasPrefix(pc.CandidatePair.Local, "127.") || strings.HasPrefix(pc.CandidatePair.Remote, "127."),
			"%s: selected pair %+v has no loopback end", name, *pc.CandidatePair)
		t.Logf("%s: call %s %s, connected %d ms after its enter(); in=%v out=%v pair=%+v",
			name, pc.CallID, pc.Direction, pc.ConnectedAfterMs, pc.Inbound, pc.Outbound, *pc.CandidatePair)
	}
	remoteAlice := stB.RemoteFeed(ja.UserID(), ja.DeviceID(), jsclient.PurposeUserMedia)
	require.NotNil(t, remoteAlice, "bob has no user-media feed from alice")
	assert.False(t, remoteAlice.AudioMuted)
	assert.Equal(t, 1, remoteAlice.AudioTracks)
	assert.Equal(t, 1, remoteAlice.VideoTracks)

	// Mute travels as sdp_stream_metadata_changed, no renegotiation.
	require.NoError(t, ja.SetMicMuted(ctx, true))
	jb.WaitFor(t, changeTimeout, "bob to see alice muted", func(st *jsclient.State) bool {
		f := st.RemoteFeed(ja.UserID(), ja.DeviceID(), jsclient.PurposeUserMedia)
		return f != nil && f.AudioMuted
	})
	require.NoError(t, ja.SetMicMuted(ctx, false))
	jb.WaitFor(t, changeTimeout, "bob to see alice unmuted", func(st *jsclient.State) bool {
		f := st.RemoteFeed(ja.UserID(), ja.DeviceID(), jsclient.PurposeUserMedia)
		return f != nil && !f.AudioMuted
	})

	// Screen share adds a second stream: an m.call.negotiate round trip.
	require.NoError(t, ja.SetScreensharing(ctx, true))
	jb.WaitFor(t, changeTimeout, "bob to get alice's screen share", func(st *jsclient.State) bool {
		f := st.RemoteFeed(ja.UserID(), ja.DeviceID(), jsclient.PurposeScreenshare)
		return f != nil && f.VideoTracks == 1
	})
	require.NoError(t, ja.SetScreensharing(ctx, false))
	jb.WaitFor(t, changeTimeout, "alice's screen share to end at bob", func(st *jsclient.State) bool {
		return st.RemoteFeed(ja.UserID(), ja.DeviceID(), jsclient.PurposeScreenshare) == nil
	})

	leaveStart := time.Now()
	require.NoError(t, jb.Leave(ctx))
	// A js-sdk peer that got bob's hangup before his member event may place
	// one more call to him; that call never connects and js-sdk drops it on
	// its own timers, so only the participant list is waited for.
	stA = ja.WaitFor(t, changeTimeout, "alice to see bob leave", func(st *jsclient.State) bool {
		if call := st.Call(jb.UserID(), jb.DeviceID()); call != nil && call.Connected() {
			return false
		}
		return !st.HasParticipant(jb.UserID(), jb.DeviceID())
	})
	t.Logf("alice saw bob leave %s after Leave; alice still %s", time.Since(leaveStart).Round(time.Millisecond), stA.GroupCallState)
	assert.Equal(t, jsclient.GroupCallEntered, stA.GroupCallState)
	assert.True(t, stA.HasParticipant(ja.UserID(), ja.DeviceID()))
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))

	if testing.Verbose() {
		logSignalling(t, "alice", stA)
		stB, err = jb.State(ctx)
		require.NoError(t, err)
		logSignalling(t, "bob", stB)
	}
}

// logSignalling logs the m.call.* to-device events a client sent and received,
// without SDP: the protocol facts the call bot has to match.
func logSignalling(t *testing.T, name string, st *jsclient.State) {
	t.Helper()
	t.Logf("%s: turnServer=%s droppedRemoteCandidates=%d droppedRemoteSdpCandidates=%d",
		name, st.TurnServer, st.DroppedRemoteCandidates, st.DroppedRemoteSDPCandidates)
	for _, dir := range []struct {
		label  string
		events []jsclient.ToDeviceEvent
	}{{"sent", st.ToDeviceSent}, {"received", st.ToDeviceReceived}} {
		for _, ev := range dir.events {
			seq := int64(-1)
			if ev.Seq != nil {
				seq = *ev.Seq
			}
			t.Logf("%s %s %s seq=%d version=%s call_id=%s party_id=%s conf_id=%s sender_session=%s dest_session=%s candidates=%d reason=%q keys=%v",
				name, dir.label, ev.Type, seq, ev.Version, ev.CallID, ev.PartyID, ev.ConfID,
				ev.SenderSessionID, ev.DestSessionID, ev.Candidates, ev.Reason, ev.Keys)
		}
	}
}

// TestAudioOnly joins an audio-only client to a video call: it sends audio and
// no video, and still receives the other side's video.
func TestAudioOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	hs, alice, bob, roomID := room(ctx, t)
	ja := jsclient.Start(t, jsOptions(hs, alice, roomID))
	bobOpts := jsOptions(hs, bob, roomID)
	bobOpts.Video = false
	jb := jsclient.Start(t, bobOpts)

	stA := ja.WaitFor(t, connectTimeout, "alice to get bob's audio", func(st *jsclient.State) bool {
		pc := st.Call(jb.UserID(), jb.DeviceID())
		return pc.Connected() && pc.PacketsReceived("audio") > 0
	})
	stB := jb.WaitFor(t, connectTimeout, "bob to get alice's audio and video", connectedWithMediaReceived(ja))
	assert.Equal(t, jsclient.GroupCallVideo, stA.GroupCallType, "alice created a video call")
	assert.Zero(t, stB.Call(ja.UserID(), ja.DeviceID()).PacketsSent("video"), "bob sends no video")
	f := stA.RemoteFeed(jb.UserID(), jb.DeviceID(), jsclient.PurposeUserMedia)
	require.NotNil(t, f, "alice has no feed from bob")
	assert.Equal(t, 1, f.AudioTracks)
	assert.Equal(t, 0, f.VideoTracks)
	assert.True(t, f.VideoMuted)
	assert.True(t, stB.VideoMuted)
}

// connectedWithMediaReceived is connectedWithMedia without the sending side.
func connectedWithMediaReceived(other *jsclient.Client) func(*jsclient.State) bool {
	return func(st *jsclient.State) bool {
		pc := st.Call(other.UserID(), other.DeviceID())
		return pc.Connected() && pc.PacketsReceived("audio") > 0 && pc.PacketsReceived("video") > 0
	}
}
