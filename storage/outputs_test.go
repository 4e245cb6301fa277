package storage_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/storage"
)

// TestOutputsTables: the mixdown job, its file rows and the webhook
// outbox on every backend.
func TestOutputsTables(t *testing.T) {
	for name, opts := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := testutil.Ctx(t)
			db, err := storage.Open(ctx, opts)
			require.NoError(t, err)
			defer db.Close()
			now := time.UnixMilli(time.Now().UnixMilli())

			rec := db.Recording.New("r1", "!room:test", "r1", now.Add(-time.Hour))
			rec.RoomName = "Standup"
			require.NoError(t, rec.Save(ctx))
			got, err := db.Recording.Get(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, "Standup", got.RoomName)
			f := db.File.New("r1", "a.ogg")
			f.UserID, f.Kind, f.State, f.DisplayName, f.AvatarURL = "@a:test", "ogg", storage.StateFinished, "Alice", "mxc://test/a"
			require.NoError(t, f.Save(ctx))
			files, err := db.File.GetAll(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, "Alice", files[0].DisplayName)
			require.Equal(t, "mxc://test/a", files[0].AvatarURL)

			require.NoError(t, db.Mixdown.Put(ctx, &storage.Mixdown{RecordingID: "r1", State: storage.MixdownRunning, QueuedAt: now}))
			require.NoError(t, db.Mixdown.SetProgress(ctx, "r1", 0.5))
			m, err := db.Mixdown.Get(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, storage.MixdownRunning, m.State)
			require.InDelta(t, 0.5, m.Progress, 0.001)
			un, err := db.Mixdown.Unfinished(ctx)
			require.NoError(t, err)
			require.Len(t, un, 1)
			for range 2 { // replacing keeps one set
				require.NoError(t, db.ReplaceMixdownFiles(ctx, "r1", []*storage.RecordingFile{{Name: "mixdown.ogg", Kind: "ogg", State: storage.StateFinished}}))
			}
			files, err = db.File.GetAll(ctx, "r1")
			require.NoError(t, err)
			require.Len(t, files, 2)
			missing, err := db.Mixdown.Get(ctx, "none")
			require.NoError(t, err)
			require.Nil(t, missing)

			item := &storage.OutboxItem{ID: "e1@x", URL: "http://127.0.0.1:1/", Event: "recording.started", Body: []byte(`{"id":"e1"}`),
				CreatedAt: now, NextAttemptAt: now}
			require.NoError(t, db.Outbox.Add(ctx, item, item)) // the same id twice is one item
			due, err := db.Outbox.Due(ctx, now, 10)
			require.NoError(t, err)
			require.Len(t, due, 1)
			require.NoError(t, db.Outbox.Retry(ctx, "e1@x", now.Add(time.Minute), "503"))
			due, err = db.Outbox.Due(ctx, now, 10)
			require.NoError(t, err)
			require.Empty(t, due)
			next, err := db.Outbox.NextAttempt(ctx)
			require.NoError(t, err)
			require.Equal(t, now.Add(time.Minute), next)
			require.NoError(t, db.Outbox.Delivered(ctx, "e1@x", now))
			got2, err := db.Outbox.Get(ctx, "e1@x")
			require.NoError(t, err)
			require.Equal(t, 2, got2.Attempts)
			n, err := db.Outbox.Pending(ctx)
			require.NoError(t, err)
			require.Zero(t, n)
			require.NoError(t, db.Outbox.Prune(ctx, now.Add(time.Second)))
			gone, err := db.Outbox.Get(ctx, "e1@x")
			require.NoError(t, err)
			require.Nil(t, gone)

			old, err := db.Recording.StartedBefore(ctx, now, 10)
			require.NoError(t, err)
			require.Empty(t, old, "a recording in progress never expires")
			rec.State = storage.StateFinished
			require.NoError(t, rec.Save(ctx))
			old, err = db.Recording.StartedBefore(ctx, now, 10)
			require.NoError(t, err)
			require.Len(t, old, 1)
			require.NoError(t, db.Recording.Delete(ctx, "r1"))
			m, err = db.Mixdown.Get(ctx, "r1")
			require.NoError(t, err)
			require.Nil(t, m, "the mixdown job goes with its recording")
		})
	}
}
