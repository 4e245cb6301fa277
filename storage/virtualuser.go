package storage

import (
	"context"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// VirtualUser is a recorder user with a device of its own.
type VirtualUser struct {
	qh *dbutil.QueryHelper[*VirtualUser]

	UserID      id.UserID
	DeviceID    id.DeviceID
	AccessToken string
	NextBatch   string
	CreatedAt   time.Time
}

func newVirtualUser(qh *dbutil.QueryHelper[*VirtualUser]) *VirtualUser {
	return &VirtualUser{qh: qh}
}

// Scan implements dbutil.DataStruct.
func (vu *VirtualUser) Scan(row dbutil.Scannable) (*VirtualUser, error) {
	var created int64
	err := row.Scan(&vu.UserID, &vu.DeviceID, &vu.AccessToken, &vu.NextBatch, &created)
	if err != nil {
		return nil, err
	}
	vu.CreatedAt = time.UnixMilli(created)
	return vu, nil
}

func (vu *VirtualUser) sqlVariables() []any {
	return []any{vu.UserID, vu.DeviceID, vu.AccessToken, vu.NextBatch, vu.CreatedAt.UnixMilli()}
}

// VirtualUserQuery reads and writes the virtual_user table.
type VirtualUserQuery struct {
	*dbutil.QueryHelper[*VirtualUser]
}

const (
	getVirtualUserQuery = `SELECT user_id, device_id, access_token, next_batch, created_at FROM virtual_user WHERE user_id=$1`
	getAllVirtualUsers  = `SELECT user_id, device_id, access_token, next_batch, created_at FROM virtual_user ORDER BY user_id`
	upsertVirtualUser   = `
		INSERT INTO virtual_user (user_id, device_id, access_token, next_batch, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id) DO UPDATE SET device_id=excluded.device_id, access_token=excluded.access_token, next_batch=excluded.next_batch`
	setNextBatchQuery = `UPDATE virtual_user SET next_batch=$2 WHERE user_id=$1`
)

// New returns an unsaved row bound to this query helper.
func (vq *VirtualUserQuery) New(userID id.UserID, deviceID id.DeviceID) *VirtualUser {
	vu := vq.QueryHelper.New()
	vu.UserID, vu.DeviceID, vu.CreatedAt = userID, deviceID, time.Now()
	return vu
}

// Get returns the user or nil if there is none.
func (vq *VirtualUserQuery) Get(ctx context.Context, userID id.UserID) (*VirtualUser, error) {
	return vq.QueryOne(ctx, getVirtualUserQuery, userID)
}

// GetAll returns every virtual user.
func (vq *VirtualUserQuery) GetAll(ctx context.Context) ([]*VirtualUser, error) {
	return vq.QueryMany(ctx, getAllVirtualUsers)
}

// Save inserts or updates the row.
func (vu *VirtualUser) Save(ctx context.Context) error {
	return vu.qh.Exec(ctx, upsertVirtualUser, vu.sqlVariables()...)
}

// SetNextBatch stores a user's sync token without reading the row first.
func (vq *VirtualUserQuery) SetNextBatch(ctx context.Context, userID id.UserID, nextBatch string) error {
	return vq.Exec(ctx, setNextBatchQuery, userID, nextBatch)
}
