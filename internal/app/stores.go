package app

import (
	"context"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/storage"
)

// The adapters below give the appservice package the narrow stores it
// defines, backed by the SQL storage.

type txnStore struct{ db *storage.DB }

func (ts txnStore) IsProcessed(ctx context.Context, txnID string) (bool, error) {
	return ts.db.Txn.IsProcessed(ctx, txnID)
}

func (ts txnStore) MarkProcessed(ctx context.Context, txnID string) error {
	_, err := ts.db.Txn.Claim(ctx, txnID)
	return err
}

type roomStore struct{ db *storage.DB }

func (rs roomStore) RoomJoined(ctx context.Context, roomID id.RoomID, inviter id.UserID) error {
	room, err := rs.db.Room.GetOrNew(ctx, roomID)
	if err != nil {
		return err
	}
	if inviter != "" {
		room.Inviter = inviter
	}
	if room.JoinedAt.IsZero() || !room.LeftAt.IsZero() {
		room.JoinedAt = time.Now()
	}
	room.LeftAt = time.Time{}
	return room.Save(ctx)
}

func (rs roomStore) RoomLeft(ctx context.Context, roomID id.RoomID, greetAgain bool) error {
	room, err := rs.db.Room.GetOrNew(ctx, roomID)
	if err != nil {
		return err
	}
	room.LeftAt = time.Now()
	if greetAgain {
		room.Greeted = false
	}
	return room.Save(ctx)
}

func (rs roomStore) MarkGreeted(ctx context.Context, roomID id.RoomID) (bool, error) {
	return rs.db.Room.MarkGreeted(ctx, roomID)
}

type deviceStore struct{ db *storage.DB }

func (ds deviceStore) GetDevice(ctx context.Context, userID id.UserID) (*appservice.StoredDevice, error) {
	vu, err := ds.db.VirtualUser.Get(ctx, userID)
	if err != nil || vu == nil {
		return nil, err
	}
	return &appservice.StoredDevice{UserID: vu.UserID, DeviceID: vu.DeviceID, AccessToken: vu.AccessToken, NextBatch: vu.NextBatch}, nil
}

func (ds deviceStore) SaveDevice(ctx context.Context, dev *appservice.StoredDevice) error {
	vu, err := ds.db.VirtualUser.Get(ctx, dev.UserID)
	if err != nil {
		return err
	}
	if vu == nil {
		vu = ds.db.VirtualUser.New(dev.UserID, dev.DeviceID)
	}
	vu.DeviceID, vu.AccessToken, vu.NextBatch = dev.DeviceID, dev.AccessToken, dev.NextBatch
	return vu.Save(ctx)
}

func (ds deviceStore) SaveNextBatch(ctx context.Context, userID id.UserID, nextBatch string) error {
	return ds.db.VirtualUser.SetNextBatch(ctx, userID, nextBatch)
}
