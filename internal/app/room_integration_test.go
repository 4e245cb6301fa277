//go:build integration

package app_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
)

// cryptoUser is a Matrix user whose client syncs with mautrix's crypto
// helper: it encrypts what it sends to encrypted rooms and decrypts what it
// receives.
type cryptoUser struct {
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper

	lock     sync.Mutex
	messages []*event.Event // decrypted m.room.message events, in order
}

func newCryptoUser(t *testing.T, s *stack.Stack, localpart string) *cryptoUser {
	t.Helper()
	ctx := s.Ctx()
	cli := s.HS.RegisterUser(ctx, t, localpart)
	cli.StateStore = mautrix.NewMemoryStateStore()
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("pickle-"+localpart), filepath.Join(t.TempDir(), localpart+"-crypto.db"))
	require.NoError(t, err)
	helper.DBAccountID = string(cli.UserID)
	require.NoError(t, helper.Init(ctx))
	cli.Crypto = helper
	u := &cryptoUser{cli: cli, helper: helper}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnEventType(event.EventMessage, func(ctx context.Context, evt *event.Event) {
		u.lock.Lock()
		defer u.lock.Unlock()
		u.messages = append(u.messages, evt)
	})
	syncer.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
		// Accept every invite, as a user would.
		if evt.GetStateKey() == string(cli.UserID) && evt.Content.AsMember().Membership == event.MembershipInvite {
			_, _ = cli.JoinRoomByID(ctx, evt.RoomID)
		}
	})
	syncCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cli.SyncWithContext(syncCtx)
	}()
	t.Cleanup(func() {
		cancel()
		cli.StopSync()
		<-done
		_ = helper.Close()
	})
	return u
}

// waitReply waits for a decrypted notice from sender replying to replyTo
// (any notice when replyTo is empty) containing want.
func (u *cryptoUser) waitReply(t *testing.T, sender id.UserID, replyTo id.EventID, want string) *event.Event {
	t.Helper()
	var found *event.Event
	require.Eventually(t, func() bool {
		u.lock.Lock()
		defer u.lock.Unlock()
		for _, evt := range u.messages {
			msg := evt.Content.AsMessage()
			if evt.Sender != sender || msg.MsgType != event.MsgNotice || !strings.Contains(msg.Body, want) {
				continue
			}
			if replyTo != "" && msg.RelatesTo.GetReplyTo() != replyTo {
				continue
			}
			found = evt
			return true
		}
		return false
	}, stack.Deadline, 50*time.Millisecond, "no decrypted notice from %s containing %q", sender, want)
	return found
}

// repliesTo lists the bodies of sender's messages replying to evtID.
func (u *cryptoUser) repliesTo(sender id.UserID, evtID id.EventID) []string {
	u.lock.Lock()
	defer u.lock.Unlock()
	var out []string
	for _, evt := range u.messages {
		if msg := evt.Content.AsMessage(); evt.Sender == sender && msg.RelatesTo.GetReplyTo() == evtID {
			out = append(out, msg.Body)
		}
	}
	return out
}

func (u *cryptoUser) send(t *testing.T, ctx context.Context, roomID id.RoomID, content *event.MessageEventContent) id.EventID {
	t.Helper()
	resp, err := u.cli.SendMessageEvent(ctx, roomID, event.EventMessage, content)
	require.NoError(t, err)
	return resp.EventID
}

// TestEncryptedRoomCommands: in a Megolm room the bot decrypts commands and
// answers with encrypted notices the users' clients decrypt; a message it
// cannot decrypt is not answered; notices are never answered.
func TestEncryptedRoomCommands(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	alice := newCryptoUser(t, s, "alice")
	bob := newCryptoUser(t, s, "bob")

	roomID := s.HS.CreateRoom(ctx, t, alice.cli, homeserver.RoomOptions{
		Name: "Secret", Encrypted: true, CallPowerLevelsZero: true, Invite: []id.UserID{bot, bob.cli.UserID},
	})
	greeting := alice.waitReply(t, bot, "", "help")
	require.True(t, greeting.Mautrix.WasEncrypted, "the greeting was not encrypted")

	evtID := alice.send(t, ctx, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rec help"})
	reply := alice.waitReply(t, bot, evtID, "commands")
	require.True(t, reply.Mautrix.WasEncrypted, "the reply was not encrypted")
	bob.waitReply(t, bot, evtID, "commands")

	// The raw event on the server is m.room.encrypted: nothing in clear.
	raw, err := alice.cli.GetEvent(ctx, roomID, reply.ID)
	require.NoError(t, err)
	require.Equal(t, event.EventEncrypted.Type, raw.Type.Type)

	// A notice is never answered, even an encrypted one.
	noticeID := bob.send(t, ctx, roomID, &event.MessageEventContent{MsgType: event.MsgNotice, Body: "!rec help"})
	// A message encrypted with a session the bot never gets is logged, not answered.
	bogus, err := alice.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, map[string]any{
		"algorithm":  id.AlgorithmMegolmV1,
		"sender_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"session_id": "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
		"ciphertext": strings.Repeat("C", 120),
		"device_id":  alice.cli.DeviceID,
	})
	require.NoError(t, err)
	lastID := bob.send(t, ctx, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rec version"})
	bob.waitReply(t, bot, lastID, "recorder")
	// Events of a room are handled in order: both were handled before that reply.
	require.Empty(t, bob.repliesTo(bot, noticeID), "the bot answered a notice")
	require.Empty(t, bob.repliesTo(bot, bogus.EventID), "the bot answered an undecryptable event")

	// Someone who joins later can read the bot's next reply: the bot's
	// Megolm session is rotated on membership changes.
	carol := newCryptoUser(t, s, "carol")
	_, err = alice.cli.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.cli.UserID})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, _ := membershipOf(ctx, alice.cli, roomID, carol.cli.UserID)
		return m == event.MembershipJoin
	}, stack.Deadline, 50*time.Millisecond, "carol did not join")
	carolCmd := carol.send(t, ctx, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rec version"})
	require.True(t, carol.waitReply(t, bot, carolCmd, "recorder").Mautrix.WasEncrypted)
}

// sendWithKeyFor encrypts a command with a new outbound Megolm session of
// the user's, shared only with the given users, and sends it. It returns
// the event ID, the session and the session's key as it was before the
// command (for sharing it later: mautrix shares a session once).
func (u *cryptoUser) sendWithKeyFor(t *testing.T, ctx context.Context, roomID id.RoomID, body string, users ...id.UserID) (id.EventID, id.SessionID, event.Content) {
	t.Helper()
	mach := u.helper.Machine()
	require.NoError(t, mach.CryptoStore.RemoveOutboundGroupSession(ctx, roomID))
	require.NoError(t, mach.ShareGroupSession(ctx, roomID, users))
	sess, err := mach.CryptoStore.GetOutboundGroupSession(ctx, roomID)
	require.NoError(t, err)
	key := sess.ShareContent()
	enc, err := mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	require.NoError(t, err)
	resp, err := u.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	require.NoError(t, err)
	return resp.EventID, enc.SessionID, key
}

// shareKeyLate sends a room key (from sendWithKeyFor) to one device, Olm-encrypted.
func (u *cryptoUser) shareKeyLate(t *testing.T, ctx context.Context, userID id.UserID, deviceID id.DeviceID, key event.Content) {
	t.Helper()
	mach := u.helper.Machine()
	dev, err := mach.GetOrFetchDevice(ctx, userID, deviceID)
	require.NoError(t, err)
	require.NoError(t, mach.SendEncryptedToDevice(ctx, dev, event.ToDeviceRoomKey, key))
}

// botHasKey reports whether the bot's crypto store holds the Megolm session.
func botHasKey(s *stack.Stack, sessionID id.SessionID) bool {
	var n int
	err := s.App.DB.QueryRow(s.Ctx(), `SELECT COUNT(*) FROM crypto_megolm_inbound_session
		WHERE account_id=$1 AND session_id=$2 AND session IS NOT NULL`, string(s.App.AS.BotUserID()), string(sessionID)).Scan(&n)
	return err == nil && n == 1
}

// TestLateRoomKey: a command whose Megolm key reaches the bot late (after a
// refused key request) is answered once the key arrives; one whose key
// arrives after the bounded wait is never answered.
func TestLateRoomKey(t *testing.T) {
	s := stack.Start(t, stack.Options{RoomKeyWait: 10 * time.Second})
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	alice := newCryptoUser(t, s, "alice")
	bob := newCryptoUser(t, s, "bob")
	roomID := s.HS.CreateRoom(ctx, t, alice.cli, homeserver.RoomOptions{
		Name: "Late keys", Encrypted: true, Invite: []id.UserID{bot, bob.cli.UserID},
	})
	alice.waitReply(t, bot, "", "help")
	require.Eventually(t, func() bool {
		members, err := alice.cli.StateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
		return err == nil && len(members) == 3
	}, stack.Deadline, 50*time.Millisecond)
	// handled waits until the bot has handled everything sent before: it
	// handles a room's events in order.
	handled := func() {
		evtID := bob.send(t, ctx, roomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rec version"})
		bob.waitReply(t, bot, evtID, "recorder")
	}

	// The session goes to bob only. The bot asks alice's device for it,
	// which refuses (withheld: the bot was not a recipient); the bot waits
	// on, and alice shares the session with it later.
	late, _, lateKey := alice.sendWithKeyFor(t, ctx, roomID, "!rec list", bob.cli.UserID)
	handled()
	require.Empty(t, alice.repliesTo(bot, late))
	require.Equal(t, 1, s.App.AS.PendingRoomKeys(), "the bot is not waiting for the key")
	alice.shareKeyLate(t, ctx, bot, s.App.AS.BotDeviceID(), lateKey)
	reply := alice.waitReply(t, bot, late, "no recordings")
	require.True(t, reply.Mautrix.WasEncrypted)

	// A new session, again for bob only, whose key reaches the bot after
	// the wait is over: that command stays unanswered.
	tooLate, session, tooLateKey := alice.sendWithKeyFor(t, ctx, roomID, "!rec list", bob.cli.UserID)
	handled()
	require.Eventually(t, func() bool { return s.App.AS.PendingRoomKeys() == 0 }, stack.Deadline, 50*time.Millisecond,
		"the key wait did not end")
	alice.shareKeyLate(t, ctx, bot, s.App.AS.BotDeviceID(), tooLateKey)
	require.Eventually(t, func() bool { return botHasKey(s, session) }, stack.Deadline, 50*time.Millisecond, "the key did not arrive")
	handled()
	require.Empty(t, alice.repliesTo(bot, tooLate), "a command was answered after its key wait was over")
}
