// Package storage is the recorder's SQL persistence: schema upgrades and one
// query type per table. SQLite (sqlite3-fk-wal) is the embedded default;
// PostgreSQL is for larger deployments.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	_ "github.com/lib/pq" // postgres driver
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal driver

	"github.com/matrix-recorder/recorder/storage/upgrades"
)

// ErrDatabase wraps every failure to open or upgrade the database.
var ErrDatabase = errors.New("database error")

// Options selects and tunes the database.
type Options struct {
	Type         string // sqlite3-fk-wal or postgres
	URI          string
	MaxOpenConns int
	MaxIdleConns int
}

// DB is the opened, upgraded database with its query helpers.
type DB struct {
	*dbutil.Database

	VirtualUser *VirtualUserQuery
	Room        *RoomQuery
	Txn         *TxnQuery
	KV          *KVQuery
	Recording   *RecordingQuery
	File        *RecordingFileQuery
	ActiveCall  *ActiveCallQuery
	Consent     *ConsentQuery
	Mixdown     *MixdownQuery
	Outbox      *OutboxQuery
}

// Open connects to the database and applies every pending schema upgrade.
func Open(ctx context.Context, opts Options) (*DB, error) {
	log := zerolog.Ctx(ctx).With().Str("component", "database").Logger()
	if err := prepareSQLiteFile(opts); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	raw, err := dbutil.NewFromConfig("recorder", dbutil.Config{PoolConfig: dbutil.PoolConfig{
		Type: opts.Type, URI: opts.URI, MaxOpenConns: opts.MaxOpenConns, MaxIdleConns: opts.MaxIdleConns,
	}}, dbutil.ZeroLogger(log))
	if err != nil {
		return nil, fmt.Errorf("%w: failed to open %s database: %w", ErrDatabase, opts.Type, err)
	}
	raw.UpgradeTable = upgrades.Table
	if err = raw.Upgrade(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("%w: failed to upgrade database: %w", ErrDatabase, err)
	}
	return Wrap(raw), nil
}

// sqliteFileMode is the mode of the SQLite database file; SQLite gives its
// -wal and -shm files the database file's mode. The database holds access
// tokens and crypto keys.
const sqliteFileMode os.FileMode = 0o600

// prepareSQLiteFile creates the SQLite database file owner-only before
// SQLite does (it would use 0644 less the umask) and tightens an existing
// one and its -wal and -shm files. Other backends and in-memory databases
// are left alone.
func prepareSQLiteFile(opts Options) error {
	path := sqlitePath(opts)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, sqliteFileMode) //nolint:gosec // the configured database path
	if err == nil {
		if err = f.Close(); err != nil {
			return fmt.Errorf("failed to create SQLite file %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("failed to create SQLite file %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err = os.Chmod(p, sqliteFileMode); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("failed to make %s owner-only: %w", p, err)
		}
	}
	return nil
}

// sqlitePath is the file of a SQLite URI ("file:recorder.db?...",
// "file:///abs/recorder.db", or a plain path), or "" for other backends and
// in-memory databases.
func sqlitePath(opts Options) string {
	if !strings.HasPrefix(opts.Type, "sqlite") {
		return ""
	}
	uri, query, _ := strings.Cut(opts.URI, "?")
	if strings.Contains(query, "mode=memory") {
		return ""
	}
	uri = strings.TrimPrefix(uri, "file:")
	if strings.HasPrefix(uri, "//") {
		u, err := url.Parse("file:" + uri)
		if err != nil || (u.Host != "" && u.Host != "localhost") {
			return ""
		}
		uri = u.Path
	}
	if uri == "" || uri == ":memory:" {
		return ""
	}
	return uri
}

// Wrap builds the query helpers around an already upgraded database.
func Wrap(raw *dbutil.Database) *DB {
	return &DB{
		Database:    raw,
		VirtualUser: &VirtualUserQuery{dbutil.MakeQueryHelper(raw, newVirtualUser)},
		Room:        &RoomQuery{dbutil.MakeQueryHelper(raw, newRoom)},
		Txn:         &TxnQuery{db: raw},
		KV:          &KVQuery{db: raw},
		Recording:   &RecordingQuery{dbutil.MakeQueryHelper(raw, newRecording)},
		File:        &RecordingFileQuery{dbutil.MakeQueryHelper(raw, newRecordingFile)},
		ActiveCall:  &ActiveCallQuery{db: raw},
		Consent:     &ConsentQuery{db: raw},
		Mixdown:     &MixdownQuery{db: raw},
		Outbox:      &OutboxQuery{db: raw},
	}
}
