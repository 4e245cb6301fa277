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
	cli *mautrix.Client

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
	u := &cryptoUser{cli: cli}
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
}
