package storage

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"go.mau.fi/util/dbutil"
)

// TxnQuery remembers processed appservice transaction IDs.
type TxnQuery struct {
	db *dbutil.Database
}

const (
	claimTxnQuery = `INSERT INTO appservice_txn (txn_id, processed_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING`
	pruneTxnQuery = `DELETE FROM appservice_txn WHERE processed_at < $1`
)

const isProcessedQuery = `SELECT EXISTS(SELECT 1 FROM appservice_txn WHERE txn_id=$1)`

// IsProcessed reports whether txnID was already recorded.
func (tq *TxnQuery) IsProcessed(ctx context.Context, txnID string) (done bool, err error) {
	err = tq.db.QueryRow(ctx, isProcessedQuery, txnID).Scan(&done)
	return done, err
}

// Claim records txnID and reports whether it was new. A false result means the
// transaction was already processed and must be acknowledged without handling.
func (tq *TxnQuery) Claim(ctx context.Context, txnID string) (bool, error) {
	res, err := tq.db.Exec(ctx, claimTxnQuery, txnID, time.Now().UnixMilli())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Prune forgets transactions processed before the cutoff.
func (tq *TxnQuery) Prune(ctx context.Context, before time.Time) error {
	_, err := tq.db.Exec(ctx, pruneTxnQuery, before.UnixMilli())
	return err
}

// KVQuery is a tiny key-value table for process-wide values.
type KVQuery struct {
	db *dbutil.Database
}

const (
	getKVQuery = `SELECT value FROM kv_store WHERE key=$1`
	setKVQuery = `INSERT INTO kv_store (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value=excluded.value`
	// insertKVQuery keeps an existing value: used to create-once secrets.
	insertKVQuery = `INSERT INTO kv_store (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`
)

// Get returns the value, or "" if the key is absent.
func (kq *KVQuery) Get(ctx context.Context, key string) (value string, err error) {
	err = kq.db.QueryRow(ctx, getKVQuery, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return value, err
}

// Set stores value under key.
func (kq *KVQuery) Set(ctx context.Context, key, value string) error {
	_, err := kq.db.Exec(ctx, setKVQuery, key, value)
	return err
}

// GetOrCreate returns the stored value, storing newValue first if the key is absent.
func (kq *KVQuery) GetOrCreate(ctx context.Context, key, newValue string) (string, error) {
	if _, err := kq.db.Exec(ctx, insertKVQuery, key, newValue); err != nil {
		return "", err
	}
	return kq.Get(ctx, key)
}
