package storage

import (
	"context"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// ConsentQuery reads and writes who consented to be recorded in a room.
type ConsentQuery struct {
	db *dbutil.Database
}

const (
	putConsentQuery = `INSERT INTO recording_consent (room_id, user_id, given_at) VALUES ($1, $2, $3)
		ON CONFLICT (room_id, user_id) DO NOTHING`
	hasConsentQuery = `SELECT COUNT(*) FROM recording_consent WHERE room_id=$1 AND user_id=$2`
)

// Put records userID's consent in roomID (kept when given again).
func (cq *ConsentQuery) Put(ctx context.Context, roomID id.RoomID, userID id.UserID, at time.Time) error {
	_, err := cq.db.Exec(ctx, putConsentQuery, roomID, userID, at.UnixMilli())
	return err
}

// Has reports whether userID consented in roomID.
func (cq *ConsentQuery) Has(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	var n int
	err := cq.db.QueryRow(ctx, hasConsentQuery, roomID, userID).Scan(&n)
	return n > 0, err
}
