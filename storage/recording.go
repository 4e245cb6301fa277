package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// RecordingState is where a recording is in its life.
type RecordingState string

// Recording states.
const (
	StateRecording RecordingState = "recording"
	StateFinished  RecordingState = "finished"
	StateFailed    RecordingState = "failed"
	StateRepaired  RecordingState = "repaired"
)

// RecordingID identifies a recording; it is also part of its folder name.
type RecordingID string

// Recording is one recorded call.
type Recording struct {
	qh *dbutil.QueryHelper[*Recording]

	ID          RecordingID    `json:"id"`
	RoomID      id.RoomID      `json:"room_id"`
	ConfID      string         `json:"conf_id,omitempty"`
	VirtualUser id.UserID      `json:"virtual_user,omitempty"`
	State       RecordingState `json:"state"`
	Error       string         `json:"error,omitempty"`
	StartedAt   time.Time      `json:"started_at"`
	EndedAt     time.Time      `json:"ended_at,omitzero"`
	Folder      string         `json:"folder"`
	// RoomName is the room's name when the recording started.
	RoomName string `json:"room_name,omitempty"`
	// StopReason says why the recording stopped (callbot.Stop* values).
	StopReason string `json:"stop_reason,omitempty"`
}

// StopRecorderRestarted is the stop reason of a recording whose call ended
// while the recorder was not running.
const StopRecorderRestarted = "recorder_restarted"

func newRecording(qh *dbutil.QueryHelper[*Recording]) *Recording { return &Recording{qh: qh} }

// Scan implements dbutil.DataStruct.
func (r *Recording) Scan(row dbutil.Scannable) (*Recording, error) {
	var started, ended int64
	err := row.Scan(&r.ID, &r.RoomID, &r.ConfID, &r.VirtualUser, &r.State, &r.Error, &started, &ended, &r.Folder, &r.RoomName, &r.StopReason)
	if err != nil {
		return nil, err
	}
	r.StartedAt, r.EndedAt = unixMilliOrZero(started), unixMilliOrZero(ended)
	return r, nil
}

// RecordingQuery reads and writes the recording table.
type RecordingQuery struct {
	*dbutil.QueryHelper[*Recording]
}

const (
	recordingColumns  = `id, room_id, conf_id, virtual_user, state, error, started_at, ended_at, folder, room_name, stop_reason`
	getRecordingQuery = `SELECT ` + recordingColumns + ` FROM recording WHERE id=$1`
	// Keyset pagination in (started_at DESC, id) order: rows after the cursor.
	listRecordingQuery = `SELECT ` + recordingColumns + ` FROM recording
		WHERE ($1='' OR room_id=$1) AND ($2='' OR state=$2)
			AND (CAST($4 AS BIGINT)=0 OR started_at<CAST($4 AS BIGINT) OR (started_at=CAST($4 AS BIGINT) AND id>$5))
		ORDER BY started_at DESC, id LIMIT $3`
	getByStateQuery      = `SELECT ` + recordingColumns + ` FROM recording WHERE state=$1 ORDER BY started_at`
	upsertRecordingQuery = `
		INSERT INTO recording (` + recordingColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET state=excluded.state, error=excluded.error, ended_at=excluded.ended_at,
			stop_reason=excluded.stop_reason`
	deleteRecordingQuery = `DELETE FROM recording WHERE id=$1`
)

// New returns an unsaved recording.
func (rq *RecordingQuery) New(id RecordingID, roomID id.RoomID, folder string, started time.Time) *Recording {
	r := rq.QueryHelper.New()
	r.ID, r.RoomID, r.Folder, r.StartedAt, r.State = id, roomID, folder, started, StateRecording
	return r
}

// Get returns the recording or nil.
func (rq *RecordingQuery) Get(ctx context.Context, id RecordingID) (*Recording, error) {
	return rq.QueryOne(ctx, getRecordingQuery, id)
}

// ListFilter narrows List.
type ListFilter struct {
	RoomID id.RoomID
	State  RecordingState
	Limit  int
	// After continues a listing after this recording (keyset pagination:
	// recordings added meanwhile do not shift the pages).
	After *ListCursor
}

// ListCursor is the position of a recording in List's order.
type ListCursor struct {
	StartedAt time.Time
	ID        RecordingID
}

// CursorOf is the cursor that continues a listing after rec.
func CursorOf(rec *Recording) *ListCursor {
	return &ListCursor{StartedAt: rec.StartedAt, ID: rec.ID}
}

// List returns recordings, newest first (then by id).
func (rq *RecordingQuery) List(ctx context.Context, f ListFilter) ([]*Recording, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var afterMS int64
	var afterID RecordingID
	if f.After != nil {
		afterMS, afterID = f.After.StartedAt.UnixMilli(), f.After.ID
	}
	return rq.QueryMany(ctx, listRecordingQuery, f.RoomID, f.State, f.Limit, afterMS, afterID)
}

// GetByState returns every recording in a state (e.g. those still
// "recording" at startup, which a crash interrupted).
func (rq *RecordingQuery) GetByState(ctx context.Context, state RecordingState) ([]*Recording, error) {
	return rq.QueryMany(ctx, getByStateQuery, state)
}

// Save inserts the recording or updates its state, error and end.
func (r *Recording) Save(ctx context.Context) error {
	return r.qh.Exec(ctx, upsertRecordingQuery, r.ID, r.RoomID, r.ConfID, r.VirtualUser, r.State, r.Error,
		toUnixMilli(r.StartedAt), toUnixMilli(r.EndedAt), r.Folder, r.RoomName, r.StopReason)
}

// Delete removes the recording and (by cascade) its file rows.
func (rq *RecordingQuery) Delete(ctx context.Context, id RecordingID) error {
	return rq.Exec(ctx, deleteRecordingQuery, id)
}

// Interval is a [Start, End) span in wall-clock time.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// RecordingFile is one file of a recording.
type RecordingFile struct {
	qh *dbutil.QueryHelper[*RecordingFile]

	RecordingID   RecordingID    `json:"recording_id"`
	Name          string         `json:"name"`
	UserID        id.UserID      `json:"user_id"`
	DeviceID      id.DeviceID    `json:"device_id,omitempty"`
	SessionID     string         `json:"session_id,omitempty"`
	Purpose       string         `json:"purpose,omitempty"`
	Kind          string         `json:"kind"`
	Codecs        []string       `json:"codecs"`
	Bytes         int64          `json:"bytes"`
	Duration      time.Duration  `json:"-"`
	StartedAt     time.Time      `json:"started_at"`
	Segment       int            `json:"segment"`
	Width         int            `json:"width,omitempty"`
	Height        int            `json:"height,omitempty"`
	MuteIntervals []Interval     `json:"mute_intervals"`
	State         RecordingState `json:"state"`
	// DisplayName and AvatarURL are the participant's profile in the room
	// when the file was recorded.
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

func newRecordingFile(qh *dbutil.QueryHelper[*RecordingFile]) *RecordingFile {
	return &RecordingFile{qh: qh}
}

// Scan implements dbutil.DataStruct.
func (f *RecordingFile) Scan(row dbutil.Scannable) (*RecordingFile, error) {
	var codecs, mutes string
	var durMS, started int64
	err := row.Scan(&f.RecordingID, &f.Name, &f.UserID, &f.DeviceID, &f.SessionID, &f.Purpose, &f.Kind, &codecs,
		&f.Bytes, &durMS, &started, &f.Segment, &f.Width, &f.Height, &mutes, &f.State, &f.DisplayName, &f.AvatarURL)
	if err != nil {
		return nil, err
	}
	if codecs != "" {
		f.Codecs = strings.Split(codecs, ",")
	}
	f.Duration = time.Duration(durMS) * time.Millisecond
	f.StartedAt = unixMilliOrZero(started)
	f.MuteIntervals = []Interval{}
	_ = json.Unmarshal([]byte(mutes), &f.MuteIntervals)
	return f, nil
}

// RecordingFileQuery reads and writes the recording_file table.
type RecordingFileQuery struct {
	*dbutil.QueryHelper[*RecordingFile]
}

const (
	fileColumns = `recording_id, name, user_id, device_id, session_id, purpose, kind, codecs, bytes, duration_ms,
		started_at, segment, width, height, mute_intervals, state, display_name, avatar_url`
	getFilesQuery   = `SELECT ` + fileColumns + ` FROM recording_file WHERE recording_id=$1 ORDER BY started_at, name`
	getFileQuery    = `SELECT ` + fileColumns + ` FROM recording_file WHERE recording_id=$1 AND name=$2`
	insertFileQuery = `
		INSERT INTO recording_file (` + fileColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
		ON CONFLICT (recording_id, name) DO NOTHING`
)

// New returns an unsaved file row.
func (fq *RecordingFileQuery) New(recID RecordingID, name string) *RecordingFile {
	f := fq.QueryHelper.New()
	f.RecordingID, f.Name = recID, name
	return f
}

// GetAll returns a recording's files in timeline order.
func (fq *RecordingFileQuery) GetAll(ctx context.Context, recID RecordingID) ([]*RecordingFile, error) {
	return fq.QueryMany(ctx, getFilesQuery, recID)
}

// GetAllFor returns the files of several recordings, by recording.
func (fq *RecordingFileQuery) GetAllFor(ctx context.Context, ids []RecordingID) (map[RecordingID][]*RecordingFile, error) {
	out := make(map[RecordingID][]*RecordingFile, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	placeholders := make([]string, len(ids))
	args := make([]any, len(ids))
	for i, recID := range ids {
		placeholders[i] = fmt.Sprintf("$%d", i+1)
		args[i] = recID
	}
	files, err := fq.QueryMany(ctx, `SELECT `+fileColumns+` FROM recording_file WHERE recording_id IN (`+
		strings.Join(placeholders, ",")+`) ORDER BY recording_id, started_at, name`, args...)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		out[f.RecordingID] = append(out[f.RecordingID], f)
	}
	return out, nil
}

// Get returns one file or nil.
func (fq *RecordingFileQuery) Get(ctx context.Context, recID RecordingID, name string) (*RecordingFile, error) {
	return fq.QueryOne(ctx, getFileQuery, recID, name)
}

// Save inserts the row. A file's row is written once: a second row with the
// same recording and name is refused with ErrExists (never an update, so
// nothing already recorded is replaced).
func (f *RecordingFile) Save(ctx context.Context) error {
	mutes := f.MuteIntervals
	if mutes == nil {
		mutes = []Interval{}
	}
	mutesJSON, err := json.Marshal(mutes)
	if err != nil {
		return err
	}
	res, err := f.qh.GetDB().Exec(ctx, insertFileQuery, f.RecordingID, f.Name, f.UserID, f.DeviceID, f.SessionID, f.Purpose, f.Kind,
		strings.Join(f.Codecs, ","), f.Bytes, f.Duration.Milliseconds(), toUnixMilli(f.StartedAt), f.Segment,
		f.Width, f.Height, string(mutesJSON), f.State, f.DisplayName, f.AvatarURL)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%w: file %s of recording %s", ErrExists, f.Name, f.RecordingID)
	}
	return nil
}

// ActiveCall is a call the recorder is in.
type ActiveCall struct {
	RoomID      id.RoomID
	RecordingID RecordingID
	ConfID      string
	UserID      id.UserID
	DeviceID    id.DeviceID
	SessionID   string
	JoinedAt    time.Time
}

// ActiveCallQuery reads and writes the active_call table.
type ActiveCallQuery struct {
	db *dbutil.Database
}

const (
	upsertActiveCall = `INSERT INTO active_call (room_id, recording_id, conf_id, user_id, device_id, session_id, joined_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id) DO UPDATE SET recording_id=excluded.recording_id,
		conf_id=excluded.conf_id, user_id=excluded.user_id, device_id=excluded.device_id, session_id=excluded.session_id,
		joined_at=excluded.joined_at`
	deleteActiveCall = `DELETE FROM active_call WHERE room_id=$1`
	getActiveCalls   = `SELECT room_id, recording_id, conf_id, user_id, device_id, session_id, joined_at FROM active_call ORDER BY joined_at`
)

// Put records that the recorder is in a call.
func (aq *ActiveCallQuery) Put(ctx context.Context, ac *ActiveCall) error {
	_, err := aq.db.Exec(ctx, upsertActiveCall, ac.RoomID, ac.RecordingID, ac.ConfID, ac.UserID, ac.DeviceID, ac.SessionID, ac.JoinedAt.UnixMilli())
	return err
}

// Delete records that the recorder left the room's call.
func (aq *ActiveCallQuery) Delete(ctx context.Context, roomID id.RoomID) error {
	_, err := aq.db.Exec(ctx, deleteActiveCall, roomID)
	return err
}

// GetAll returns the calls the recorder was in.
func (aq *ActiveCallQuery) GetAll(ctx context.Context) ([]*ActiveCall, error) {
	rows, err := aq.db.Query(ctx, getActiveCalls)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*ActiveCall
	for rows.Next() {
		ac := &ActiveCall{}
		var joined int64
		if err = rows.Scan(&ac.RoomID, &ac.RecordingID, &ac.ConfID, &ac.UserID, &ac.DeviceID, &ac.SessionID, &joined); err != nil {
			return nil, err
		}
		ac.JoinedAt = time.UnixMilli(joined)
		out = append(out, ac)
	}
	return out, rows.Err()
}
