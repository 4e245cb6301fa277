package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	mautrixas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/e2ee"
	"github.com/matrix-recorder/recorder/internal/testutil"
)

type memTxns struct {
	lock sync.Mutex
	done map[string]bool
}

func (m *memTxns) IsProcessed(_ context.Context, txnID string) (bool, error) {
	m.lock.Lock()
	defer m.lock.Unlock()
	return m.done[txnID], nil
}

func (m *memTxns) MarkProcessed(_ context.Context, txnID string) error {
	m.lock.Lock()
	defer m.lock.Unlock()
	m.done[txnID] = true
	return nil
}

func testConfig() Config {
	def := config.Default()
	cfg := Config{Homeserver: def.Homeserver, Appservice: def.Appservice, CommandPrefix: def.Commands.Prefix}
	cfg.Homeserver.Address = "http://127.0.0.1:1"
	cfg.Homeserver.Domain = "localhost"
	cfg.Appservice.Address = "http://127.0.0.1:2"
	cfg.Appservice.ASToken = "as-token"
	cfg.Appservice.HSToken = "hs-token"
	cfg.Permissions = config.Permissions{"*": config.PermissionUser}
	return cfg
}

// newServiceAt builds a service (nothing started) whose homeserver is a
// test server at url.
func newServiceAt(t *testing.T, url string) (*Service, context.Context) {
	t.Helper()
	cfg := testConfig()
	cfg.Homeserver.Address = url
	s, err := New(Options{Config: cfg, Version: "test"})
	require.NoError(t, err)
	return s, zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
}

// newTestService starts only the event loops: no listener, no homeserver.
func newTestService(t *testing.T, txns TxnStore) *Service {
	t.Helper()
	s, err := New(Options{Config: testConfig(), Txns: txns, Version: "test"})
	require.NoError(t, err)
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	s.startLoops(ctx)
	close(s.botReady) // no bot device in unit tests
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(stopCtx))
	})
	return s
}

func putTxn(t *testing.T, h http.Handler, txnID, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

const txnBody = `{"events":[{"type":"org.example.test","room_id":"!r:localhost","event_id":"$1","sender":"@a:localhost","origin_server_ts":1,"content":{"n":1}}]}`

func TestTransactionGuard(t *testing.T) {
	txns := &memTxns{done: map[string]bool{}}
	s := newTestService(t, txns)
	got := make(chan id.EventID, 10)
	s.On(event.Type{Type: "org.example.test", Class: event.MessageEventType}, func(_ context.Context, evt *event.Event) {
		got <- evt.ID
	})
	h := s.Handler()

	t.Run("missing token is 401", func(t *testing.T) {
		rec := putTxn(t, h, "t0", "", txnBody)
		require.Equal(t, http.StatusUnauthorized, rec.Code)
	})
	t.Run("wrong token is 403", func(t *testing.T) {
		rec := putTxn(t, h, "t0", "wrong", txnBody)
		require.Equal(t, http.StatusForbidden, rec.Code)
		require.Contains(t, rec.Body.String(), "M_FORBIDDEN")
	})
	t.Run("malformed body is 400", func(t *testing.T) {
		rec := putTxn(t, h, "bad", "hs-token", `{"events": [`)
		require.Equal(t, http.StatusBadRequest, rec.Code)
		require.Contains(t, rec.Body.String(), "M_NOT_JSON")
		rec = putTxn(t, h, "bad2", "hs-token", `{"events": {"not": "a list"}}`)
		require.Equal(t, http.StatusBadRequest, rec.Code)
	})
	t.Run("same transaction twice is processed once", func(t *testing.T) {
		require.Equal(t, http.StatusOK, putTxn(t, h, "t1", "hs-token", txnBody).Code)
		require.Equal(t, http.StatusOK, putTxn(t, h, "t1", "hs-token", txnBody).Code)
		select {
		case evtID := <-got:
			require.Equal(t, id.EventID("$1"), evtID)
		case <-time.After(5 * time.Second):
			t.Fatal("event was not handled")
		}
		// A later transaction still gets through, and the duplicate did not.
		require.Equal(t, http.StatusOK, putTxn(t, h, "t2", "hs-token", strings.ReplaceAll(txnBody, "$1", "$2")).Code)
		select {
		case evtID := <-got:
			require.Equal(t, id.EventID("$2"), evtID, "duplicate transaction was handled again")
		case <-time.After(5 * time.Second):
			t.Fatal("event was not handled")
		}
	})
	t.Run("processed ids survive a restart", func(t *testing.T) {
		s2 := newTestService(t, txns)
		require.Equal(t, http.StatusOK, putTxn(t, s2.Handler(), "t1", "hs-token", txnBody).Code)
		require.True(t, s2.AS.Registration.EphemeralEvents)
	})
}

func TestRoomOrder(t *testing.T) {
	s := newTestService(t, &memTxns{done: map[string]bool{}})
	var lock sync.Mutex
	order := map[id.RoomID][]int{}
	done := make(chan struct{}, 1000)
	s.On(event.Type{Type: "org.example.test", Class: event.MessageEventType}, func(_ context.Context, evt *event.Event) {
		lock.Lock()
		order[evt.RoomID] = append(order[evt.RoomID], int(evt.Content.Raw["n"].(float64)))
		lock.Unlock()
		done <- struct{}{}
	})
	const perRoom = 50
	for i := 0; i < perRoom; i++ {
		for _, room := range []id.RoomID{"!a:localhost", "!b:localhost"} {
			s.AS.Events <- &event.Event{
				Type: event.Type{Type: "org.example.test", Class: event.MessageEventType}, RoomID: room,
				ID: id.EventID("$x"), Sender: "@a:localhost", Content: event.Content{Raw: map[string]any{"n": float64(i)}},
			}
		}
	}
	for i := 0; i < 2*perRoom; i++ {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("events were not handled")
		}
	}
	lock.Lock()
	defer lock.Unlock()
	for room, seq := range order {
		require.Len(t, seq, perRoom, room)
		for i, n := range seq {
			require.Equal(t, i, n, "room %s out of order", room)
		}
	}
}

func TestCommandText(t *testing.T) {
	s, err := New(Options{Config: testConfig(), Version: "test"})
	require.NoError(t, err)
	ctx := context.Background()
	mention := &event.Mentions{UserIDs: []id.UserID{"@recorder:localhost"}}
	tests := []struct {
		name   string
		body   string
		ments  *event.Mentions
		want   string
		wantOK bool
	}{
		{"prefix", "!rec help", nil, "help", true},
		{"prefix upper", "!REC start now", nil, "start now", true},
		{"bare prefix", "!rec", nil, "", true},
		{"prefix glued", "!recstart", nil, "", false},
		{"plain text", "hello there", nil, "", false},
		{"mention by mxid", "@recorder:localhost: status", mention, "status", true},
		{"mention by display name", "Call recorder: help", mention, "help", true},
		{"mention with prefix", "recorder !rec stop", mention, "stop", true},
		{"mention of someone else", "bob: help", &event.Mentions{UserIDs: []id.UserID{"@bob:localhost"}}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.commandText(ctx, "!room:localhost", &event.MessageEventContent{MsgType: event.MsgText, Body: tt.body, Mentions: tt.ments})
			require.Equal(t, tt.wantOK, ok)
			if ok {
				require.Equal(t, tt.want, got)
			}
		})
	}
}

func TestDirectChatNeedsNoPrefix(t *testing.T) {
	s, err := New(Options{Config: testConfig(), Version: "test"})
	require.NoError(t, err)
	ctx := context.Background()
	room := id.RoomID("!dm:localhost")
	require.NoError(t, s.AS.StateStore.SetMembership(ctx, room, "@recorder:localhost", event.MembershipJoin))
	require.NoError(t, s.AS.StateStore.SetMembership(ctx, room, "@alice:localhost", event.MembershipJoin))
	got, ok := s.commandText(ctx, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "help"})
	require.True(t, ok)
	require.Equal(t, "help", got)
	require.NoError(t, s.AS.StateStore.SetMembership(ctx, room, "@bob:localhost", event.MembershipJoin))
	_, ok = s.commandText(ctx, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "help"})
	require.False(t, ok, "a room of three is not a direct chat")
}

func TestRegistration(t *testing.T) {
	cfg := testConfig()
	reg := GenerateRegistration(cfg.Homeserver, cfg.Appservice)
	require.Len(t, reg.AppToken, 64)
	require.Len(t, reg.ServerToken, 64)
	require.NotEqual(t, reg.AppToken, reg.ServerToken)
	require.Len(t, reg.SenderLocalpart, 32)
	require.NotNil(t, reg.RateLimited)
	require.False(t, *reg.RateLimited)
	require.True(t, reg.EphemeralEvents)
	require.True(t, reg.SoruEphemeralEvents)
	require.Equal(t, "http://127.0.0.1:2", reg.URL)
	for _, user := range []string{"@recorder:localhost", "@recorder_1:localhost", "@recorder_abc:localhost"} {
		require.True(t, matchesAny(reg.Namespaces.UserIDs, user), user)
	}
	for _, user := range []string{"@alice:localhost", "@recorder:other", "@recorderx:localhost"} {
		require.False(t, matchesAny(reg.Namespaces.UserIDs, user), user)
	}
	for _, ns := range reg.Namespaces.UserIDs {
		require.True(t, ns.Exclusive)
	}
}

func matchesAny(list mautrixas.NamespaceList, user string) bool {
	for _, ns := range list {
		if regexp.MustCompile(ns.Regex).MatchString(user) {
			return true
		}
	}
	return false
}

// plainCrypto passes plaintext events through, as e2ee.Device does for
// non-crypto types.
type plainCrypto struct{ closed bool }

func (pc *plainCrypto) HandleSync(_ context.Context, evts []*event.Event, _ *mautrix.DeviceLists, _ *mautrix.OTKCount) []e2ee.Received {
	out := make([]e2ee.Received, 0, len(evts))
	for _, evt := range evts {
		out = append(out, e2ee.Received{Type: evt.Type, Content: evt.Content.VeryRaw, Sender: evt.Sender})
	}
	return out
}

func (pc *plainCrypto) Send(context.Context, event.Type, map[id.UserID]map[id.DeviceID]json.RawMessage, bool) error {
	return nil
}

func (pc *plainCrypto) Close() error { pc.closed = true; return nil }

func TestTransactionToDeviceRoutedAndDeduplicated(t *testing.T) {
	s := newTestService(t, &memTxns{done: map[string]bool{}})
	got := make(chan e2ee.Received, 10)
	cli := &mautrix.Client{UserID: "@recorder_1:localhost", DeviceID: "RECDEV"}
	cr := &plainCrypto{}
	dev := newDevice(cli, cr, deviceOptions{handler: func(_ context.Context, received []e2ee.Received) {
		for _, rcv := range received {
			got <- rcv
		}
	}})
	s.Users.users[cli.UserID] = &VirtualUser{Device: dev}
	h := s.Handler()
	toDevice := func(callID, toDevice string) string {
		return `{"events":[],"de.sorunome.msc2409.to_device":[{"type":"m.call.invite","sender":"@alice:localhost",` +
			`"to_user_id":"@recorder_1:localhost","to_device_id":"` + toDevice + `","content":{"call_id":"` + callID + `"}}]}`
	}
	require.Equal(t, http.StatusOK, putTxn(t, h, "d1", "hs-token", toDevice("c1", "RECDEV")).Code)
	// The same event again (e.g. also seen by /sync): delivered once.
	require.Equal(t, http.StatusOK, putTxn(t, h, "d2", "hs-token", toDevice("c1", "RECDEV")).Code)
	// For a device we do not run: dropped.
	require.Equal(t, http.StatusOK, putTxn(t, h, "d3", "hs-token", toDevice("c2", "OTHERDEV")).Code)
	require.Equal(t, http.StatusOK, putTxn(t, h, "d4", "hs-token", toDevice("c3", "RECDEV")).Code)
	for _, want := range []string{"c1", "c3"} {
		select {
		case rcv := <-got:
			var content struct {
				CallID string `json:"call_id"`
			}
			require.NoError(t, json.Unmarshal(rcv.Content, &content))
			require.Equal(t, want, content.CallID)
			require.Equal(t, id.UserID("@alice:localhost"), rcv.Sender)
		case <-time.After(5 * time.Second):
			t.Fatalf("to-device event %s not delivered", want)
		}
	}
	select {
	case rcv := <-got:
		t.Fatalf("unexpected delivery of %s", rcv.Content)
	default:
	}
}

// TestCommandWithoutPowerLevelsFailsClosed: a command that needs a room
// power level, in a room whose power levels the recorder has not seen, is
// refused with a reply instead of panicking on the missing levels.
func TestCommandWithoutPowerLevelsFailsClosed(t *testing.T) {
	var lock sync.Mutex
	var notices []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/send/m.room.message/") {
			var content event.MessageEventContent
			_ = json.NewDecoder(r.Body).Decode(&content)
			lock.Lock()
			notices = append(notices, content.Body)
			lock.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"event_id":"$reply","room_id":"!nopl:localhost"}`))
	}))
	defer hs.Close()
	s, ctx := newServiceAt(t, hs.URL)
	room := id.RoomID("!nopl:localhost")
	require.NoError(t, s.AS.StateStore.SetMembership(ctx, room, s.Bot.UserID, event.MembershipJoin))
	ran := false
	level := event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
	s.RegisterCommand(&Command{Name: "guarded", RequiresEventLevel: &level, Func: func(context.Context, *CommandEvent) { ran = true }})
	evt := &event.Event{
		Type: event.EventMessage, RoomID: room, ID: "$cmd", Sender: "@alice:localhost",
		Content: event.Content{Parsed: &event.MessageEventContent{MsgType: event.MsgText, Body: "!rec guarded"}},
	}
	require.NotPanics(t, func() { s.handleMessage(ctx, evt) })
	require.False(t, ran, "fails closed")
	lock.Lock()
	defer lock.Unlock()
	require.Len(t, notices, 1)
	require.Contains(t, notices[0], "power level")
}

// TestHSTokenOnlyInHeader: the hs_token in the query string ends up in
// proxy and access logs; it is accepted there only when configured for a
// homeserver that sends nothing else.
func TestHSTokenOnlyInHeader(t *testing.T) {
	putQuery := func(h http.Handler, txnID string) int {
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/"+txnID+"?access_token=hs-token", strings.NewReader(txnBody))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	s := newTestService(t, &memTxns{done: map[string]bool{}})
	require.Equal(t, http.StatusUnauthorized, putQuery(s.Handler(), "q1"))
	require.Equal(t, http.StatusOK, putTxn(t, s.Handler(), "h1", "hs-token", txnBody).Code)
}

func TestHSTokenInQueryWhenConfigured(t *testing.T) {
	cfg := testConfig()
	cfg.Appservice.QueryTokenAuth = true
	s, err := New(Options{Config: cfg, Txns: &memTxns{done: map[string]bool{}}, Version: "test"})
	require.NoError(t, err)
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	s.startLoops(ctx)
	close(s.botReady) // no bot device in unit tests
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(stopCtx))
	})
	req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/q1?access_token=hs-token", strings.NewReader(txnBody))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
}

// TestRoomsAreIsolated: a room whose handler is stuck (or that floods the
// recorder) neither blocks other rooms nor holds memory without bound, and
// rooms that went quiet keep no goroutine.
func TestRoomsAreIsolated(t *testing.T) {
	s := newTestService(t, &memTxns{done: map[string]bool{}})
	evtType := event.Type{Type: "org.example.test", Class: event.MessageEventType}
	stuck := make(chan struct{})
	handled := make(chan id.RoomID, 4*roomQueueSize)
	s.On(evtType, func(_ context.Context, evt *event.Event) {
		if evt.RoomID == "!stuck:localhost" {
			<-stuck
		}
		handled <- evt.RoomID
	})
	base := runtime.NumGoroutine()
	for range 3 * roomQueueSize {
		s.AS.Events <- &event.Event{Type: evtType, RoomID: "!stuck:localhost", ID: "$x", Sender: "@a:localhost", Content: event.Content{Raw: map[string]any{}}}
	}
	s.AS.Events <- &event.Event{Type: evtType, RoomID: "!other:localhost", ID: "$y", Sender: "@a:localhost", Content: event.Content{Raw: map[string]any{}}}
	select {
	case room := <-handled:
		require.Equal(t, id.RoomID("!other:localhost"), room)
	case <-time.After(5 * time.Second):
		t.Fatal("a stuck room blocked the others")
	}
	s.queuesLock.Lock()
	backlog := len(s.queues["!stuck:localhost"].items)
	s.queuesLock.Unlock()
	require.LessOrEqual(t, backlog, roomQueueSize, "a room's backlog is bounded")
	close(stuck)
	require.Eventually(t, func() bool {
		s.queuesLock.Lock()
		defer s.queuesLock.Unlock()
		return len(s.queues) == 0
	}, 5*time.Second, 10*time.Millisecond, "quiet rooms keep no queue")
	// Not require.Eventually: its own goroutine would count.
	testutil.WaitUntil(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= base }, func() string {
		return fmt.Sprintf("quiet rooms keep no goroutine: %d, was %d\n%s", runtime.NumGoroutine(), base, goroutines())
	})
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestVirtualUserInvitedBeforeJoin: a virtual user not yet in an
// invite-only room is invited by the bot before it joins; a join refused
// first (and retried after the invite) costs every call's join a round
// trip. A user already joined sends nothing.
func TestVirtualUserInvitedBeforeJoin(t *testing.T) {
	var lock sync.Mutex
	var calls []string
	invited := false
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lock.Lock()
		defer lock.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/invite"):
			calls = append(calls, "invite")
			invited = true
			_, _ = w.Write([]byte(`{}`))
		case strings.HasSuffix(r.URL.Path, "/join"):
			calls = append(calls, "join")
			if !invited {
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"not invited"}`))
				return
			}
			_, _ = w.Write([]byte(`{"room_id":"!private:localhost"}`))
		default:
			calls = append(calls, r.URL.Path)
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	defer hs.Close()
	s, ctx := newServiceAt(t, hs.URL)
	room := id.RoomID("!private:localhost")
	userID := s.Users.UserID("1")
	require.NoError(t, s.AS.StateStore.MarkRegistered(ctx, userID))
	vu := &VirtualUser{intent: s.AS.Intent(userID), bot: s.Bot, states: s.AS.StateStore, joins: &s.Users.joins}

	require.NoError(t, vu.JoinRoom(ctx, room))
	lock.Lock()
	require.Equal(t, []string{"invite", "join"}, calls, "invited first, joined once")
	calls = nil
	lock.Unlock()
	require.True(t, s.AS.StateStore.IsInRoom(ctx, room, userID))
	// The bot's invite then reaches the appservice: the user joined by
	// itself, so the invite handler does not join again. Another room's
	// invite it accepts.
	s.handleVirtualUserInvite(ctx, &event.Event{Type: event.StateMember, RoomID: room, Sender: s.Bot.UserID}, userID)
	lock.Lock()
	require.Empty(t, calls, "no second join")
	lock.Unlock()
	s.handleVirtualUserInvite(ctx, &event.Event{Type: event.StateMember, RoomID: "!other:localhost", Sender: s.Bot.UserID}, userID)
	lock.Lock()
	require.Equal(t, []string{"join"}, calls, "an invite nobody follows up is accepted")
	calls = nil
	lock.Unlock()

	require.NoError(t, vu.JoinRoom(ctx, room))
	lock.Lock()
	defer lock.Unlock()
	require.Empty(t, calls, "a joined user asks nothing")
}
