package storage

import (
	"context"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Room is a room the bot was invited to, with its per-room settings.
type Room struct {
	qh *dbutil.QueryHelper[*Room]

	RoomID         id.RoomID
	Inviter        id.UserID
	JoinedAt       time.Time
	LeftAt         time.Time
	Greeted        bool
	AutoRecord     bool
	RequireConsent bool
}

func newRoom(qh *dbutil.QueryHelper[*Room]) *Room { return &Room{qh: qh} }

func unixMilliOrZero(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func toUnixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Scan implements dbutil.DataStruct.
func (r *Room) Scan(row dbutil.Scannable) (*Room, error) {
	var joined, left int64
	err := row.Scan(&r.RoomID, &r.Inviter, &joined, &left, &r.Greeted, &r.AutoRecord, &r.RequireConsent)
	if err != nil {
		return nil, err
	}
	r.JoinedAt, r.LeftAt = unixMilliOrZero(joined), unixMilliOrZero(left)
	return r, nil
}

// RoomQuery reads and writes the room table.
type RoomQuery struct {
	*dbutil.QueryHelper[*Room]
}

const (
	roomColumns     = `room_id, inviter, joined_at, left_at, greeted, auto_record, require_consent`
	getRoomQuery    = `SELECT ` + roomColumns + ` FROM room WHERE room_id=$1`
	getJoinedRooms  = `SELECT ` + roomColumns + ` FROM room WHERE joined_at<>0 AND left_at=0 ORDER BY room_id`
	upsertRoomQuery = `
		INSERT INTO room (` + roomColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id) DO UPDATE SET inviter=excluded.inviter, joined_at=excluded.joined_at, left_at=excluded.left_at,
			greeted=excluded.greeted, auto_record=excluded.auto_record, require_consent=excluded.require_consent`
	markGreetedQuery = `UPDATE room SET greeted=true WHERE room_id=$1 AND greeted=false`
	getAutoRooms     = `SELECT ` + roomColumns + ` FROM room WHERE auto_record=true AND joined_at<>0 AND left_at=0 ORDER BY room_id`
)

// GetOrNew returns the stored room or a new unsaved one.
func (rq *RoomQuery) GetOrNew(ctx context.Context, roomID id.RoomID) (*Room, error) {
	room, err := rq.QueryOne(ctx, getRoomQuery, roomID)
	if err != nil || room != nil {
		return room, err
	}
	room = rq.New()
	room.RoomID = roomID
	return room, nil
}

// Get returns the room or nil.
func (rq *RoomQuery) Get(ctx context.Context, roomID id.RoomID) (*Room, error) {
	return rq.QueryOne(ctx, getRoomQuery, roomID)
}

// GetJoined returns the rooms the bot is in.
func (rq *RoomQuery) GetJoined(ctx context.Context) ([]*Room, error) {
	return rq.QueryMany(ctx, getJoinedRooms)
}

// Save inserts or updates the row.
func (r *Room) Save(ctx context.Context) error {
	return r.qh.Exec(ctx, upsertRoomQuery, r.RoomID, r.Inviter, toUnixMilli(r.JoinedAt), toUnixMilli(r.LeftAt),
		r.Greeted, r.AutoRecord, r.RequireConsent)
}

// MarkGreeted sets greeted and reports whether this call was the one that set it,
// so a greeting goes out once even if two joins race.
func (rq *RoomQuery) MarkGreeted(ctx context.Context, roomID id.RoomID) (bool, error) {
	res, err := rq.GetDB().Exec(ctx, markGreetedQuery, roomID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// GetAutoRecord returns the joined rooms with auto-record on.
func (rq *RoomQuery) GetAutoRecord(ctx context.Context) ([]*Room, error) {
	return rq.QueryMany(ctx, getAutoRooms)
}
