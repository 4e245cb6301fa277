//go:build integration

package simpeer_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/transport/v5/test"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal driver
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

const (
	waitFor  = 20 * time.Second
	pollStep = 50 * time.Millisecond
	// minPackets of each kind must flow before a call counts as carrying media.
	minPackets = 10
)

var mediaDir = filepath.Join("..", "..", "..", "testdata", "media")

// world is one Dendrite with one call room whose power levels let everyone
// send call events.
type world struct {
	hs   *homeserver.Server
	room id.RoomID
	db   *dbutil.Database
	ctx  context.Context
}

func newWorld(t *testing.T) *world {
	t.Helper()
	lim := test.TimeOut(90 * time.Second)
	t.Cleanup(func() { lim.Stop() })
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	ctx, cancel := context.WithTimeout(log.WithContext(context.Background()), 80*time.Second)
	t.Cleanup(cancel)
	w := &world{hs: homeserver.Start(t, homeserver.Options{}), ctx: ctx}
	admin := w.hs.RegisterUser(ctx, t, "admin")
	w.room = w.hs.CreateRoom(ctx, t, admin, homeserver.RoomOptions{Name: "call", Preset: "public_chat", CallPowerLevelsZero: true})
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "crypto.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	w.db = db
	return w
}

// peer registers localpart, joins the room and starts a participant
// (stopped, and checked for leaked goroutines, when the test ends).
func (w *world) peer(t *testing.T, localpart string, mod func(*simpeer.Config)) *simpeer.Participant {
	t.Helper()
	cli := w.hs.RegisterUser(w.ctx, t, localpart)
	_, err := cli.JoinRoomByID(w.ctx, w.room)
	require.NoError(t, err)
	cfg := simpeer.Config{Client: cli, RoomID: w.room, MediaDir: mediaDir, Video: true, CryptoDB: w.db, PickleKey: []byte("pickle")}
	if mod != nil {
		mod(&cfg)
	}
	p, err := simpeer.New(w.ctx, cfg)
	require.NoError(t, err)
	p.Start(w.ctx)
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(stopCtx)
	})
	return p
}

// requireNoMediaGoroutines is the cheap leak check: after every participant
// stopped, no simpeer or pion goroutine may remain.
func requireNoMediaGoroutines(t *testing.T, ps ...*simpeer.Participant) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range ps {
		require.NoError(t, p.Stop(ctx))
	}
	var leaked []string
	require.Eventually(t, func() bool {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "internal/testutil/simpeer.") || strings.Contains(g, "github.com/pion/") {
				leaked = append(leaked, g)
			}
		}
		return len(leaked) == 0
	}, 10*time.Second, pollStep, "leaked goroutines: %v", leaked)
}

func connected(t *testing.T, p *simpeer.Participant, remote signaling.DeviceKey, video bool) simpeer.CallInfo {
	t.Helper()
	var c simpeer.CallInfo
	require.Eventually(t, func() bool {
		var ok bool
		c, ok = p.Snapshot().Current(remote)
		return ok && c.State == simpeer.StateConnected &&
			c.Packets(webrtc.RTPCodecTypeAudio) >= minPackets &&
			(!video || c.Packets(webrtc.RTPCodecTypeVideo) >= minPackets)
	}, waitFor, pollStep, "%s: no connected call with media from %s; last: %+v", p.Key(), remote, c)
	return c
}

func TestCallBothWays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		encrypt bool
	}{{"plaintext", false}, {"olm", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			enc := func(c *simpeer.Config) { c.Encrypt = tc.encrypt }
			alice := w.peer(t, "alice", func(c *simpeer.Config) { enc(c); c.CreateCall = true })
			require.NoError(t, alice.Join(w.ctx))
			bob := w.peer(t, "bob", enc)
			require.NoError(t, bob.Join(w.ctx))
			require.Equal(t, alice.Snapshot().ConfID, bob.Snapshot().ConfID, "bob adopts alice's call")

			// alice < bob: alice places the call, bob answers.
			ac := connected(t, alice, bob.Key(), true)
			bc := connected(t, bob, alice.Key(), true)
			require.True(t, ac.Outbound)
			require.False(t, bc.Outbound)
			require.Equal(t, ac.CallID, bc.CallID)
			require.Equal(t, bob.Snapshot().SessionID, ac.RemoteSession)
			require.Equal(t, alice.Snapshot().SessionID, bc.RemoteSession)
			require.Len(t, alice.Snapshot().With(bob.Key()), 1, "exactly one call")
			require.Len(t, bc.TracksWith(signaling.PurposeUserMedia), 2)
			for _, tr := range bc.Tracks {
				require.Contains(t, []string{webrtc.MimeTypeOpus, webrtc.MimeTypeVP8}, tr.MimeType)
			}

			rcv := alice.Snapshot().Received
			if tc.encrypt {
				require.Positive(t, rcv.Encrypted)
				require.Zero(t, rcv.Plaintext)
			} else {
				require.Zero(t, rcv.Encrypted)
				require.Positive(t, rcv.Plaintext)
			}
			require.Empty(t, alice.Snapshot().Drops)
			require.Empty(t, bob.Snapshot().Drops)
			requireNoMediaGoroutines(t, alice, bob)
		})
	}
}

// TestGlare: both invite at once (InviteAll + held invites released
// together): the lower call id survives on both sides.
func TestGlare(t *testing.T) {
	w := newWorld(t)
	mod := func(c *simpeer.Config) { c.InviteAll, c.HoldInvites, c.Video = true, true, false }
	alice := w.peer(t, "alice", func(c *simpeer.Config) { mod(c); c.CreateCall = true })
	require.NoError(t, alice.Join(w.ctx))
	bob := w.peer(t, "bob", mod)
	require.NoError(t, bob.Join(w.ctx))

	pending := func(p *simpeer.Participant, remote signaling.DeviceKey) signaling.CallID {
		var c simpeer.CallInfo
		require.Eventually(t, func() bool {
			var ok bool
			c, ok = p.Snapshot().Current(remote)
			return ok && c.Outbound && c.State == simpeer.StateCreateOffer
		}, waitFor, pollStep)
		return c.CallID
	}
	aliceCall, bobCall := pending(alice, bob.Key()), pending(bob, alice.Key())
	var wg sync.WaitGroup
	for _, p := range []*simpeer.Participant{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, p.ReleaseInvites(w.ctx))
		}()
	}
	wg.Wait()

	winner := signaling.GlareWinner(aliceCall, bobCall)
	ac := connected(t, alice, bob.Key(), false)
	bc := connected(t, bob, alice.Key(), false)
	require.Equal(t, winner, ac.CallID)
	require.Equal(t, winner, bc.CallID)
	// Which side sees the glare depends on timing: if the winning invite
	// arrives before the other side released its own, that side replaces its
	// held call and never sends it. At least one side must have seen it.
	glare := alice.Snapshot().Glare + bob.Snapshot().Glare
	require.GreaterOrEqual(t, glare, 1)
	require.LessOrEqual(t, glare, 2)
	for _, p := range []*simpeer.Participant{alice, bob} {
		live := 0
		for _, c := range p.Snapshot().Calls {
			if !c.Ended() {
				live++
				continue
			}
			require.Equal(t, signaling.ReasonReplaced, c.EndReason, "the losing call was replaced")
		}
		require.Equal(t, 1, live)
	}
	requireNoMediaGoroutines(t, alice, bob)
}

func TestScreenshareAndMute(t *testing.T) {
	w := newWorld(t)
	alice := w.peer(t, "alice", func(c *simpeer.Config) { c.CreateCall = true })
	require.NoError(t, alice.Join(w.ctx))
	bob := w.peer(t, "bob", func(c *simpeer.Config) { c.UnstableMetadataEvent = true })
	require.NoError(t, bob.Join(w.ctx))
	connected(t, alice, bob.Key(), true)
	connected(t, bob, alice.Key(), true)

	// Screen share from the callee (polite side) by renegotiation.
	require.NoError(t, bob.ShareScreen(w.ctx, true))
	var ac simpeer.CallInfo
	require.Eventually(t, func() bool {
		ac, _ = alice.Snapshot().Current(bob.Key())
		ss := ac.TracksWith(signaling.PurposeScreenshare)
		return len(ss) == 1 && ss[0].Packets >= minPackets && ss[0].Kind == webrtc.RTPCodecTypeVideo
	}, waitFor, pollStep, "no screen share track at alice: %+v", ac)
	require.Equal(t, 1, ac.Negotiations)
	bc, _ := bob.Snapshot().Current(alice.Key())
	require.Equal(t, 1, bc.Negotiations)
	require.Equal(t, ac.CallID, bc.CallID, "renegotiated, not re-called")

	// Mute: metadata reaches alice with a time; bob's sources stop.
	before := time.Now()
	require.NoError(t, bob.SetMuted(w.ctx, true, true))
	var muteAt time.Time
	require.Eventually(t, func() bool {
		ac, _ = alice.Snapshot().Current(bob.Key())
		for _, ch := range ac.MetadataChanges {
			for _, info := range ch.Metadata {
				if info.Purpose == signaling.PurposeUserMedia && info.AudioMuted && info.VideoMuted {
					require.Equal(t, signaling.EventMetadataChangedUnstable.Type, ch.EventType)
					muteAt = ch.At
					return true
				}
			}
		}
		return false
	}, waitFor, pollStep)
	require.False(t, muteAt.Before(before))
	sent := bob.Snapshot().SentPackets
	require.Never(t, func() bool {
		now := bob.Snapshot().SentPackets
		return now["audio"] > sent["audio"]+2 || now["video"] > sent["video"]+10
	}, 400*time.Millisecond, pollStep, "muted sources keep sending")

	require.NoError(t, bob.SetMuted(w.ctx, false, false))
	require.Eventually(t, func() bool {
		ac, _ = alice.Snapshot().Current(bob.Key())
		last := ac.MetadataChanges[len(ac.MetadataChanges)-1]
		for _, info := range last.Metadata {
			if info.Purpose == signaling.PurposeUserMedia && !info.AudioMuted && !info.VideoMuted {
				return last.At.After(muteAt)
			}
		}
		return false
	}, waitFor, pollStep)
	audio := ac.Packets(webrtc.RTPCodecTypeAudio)
	require.Eventually(t, func() bool {
		c, _ := alice.Snapshot().Current(bob.Key())
		return c.Packets(webrtc.RTPCodecTypeAudio) > audio+minPackets
	}, waitFor, pollStep, "audio resumes after unmute")
	requireNoMediaGoroutines(t, alice, bob)
}

// TestSessionChangeAndLeave: the callee reloads (new session, no hangup):
// the caller hangs up with new_session and calls the new session. Then the
// callee leaves: the caller gets user_hangup and the member entry is gone.
func TestSessionChangeAndLeave(t *testing.T) {
	w := newWorld(t)
	alice := w.peer(t, "alice", func(c *simpeer.Config) { c.CreateCall = true; c.Video = false })
	require.NoError(t, alice.Join(w.ctx))
	bob := w.peer(t, "bob", func(c *simpeer.Config) { c.Video = false })
	require.NoError(t, bob.Join(w.ctx))
	first := connected(t, alice, bob.Key(), false)
	connected(t, bob, alice.Key(), false)

	oldSession := bob.Snapshot().SessionID
	require.NoError(t, bob.NewSession(w.ctx, false))
	newSession := bob.Snapshot().SessionID
	require.NotEqual(t, oldSession, newSession)
	var second simpeer.CallInfo
	require.Eventually(t, func() bool {
		var ok bool
		second, ok = alice.Snapshot().Current(bob.Key())
		return ok && second.CallID != first.CallID && second.RemoteSession == newSession && second.State == simpeer.StateConnected
	}, waitFor, pollStep)
	old, ok := alice.Snapshot().Call(first.CallID)
	require.True(t, ok)
	require.Equal(t, signaling.ReasonNewSession, old.EndReason)
	require.False(t, old.EndedByRemote)
	connected(t, bob, alice.Key(), false)

	require.NoError(t, bob.Leave(w.ctx))
	require.Eventually(t, func() bool {
		c, _ := alice.Snapshot().Call(second.CallID)
		return c.Ended() && c.EndedByRemote && c.EndReason == signaling.ReasonUserHangup
	}, waitFor, pollStep)
	require.False(t, bob.Snapshot().Joined)
	var member json.RawMessage
	require.NoError(t, alice.Client().StateEvent(w.ctx, w.room, signaling.StateCallMember, bob.UserID().String(), &member))
	mc, err := signaling.ParseMember(member)
	require.NoError(t, err)
	_, inCall := mc.Call(alice.Snapshot().ConfID)
	require.False(t, inCall, "bob's member entry is gone: %s", member)
	// alice does not call bob again.
	require.Never(t, func() bool {
		_, ok := alice.Snapshot().Current(bob.Key())
		return ok
	}, time.Second, pollStep)
	requireNoMediaGoroutines(t, alice, bob)
}

// TestMisbehaviour: a participant claiming another device_id over Olm is
// dropped by the receiver, and so is an encrypted sender outside the call.
func TestMisbehaviour(t *testing.T) {
	w := newWorld(t)
	alice := w.peer(t, "alice", func(c *simpeer.Config) { c.CreateCall = true; c.Encrypt = true; c.Video = false })
	require.NoError(t, alice.Join(w.ctx))
	mallory := w.peer(t, "mallory", func(c *simpeer.Config) {
		c.Encrypt, c.Video, c.InviteAll, c.ClaimDeviceID = true, false, true, "NOTMINE"
	})
	require.NoError(t, mallory.Join(w.ctx))
	require.Eventually(t, func() bool {
		for _, d := range alice.Snapshot().Drops {
			if d.Sender.UserID == mallory.UserID() && strings.Contains(d.Reason, "olm sender device") {
				return true
			}
		}
		return false
	}, waitFor, pollStep, "alice drops mallory's messages: %+v", alice.Snapshot().Drops)
	_, ok := alice.Snapshot().Current(signaling.DeviceKey{UserID: mallory.UserID(), DeviceID: "NOTMINE"})
	require.False(t, ok)

	// A member of the room but not of the call invites alice: js-sdk (and
	// the simulator) answers such calls.
	eve := w.peer(t, "eve", func(c *simpeer.Config) { c.Encrypt, c.Video, c.InviteAll, c.SkipMemberEvent = true, false, true, true })
	require.NoError(t, eve.Join(w.ctx))
	connected(t, alice, eve.Key(), false)
	connected(t, eve, alice.Key(), false)
	requireNoMediaGoroutines(t, alice, mallory, eve)
}
