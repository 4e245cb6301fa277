// Package storage is the recorder's SQL persistence: schema upgrades and one
// query type per table. SQLite (sqlite3-fk-wal) is the embedded default;
// PostgreSQL is for larger deployments.
package storage

import (
	"context"
	"errors"
	"fmt"

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
}

// Open connects to the database and applies every pending schema upgrade.
func Open(ctx context.Context, opts Options) (*DB, error) {
	log := zerolog.Ctx(ctx).With().Str("component", "database").Logger()
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
	}
}
