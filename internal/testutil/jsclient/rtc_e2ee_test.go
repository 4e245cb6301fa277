//go:build integration

package jsclient_test

import (
	"context"
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
)

// TestE2EEPages runs two MatrixRTC pages in E2EE mode (what Element Call
// does in an encrypted room) in a Megolm room on Dendrite, LiveKit and the
// authorization stand-in: each page gets the other's media key over Olm
// to-device, decodes the other's camera and microphone, and livekit-client
// reports no encryption error; when one leaves, the other rotates its key.
func TestE2EEPages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	hs := homeserver.Start(t, homeserver.Options{Federation: true})
	lk := lktest.Start(t)
	auth := lktest.StartAuthService(t, lk, map[string]string{homeserver.Domain: hs.URL})
	alice := hs.RegisterUser(ctx, t, "alice")
	bob := hs.RegisterUser(ctx, t, "bob")
	roomID := hs.CreateRoom(ctx, t, alice, homeserver.RoomOptions{
		Name:                "encrypted call",
		Invite:              []id.UserID{bob.UserID},
		Encrypted:           true,
		CallPowerLevelsZero: true,
	})
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	t.Logf("homeserver, LiveKit and room ready after %s", time.Since(start).Round(time.Millisecond))

	e2eeOptions := func(cli *mautrix.Client) jsclient.Options {
		return jsclient.Options{HomeserverURL: hs.URL, UserID: cli.UserID, AccessToken: cli.AccessToken, DeviceID: cli.DeviceID,
			RoomID: roomID, Video: true, MatrixRTCServiceURL: auth.URL, E2EE: true}
	}
	ja := jsclient.Start(t, e2eeOptions(alice))
	jb := jsclient.Start(t, e2eeOptions(bob))
	pages := []struct {
		name        string
		page, other *jsclient.Client
	}{{"alice", ja, jb}, {"bob", jb, ja}}

	// Keys: each page gets the other's key over Olm to-device, under the
	// other's LiveKit identity.
	for _, p := range pages {
		st := p.page.WaitKey(t, keyTimeout, p.other.Identity(), func(*jsclient.KeyRing) bool { return true })
		require.True(t, st.E2EE.Enabled, "%s: livekit-client E2EE is on", p.name)
		require.Equal(t, p.page.Identity(), st.LiveKit.Identity, "%s: LiveKit identity is @user:server:DEVICE", p.name)
		var overOlm bool
		for _, k := range st.E2EE.KeysReceived {
			overOlm = overOlm || (k.Sender == p.other.UserID() && k.DeviceID == p.other.DeviceID())
		}
		require.True(t, overOlm, "%s: the key of %s came as an io.element.call.encryption_keys to-device event:\n%s",
			p.name, p.other.Identity(), jsclient.RTCSummary(st))
		idx, sent := st.KeySentTo(p.other.Identity())
		require.True(t, sent, "%s sent its key to %s", p.name, p.other.Identity())
		t.Logf("%s: key of %s %+v; sent index %d to it; times %v", p.name, p.other.Identity(), *st.Key(p.other.Identity()), idx, st.Times)
	}

	// Media: each page decodes the other's video and audio (1 s of samples
	// at 48 kHz), and nothing failed to decrypt.
	for _, p := range pages {
		got, st := p.page.WaitDecoding(t, decodeTimeout, p.other.Identity(), 30, 48000)
		t.Logf("%s decoded from %s: %+v", p.name, p.other.Identity(), got)
		remote := st.Remote(p.other.Identity())
		require.True(t, remote.Encrypted, "%s: %s publishes encrypted", p.name, p.other.Identity())
		for _, src := range []string{jsclient.SourceCamera, jsclient.SourceMicrophone} {
			tr := remote.Track(src)
			require.NotNil(t, tr, "%s: %s's %s track", p.name, p.other.Identity(), src)
			require.True(t, tr.Encrypted, "%s: %s's %s track is encrypted", p.name, p.other.Identity(), src)
		}
		require.Empty(t, st.ErrorsAbout(p.other.Identity()), "%s: encryption errors:\n%s", p.name, jsclient.RTCSummary(st))
	}

	// A leave makes the remaining member rotate its key.
	st, err := ja.RTCState(ctx)
	require.NoError(t, err)
	before := st.OwnKeyIndex()
	require.GreaterOrEqual(t, before, 0, "alice uses a key")
	leaveAt := time.Now()
	require.NoError(t, jb.Leave(ctx))
	after := ja.WaitOwnKeyRotation(t, keyTimeout, before)
	t.Logf("alice rotated her key from index %d to %d %s after bob's leave", before, after, time.Since(leaveAt).Round(time.Millisecond))
	require.Equal(t, (before+1)%256, after, "the rotated key has the next index")
	st, err = ja.RTCState(ctx)
	require.NoError(t, err)
	require.Empty(t, st.ErrorsAbout(jb.Identity()), "alice: encryption errors:\n%s", jsclient.RTCSummary(st))
}
