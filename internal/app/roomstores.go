package app

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
)

// roomSettings gives the room controller its per-room settings and
// consents (rooms.Settings), backed by the SQL storage.
type roomSettings struct{ db *storage.DB }

func (rs roomSettings) SetAutoRecord(ctx context.Context, roomID id.RoomID, on bool) error {
	room, err := rs.db.Room.GetOrNew(ctx, roomID)
	if err != nil {
		return err
	}
	room.AutoRecord = on
	return room.Save(ctx)
}

func (rs roomSettings) AutoRecord(ctx context.Context, roomID id.RoomID) (bool, error) {
	room, err := rs.db.Room.Get(ctx, roomID)
	if err != nil || room == nil {
		return false, err
	}
	return room.AutoRecord, nil
}

func (rs roomSettings) AutoRecordRooms(ctx context.Context) ([]id.RoomID, error) {
	list, err := rs.db.Room.GetAutoRecord(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]id.RoomID, len(list))
	for i, r := range list {
		out[i] = r.RoomID
	}
	return out, nil
}

func (rs roomSettings) PutConsent(ctx context.Context, roomID id.RoomID, userID id.UserID, at time.Time) error {
	return rs.db.Consent.Put(ctx, roomID, userID, at)
}

func (rs roomSettings) HasConsent(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	return rs.db.Consent.Has(ctx, roomID, userID)
}

// consentGate is the archive's Consent (recording.require_consent).
type consentGate struct{ db *storage.DB }

func (cg consentGate) Consented(ctx context.Context, roomID id.RoomID, userID id.UserID) bool {
	ok, err := cg.db.Consent.Has(ctx, roomID, userID)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to read consent; not recording the participant")
	}
	return ok
}

// storedRecordings gives the room controller a recording and its files.
type storedRecordings struct{ db *storage.DB }

func (sr storedRecordings) Get(ctx context.Context, recID storage.RecordingID) (*storage.Recording, error) {
	return sr.db.Recording.Get(ctx, recID)
}

func (sr storedRecordings) GetAllFor(ctx context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error) {
	return sr.db.File.GetAllFor(ctx, ids)
}
