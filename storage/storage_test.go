package storage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/pgtest"
	"github.com/matrix-recorder/recorder/storage"
)

// backends opens a fresh, empty database of every supported kind.
func backends(t *testing.T) map[string]storage.Options {
	return map[string]storage.Options{
		"sqlite":   {Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(t.TempDir(), "test.db") + "?_txlock=immediate", MaxOpenConns: 2},
		"postgres": {Type: "postgres", URI: pgtest.Start(t), MaxOpenConns: 2},
	}
}

func testCtx(t *testing.T) context.Context {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	return log.WithContext(context.Background())
}

func TestStorage(t *testing.T) {
	for name, opts := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			db, err := storage.Open(ctx, opts)
			require.NoError(t, err)
			defer db.Close()

			t.Run("upgrade is idempotent", func(t *testing.T) {
				db2, err := storage.Open(ctx, opts)
				require.NoError(t, err)
				require.NoError(t, db2.Close())
			})

			t.Run("virtual user", func(t *testing.T) {
				vu, err := db.VirtualUser.Get(ctx, "@rec_1:localhost")
				require.NoError(t, err)
				require.Nil(t, vu)
				vu = db.VirtualUser.New("@rec_1:localhost", "RECDEV1")
				vu.AccessToken = "tok"
				require.NoError(t, vu.Save(ctx))
				require.NoError(t, vu.SetNextBatch(ctx, "s42"))
				got, err := db.VirtualUser.Get(ctx, "@rec_1:localhost")
				require.NoError(t, err)
				require.Equal(t, id.DeviceID("RECDEV1"), got.DeviceID)
				require.Equal(t, "tok", got.AccessToken)
				require.Equal(t, "s42", got.NextBatch)
				require.WithinDuration(t, time.Now(), got.CreatedAt, time.Minute)
				all, err := db.VirtualUser.GetAll(ctx)
				require.NoError(t, err)
				require.Len(t, all, 1)
			})

			t.Run("room", func(t *testing.T) {
				room, err := db.Room.GetOrNew(ctx, "!a:localhost")
				require.NoError(t, err)
				room.Inviter = "@alice:localhost"
				room.JoinedAt = time.Now()
				require.NoError(t, room.Save(ctx))
				first, err := db.Room.MarkGreeted(ctx, "!a:localhost")
				require.NoError(t, err)
				require.True(t, first)
				again, err := db.Room.MarkGreeted(ctx, "!a:localhost")
				require.NoError(t, err)
				require.False(t, again)
				joined, err := db.Room.GetJoined(ctx)
				require.NoError(t, err)
				require.Len(t, joined, 1)
				require.True(t, joined[0].Greeted)
				require.Equal(t, id.UserID("@alice:localhost"), joined[0].Inviter)
			})

			t.Run("transaction ids", func(t *testing.T) {
				isNew, err := db.Txn.Claim(ctx, "txn1")
				require.NoError(t, err)
				require.True(t, isNew)
				isNew, err = db.Txn.Claim(ctx, "txn1")
				require.NoError(t, err)
				require.False(t, isNew)
				require.NoError(t, db.Txn.Prune(ctx, time.Now().Add(time.Hour)))
				isNew, err = db.Txn.Claim(ctx, "txn1")
				require.NoError(t, err)
				require.True(t, isNew)
			})

			t.Run("kv", func(t *testing.T) {
				v, err := db.KV.Get(ctx, "missing")
				require.NoError(t, err)
				require.Empty(t, v)
				v, err = db.KV.GetOrCreate(ctx, "pickle", "first")
				require.NoError(t, err)
				require.Equal(t, "first", v)
				v, err = db.KV.GetOrCreate(ctx, "pickle", "second")
				require.NoError(t, err)
				require.Equal(t, "first", v)
			})
		})
	}
}

func TestOpenBadDatabase(t *testing.T) {
	_, err := storage.Open(testCtx(t), storage.Options{Type: "postgres", URI: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"})
	require.ErrorIs(t, err, storage.ErrDatabase)
}
