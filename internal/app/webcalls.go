package app

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/rooms"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

// webCalls gives the web package the call bot as the Calls interface it defines.
// webCalls serves the API's calls: starts go through the room controller
// as the operator's; the rest asks the call router.
type webCalls struct {
	m   callRouter
	ctl *rooms.Controller
}

func (wc webCalls) Join(ctx context.Context, roomID id.RoomID) (web.CallInfo, error) {
	st, err := wc.ctl.StartForOperator(ctx, roomID)
	switch {
	case errors.Is(err, callbot.ErrAlreadyJoined):
		return web.CallInfo{}, fmt.Errorf("%w: %w", web.ErrAlreadyRecording, err)
	case errors.Is(err, callbot.ErrNoCall):
		return web.CallInfo{}, fmt.Errorf("%w: %w", web.ErrNoCall, err)
	case errors.Is(err, callbot.ErrPowerLevel), errors.Is(err, livekit.ErrHostNotAllowed):
		return web.CallInfo{}, fmt.Errorf("%w: %w", web.ErrForbidden, err)
	case err != nil:
		return web.CallInfo{}, err
	}
	return toWebCall(st), nil
}

func (wc webCalls) Leave(ctx context.Context, roomID id.RoomID) error {
	err := wc.m.Leave(ctx, roomID)
	if errors.Is(err, callbot.ErrNotJoined) {
		return fmt.Errorf("%w: %w", web.ErrNotRecording, err)
	}
	return err
}

func (wc webCalls) Active(ctx context.Context) []web.CallInfo {
	calls := wc.m.Calls(ctx)
	out := make([]web.CallInfo, 0, len(calls))
	for _, st := range calls {
		out = append(out, toWebCall(st))
	}
	return out
}

func toWebCall(st callbot.CallStatus) web.CallInfo {
	info := web.CallInfo{RoomID: st.RoomID, Kind: st.Kind, ConfID: string(st.ConfID), RecordingID: storage.RecordingID(st.ID), Since: st.JoinedAt,
		Participants: []web.Participant{}}
	for _, p := range st.Peers {
		info.Participants = append(info.Participants, web.Participant{UserID: p.UserID, DeviceID: p.DeviceID, State: string(p.State),
			Encrypted: p.Encrypted, KeysHeld: p.KeysHeld, Note: p.Note})
	}
	return info
}
