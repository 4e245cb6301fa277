// Package commands is what the recorder's chat commands do: `start`, `stop`
// and `status` act on the call bot, `list` reads the room's recordings. The
// appservice parses a command, checks the sender's permission and posts the
// reply; this package decides the action and the reply.
package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/storage"
)

// ListLimit is how many recordings `list` shows.
const ListLimit = 10

// Calls is what the commands need of the call bot (*callbot.Manager).
type Calls interface {
	Join(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
	Leave(ctx context.Context, roomID id.RoomID) error
	Status(ctx context.Context, roomID id.RoomID) (callbot.CallStatus, error)
}

// Recordings lists recording rows (*storage.RecordingQuery).
type Recordings interface {
	List(ctx context.Context, f storage.ListFilter) ([]*storage.Recording, error)
}

// Files reads the file rows of several recordings in one query
// (*storage.RecordingFileQuery).
type Files interface {
	GetAllFor(ctx context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error)
}

// Register adds the commands to the appservice's command set.
func Register(svc *appservice.Service, calls Calls, recordings Recordings, files Files) {
	memberLevel := signaling.StateCallMember
	svc.RegisterCommand(&appservice.Command{
		Name: "start", Aliases: []string{"join", "record"}, Help: "Join this room's group call and record it.",
		RequiresEventLevel: &memberLevel,
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			if reply := start(ctx, calls, ce.RoomID); reply != "" {
				ce.Reply(ctx, reply)
			}
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "stop", Aliases: []string{"leave"}, Help: "Stop recording and leave the call.",
		RequiresEventLevel: &memberLevel,
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, stop(ctx, calls, ce.RoomID))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "status", Help: "Show whether I'm in this room's call and who I'm connected to.",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, status(ctx, calls, ce.RoomID))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "list", Help: "List this room's recent recordings.",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, list(ctx, recordings, files, ce.RoomID))
		},
	})
}

// start joins the call; an empty reply means the room was already told why
// not (power levels).
func start(ctx context.Context, calls Calls, roomID id.RoomID) string {
	st, err := calls.Join(ctx, roomID)
	switch {
	case err == nil:
		return fmt.Sprintf("Joining the call as %s.", st.UserID)
	case errors.Is(err, callbot.ErrAlreadyJoined):
		return "I'm already in this room's call."
	case errors.Is(err, callbot.ErrNoCall):
		return "There is no group call in this room to join. Start one, then try again."
	case errors.Is(err, callbot.ErrPowerLevel), errors.Is(err, livekit.ErrEncrypted), errors.Is(err, livekit.ErrHostNotAllowed):
		return "" // Join already explained it in the room.
	case errors.Is(err, livekit.ErrFocus):
		zerolog.Ctx(ctx).Err(err).Msg("Failed to join MatrixRTC call")
		return "I couldn't get into the call's LiveKit SFU; the recorder's logs have the details."
	default:
		zerolog.Ctx(ctx).Err(err).Msg("Failed to join call")
		return "I couldn't join the call; the recorder's logs have the details."
	}
}

func stop(ctx context.Context, calls Calls, roomID id.RoomID) string {
	switch err := calls.Leave(ctx, roomID); {
	case err == nil:
		return "Left the call."
	case errors.Is(err, callbot.ErrNotJoined):
		return "I'm not in this room's call."
	default:
		zerolog.Ctx(ctx).Err(err).Msg("Failed to leave call")
		return "Something went wrong leaving the call; the recorder's logs have the details."
	}
}

func status(ctx context.Context, calls Calls, roomID id.RoomID) string {
	st, err := calls.Status(ctx, roomID)
	if err != nil {
		return "I'm not in this room's call."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "In the %s call since %s as %s, with %d peer(s):\n\n", callKind(st.Kind), st.JoinedAt.UTC().Format("15:04:05 UTC"), st.UserID, len(st.Peers))
	for _, p := range st.Peers {
		fmt.Fprintf(&b, "* %s (%s): %s", p.UserID, p.DeviceID, p.State)
		if len(p.Tracks) > 0 {
			fmt.Fprintf(&b, ", tracks %s", strings.Join(p.Tracks, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// callKind names a kind of call for people.
func callKind(kind string) string {
	if kind == livekit.Kind {
		return "MatrixRTC (LiveKit)"
	}
	return "mesh"
}

// list shows the room's newest recordings, with their files counted in one
// query for the whole page.
func list(ctx context.Context, recordings Recordings, files Files, roomID id.RoomID) string {
	log := zerolog.Ctx(ctx)
	rows, err := recordings.List(ctx, storage.ListFilter{RoomID: roomID, Limit: ListLimit})
	if err != nil {
		log.Err(err).Msg("Failed to list recordings")
		return "I couldn't read the recordings; the recorder's logs have the details."
	}
	if len(rows) == 0 {
		return "There are no recordings of this room yet."
	}
	ids := make([]storage.RecordingID, len(rows))
	for i, row := range rows {
		ids[i] = row.ID
	}
	filesOf, err := files.GetAllFor(ctx, ids)
	if err != nil {
		log.Err(err).Msg("Failed to read recording files")
	}
	var b strings.Builder
	b.WriteString("**Recent recordings of this room** (newest first):\n\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "* `%s` %s, %s, %s, %d file(s)\n", row.ID, row.StartedAt.UTC().Format("2006-01-02 15:04 UTC"),
			length(row), row.State, len(filesOf[row.ID]))
	}
	return b.String()
}

func length(row *storage.Recording) string {
	if row.EndedAt.IsZero() {
		return "in progress"
	}
	return row.EndedAt.Sub(row.StartedAt).Round(time.Second).String()
}
