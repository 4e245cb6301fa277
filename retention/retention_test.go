package retention_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	rtestutil "github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/retention"
	"github.com/matrix-recorder/recorder/storage"
)

type retStore struct{ db *storage.DB }

func (rs retStore) StartedBefore(ctx context.Context, t time.Time, limit int) ([]*storage.Recording, error) {
	return rs.db.Recording.StartedBefore(ctx, t, limit)
}

func (rs retStore) DeleteRecording(ctx context.Context, id storage.RecordingID) error {
	return rs.db.Recording.Delete(ctx, id)
}

// TestRetentionDeletesExactlyTheExpired: of recordings older and newer than
// the retention, finished, failed and in progress, only the old ones not in
// progress go: their files, mixdown, file rows and mixdown job; everything
// else stays untouched, and the deletions are counted.
func TestRetentionDeletesExactlyTheExpired(t *testing.T) {
	ctx := rtestutil.Ctx(t)
	dir := t.TempDir()
	db, err := storage.Open(ctx, storage.Options{Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(dir, "test.db") + "?_txlock=immediate", MaxOpenConns: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := storage.NewLocalStore(filepath.Join(dir, "recordings"))
	require.NoError(t, err)

	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	add := func(id storage.RecordingID, age time.Duration, state storage.RecordingState) {
		rec := db.Recording.New(id, "!room:test", string(id), now.Add(-age))
		rec.State = state
		require.NoError(t, rec.Save(ctx))
		for _, name := range []string{"a.ogg", "mixdown.ogg"} {
			local := filepath.Join(dir, "spool-"+string(id)+name)
			require.NoError(t, os.WriteFile(local, []byte("x"), 0o600))
			require.NoError(t, store.Put(ctx, rec.Folder, name, local))
		}
		f := db.File.New(id, "a.ogg")
		f.UserID, f.Kind, f.State = "@a:test", "ogg", storage.StateFinished
		require.NoError(t, f.Save(ctx))
		require.NoError(t, db.ReplaceMixdownFiles(ctx, id, []*storage.RecordingFile{{Name: "mixdown.ogg", Kind: "ogg", State: storage.StateFinished}}))
		require.NoError(t, db.Mixdown.Put(ctx, &storage.Mixdown{RecordingID: id, State: storage.MixdownFinished, QueuedAt: now}))
	}
	add("old-finished", 8*day, storage.StateFinished)
	add("old-failed", 30*day, storage.StateFailed)
	add("old-recording", 9*day, storage.StateRecording) // in progress: never deleted
	add("new-finished", 6*day, storage.StateFinished)
	add("edge", 7*day-time.Minute, storage.StateRepaired)

	reg := prometheus.NewRegistry()
	c, err := retention.New(retention.Options{Store: retStore{db}, Files: store, Days: 7, Registerer: reg, Now: func() time.Time { return now }})
	require.NoError(t, err)
	n, err := c.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	gone := map[storage.RecordingID]bool{"old-finished": true, "old-failed": true}
	for _, id := range []storage.RecordingID{"old-finished", "old-failed", "old-recording", "new-finished", "edge"} {
		rec, err := db.Recording.Get(ctx, id)
		require.NoError(t, err)
		files, err := db.File.GetAll(ctx, id)
		require.NoError(t, err)
		mix, err := db.Mixdown.Get(ctx, id)
		require.NoError(t, err)
		_, statErr := os.Stat(filepath.Join(dir, "recordings", string(id)))
		if gone[id] {
			require.Nil(t, rec, id)
			require.Empty(t, files, id)
			require.Nil(t, mix, id)
			require.ErrorIs(t, statErr, os.ErrNotExist, id)
		} else {
			require.NotNil(t, rec, id)
			require.Len(t, files, 2, id)
			require.NotNil(t, mix, id)
			require.NoError(t, statErr, id)
		}
	}
	require.InDelta(t, 2, expired(t, reg), 0)

	n, err = c.RunOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to delete")

	off, err := retention.New(retention.Options{Store: retStore{db}, Files: store, Now: func() time.Time { return now.Add(365 * day) }})
	require.NoError(t, err)
	n, err = off.RunOnce(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "retention 0 keeps everything")
	off.Start(ctx) // no goroutine with retention off
	off.Stop()

	require.Equal(t, now.Add(7*day), retention.ExpiresAt(now, 7))
	require.True(t, retention.ExpiresAt(now, 0).IsZero())
}

func expired(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 1)
	require.Equal(t, "recorder_recordings_expired_total", mfs[0].GetName())
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
