package rooms

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/storage"
)

// announceStart: the notice, the display name and the state marker.
func (c *Controller) announceStart(ctx context.Context, ar *activeRec) {
	log := zerolog.Ctx(ctx)
	room, user := ar.info.RoomID, ar.info.UserID
	if c.cfg.Announce {
		var b strings.Builder
		b.WriteString("🔴 **This call is being recorded**")
		switch {
		case ar.startedBy != "":
			fmt.Fprintf(&b, ", started by %s", format.EscapeMarkdown(string(ar.startedBy)))
		case ar.auto:
			b.WriteString(" (started automatically: auto-record is on in this room)")
		default:
			b.WriteString(" (started by the recorder's operator)")
		}
		fmt.Fprintf(&b, ". Say `%s stop` to stop the recording.", c.prefix)
		if c.cfg.RequireConsent {
			excluded := c.unconsented(ctx, room)
			fmt.Fprintf(&b, "\n\nOnly people who said `%s consent` in this room are recorded.", c.prefix)
			if len(excluded) > 0 {
				fmt.Fprintf(&b, " Not recorded: %s.", joinUsers(excluded))
			}
		}
		c.mx.SendNotice(ctx, room, b.String(), "")
	}
	prev := c.mx.MemberDisplayName(ctx, room, user)
	base := strings.TrimSuffix(prev, RecSuffix)
	if base == "" {
		base = "Recorder"
	}
	ar.lock.Lock()
	// The name to restore never carries the suffix: after a restart the
	// room may still show the killed run's "… ● REC".
	ar.prevName = strings.TrimSuffix(prev, RecSuffix)
	ar.lock.Unlock()
	if err := c.mx.SetMemberDisplayName(ctx, room, user, base+RecSuffix); err != nil {
		log.Warn().Err(err).Msg("Failed to mark the recorder's display name as recording")
	}
	marker := Marker{RecordingID: ar.info.ID, StartedAt: ar.info.JoinedAt.UnixMilli(), StartedBy: ar.startedBy}
	if err := c.mx.SendStateAs(ctx, room, user, StateRecording, string(user), &marker); err != nil {
		ref := Ref()
		log.Warn().Err(err).Str("ref", ref).Msg("Failed to set the recording state event")
		c.mx.SendNotice(ctx, room, fmt.Sprintf("I couldn't publish the recording indicator (`%s`): the room's power levels "+
			"may not let %s send it. The recording goes on (reference `%s`).", StateRecording.Type, user, ref), "")
	} else {
		ar.lock.Lock()
		ar.markerSent = true
		ar.lock.Unlock()
	}
}

// announceStop: the notice with duration, participants and files; the
// display name and the marker restored.
func (c *Controller) announceStop(ctx context.Context, ar *activeRec, by id.UserID, at time.Time) {
	log := zerolog.Ctx(ctx)
	room, user := ar.info.RoomID, ar.info.UserID
	ar.lock.Lock()
	prev, markerSent := ar.prevName, ar.markerSent
	ar.lock.Unlock()
	// Cleared even when this run did not send it: a recording continued
	// after a restart still shows the marker of the run that was killed.
	if err := c.mx.SendStateAs(ctx, room, user, StateRecording, string(user), struct{}{}); err != nil && markerSent {
		log.Warn().Err(err).Msg("Failed to clear the recording state event")
	}
	if ar.info.StopReason != callbot.StopRemoved {
		name := prev
		if name == "" {
			name = strings.TrimSuffix(c.mx.MemberDisplayName(ctx, room, user), RecSuffix)
		}
		if err := c.mx.SetMemberDisplayName(ctx, room, user, name); err != nil {
			log.Warn().Err(err).Msg("Failed to restore the recorder's display name")
		}
	}
	rec, files := c.stored(ctx, storage.RecordingID(ar.info.ID))
	if rec != nil {
		c.lock.Lock()
		c.lastStops[room] = rec
		c.lock.Unlock()
	}
	if !c.cfg.Announce {
		return
	}
	var people []id.UserID
	for _, f := range files {
		if !slices.Contains(people, f.UserID) {
			people = append(people, f.UserID)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "⏹️ **Recording stopped**: %s", ReasonText(ar.info.StopReason, by, c.cfg))
	fmt.Fprintf(&b, ". It lasted %s", at.Sub(ar.info.JoinedAt).Round(time.Second))
	if len(people) > 0 {
		fmt.Fprintf(&b, ", recorded %s", joinUsers(people))
	} else {
		b.WriteString(", nobody's media was recorded")
	}
	fmt.Fprintf(&b, ", %d file(s).", len(files))
	if rec != nil && rec.State == storage.StateFailed {
		b.WriteString(" Some files could not be written; the recorder's logs have the details.")
	}
	if c.link != nil {
		if u := c.link(ar.info.ID); u != "" {
			b.WriteString(" The recording: " + u)
		}
	}
	c.mx.SendNotice(ctx, room, b.String(), "")
}

func (c *Controller) stored(ctx context.Context, recID storage.RecordingID) (*storage.Recording, []*storage.RecordingFile) {
	if c.recs == nil {
		return nil, nil
	}
	rec, err := c.recs.Get(ctx, recID)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read the stopped recording")
	}
	files, err := c.recs.GetAllFor(ctx, []storage.RecordingID{recID})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read the stopped recording's files")
	}
	return rec, files[recID]
}

// ReasonText says in words why a recording stopped.
func ReasonText(reason callbot.StopReason, by id.UserID, cfg config.RecordingConfig) string {
	empty, noMedia, maxDur := cfg.EmptyTimeout, cfg.NoMediaTimeout, cfg.MaxDuration
	switch reason {
	case callbot.StopAsked:
		if by != "" {
			return "stopped by " + format.EscapeMarkdown(string(by))
		}
		return "stopped on request"
	case callbot.StopEmpty:
		return fmt.Sprintf("everyone else left the call (%s alone)", empty)
	case callbot.StopNoMedia:
		return fmt.Sprintf("no audio or video arrived for %s", noMedia)
	case callbot.StopMaxDuration:
		return fmt.Sprintf("the maximum recording length of %s was reached", maxDur)
	case callbot.StopCallEnded:
		return "the call ended"
	case callbot.StopRemoved:
		return "the recorder was removed from the room"
	case callbot.StopShutdown:
		return "the recorder shut down"
	case callbot.StopSizeLimit:
		return "the recording reached the size limit the operator set"
	case callbot.StopDiskFull:
		return "the recorder has no disk space left for recordings (an operator has to free some)"
	case callbot.StopInterrupted:
		return "the recorder was interrupted (its files were repaired at the next start)"
	case "":
		return "stopped"
	default:
		return string(reason)
	}
}

// unconsented are the room's people who have not consented.
func (c *Controller) unconsented(ctx context.Context, roomID id.RoomID) []id.UserID {
	people, err := c.mx.JoinedPeople(ctx, roomID)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to list room members")
		return nil
	}
	var out []id.UserID
	for _, u := range people {
		if !c.Consented(ctx, roomID, u) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

func joinUsers(users []id.UserID) string {
	s := make([]string, len(users))
	for i, u := range users {
		s[i] = format.EscapeMarkdown(string(u))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// Interrupted is a recording the recorder never left (it was killed): its
// room still shows it as recording.
type Interrupted struct {
	RoomID      id.RoomID
	UserID      id.UserID // the recorder user
	RecordingID string
}

// ClearInterrupted takes the recording indicator (state event, display
// name) of interrupted recordings down and tells their rooms. Call it after
// Start; the work runs on the controller's worker.
func (c *Controller) ClearInterrupted(recs []Interrupted) {
	for _, ir := range recs {
		c.jobs.Push(func(ctx context.Context) {
			ctx = zerolog.Ctx(ctx).With().Stringer("room_id", ir.RoomID).Str("recording_id", ir.RecordingID).Logger().WithContext(ctx)
			log := zerolog.Ctx(ctx)
			if err := c.mx.SendStateAs(ctx, ir.RoomID, ir.UserID, StateRecording, string(ir.UserID), struct{}{}); err != nil {
				log.Warn().Err(err).Msg("Failed to clear the recording state event of an interrupted recording")
			}
			if name := c.mx.MemberDisplayName(ctx, ir.RoomID, ir.UserID); strings.HasSuffix(name, RecSuffix) {
				if err := c.mx.SetMemberDisplayName(ctx, ir.RoomID, ir.UserID, strings.TrimSuffix(name, RecSuffix)); err != nil {
					log.Warn().Err(err).Msg("Failed to restore the recorder's display name after an interruption")
				}
			}
			if c.cfg.Announce {
				c.mx.SendNotice(ctx, ir.RoomID, fmt.Sprintf("⏹️ **Recording stopped**: the recorder was interrupted. "+
					"The recording `%s` was saved as far as it got.", ir.RecordingID), "")
			}
		})
	}
}
