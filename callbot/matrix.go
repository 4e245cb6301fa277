package callbot

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// Matrix is what the call bot needs of the Matrix side. The appservice
// provides it (wired in internal/app); tests use an in-memory fake.
type Matrix interface {
	// VirtualUserID is the n-th recorder user (n ≥ 1).
	VirtualUserID(n int) id.UserID
	// Device returns the virtual user's running device: logged in, its keys
	// on the server, syncing. handler gets its decrypted to-device events in
	// order. The Matrix side owns the device and stops it.
	Device(ctx context.Context, userID id.UserID, handler ToDeviceHandler) (Device, error)
	// OnRoomEvent registers a handler for room events of a type; handlers
	// run in each room's event order.
	OnRoomEvent(evtType event.Type, handler func(ctx context.Context, evt *event.Event))
	// IsInRoom reports whether userID is joined to roomID, from the state
	// the appservice keeps up to date from its transactions.
	IsInRoom(ctx context.Context, roomID id.RoomID, userID id.UserID) bool
	// LoadMembers makes sure IsInRoom knows the room's members.
	LoadMembers(ctx context.Context, roomID id.RoomID) error
	// PowerLevels are the room's power levels.
	PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error)
	// TURNServer asks the homeserver for TURN servers.
	TURNServer(ctx context.Context) (*mautrix.RespTurnServer, error)
	// SendNotice posts markdown as the bot's m.notice, as a reply when
	// replyTo is set.
	SendNotice(ctx context.Context, roomID id.RoomID, markdown string, replyTo id.EventID)
}

// ToDeviceHandler gets a device's decrypted to-device events, one batch at a
// time; it must not block.
type ToDeviceHandler func(ctx context.Context, received []e2ee.Received)

// Device is a virtual user's device as a call uses it: the user's room
// actions and the device's to-device messages.
type Device interface {
	UserID() id.UserID
	DeviceID() id.DeviceID
	// JoinRoom makes the user a member of the room (the bot invites it).
	JoinRoom(ctx context.Context, roomID id.RoomID) error
	// RoomState reads the room's current state.
	RoomState(ctx context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error)
	// SetState sends a state event as the user.
	SetState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any) error
	// SendToDevice sends per-device contents of one type, Olm-encrypted
	// where the target's keys can be had when encrypt is set.
	SendToDevice(ctx context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error
}
