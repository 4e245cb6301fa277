package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/storage"
)

// listLimit is how many recordings `!rec list` shows.
const listLimit = 10

// registerListCommand adds `!rec list`: the room's recent recordings.
func (app *App) registerListCommand() {
	app.AS.RegisterCommand(&appservice.Command{
		Name: "list", Help: "List this room's recent recordings.",
		Func: func(ctx context.Context, ce *appservice.CommandEvent) {
			recs, err := app.DB.Recording.List(ctx, storage.ListFilter{RoomID: ce.RoomID, Limit: listLimit})
			if err != nil {
				zerolog.Ctx(ctx).Err(err).Msg("Failed to list recordings")
				ce.Reply(ctx, "I couldn't read the recordings; the recorder's logs have the details.")
				return
			}
			if len(recs) == 0 {
				ce.Reply(ctx, "There are no recordings of this room yet.")
				return
			}
			var b strings.Builder
			fmt.Fprintf(&b, "**Recent recordings of this room** (newest first):\n\n")
			for _, rec := range recs {
				files, err := app.DB.File.GetAll(ctx, rec.ID)
				if err != nil {
					zerolog.Ctx(ctx).Err(err).Msg("Failed to read recording files")
				}
				fmt.Fprintf(&b, "* `%s` %s, %s, %s, %d file(s)\n", rec.ID, rec.StartedAt.UTC().Format("2006-01-02 15:04 UTC"),
					recordingLength(rec), rec.State, len(files))
			}
			ce.Reply(ctx, b.String())
		},
	})
}

func recordingLength(rec *storage.Recording) string {
	if rec.EndedAt.IsZero() {
		return "in progress"
	}
	return rec.EndedAt.Sub(rec.StartedAt).Round(time.Second).String()
}
