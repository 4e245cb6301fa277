// Package commands is what the recorder's chat commands do: `start`,
// `stop`, `status`, `auto` and `consent` act through the room controller
// (package rooms) on the call bot, `list` reads the room's recordings. The
// appservice parses a command, checks the sender's permission and posts the
// reply; this package decides the action and the reply.
package commands

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/rooms"
	"github.com/matrix-recorder/recorder/storage"
)

// ListLimit is how many recordings `list` shows by default; MaxListLimit
// caps `list n`.
const (
	ListLimit    = 10
	MaxListLimit = 50
)

// Room is what the commands need of the room controller (*rooms.Controller).
type Room interface {
	StartRecording(ctx context.Context, roomID id.RoomID, by id.UserID) (callbot.CallStatus, error)
	StopRecording(ctx context.Context, roomID id.RoomID, by id.UserID) error
	RoomStatus(ctx context.Context, roomID id.RoomID) (rooms.Status, *storage.Recording, bool)
	SetAuto(ctx context.Context, roomID id.RoomID, on bool) (joined bool, err error)
	Consent(ctx context.Context, roomID id.RoomID, userID id.UserID) error
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

// Options are what the commands work with.
type Options struct {
	Room       Room
	Recordings Recordings
	Files      Files
	Recording  config.RecordingConfig
	// PublicURL, when set, is the web page's address for links in `list`.
	PublicURL string
	// MembersStopOperatorRecordings (config
	// commands.members_stop_operator_recordings) lets members stop a
	// recording the operator started.
	MembersStopOperatorRecordings bool
	// RetentionDays (config recordings.retention) makes `list` say when
	// each recording expires; 0: never.
	RetentionDays int
}

// Register adds the commands to the appservice's command set.
func Register(svc *appservice.Service, opts Options) {
	callLevel := signaling.StateGroupCall
	prefix := svc.CommandPrefix()
	svc.RegisterCommand(&appservice.Command{
		Name: "start", Aliases: []string{"join", "record"}, Help: "Join this room's group call and record it.",
		RequiresEventLevel: &callLevel, Action: "start a recording",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			if reply := start(ctx, opts.Room, ce.RoomID, ce.Sender); reply != "" {
				ce.Reply(ctx, reply)
			}
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "stop", Aliases: []string{"leave"}, Help: "Stop recording and leave the call.",
		RequiresEventLevel: &callLevel, Action: "stop a recording",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, stopAsked(ctx, opts, ce.RoomID, ce.Sender, ce.Level))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "status", Help: "Whether this room's call is being recorded, since when, who is recorded and how much.",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, status(ctx, opts.Room, ce.RoomID, opts.Recording))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "list", Args: "[n]", Help: fmt.Sprintf("List this room's n most recent recordings (default %d).", ListLimit),
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			n := ListLimit
			if len(ce.Args) > 0 {
				v, err := strconv.Atoi(ce.Args[0])
				if err != nil || v < 1 {
					ce.Reply(ctx, "Usage: `%s list [n]` with n a number from 1 to %d.", prefix, MaxListLimit)
					return
				}
				n = min(v, MaxListLimit)
			}
			ce.Reply(ctx, list(ctx, opts, ce.RoomID, n))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "auto", Args: "on|off", Help: "Record every call that starts in this room (kept across restarts), or stop doing so.",
		RequiresEventLevel: &callLevel, Action: "change auto-record",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, auto(ctx, opts.Room, ce.RoomID, ce.Args, prefix))
		},
	})
	svc.RegisterCommand(&appservice.Command{
		Name: "consent", Help: "Agree to be recorded in this room (needed when the recorder requires consent).",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			ce.Reply(ctx, consent(ctx, opts.Room, ce.RoomID, ce.Sender, opts.Recording.RequireConsent))
		},
	})
}

// failure logs err with a short reference and returns the plain words for
// the room, which repeat the reference.
func failure(ctx context.Context, err error, what string) string {
	ref := rooms.Ref()
	zerolog.Ctx(ctx).Err(err).Str("ref", ref).Msg(what)
	return fmt.Sprintf("%s: %s (reference `%s`).", what, rooms.PlainError(err), ref)
}

func start(ctx context.Context, room Room, roomID id.RoomID, by id.UserID) string {
	st, err := room.StartRecording(ctx, roomID, by)
	switch {
	case err == nil:
		return fmt.Sprintf("Joining the call as %s to record it.", st.UserID)
	case errors.Is(err, callbot.ErrAlreadyJoined):
		return "This room's call is already being recorded."
	case errors.Is(err, callbot.ErrNoCall):
		return "There is no group call in this room to record. Start one, then try again."
	case errors.Is(err, callbot.ErrPowerLevel), errors.Is(err, livekit.ErrHostNotAllowed):
		return "" // the call layer told the room what is wrong
	case errors.Is(err, livekit.ErrFocus):
		zerolog.Ctx(ctx).Err(err).Msg("Failed to join MatrixRTC call")
		return "I couldn't get into the call's LiveKit SFU; the recorder's logs have the details."
	default:
		return failure(ctx, err, "I couldn't join the call")
	}
}

// stopAsked is `stop` from a member: the operator's recordings are the
// operator's, stopped only by recorder admins (and the API) unless
// configured otherwise.
func stopAsked(ctx context.Context, opts Options, roomID id.RoomID, by id.UserID, level config.PermissionLevel) string {
	if !opts.MembersStopOperatorRecordings && level != config.PermissionAdmin {
		if st, _, ok := opts.Room.RoomStatus(ctx, roomID); ok && st.ByOperator {
			return "This recording was started by the recorder's operator; only they or a recorder admin can stop it."
		}
	}
	return stop(ctx, opts.Room, roomID, by)
}

func stop(ctx context.Context, room Room, roomID id.RoomID, by id.UserID) string {
	switch err := room.StopRecording(ctx, roomID, by); {
	case err == nil:
		return "Left the call; the recording is stopped."
	case errors.Is(err, callbot.ErrNotJoined):
		return "This room's call is not being recorded."
	default:
		return failure(ctx, err, "I couldn't stop the recording")
	}
}

func status(ctx context.Context, room Room, roomID id.RoomID, cfg config.RecordingConfig) string {
	st, last, ok := room.RoomStatus(ctx, roomID)
	if !ok {
		if last != nil {
			return fmt.Sprintf("Not recording. The last recording (`%s`) stopped at %s: %s.", last.ID,
				last.EndedAt.UTC().Format("15:04:05 UTC"), rooms.ReasonText(callbot.StopReason(last.StopReason), "", cfg))
		}
		return "Not recording."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "🔴 **Recording** the %s call since %s (%s)", callKind(st.Call.Kind), st.Call.JoinedAt.UTC().Format("15:04:05 UTC"),
		time.Since(st.Call.JoinedAt).Round(time.Second))
	if st.StartedBy != "" {
		fmt.Fprintf(&b, ", started by %s", format.EscapeMarkdown(string(st.StartedBy)))
	}
	fmt.Fprintf(&b, ", as %s. %s received so far.\n\n", st.Call.UserID, humanBytes(st.Bytes))
	recorded := make([]string, len(st.Recorded))
	for i, u := range st.Recorded {
		recorded[i] = format.EscapeMarkdown(string(u))
	}
	if len(recorded) > 0 {
		fmt.Fprintf(&b, "Recording: %s\n\n", strings.Join(recorded, ", "))
	}
	fmt.Fprintf(&b, "Connections (%d):\n\n", len(st.Call.Peers))
	for _, p := range st.Call.Peers {
		// Everything a participant chose (user and device IDs, stream
		// purposes) is escaped: it must not format or link the notice.
		fmt.Fprintf(&b, "* %s (%s): %s", format.EscapeMarkdown(string(p.UserID)), format.EscapeMarkdown(string(p.DeviceID)), p.State)
		if len(p.Tracks) > 0 {
			fmt.Fprintf(&b, ", tracks %s", format.EscapeMarkdown(strings.Join(p.Tracks, ", ")))
		}
		if p.Encrypted {
			fmt.Fprintf(&b, ", end-to-end encrypted media (%d keys)", p.KeysHeld)
		}
		if p.Note != "" {
			fmt.Fprintf(&b, ": %s", p.Note)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

func auto(ctx context.Context, room Room, roomID id.RoomID, args []string, prefix string) string {
	if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
		return fmt.Sprintf("Usage: `%s auto on` or `%s auto off`.", prefix, prefix)
	}
	on := args[0] == "on"
	joined, err := room.SetAuto(ctx, roomID, on)
	switch {
	case err != nil && !on:
		return failure(ctx, err, "I couldn't switch auto-record off")
	case err != nil:
		return failure(ctx, err, "Auto-record is on, but I couldn't join the call that is going on")
	case !on:
		return "Auto-record is off: calls in this room are recorded only when someone asks."
	case joined:
		return "Auto-record is on. There is a call going on; I'm joining it to record it."
	default:
		return "Auto-record is on: I'll record every call that starts in this room."
	}
}

func consent(ctx context.Context, room Room, roomID id.RoomID, userID id.UserID, required bool) string {
	if err := room.Consent(ctx, roomID, userID); err != nil {
		return failure(ctx, err, "I couldn't store your consent")
	}
	if !required {
		return fmt.Sprintf("Noted: %s agrees to be recorded in this room (this recorder records everyone in a call anyway).", format.EscapeMarkdown(string(userID)))
	}
	return fmt.Sprintf("Noted: %s agrees to be recorded in this room; your audio and video are recorded from now on.", format.EscapeMarkdown(string(userID)))
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
func list(ctx context.Context, opts Options, roomID id.RoomID, n int) string {
	rows, err := opts.Recordings.List(ctx, storage.ListFilter{RoomID: roomID, Limit: n})
	if err != nil {
		return failure(ctx, err, "I couldn't read the recordings")
	}
	if len(rows) == 0 {
		return "There are no recordings of this room yet."
	}
	ids := make([]storage.RecordingID, len(rows))
	for i, row := range rows {
		ids[i] = row.ID
	}
	filesOf, err := opts.Files.GetAllFor(ctx, ids)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to read recording files")
	}
	var b strings.Builder
	b.WriteString("**Recent recordings of this room** (newest first):\n\n")
	for _, row := range rows {
		count := 0
		for _, f := range filesOf[row.ID] {
			if f.Purpose != storage.PurposeMixdown {
				count++
			}
		}
		idText := fmt.Sprintf("`%s`", row.ID)
		if opts.PublicURL != "" {
			idText = fmt.Sprintf("[%s](%s/#rec=%s)", row.ID, strings.TrimRight(opts.PublicURL, "/"), url.QueryEscape(string(row.ID)))
		}
		fmt.Fprintf(&b, "* %s %s, %s, %s, %d file(s)", idText, row.StartedAt.UTC().Format("2006-01-02 15:04 UTC"),
			length(row), row.State, count)
		if count < len(filesOf[row.ID]) {
			b.WriteString(", mixed down")
		}
		if opts.RetentionDays > 0 && row.State != storage.StateRecording {
			fmt.Fprintf(&b, ", expires %s", row.StartedAt.Add(time.Duration(opts.RetentionDays)*24*time.Hour).UTC().Format("2006-01-02 15:04 UTC"))
		}
		if row.StopReason != "" {
			fmt.Fprintf(&b, ", %s", rooms.ReasonText(callbot.StopReason(row.StopReason), "", opts.Recording))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func length(row *storage.Recording) string {
	if row.EndedAt.IsZero() {
		return "in progress"
	}
	return row.EndedAt.Sub(row.StartedAt).Round(time.Second).String()
}
