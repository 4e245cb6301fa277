package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/callbot"
)

// watch checks a recording's stop conditions until it ends: the recorder
// alone for empty_timeout, no media for no_media_timeout, max_duration.
func (c *Controller) watch(ctx context.Context, ar *activeRec) {
	log := zerolog.Ctx(ctx)
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	var aloneSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-ar.done:
			return
		case now := <-ticker.C:
			reason := c.check(ctx, ar, now, &aloneSince)
			if reason == "" {
				continue
			}
			log.Info().Str("reason", string(reason)).Msg("Stop condition met, stopping the recording")
			if reason == callbot.StopMaxDuration && c.cfg.Announce {
				c.mx.SendNotice(ctx, ar.info.RoomID, fmt.Sprintf("This recording reached its maximum length of %s and stops now. "+
					"Say `%s start` to record again.", c.cfg.MaxDuration, c.prefix), "")
			}
			if err := c.calls.LeaveFor(ctx, ar.info.RoomID, reason); err != nil && !errors.Is(err, callbot.ErrNotJoined) && ctx.Err() == nil {
				log.Err(err).Msg("Failed to stop the recording")
			}
			return
		}
	}
}

func (c *Controller) check(ctx context.Context, ar *activeRec, now time.Time, aloneSince *time.Time) callbot.StopReason {
	if c.cfg.MaxDuration > 0 && now.Sub(ar.info.JoinedAt) >= c.cfg.MaxDuration {
		return callbot.StopMaxDuration
	}
	if c.cfg.NoMediaTimeout > 0 && now.Sub(time.Unix(0, ar.lastMedia.Load())) >= c.cfg.NoMediaTimeout {
		return callbot.StopNoMedia
	}
	if c.cfg.EmptyTimeout > 0 {
		st, err := c.calls.Status(ctx, ar.info.RoomID)
		switch {
		case err != nil:
		case st.Participants > 0:
			*aloneSince = time.Time{}
		case aloneSince.IsZero():
			*aloneSince = now
		case now.Sub(*aloneSince) >= c.cfg.EmptyTimeout:
			return callbot.StopEmpty
		}
	}
	return ""
}
