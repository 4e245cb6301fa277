package app

import (
	"context"
	"strconv"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/rooms"
)

// callMatrix gives the call bot the appservice as the Matrix interface it
// defines. Only the types differ; the appservice does the work.
type callMatrix struct{ *appservice.Service }

var _ callbot.Matrix = callMatrix{}

func (cm callMatrix) VirtualUserID(n int) id.UserID { return cm.Users.UserID(strconv.Itoa(n)) }

func (cm callMatrix) Device(ctx context.Context, userID id.UserID, handler callbot.ToDeviceHandler) (callbot.Device, error) {
	vu, err := cm.Users.Get(ctx, userID, appservice.ToDeviceHandler(handler))
	if err != nil {
		return nil, err
	}
	return vu, nil
}

func (cm callMatrix) OnRoomEvent(evtType event.Type, handler func(ctx context.Context, evt *event.Event)) {
	cm.On(evtType, handler)
}

// roomMatrix gives the room controller the appservice as the Matrix
// interface it defines.
type roomMatrix struct{ *appservice.Service }

var _ rooms.Matrix = roomMatrix{}

func (rm roomMatrix) On(evtType event.Type, handler func(ctx context.Context, evt *event.Event)) {
	rm.Service.On(evtType, handler)
}
