package app

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
)

type fakeMesh struct {
	joined []id.RoomID
	status map[id.RoomID]callbot.CallStatus
}

func (fm *fakeMesh) Join(_ context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	fm.joined = append(fm.joined, roomID)
	return callbot.CallStatus{RoomID: roomID}, nil
}

func (fm *fakeMesh) Leave(context.Context, id.RoomID) error { return callbot.ErrNotJoined }
func (fm *fakeMesh) LeaveFor(context.Context, id.RoomID, callbot.StopReason) error {
	return callbot.ErrNotJoined
}

func (fm *fakeMesh) Status(_ context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	if st, ok := fm.status[roomID]; ok {
		return st, nil
	}
	return callbot.CallStatus{}, callbot.ErrNotJoined
}

func (fm *fakeMesh) Calls(context.Context) []callbot.CallStatus {
	out := []callbot.CallStatus{}
	for _, st := range fm.status {
		out = append(out, st)
	}
	return out
}

// fakeRTCMatrix serves room state for the LiveKit transport's discovery.
type fakeRTCMatrix struct {
	state map[id.RoomID]mautrix.RoomStateMap
}

func (fakeRTCMatrix) VirtualUserID(n int) id.UserID {
	return id.NewUserID("recorder_rtc"+strconv.Itoa(n), "example.org")
}
func (fakeRTCMatrix) Device(context.Context, id.UserID, callbot.ToDeviceHandler) (livekit.Device, error) {
	return nil, context.Canceled
}
func (fm fakeRTCMatrix) RoomState(_ context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error) {
	return fm.state[roomID], nil
}
func (fakeRTCMatrix) OnRoomEvent(event.Type, func(context.Context, *event.Event)) {}
func (fakeRTCMatrix) PowerLevels(context.Context, id.RoomID) (*event.PowerLevelsEventContent, error) {
	return &event.PowerLevelsEventContent{}, nil
}
func (fakeRTCMatrix) SendNotice(context.Context, id.RoomID, string, id.EventID) {}

func membershipState(sender id.UserID, device id.DeviceID, ts time.Time) mautrix.RoomStateMap {
	key := matrixrtc.StateKey(sender, device)
	content, _ := json.Marshal(matrixrtc.OwnContent(sender, device, "!rtc:example.org", "https://jwt.example.org", matrixrtc.DefaultExpires, time.Time{}))
	return mautrix.RoomStateMap{matrixrtc.StateType: {key: &event.Event{Type: matrixrtc.StateType, Sender: sender, StateKey: &key,
		Timestamp: ts.UnixMilli(), Content: event.Content{VeryRaw: content}}}}
}

// TestRouterPicksKind: a room with a MatrixRTC session goes to the LiveKit
// transport, one without (or with only an expired membership) to the mesh
// call bot; the mesh call's status says its kind.
func TestRouterPicksKind(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	mx := fakeRTCMatrix{state: map[id.RoomID]mautrix.RoomStateMap{
		"!rtc:example.org":     membershipState("@alice:example.org", "DEV", now),
		"!expired:example.org": membershipState("@alice:example.org", "DEV", now.Add(-5*time.Hour)),
		"!mesh:example.org":    {},
	}}
	rtc := livekit.New(livekit.Options{Matrix: mx})
	mesh := &fakeMesh{status: map[id.RoomID]callbot.CallStatus{}}
	router := callRouter{mesh: mesh, rtc: rtc}

	// The LiveKit manager is not started: reaching it fails with ErrStopped.
	_, err := router.Join(ctx, "!rtc:example.org")
	require.ErrorIs(t, err, callbot.ErrStopped)
	require.Empty(t, mesh.joined)

	st, err := router.Join(ctx, "!expired:example.org")
	require.NoError(t, err)
	require.Equal(t, "mesh", st.Kind)
	_, err = router.Join(ctx, "!mesh:example.org")
	require.NoError(t, err)
	require.Equal(t, []id.RoomID{"!expired:example.org", "!mesh:example.org"}, mesh.joined)

	mesh.status["!mesh:example.org"] = callbot.CallStatus{RoomID: "!mesh:example.org"}
	_, err = router.Join(ctx, "!mesh:example.org")
	require.ErrorIs(t, err, callbot.ErrAlreadyJoined)
	st, err = router.Status(ctx, "!mesh:example.org")
	require.NoError(t, err)
	require.Equal(t, "mesh", st.Kind)
	require.Equal(t, "mesh", router.Calls(ctx)[0].Kind)
	require.ErrorIs(t, router.Leave(ctx, "!rtc:example.org"), callbot.ErrNotJoined)
}
