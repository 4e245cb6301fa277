// Package retention deletes recordings older than the configured number
// of days (config recordings.retention): their files, mixdowns and rows.
// A recording still in progress is never deleted.
package retention

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/storage"
)

// Store is what retention needs from the database.
type Store interface {
	// StartedBefore returns recordings not in progress that started before t.
	StartedBefore(ctx context.Context, t time.Time, limit int) ([]*storage.Recording, error)
	// DeleteRecording removes the recording's rows (files and mixdown by cascade).
	DeleteRecording(ctx context.Context, id storage.RecordingID) error
}

// Files is what retention needs from the file store.
type Files interface {
	DeleteFolder(ctx context.Context, folder string) error
}

// DefaultInterval is how often the cleaner looks for expired recordings.
const DefaultInterval = time.Hour

const batch = 100

// Options configure a Cleaner.
type Options struct {
	Store Store
	Files Files
	// Days is the retention; 0 disables the cleaner.
	Days int
	// Interval between runs; 0 is DefaultInterval.
	Interval time.Duration
	// Registerer gets the recordings_expired_total counter; nil: none.
	Registerer prometheus.Registerer
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Cleaner deletes expired recordings periodically.
type Cleaner struct {
	opts    Options
	expired prometheus.Counter
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New makes a Cleaner; Start runs it.
func New(opts Options) (*Cleaner, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cleaner{opts: opts, expired: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "recorder", Name: "recordings_expired_total",
		Help: "Recordings deleted because they were older than recordings.retention days.",
	})}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(c.expired); err != nil {
			return nil, fmt.Errorf("failed to register retention metric: %w", err)
		}
	}
	return c, nil
}

// ExpiresAt is when a recording that started at started is deleted with a
// retention of days (zero time: never).
func ExpiresAt(started time.Time, days int) time.Time {
	if days <= 0 {
		return time.Time{}
	}
	return started.Add(time.Duration(days) * 24 * time.Hour)
}

// Start runs the cleaner now and then every Interval until Stop. With a
// retention of 0 it does nothing.
func (c *Cleaner) Start(ctx context.Context) {
	if c.opts.Days <= 0 {
		return
	}
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ctx = zerolog.Ctx(ctx).With().Str("component", "retention").Logger().WithContext(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ticker := time.NewTicker(c.opts.Interval)
		defer ticker.Stop()
		for {
			if _, err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
				zerolog.Ctx(ctx).Err(err).Msg("Failed to delete expired recordings")
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
}

// Stop ends the cleaner.
func (c *Cleaner) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// RunOnce deletes every expired recording and returns how many it deleted.
func (c *Cleaner) RunOnce(ctx context.Context) (int, error) {
	if c.opts.Days <= 0 {
		return 0, nil
	}
	cutoff := c.opts.Now().Add(-time.Duration(c.opts.Days) * 24 * time.Hour)
	deleted := 0
	for {
		recs, err := c.opts.Store.StartedBefore(ctx, cutoff, batch)
		if err != nil {
			return deleted, fmt.Errorf("failed to list expired recordings: %w", err)
		}
		for _, rec := range recs {
			// Files first: if the rows then stay, the next run retries.
			if err = c.opts.Files.DeleteFolder(ctx, rec.Folder); err != nil {
				return deleted, fmt.Errorf("failed to delete files of recording %s: %w", rec.ID, err)
			}
			if err = c.opts.Store.DeleteRecording(ctx, rec.ID); err != nil {
				return deleted, fmt.Errorf("failed to delete recording %s: %w", rec.ID, err)
			}
			deleted++
			c.expired.Inc()
			zerolog.Ctx(ctx).Info().Str("recording_id", string(rec.ID)).Stringer("room_id", rec.RoomID).
				Time("started_at", rec.StartedAt).Int("retention_days", c.opts.Days).Msg("Deleted expired recording")
		}
		if len(recs) < batch {
			return deleted, nil
		}
	}
}
