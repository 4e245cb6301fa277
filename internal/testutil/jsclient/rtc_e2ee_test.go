//go:build integration

package jsclient_test

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
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
