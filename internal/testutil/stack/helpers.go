package stack

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

// Deadline bounds every wait in the integration tests.
const Deadline = 30 * time.Second

// MediaDir is testdata/media at the module root.
func MediaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "media")
}

// CallRoom creates a room whose members may join calls, with the bot in it
// and the given users invited.
func (s *Stack) CallRoom(t *testing.T, creator *mautrix.Client, invite ...id.UserID) id.RoomID {
	t.Helper()
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	roomID := s.HS.CreateRoom(ctx, t, creator, homeserver.RoomOptions{
		Name: "Call", Invite: append([]id.UserID{bot}, invite...), CallPowerLevelsZero: true,
		EventLevels: map[string]int{"org.matrix.recorder.recording": 0},
	})
	require.Eventually(t, func() bool {
		var m event.MemberEventContent
		return creator.StateEvent(ctx, roomID, event.StateMember, string(bot), &m) == nil && m.Membership == event.MembershipJoin
	}, Deadline, 50*time.Millisecond, "bot did not join the room")
	return roomID
}

// Command sends a text message and returns its event ID.
func (s *Stack) Command(t *testing.T, cli *mautrix.Client, roomID id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(s.Ctx(), roomID, text)
	require.NoError(t, err)
	return resp.EventID
}

// WaitReply waits for the bot's reply to evtID and returns its body.
func (s *Stack) WaitReply(t *testing.T, cli *mautrix.Client, roomID id.RoomID, evtID id.EventID) string {
	t.Helper()
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	var body string
	require.Eventually(t, func() bool {
		resp, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			return false
		}
		for _, evt := range resp.Chunk {
			if evt.Sender != bot || evt.Type != event.EventMessage {
				continue
			}
			_ = evt.Content.ParseRaw(evt.Type)
			if msg := evt.Content.AsMessage(); msg.RelatesTo.GetReplyTo() == evtID {
				body = msg.Body
				return true
			}
		}
		return false
	}, Deadline, 50*time.Millisecond, "no reply from the bot")
	return body
}

// SimOptions configure a simulated participant.
type SimOptions struct {
	Encrypt    bool
	CreateCall bool
	Video      bool
	Tweak      func(*simpeer.Config)
}

// Sim joins cli to the room and starts a simulated participant in its call.
func (s *Stack) Sim(t *testing.T, roomID id.RoomID, cli *mautrix.Client, o SimOptions) *simpeer.Participant {
	t.Helper()
	ctx := s.Ctx()
	_, err := cli.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	cfg := simpeer.Config{Client: cli, RoomID: roomID, CreateCall: o.CreateCall, Video: o.Video, MediaDir: MediaDir(),
		SyncTimeout: time.Second}
	if o.Encrypt {
		db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "sim.db")+"?_txlock=immediate", "sqlite3-fk-wal")
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		cfg.Encrypt, cfg.CryptoDB, cfg.PickleKey = true, db, []byte("sim-pickle-key-"+cli.UserID.Localpart())
	}
	if o.Tweak != nil {
		o.Tweak(&cfg)
	}
	p, err := simpeer.New(ctx, cfg)
	require.NoError(t, err)
	p.Start(ctx)
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = p.Stop(stopCtx)
	})
	require.NoError(t, p.Join(ctx)) // with SkipMemberEvent it calls without a member event
	return p
}

// BotKey waits for the recorder to be in the room's call and returns its device.
func (s *Stack) BotKey(t *testing.T, roomID id.RoomID) signaling.DeviceKey {
	t.Helper()
	var st callbot.CallStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = s.App.Calls.Status(s.Ctx(), roomID)
		return err == nil
	}, Deadline, 50*time.Millisecond, "recorder did not join")
	return signaling.DeviceKey{UserID: st.UserID, DeviceID: st.DeviceID}
}

// ConnectedTo reports the participant's live call with the bot, if connected.
func ConnectedTo(p *simpeer.Participant, bot signaling.DeviceKey) (simpeer.CallInfo, bool) {
	c, ok := p.Snapshot().Current(bot)
	return c, ok && c.State == simpeer.StateConnected
}

// WaitNotice waits for a notice from the bot in the room containing want.
func (s *Stack) WaitNotice(t *testing.T, cli *mautrix.Client, roomID id.RoomID, want string) {
	t.Helper()
	ctx := s.Ctx()
	bot := s.App.AS.BotUserID()
	require.Eventually(t, func() bool {
		resp, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			return false
		}
		for _, evt := range resp.Chunk {
			if evt.Sender != bot || evt.Type != event.EventMessage {
				continue
			}
			_ = evt.Content.ParseRaw(evt.Type)
			if msg := evt.Content.AsMessage(); msg.MsgType == event.MsgNotice && strings.Contains(msg.Body, want) {
				return true
			}
		}
		return false
	}, Deadline, 50*time.Millisecond, "no notice from the bot containing %q", want)
}
