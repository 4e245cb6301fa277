package rooms

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
)

type fakeCalls struct {
	lock         sync.Mutex
	joins        int
	participants int
	joinErr      error
	left         []callbot.StopReason
}

func (fc *fakeCalls) Join(context.Context, id.RoomID) (callbot.CallStatus, error) {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	fc.joins++
	return callbot.CallStatus{}, fc.joinErr
}

func (fc *fakeCalls) LeaveFor(_ context.Context, _ id.RoomID, reason callbot.StopReason) error {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	fc.left = append(fc.left, reason)
	return nil
}

func (fc *fakeCalls) Status(context.Context, id.RoomID) (callbot.CallStatus, error) {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	return callbot.CallStatus{Participants: fc.participants}, nil
}

type fakeMatrix struct {
	lock     sync.Mutex
	notices  []string
	handlers map[string]func(ctx context.Context, evt *event.Event)
}

func (fm *fakeMatrix) SendNotice(_ context.Context, _ id.RoomID, markdown string, _ id.EventID) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	fm.notices = append(fm.notices, markdown)
}
func (fm *fakeMatrix) MemberDisplayName(context.Context, id.RoomID, id.UserID) string {
	return "Recorder"
}
func (fm *fakeMatrix) SetMemberDisplayName(context.Context, id.RoomID, id.UserID, string) error {
	return nil
}
func (fm *fakeMatrix) SendStateAs(context.Context, id.RoomID, id.UserID, event.Type, string, any) error {
	return nil
}
func (fm *fakeMatrix) JoinedPeople(context.Context, id.RoomID) ([]id.UserID, error) {
	return []id.UserID{"@alice:test", "@bob:test"}, nil
}
func (fm *fakeMatrix) IsVirtualUser(userID id.UserID) bool { return userID == "@recorder_1:test" }
func (fm *fakeMatrix) On(evtType event.Type, handler func(ctx context.Context, evt *event.Event)) {
	if fm.handlers == nil {
		fm.handlers = map[string]func(ctx context.Context, evt *event.Event){}
	}
	fm.handlers[evtType.Type] = handler
}

type fakeSettings struct {
	auto    bool
	consent map[id.UserID]bool
}

func (fs *fakeSettings) SetAutoRecord(_ context.Context, _ id.RoomID, on bool) error {
	fs.auto = on
	return nil
}
func (fs *fakeSettings) AutoRecord(context.Context, id.RoomID) (bool, error) { return fs.auto, nil }
func (fs *fakeSettings) AutoRecordRooms(context.Context) ([]id.RoomID, error) {
	return nil, nil
}
func (fs *fakeSettings) PutConsent(_ context.Context, _ id.RoomID, userID id.UserID, _ time.Time) error {
	fs.consent[userID] = true
	return nil
}
func (fs *fakeSettings) HasConsent(_ context.Context, _ id.RoomID, userID id.UserID) (bool, error) {
	return fs.consent[userID], nil
}

type fakeListener struct{ consented []id.UserID }

func (fl *fakeListener) Consented(_ context.Context, _ id.RoomID, userID id.UserID) {
	fl.consented = append(fl.consented, userID)
}

func newTestController(t *testing.T, cfg config.RecordingConfig) (*Controller, *fakeCalls, *fakeMatrix, *fakeSettings, *fakeListener) {
	t.Helper()
	fc, fm, fs, fl := &fakeCalls{}, &fakeMatrix{}, &fakeSettings{consent: map[id.UserID]bool{}}, &fakeListener{}
	c := New(Options{Config: cfg, CommandPrefix: "!rec", Calls: fc, Matrix: fm, Settings: fs, Consent: fl})
	c.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Stop(ctx)
	})
	return c, fc, fm, fs, fl
}

func TestStopConditions(t *testing.T) {
	cfg := config.RecordingConfig{EmptyTimeout: 30 * time.Second, NoMediaTimeout: 5 * time.Minute, MaxDuration: 4 * time.Hour}
	c, fc, _, _, _ := newTestController(t, cfg)
	ctx := context.Background()
	start := time.Now()
	ar := &activeRec{info: callbot.CallInfo{RoomID: "!r:test", JoinedAt: start}}
	ar.lastMedia.Store(start.UnixNano())
	fc.participants = 2
	var alone time.Time
	require.Empty(t, c.check(ctx, ar, start.Add(time.Minute), &alone))

	fc.participants = 0
	require.Empty(t, c.check(ctx, ar, start.Add(time.Minute), &alone), "alone only since now")
	require.Empty(t, c.check(ctx, ar, start.Add(time.Minute+29*time.Second), &alone))
	require.Equal(t, callbot.StopEmpty, c.check(ctx, ar, start.Add(time.Minute+30*time.Second), &alone))
	fc.participants = 1
	require.Empty(t, c.check(ctx, ar, start.Add(2*time.Minute), &alone), "someone came back")
	require.True(t, alone.IsZero())

	require.Equal(t, callbot.StopNoMedia, c.check(ctx, ar, start.Add(5*time.Minute), &alone))
	ar.lastMedia.Store(start.Add(3*time.Hour + 59*time.Minute).UnixNano())
	require.Equal(t, callbot.StopMaxDuration, c.check(ctx, ar, start.Add(4*time.Hour), &alone))

	c.cfg = config.RecordingConfig{} // zero: never
	require.Empty(t, c.check(ctx, ar, start.Add(100*time.Hour), &alone))
}

func memberEvent(t *testing.T, sender id.UserID, devices int) *event.Event {
	t.Helper()
	devs := make([]map[string]any, devices)
	for i := range devs {
		devs[i] = map[string]any{"device_id": "D", "session_id": "S", "expires_ts": time.Now().Add(time.Hour).UnixMilli(), "feeds": []any{}}
	}
	raw, err := json.Marshal(map[string]any{"m.calls": []any{map[string]any{"m.call_id": "conf", "m.devices": devs}}})
	require.NoError(t, err)
	key := string(sender)
	return &event.Event{Type: signaling.StateCallMember, Sender: sender, RoomID: "!r:test", StateKey: &key, Content: event.Content{VeryRaw: raw}}
}

func TestAutoRecordJoinsAndPausesAfterAStop(t *testing.T) {
	c, fc, fm, fs, _ := newTestController(t, config.RecordingConfig{Announce: true})
	ctx := context.Background()
	onMember := fm.handlers[signaling.StateCallMember.Type]
	onCall := fm.handlers[signaling.StateGroupCall.Type]
	require.NotNil(t, onMember)
	require.NotNil(t, onCall)

	onMember(ctx, memberEvent(t, "@alice:test", 1))
	require.Zero(t, fc.joins, "auto-record is off")
	fs.auto = true
	onMember(ctx, memberEvent(t, "@alice:test", 0))
	require.Zero(t, fc.joins, "someone leaving starts nothing")
	onMember(ctx, memberEvent(t, "@recorder_1:test", 1))
	require.Zero(t, fc.joins, "the recorder's own member event starts nothing")
	onMember(ctx, memberEvent(t, "@alice:test", 1))
	require.Equal(t, 1, fc.joins)

	info := callbot.CallInfo{ID: "rec1", RoomID: "!r:test", JoinedAt: time.Now()}
	c.CallJoined(ctx, info)
	onMember(ctx, memberEvent(t, "@bob:test", 1))
	require.Equal(t, 1, fc.joins, "already recording")
	info.StopReason = callbot.StopAsked
	c.CallLeft(ctx, info, time.Now())
	onMember(ctx, memberEvent(t, "@bob:test", 1))
	require.Equal(t, 1, fc.joins, "stopped by command: not again in this call")
	onCall(ctx, &event.Event{Type: signaling.StateGroupCall, RoomID: "!r:test"})
	onMember(ctx, memberEvent(t, "@bob:test", 1))
	require.Equal(t, 2, fc.joins, "a new group call is recorded again")
}

func TestConsent(t *testing.T) {
	c, _, fm, fs, fl := newTestController(t, config.RecordingConfig{Announce: true, RequireConsent: true})
	ctx := context.Background()
	require.False(t, c.Consented(ctx, "!r:test", "@bob:test"))
	require.NoError(t, c.Consent(ctx, "!r:test", "@bob:test"))
	require.True(t, fs.consent["@bob:test"])
	require.True(t, c.Consented(ctx, "!r:test", "@bob:test"))
	require.Equal(t, []id.UserID{"@bob:test"}, fl.consented, "the archive is told")

	c.CallJoined(ctx, callbot.CallInfo{ID: "rec1", RoomID: "!r:test", JoinedAt: time.Now()})
	require.Eventually(t, func() bool {
		fm.lock.Lock()
		defer fm.lock.Unlock()
		return len(fm.notices) == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, fm.notices[0], "Not recorded: @alice:test.")
	require.NotContains(t, fm.notices[0], "@bob:test")
}

func TestReasonText(t *testing.T) {
	cfg := config.Default().Recording
	require.Equal(t, "stopped by @a:test", ReasonText(callbot.StopAsked, "@a:test", cfg))
	require.Equal(t, "everyone else left the call (30s alone)", ReasonText(callbot.StopEmpty, "", cfg))
	require.Equal(t, "no audio or video arrived for 5m0s", ReasonText(callbot.StopNoMedia, "", cfg))
	require.Equal(t, "the maximum recording length of 4h0m0s was reached", ReasonText(callbot.StopMaxDuration, "", cfg))
	require.Equal(t, "the call ended", ReasonText(callbot.StopCallEnded, "", cfg))
	require.Equal(t, "there is no group call in this room", PlainError(callbot.ErrNoCall))
	require.Len(t, Ref(), 6)
}
