package callbot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// Command is a chat command the call bot answers. The command layer parses
// it, checks the sender's permission and posts the reply.
type Command struct {
	Name    string
	Aliases []string
	Help    string
	// RequiresEventLevel, when set, requires the sender's room power level
	// to allow sending that event type.
	RequiresEventLevel *event.Type
	// Run does the command in a room and returns the markdown reply; an
	// empty reply sends none.
	Run func(ctx context.Context, roomID id.RoomID) string
}

// Commands are the call bot's chat commands: start, stop and status.
func (m *Manager) Commands() []Command {
	memberLevel := signaling.StateCallMember
	return []Command{{
		Name: "start", Aliases: []string{"join", "record"}, Help: "Join this room's group call and record it.",
		RequiresEventLevel: &memberLevel,
		Run: func(ctx context.Context, roomID id.RoomID) string {
			st, err := m.Join(ctx, roomID)
			switch {
			case err == nil:
				return fmt.Sprintf("Joining the call as %s.", st.UserID)
			case errors.Is(err, ErrAlreadyJoined):
				return "I'm already in this room's call."
			case errors.Is(err, ErrNoCall):
				return "There is no group call in this room to join. Start one, then try again."
			case errors.Is(err, ErrPowerLevel):
				return "" // Join already explained it in the room.
			default:
				zerolog.Ctx(ctx).Err(err).Msg("Failed to join call")
				return "I couldn't join the call; the recorder's logs have the details."
			}
		},
	}, {
		Name: "stop", Aliases: []string{"leave"}, Help: "Stop recording and leave the call.",
		RequiresEventLevel: &memberLevel,
		Run: func(ctx context.Context, roomID id.RoomID) string {
			switch err := m.Leave(ctx, roomID); {
			case err == nil:
				return "Left the call."
			case errors.Is(err, ErrNotJoined):
				return "I'm not in this room's call."
			default:
				zerolog.Ctx(ctx).Err(err).Msg("Failed to leave call")
				return "Something went wrong leaving the call; the recorder's logs have the details."
			}
		},
	}, {
		Name: "status", Help: "Show whether I'm in this room's call and who I'm connected to.",
		Run: func(ctx context.Context, roomID id.RoomID) string {
			st, err := m.Status(ctx, roomID)
			if err != nil {
				return "I'm not in this room's call."
			}
			return formatStatus(st)
		},
	}}
}

func formatStatus(st CallStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "In the call since %s as %s, with %d peer(s):\n\n", st.JoinedAt.UTC().Format("15:04:05 UTC"), st.UserID, len(st.Peers))
	for _, p := range st.Peers {
		fmt.Fprintf(&b, "* %s (%s): %s", p.UserID, p.DeviceID, p.State)
		if len(p.Tracks) > 0 {
			fmt.Fprintf(&b, ", tracks %s", strings.Join(p.Tracks, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}
