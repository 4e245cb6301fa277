package storage

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"go.mau.fi/util/dbutil"
)

// PurposeMixdown is the purpose of a recording's mixdown files: one file
// of all participants (Ogg Opus, and WebM when anyone sent video).
const PurposeMixdown = "mixdown"

// MixdownState is where a mixdown job is.
type MixdownState string

// Mixdown states.
const (
	MixdownQueued   MixdownState = "queued"
	MixdownRunning  MixdownState = "running"
	MixdownFinished MixdownState = "finished"
	MixdownFailed   MixdownState = "failed"
)

// Mixdown is the mixdown job of one recording.
type Mixdown struct {
	RecordingID RecordingID
	State       MixdownState
	Progress    float64 // 0..1
	Error       string
	QueuedAt    time.Time
	StartedAt   time.Time
	EndedAt     time.Time
}

// MixdownQuery reads and writes the mixdown table.
type MixdownQuery struct {
	db *dbutil.Database
}

const (
	mixdownColumns   = `recording_id, state, progress, error, queued_at, started_at, ended_at`
	upsertMixdownSQL = `INSERT INTO mixdown (` + mixdownColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (recording_id) DO UPDATE SET state=excluded.state, progress=excluded.progress, error=excluded.error,
		queued_at=excluded.queued_at, started_at=excluded.started_at, ended_at=excluded.ended_at`
	getMixdownSQL     = `SELECT ` + mixdownColumns + ` FROM mixdown WHERE recording_id=$1`
	getMixdownsInSQL  = `SELECT ` + mixdownColumns + ` FROM mixdown WHERE state=$1 OR state=$2 ORDER BY queued_at`
	setProgressSQL    = `UPDATE mixdown SET progress=$2 WHERE recording_id=$1`
	deleteMixFilesSQL = `DELETE FROM recording_file WHERE recording_id=$1 AND purpose='` + PurposeMixdown + `'`
)

func scanMixdown(row dbutil.Scannable) (*Mixdown, error) {
	var m Mixdown
	var progress, queued, started, ended int64
	if err := row.Scan(&m.RecordingID, &m.State, &progress, &m.Error, &queued, &started, &ended); err != nil {
		return nil, err
	}
	m.Progress = float64(progress) / 1000
	m.QueuedAt, m.StartedAt, m.EndedAt = unixMilliOrZero(queued), unixMilliOrZero(started), unixMilliOrZero(ended)
	return &m, nil
}

// Put inserts or replaces the recording's mixdown job.
func (mq *MixdownQuery) Put(ctx context.Context, m *Mixdown) error {
	_, err := mq.db.Exec(ctx, upsertMixdownSQL, m.RecordingID, m.State, int64(m.Progress*1000), m.Error,
		toUnixMilli(m.QueuedAt), toUnixMilli(m.StartedAt), toUnixMilli(m.EndedAt))
	return err
}

// SetProgress stores a running job's progress (0..1).
func (mq *MixdownQuery) SetProgress(ctx context.Context, recID RecordingID, p float64) error {
	_, err := mq.db.Exec(ctx, setProgressSQL, recID, int64(p*1000))
	return err
}

// Get returns the recording's mixdown job or nil.
func (mq *MixdownQuery) Get(ctx context.Context, recID RecordingID) (*Mixdown, error) {
	m, err := scanMixdown(mq.db.QueryRow(ctx, getMixdownSQL, recID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return m, err
}

// Unfinished returns the jobs queued or running (a restart resumes them).
func (mq *MixdownQuery) Unfinished(ctx context.Context) ([]*Mixdown, error) {
	rows, err := mq.db.Query(ctx, getMixdownsInSQL, MixdownQueued, MixdownRunning)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Mixdown
	for rows.Next() {
		m, err := scanMixdown(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteFiles removes the rows of the recording's mixdown files.
func (mq *MixdownQuery) DeleteFiles(ctx context.Context, recID RecordingID) error {
	_, err := mq.db.Exec(ctx, deleteMixFilesSQL, recID)
	return err
}

// OutboxItem is one webhook delivery: an event for one URL.
type OutboxItem struct {
	ID            string // idempotency id, the same on every attempt
	URL           string
	Event         string
	Body          []byte
	CreatedAt     time.Time
	Attempts      int
	NextAttemptAt time.Time
	DeliveredAt   time.Time
	LastError     string
}

// OutboxQuery reads and writes the webhook_outbox table.
type OutboxQuery struct {
	db *dbutil.Database
}

const (
	outboxColumns   = `id, url, event, body, created_at, attempts, next_attempt_at, delivered_at, last_error`
	insertOutboxSQL = `INSERT INTO webhook_outbox (` + outboxColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (id) DO NOTHING`
	dueOutboxSQL = `SELECT ` + outboxColumns + ` FROM webhook_outbox
		WHERE delivered_at=0 AND next_attempt_at<=$1 ORDER BY next_attempt_at, created_at LIMIT $2`
	nextOutboxSQL      = `SELECT COALESCE(MIN(next_attempt_at), 0) FROM webhook_outbox WHERE delivered_at=0`
	deliveredSQL       = `UPDATE webhook_outbox SET delivered_at=$2, attempts=attempts+1, last_error='' WHERE id=$1`
	retryOutboxSQL     = `UPDATE webhook_outbox SET attempts=attempts+1, next_attempt_at=$2, last_error=$3 WHERE id=$1`
	pruneOutboxSQL     = `DELETE FROM webhook_outbox WHERE delivered_at<>0 AND delivered_at<$1`
	giveUpOutboxSQL    = `UPDATE webhook_outbox SET delivered_at=-1, attempts=attempts+1, last_error=$2 WHERE id=$1`
	getOutboxSQL       = `SELECT ` + outboxColumns + ` FROM webhook_outbox WHERE id=$1`
	countPendingOutbox = `SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at=0`
)

func scanOutbox(row dbutil.Scannable) (*OutboxItem, error) {
	var it OutboxItem
	var body string
	var created, next, delivered int64
	if err := row.Scan(&it.ID, &it.URL, &it.Event, &body, &created, &it.Attempts, &next, &delivered, &it.LastError); err != nil {
		return nil, err
	}
	it.Body = []byte(body)
	it.CreatedAt, it.NextAttemptAt = unixMilliOrZero(created), unixMilliOrZero(next)
	if delivered > 0 {
		it.DeliveredAt = time.UnixMilli(delivered)
	}
	return &it, nil
}

// Add stores deliveries; an id already stored is left as it is.
func (oq *OutboxQuery) Add(ctx context.Context, items ...*OutboxItem) error {
	return oq.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, it := range items {
			if _, err := oq.db.Exec(ctx, insertOutboxSQL, it.ID, it.URL, it.Event, string(it.Body), it.CreatedAt.UnixMilli(),
				it.Attempts, it.NextAttemptAt.UnixMilli(), toUnixMilli(it.DeliveredAt), it.LastError); err != nil {
				return err
			}
		}
		return nil
	})
}

// Due returns at most limit undelivered items whose next attempt is due at now.
func (oq *OutboxQuery) Due(ctx context.Context, now time.Time, limit int) ([]*OutboxItem, error) {
	rows, err := oq.db.Query(ctx, dueOutboxSQL, now.UnixMilli(), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*OutboxItem
	for rows.Next() {
		it, err := scanOutbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// NextAttempt is when the earliest undelivered item is due (zero: none).
func (oq *OutboxQuery) NextAttempt(ctx context.Context) (time.Time, error) {
	var ms int64
	if err := oq.db.QueryRow(ctx, nextOutboxSQL).Scan(&ms); err != nil {
		return time.Time{}, err
	}
	return unixMilliOrZero(ms), nil
}

// Pending counts undelivered items.
func (oq *OutboxQuery) Pending(ctx context.Context) (int, error) {
	var n int
	err := oq.db.QueryRow(ctx, countPendingOutbox).Scan(&n)
	return n, err
}

// Get returns one item or nil.
func (oq *OutboxQuery) Get(ctx context.Context, itemID string) (*OutboxItem, error) {
	it, err := scanOutbox(oq.db.QueryRow(ctx, getOutboxSQL, itemID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return it, err
}

// Delivered marks an item acknowledged by its receiver.
func (oq *OutboxQuery) Delivered(ctx context.Context, itemID string, at time.Time) error {
	_, err := oq.db.Exec(ctx, deliveredSQL, itemID, at.UnixMilli())
	return err
}

// Retry records a failed attempt and when to try again.
func (oq *OutboxQuery) Retry(ctx context.Context, itemID string, next time.Time, reason string) error {
	_, err := oq.db.Exec(ctx, retryOutboxSQL, itemID, next.UnixMilli(), reason)
	return err
}

// GiveUp records a last failed attempt; the item is not tried again.
func (oq *OutboxQuery) GiveUp(ctx context.Context, itemID string, reason string) error {
	_, err := oq.db.Exec(ctx, giveUpOutboxSQL, itemID, reason)
	return err
}

// Prune forgets items delivered (or given up) before t.
func (oq *OutboxQuery) Prune(ctx context.Context, before time.Time) error {
	_, err := oq.db.Exec(ctx, pruneOutboxSQL, before.UnixMilli())
	return err
}

const expiredRecordingsQuery = `SELECT ` + recordingColumns + ` FROM recording
	WHERE state<>'recording' AND started_at<$1 ORDER BY started_at LIMIT $2`

// StartedBefore returns at most limit recordings that are not in progress
// and started before t, oldest first.
func (rq *RecordingQuery) StartedBefore(ctx context.Context, t time.Time, limit int) ([]*Recording, error) {
	return rq.QueryMany(ctx, expiredRecordingsQuery, t.UnixMilli(), limit)
}

// ReplaceMixdownFiles swaps the recording's mixdown file rows for files
// (purpose PurposeMixdown) in one transaction.
func (db *DB) ReplaceMixdownFiles(ctx context.Context, recID RecordingID, files []*RecordingFile) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := db.Mixdown.DeleteFiles(ctx, recID); err != nil {
			return err
		}
		for _, f := range files {
			f.qh, f.RecordingID, f.Purpose = db.File.QueryHelper, recID, PurposeMixdown
			if err := f.Save(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}
