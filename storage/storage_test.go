package storage_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

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

func TestStorage(t *testing.T) {
	for name, opts := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := testutil.Ctx(t)
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
				require.NoError(t, db.VirtualUser.SetNextBatch(ctx, "@rec_1:localhost", "s42"))
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

			t.Run("recordings and files", func(t *testing.T) {
				started := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
				rec := db.Recording.New("rec1", "!a:localhost", "20261125-rec1", started)
				rec.ConfID = "conf"
				require.NoError(t, rec.Save(ctx))
				f := db.File.New("rec1", "alice-usermedia-000.webm")
				f.UserID, f.DeviceID, f.Purpose, f.Kind = "@alice:localhost", "ALICEDEV", "m.usermedia", "webm"
				f.Codecs = []string{"video/VP8", "audio/opus"}
				f.Bytes, f.Duration, f.StartedAt, f.State = 1234, 2500*time.Millisecond, started, storage.StateFinished
				f.MuteIntervals = []storage.Interval{{Start: started, End: started.Add(time.Second)}}
				require.NoError(t, f.Save(ctx))
				// A second file under the same name never replaces the first row.
				dup := db.File.New("rec1", "alice-usermedia-000.webm")
				dup.UserID, dup.Kind, dup.Bytes, dup.State = "@alice:localhost", "webm", 99, storage.StateFinished
				require.ErrorIs(t, dup.Save(ctx), storage.ErrExists)
				files, err := db.File.GetAll(ctx, "rec1")
				require.NoError(t, err)
				require.Len(t, files, 1)
				require.EqualValues(t, 1234, files[0].Bytes)
				require.Equal(t, []string{"video/VP8", "audio/opus"}, files[0].Codecs)
				require.Equal(t, 2500*time.Millisecond, files[0].Duration)
				require.Len(t, files[0].MuteIntervals, 1)
				require.True(t, files[0].MuteIntervals[0].Start.Equal(started))

				rec.State, rec.EndedAt = storage.StateFinished, time.Now()
				require.NoError(t, rec.Save(ctx))
				list, err := db.Recording.List(ctx, storage.ListFilter{RoomID: "!a:localhost"})
				require.NoError(t, err)
				require.Len(t, list, 1)
				require.Equal(t, storage.StateFinished, list[0].State)
				list, err = db.Recording.List(ctx, storage.ListFilter{State: storage.StateRecording})
				require.NoError(t, err)
				require.Empty(t, list)

				// Keyset pages are stable when a newer recording arrives.
				for i, recID := range []storage.RecordingID{"rec2", "rec3"} {
					r := db.Recording.New(recID, "!a:localhost", string(recID), started.Add(time.Duration(-i-1)*time.Second))
					require.NoError(t, r.Save(ctx))
				}
				page1, err := db.Recording.List(ctx, storage.ListFilter{RoomID: "!a:localhost", Limit: 2})
				require.NoError(t, err)
				require.Equal(t, []storage.RecordingID{"rec1", "rec2"}, []storage.RecordingID{page1[0].ID, page1[1].ID})
				newer := db.Recording.New("rec0", "!a:localhost", "rec0", started.Add(time.Hour))
				require.NoError(t, newer.Save(ctx))
				page2, err := db.Recording.List(ctx, storage.ListFilter{RoomID: "!a:localhost", Limit: 2, After: storage.CursorOf(page1[1])})
				require.NoError(t, err)
				require.Len(t, page2, 1)
				require.Equal(t, storage.RecordingID("rec3"), page2[0].ID)
				byRec, err := db.File.GetAllFor(ctx, []storage.RecordingID{"rec1", "rec2", "nope"})
				require.NoError(t, err)
				require.Len(t, byRec["rec1"], 1)
				require.Empty(t, byRec["rec2"])
				for _, recID := range []storage.RecordingID{"rec0", "rec2", "rec3"} {
					require.NoError(t, db.Recording.Delete(ctx, recID))
				}

				require.NoError(t, db.ActiveCall.Put(ctx, &storage.ActiveCall{RoomID: "!a:localhost", RecordingID: "rec1",
					ConfID: "conf", UserID: "@rec_1:localhost", DeviceID: "D", SessionID: "S", JoinedAt: started}))
				calls, err := db.ActiveCall.GetAll(ctx)
				require.NoError(t, err)
				require.Len(t, calls, 1)
				require.NoError(t, db.ActiveCall.Delete(ctx, "!a:localhost"))

				require.NoError(t, db.Recording.Delete(ctx, "rec1"))
				files, err = db.File.GetAll(ctx, "rec1")
				require.NoError(t, err)
				require.Empty(t, files, "file rows must go with their recording")
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
	_, err := storage.Open(testutil.Ctx(t), storage.Options{Type: "postgres", URI: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"})
	require.ErrorIs(t, err, storage.ErrDatabase)
}

func TestLocalStore(t *testing.T) {
	ctx := testutil.Ctx(t)
	root := t.TempDir()
	store, err := storage.NewLocalStore(root)
	require.NoError(t, err)
	src := filepath.Join(t.TempDir(), "x.part")
	require.NoError(t, os.WriteFile(src, []byte("media"), 0o600))
	require.NoError(t, store.Put(ctx, "folder1", "a.ogg", src))
	_, err = os.Stat(src)
	require.ErrorIs(t, err, os.ErrNotExist)
	f, err := store.Open(ctx, "folder1", "a.ogg")
	require.NoError(t, err)
	data, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "media", string(data))
	require.EqualValues(t, 5, f.Size)

	_, err = store.Open(ctx, "folder1", "missing.ogg")
	require.ErrorIs(t, err, storage.ErrNotFound)
	for _, bad := range [][2]string{{"..", "a.ogg"}, {"folder1", "../x"}, {"folder1", ".hidden"}, {"a/b", "c"}, {"", "c"}, {"folder1", "a\\b"}} {
		_, err = store.Open(ctx, bad[0], bad[1])
		require.ErrorIs(t, err, storage.ErrBadKey, "%q", bad)
		require.ErrorIs(t, store.Put(ctx, bad[0], bad[1], src), storage.ErrBadKey)
	}
	require.ErrorIs(t, store.DeleteFolder(ctx, ".."), storage.ErrBadKey)
	require.NoError(t, store.DeleteFolder(ctx, "folder1"))
	_, err = os.Stat(filepath.Join(root, "folder1"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestLocalStoreNeverReplaces: a second file under a name already stored is
// refused and both files are kept (the first in the store, the second where
// it was).
func TestLocalStoreNeverReplaces(t *testing.T) {
	ctx := testutil.Ctx(t)
	store, err := storage.NewLocalStore(t.TempDir())
	require.NoError(t, err)
	first, second := filepath.Join(t.TempDir(), "1.part"), filepath.Join(t.TempDir(), "2.part")
	require.NoError(t, os.WriteFile(first, []byte("first"), 0o600))
	require.NoError(t, os.WriteFile(second, []byte("second"), 0o600))
	require.NoError(t, store.Put(ctx, "rec", "a.webm", first))
	require.ErrorIs(t, store.Put(ctx, "rec", "a.webm", second), storage.ErrExists)
	f, err := store.Open(ctx, "rec", "a.webm")
	require.NoError(t, err)
	data, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "first", string(data))
	data, err = os.ReadFile(second)
	require.NoError(t, err)
	require.Equal(t, "second", string(data))
}

func requireMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, info.Mode().Perm(), "mode of %s", path)
}

// TestLocalStoreOwnerOnly: recordings are private conversations; the store,
// its folders and its files are owner-only, whoever created them and
// whatever the umask.
func TestLocalStoreOwnerOnly(t *testing.T) {
	ctx := testutil.Ctx(t)
	root := filepath.Join(t.TempDir(), "recordings")
	require.NoError(t, os.Mkdir(root, 0o755))
	require.NoError(t, os.Chmod(root, 0o755))
	store, err := storage.NewLocalStore(root)
	require.NoError(t, err)
	requireMode(t, root, 0o700)
	src := filepath.Join(t.TempDir(), "x.part")
	require.NoError(t, os.WriteFile(src, []byte("media"), 0o644))
	require.NoError(t, os.Chmod(src, 0o644))
	require.NoError(t, store.Put(ctx, "folder1", "a.ogg", src))
	requireMode(t, filepath.Join(root, "folder1"), 0o700)
	requireMode(t, filepath.Join(root, "folder1", "a.ogg"), 0o600)
}

// TestSQLiteOwnerOnly: the database holds access tokens and crypto keys;
// the SQLite file and its -wal and -shm files are owner-only.
func TestSQLiteOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "test.db")
	db, err := storage.Open(testutil.Ctx(t), storage.Options{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate", MaxOpenConns: 2, MaxIdleConns: 2})
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(testutil.Ctx(t), "CREATE TABLE mode_probe (x INTEGER)")
	require.NoError(t, err)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		requireMode(t, p, 0o600)
	}

	// An existing database with a looser mode is tightened, with its WAL.
	require.NoError(t, db.Close())
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(p); err == nil {
			require.NoError(t, os.Chmod(p, 0o644))
		}
	}
	db2, err := storage.Open(testutil.Ctx(t), storage.Options{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate", MaxOpenConns: 2, MaxIdleConns: 2})
	require.NoError(t, err)
	defer db2.Close()
	_, err = db2.Exec(testutil.Ctx(t), "INSERT INTO mode_probe VALUES (1)")
	require.NoError(t, err)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		requireMode(t, p, 0o600)
	}
}
