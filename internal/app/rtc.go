package app

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
)

// rtcUserPrefix numbers the virtual users of MatrixRTC calls apart from
// the mesh ones (@<user_prefix>rtc1, …): each pool has its own devices.
const rtcUserPrefix = "rtc"

// rtcMatrix gives the LiveKit transport the appservice as the Matrix
// interface it defines.
type rtcMatrix struct{ *appservice.Service }

var _ livekit.Matrix = rtcMatrix{}

func (rm rtcMatrix) VirtualUserID(n int) id.UserID {
	return rm.Users.UserID(rtcUserPrefix + strconv.Itoa(n))
}

func (rm rtcMatrix) Device(ctx context.Context, userID id.UserID, onToDevice callbot.ToDeviceHandler) (livekit.Device, error) {
	vu, err := rm.Users.Get(ctx, userID, appservice.ToDeviceHandler(onToDevice))
	if err != nil {
		return nil, err
	}
	return rtcDevice{vu}, nil
}

func (rm rtcMatrix) RoomState(ctx context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error) {
	return rm.Bot.State(ctx, roomID)
}

func (rm rtcMatrix) OnRoomEvent(evtType event.Type, handler func(ctx context.Context, evt *event.Event)) {
	rm.On(evtType, handler)
}

// rtcDevice adds the OpenID token to a virtual user.
type rtcDevice struct{ *appservice.VirtualUser }

func (rd rtcDevice) OpenIDToken(ctx context.Context) (*mautrix.RespOpenIDToken, error) {
	return rd.Client().RequestOpenIDToken(ctx)
}

// meshCalls is the mesh call bot as the router uses it (*callbot.Manager).
type meshCalls interface {
	Join(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
	Leave(ctx context.Context, roomID id.RoomID) error
	LeaveFor(ctx context.Context, roomID id.RoomID, reason callbot.StopReason) error
	Status(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
	Calls(ctx context.Context) []callbot.CallStatus
}

// callRouter sends commands and API calls to the transport of the call a
// room holds: a MatrixRTC session (memberships with a LiveKit focus) or a
// legacy mesh call.
type callRouter struct {
	mesh meshCalls
	rtc  *livekit.Manager
}

// Join records the room's MatrixRTC session if it has one, else its mesh call.
func (cr callRouter) Join(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	if _, err := cr.mesh.Status(ctx, roomID); err == nil {
		return callbot.CallStatus{}, callbot.ErrAlreadyJoined
	}
	if cr.rtc.InCall(roomID) {
		return callbot.CallStatus{}, callbot.ErrAlreadyJoined
	}
	rtc, err := cr.rtc.HasSession(ctx, roomID)
	if err != nil {
		return callbot.CallStatus{}, fmt.Errorf("failed to look for a MatrixRTC call: %w", err)
	}
	if rtc {
		return cr.rtc.Join(ctx, roomID)
	}
	st, err := cr.mesh.Join(ctx, roomID)
	return meshKind(st), err
}

// Leave leaves whichever call the recorder is in.
func (cr callRouter) Leave(ctx context.Context, roomID id.RoomID) error {
	if cr.rtc.InCall(roomID) {
		return cr.rtc.Leave(ctx, roomID)
	}
	return cr.mesh.Leave(ctx, roomID)
}

// LeaveFor leaves whichever call the recorder is in, for a reason.
func (cr callRouter) LeaveFor(ctx context.Context, roomID id.RoomID, reason callbot.StopReason) error {
	if cr.rtc.InCall(roomID) {
		return cr.rtc.LeaveFor(ctx, roomID, reason)
	}
	return cr.mesh.LeaveFor(ctx, roomID, reason)
}

// Status is the room's call of either kind.
func (cr callRouter) Status(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error) {
	st, err := cr.rtc.Status(ctx, roomID)
	if errors.Is(err, callbot.ErrNotJoined) {
		st, err = cr.mesh.Status(ctx, roomID)
		st = meshKind(st)
	}
	return st, err
}

// Calls are the calls of both kinds.
func (cr callRouter) Calls(ctx context.Context) []callbot.CallStatus {
	out := cr.mesh.Calls(ctx)
	for i := range out {
		out[i] = meshKind(out[i])
	}
	return append(out, cr.rtc.Calls(ctx)...)
}

func meshKind(st callbot.CallStatus) callbot.CallStatus {
	if st.Kind == "" && st.RoomID != "" {
		st.Kind = "mesh"
	}
	return st
}
