//go:build integration

package jsclient_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/jsclient"
	lktest "github.com/matrix-recorder/recorder/internal/testutil/livekit"
)

const (
	// keyTimeout bounds a key's way from one page to another: the
	// membership in the sender's sync, a key claim, the to-device event in
	// the receiver's sync (about 1.5 s measured).
	keyTimeout = 30 * time.Second
	// decodeTimeout bounds the first decoded media after the keys.
	decodeTimeout = 30 * time.Second
	// keyGrace is how long after a participant's first key frames may still
	// fail for want of it (they were sent before the key arrived).
	keyGrace = time.Second
)

// e2eeSetup is Dendrite (with the federation API the authorization service
// asks), LiveKit, the authorization stand-in and an encrypted (Megolm) room
// every user has joined.
type e2eeSetup struct {
	hs     *homeserver.Server
	auth   *lktest.AuthService
	users  map[string]*mautrix.Client
	roomID id.RoomID
}

func startE2EE(ctx context.Context, t *testing.T, users ...string) *e2eeSetup {
	t.Helper()
	hs := homeserver.Start(t, homeserver.Options{Federation: true})
	lk := lktest.Start(t)
	e := &e2eeSetup{hs: hs, auth: lktest.StartAuthService(t, lk, map[string]string{homeserver.Domain: hs.URL}), users: map[string]*mautrix.Client{}}
	var invite []id.UserID
	for _, name := range users {
		e.users[name] = hs.RegisterUser(ctx, t, name)
		invite = append(invite, e.users[name].UserID)
	}
	creator := e.users[users[0]]
	e.roomID = hs.CreateRoom(ctx, t, creator, homeserver.RoomOptions{
		Name: "encrypted call", Invite: invite[1:], Encrypted: true, CallPowerLevelsZero: true,
	})
	for _, name := range users[1:] {
		_, err := e.users[name].JoinRoomByID(ctx, e.roomID)
		require.NoError(t, err)
	}
	return e
}

// options are an E2EE MatrixRTC page's for the user.
func (e *e2eeSetup) options(cli *mautrix.Client, video bool) jsclient.Options {
	return jsclient.Options{HomeserverURL: e.hs.URL, UserID: cli.UserID, AccessToken: cli.AccessToken, DeviceID: cli.DeviceID,
		RoomID: e.roomID, Video: video, MatrixRTCServiceURL: e.auth.URL, E2EE: true}
}

// TestE2EEPages runs two MatrixRTC pages in E2EE mode (what Element Call
// does in an encrypted room) in a Megolm room on Dendrite, LiveKit and the
// authorization stand-in: each page gets the other's media key over Olm
// to-device, decodes the other's camera and microphone, and livekit-client
// reports no encryption error once the key is there; when one leaves, the
// other rotates its key. Without the remote keys (checked by hand: the key
// provider given only the page's own key) no frame decodes and
// livekit-client reports MissingKey.
func TestE2EEPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	e := startE2EE(ctx, t, "alice", "bob")
	t.Logf("homeserver, LiveKit and room ready after %s", time.Since(start).Round(time.Millisecond))
	ja := jsclient.Start(t, e.options(e.users["alice"], true))
	jb := jsclient.Start(t, e.options(e.users["bob"], true))
	pages := []struct {
		name        string
		page, other *jsclient.Client
	}{{"alice", ja, jb}, {"bob", jb, ja}}

	// Keys: each page gets the other's key over Olm to-device, under the
	// other's LiveKit identity.
	for _, p := range pages {
		st := p.page.WaitKey(t, keyTimeout, p.other.Identity(), func(*jsclient.KeyRing) bool { return true })
		require.Equal(t, p.page.Identity(), st.LiveKit.Identity, "%s: LiveKit identity is @user:server:DEVICE", p.name)
		keys := st.KeysFrom(p.other.UserID(), p.other.DeviceID())
		require.NotEmpty(t, keys, "%s: the key of %s came as an io.element.call.encryption_keys to-device event:\n%s",
			p.name, p.other.Identity(), jsclient.RTCSummary(st))
		require.Len(t, keys[0].MemberID, 36, "%s: member.id is a random UUID, as Element Call's", p.name)
		idx, sent := st.KeySentTo(p.other.Identity())
		require.True(t, sent, "%s sent its key to %s", p.name, p.other.Identity())
		ring := st.Key(p.other.Identity())
		raw, err := base64.StdEncoding.DecodeString(ring.Raw[ring.LastIndex])
		require.NoError(t, err)
		require.Len(t, raw, 16, "%s: a media key is 16 bytes", p.name)
		t.Logf("%s: key of %s: count %d indexes %v; sent index %d to it; times %v", p.name, p.other.Identity(), ring.Count, ring.Indexes, idx, st.Times)
	}

	// Media: each page decodes the other's video and audio (1 s of samples
	// at 48 kHz), and nothing failed to decrypt once the key was there.
	for _, p := range pages {
		got, st := p.page.WaitDecoding(t, decodeTimeout, p.other.Identity(), 30, 48000)
		t.Logf("%s decoded from %s: %+v", p.name, p.other.Identity(), got)
		require.True(t, st.E2EE.Enabled, "%s: livekit-client E2EE is on", p.name)
		remote := st.Remote(p.other.Identity())
		require.True(t, remote.Encrypted, "%s: %s publishes encrypted", p.name, p.other.Identity())
		for _, src := range []string{jsclient.SourceCamera, jsclient.SourceMicrophone} {
			tr := remote.Track(src)
			require.NotNil(t, tr, "%s: %s's %s track", p.name, p.other.Identity(), src)
			require.True(t, tr.Encrypted, "%s: %s's %s track is encrypted", p.name, p.other.Identity(), src)
		}
		if early := st.ErrorsAbout(p.other.Identity()); len(early) > 0 {
			t.Logf("%s: encryption errors about %s (before its key?): %+v", p.name, p.other.Identity(), early)
		}
		require.Empty(t, st.ErrorsAfterKey(p.other.Identity(), keyGrace), "%s: encryption errors after the key:\n%s", p.name, jsclient.RTCSummary(st))
	}

	// The room is Megolm-encrypted for messages too: alice's text reaches
	// bob encrypted and he reads it.
	evtID, err := ja.SendText(ctx, "hello over megolm")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		msgs, err := jb.Messages(ctx)
		for _, m := range msgs {
			if err == nil && m.EventID == evtID {
				return m.Encrypted && m.Body == "hello over megolm"
			}
		}
		return false
	}, keyTimeout, 100*time.Millisecond, "bob reads alice's encrypted message")

	// A leave makes the remaining member rotate its key.
	before := ja.WaitOwnKeySettled(t, keyTimeout)
	leaveAt := time.Now()
	require.NoError(t, jb.Leave(ctx))
	after := ja.WaitOwnKeyRotation(t, keyTimeout, before)
	t.Logf("alice rotated her key from index %d to %d %s after bob's leave", before, after, time.Since(leaveAt).Round(time.Millisecond))
	require.Equal(t, (before+1)%256, after, "the rotated key has the next index")
	st, err := ja.RTCState(ctx)
	require.NoError(t, err)
	require.Empty(t, st.ErrorsAfterKey(jb.Identity(), keyGrace), "alice: encryption errors after the key:\n%s", jsclient.RTCSummary(st))
}

// TestE2EEKeyListener shows what a member like the recorder gets: carol has
// an Olm device and a membership but sends no key and publishes nothing
// (KeyListener). Alice sends her key to carol's device anyway, bob's too
// when he joins, and after bob leaves alice's rotated key reaches carol.
// The delays it logs are the ones the recorder's design depends on.
func TestE2EEKeyListener(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := startE2EE(ctx, t, "alice", "bob", "carol")
	ja := jsclient.Start(t, e.options(e.users["alice"], false))
	listen := e.options(e.users["carol"], false)
	listen.KeyListener = true
	jc := jsclient.Start(t, listen)
	alice, carol := ja.Identity(), jc.Identity()

	// Alice's key reaches carol, who never sends one.
	stC := jc.WaitRTC(t, keyTimeout, "alice's key at carol", func(st *jsclient.RTCState) bool {
		return len(st.KeysFrom(ja.UserID(), ja.DeviceID())) > 0
	})
	stA, err := ja.RTCState(ctx)
	require.NoError(t, err)
	first := stC.KeysFrom(ja.UserID(), ja.DeviceID())[0]
	logKeyDelay(t, "alice", stA, carol, first)
	idx, sent := stA.KeySentTo(carol)
	require.True(t, sent)
	require.Equal(t, stA.OwnKeyIndex(), idx, "alice sent carol the key she uses")
	require.Empty(t, stA.KeysFrom(jc.UserID(), jc.DeviceID()), "carol sent no key")
	require.Nil(t, stA.Key(carol), "alice holds no key of carol's")
	require.Empty(t, stC.E2EE.KeysSent, "carol sent no key")

	// Bob joins: his key reaches carol too; alice shares hers with him
	// (rotating when it is 10 s old or more).
	jb := jsclient.Start(t, e.options(e.users["bob"], false))
	stC = jc.WaitRTC(t, keyTimeout, "bob's key at carol", func(st *jsclient.RTCState) bool {
		return len(st.KeysFrom(jb.UserID(), jb.DeviceID())) > 0
	})
	stB, err := jb.RTCState(ctx)
	require.NoError(t, err)
	logKeyDelay(t, "bob", stB, carol, stC.KeysFrom(jb.UserID(), jb.DeviceID())[0])
	ja.WaitKey(t, keyTimeout, jb.Identity(), func(*jsclient.KeyRing) bool { return true })
	ja.WaitKeySentTo(t, keyTimeout, jb.Identity())
	before := ja.WaitOwnKeySettled(t, keyTimeout)
	stA, err = ja.RTCState(ctx)
	require.NoError(t, err)
	ownA := stA.Key(alice)
	t.Logf("alice's own key indexes after bob's join: %v (key 0 was %d ms old when bob's membership appeared)",
		ownA.Indexes, stA.E2EE.Members[jb.Identity()].JoinedAtMs-ownA.FirstAtMs)

	// Bob leaves: alice rotates and carol gets the new key.
	require.NoError(t, jb.Leave(ctx))
	after := ja.WaitOwnKeyRotation(t, keyTimeout, before)
	require.Equal(t, (before+1)%256, after, "the rotated key has the next index")
	stC = jc.WaitRTC(t, keyTimeout, fmt.Sprintf("alice's rotated key (index %d) at carol", after), func(st *jsclient.RTCState) bool {
		for _, k := range st.KeysFrom(ja.UserID(), ja.DeviceID()) {
			if k.Index == after {
				return true
			}
		}
		return false
	})
	stA, err = ja.RTCState(ctx)
	require.NoError(t, err)
	var sentAt, gotAt int64
	for _, k := range stA.E2EE.KeysSent {
		if k.Index == after {
			sentAt = k.AtMs // the last send of the index
		}
	}
	for _, k := range stC.KeysFrom(ja.UserID(), ja.DeviceID()) {
		if k.Index == after {
			gotAt = k.AtMs
		}
	}
	left := stA.E2EE.Members[jb.Identity()].LeftAtMs
	t.Logf("bob's leave: alice saw it at %d, sent index %d %d ms later, carol had it %d ms after that, alice used it %d ms after sending",
		left, after, sentAt-left, gotAt-sentAt, stA.Key(alice).LastAtMs-sentAt)
	require.Empty(t, stC.E2EE.KeysSent, "carol sent no key")
}

// logKeyDelay logs how long the sender took from seeing the receiver's
// membership to sending it a key, and the key's way to the receiver.
func logKeyDelay(t *testing.T, name string, sender *jsclient.RTCState, receiver string, got jsclient.KeyEvent) {
	t.Helper()
	var sentAt int64
	for _, k := range sender.E2EE.KeysSent {
		for _, to := range k.To {
			if to == receiver && sentAt == 0 {
				sentAt = k.AtMs
			}
		}
	}
	seen := sender.E2EE.Members[receiver].JoinedAtMs
	t.Logf("%s: saw %s's membership at %d, sent it key index %d %d ms later, it arrived %d ms after sending",
		name, receiver, seen, got.Index, sentAt-seen, got.AtMs-sentAt)
}

// TestE2EELateDeviceKeys shows why a member's device keys must be on the
// server before its membership: carol publishes her membership first and
// uploads her device keys 8 s later. Alice's key send to her finds no
// device and is dropped, yet js-sdk counts carol as served: no key comes
// even after the upload, until carol's membership changes (a new
// created_ts makes her a new joiner) or a rotation.
func TestE2EELateDeviceKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := startE2EE(ctx, t, "alice", "carol")
	ja := jsclient.Start(t, e.options(e.users["alice"], false))
	listen := e.options(e.users["carol"], false)
	listen.KeyListener = true
	listen.HoldDeviceKeys = 8 * time.Second
	jc := jsclient.Start(t, listen)
	carol := jc.Identity()

	// Alice sends carol her key while carol's device is unknown.
	index := ja.WaitKeySentTo(t, keyTimeout, carol)
	uploaded := func() bool {
		resp, err := e.users["alice"].QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{jc.UserID(): {}}})
		if err != nil {
			return false
		}
		_, ok := resp.DeviceKeys[jc.UserID()][jc.DeviceID()]
		return ok
	}
	require.False(t, uploaded(), "alice sent her key only after carol's device keys were uploaded (%s held back): too slow to test", listen.HoldDeviceKeys)
	require.Eventually(t, uploaded, keyTimeout, 100*time.Millisecond, "carol's device keys on the server")
	uploadedAt := time.Now()
	require.Never(t, func() bool {
		st, err := jc.RTCState(ctx)
		return err == nil && len(st.KeysFrom(ja.UserID(), ja.DeviceID())) > 0
	}, 10*time.Second, 200*time.Millisecond, "alice's key (index %d, sent before carol's device keys) must not reach carol", index)
	t.Logf("no key from alice at carol %s after carol's device keys were uploaded", time.Since(uploadedAt).Round(time.Millisecond))

	// Carol re-sends her membership with a new created_ts: to js-sdk a
	// new join, so alice sends her a key again (rotating, as her key is
	// older than 10 s). This is how a member that missed a key gets one.
	cli := e.users["carol"]
	stateKey := "_" + string(cli.UserID) + "_" + string(cli.DeviceID) + "_m.call"
	var content map[string]any
	require.NoError(t, cli.StateEvent(ctx, e.roomID, memberEventType, stateKey, &content))
	content["created_ts"] = time.Now().UnixMilli()
	_, err := cli.SendStateEvent(ctx, e.roomID, memberEventType, stateKey, content)
	require.NoError(t, err)
	st := jc.WaitRTC(t, keyTimeout, "alice's key at carol after her new membership", func(st *jsclient.RTCState) bool {
		return len(st.KeysFrom(ja.UserID(), ja.DeviceID())) > 0
	})
	got := st.KeysFrom(ja.UserID(), ja.DeviceID())[0]
	t.Logf("carol got alice's key index %d after re-sending her membership (the first, index %d, never came)", got.Index, index)
}

// memberEventType is the MatrixRTC membership's event type (compatibility mode).
var memberEventType = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
