package web

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
)

// Listing limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// ManifestName is the manifest file every finished recording folder has
// (recording.ManifestFileName; web does not import recording).
const ManifestName = "manifest.json"

// maxManifestBytes bounds how much of a manifest the detail route reads.
const maxManifestBytes = 4 << 20

// StorageRecordings adapts the database to Recordings.
func StorageRecordings(db *storage.DB) Recordings { return storageRecordings{db} }

type storageRecordings struct{ db *storage.DB }

func (s storageRecordings) GetRecording(ctx context.Context, id storage.RecordingID) (*storage.Recording, error) {
	return s.db.Recording.Get(ctx, id)
}

func (s storageRecordings) ListRecordings(ctx context.Context, f storage.ListFilter) ([]*storage.Recording, error) {
	return s.db.Recording.List(ctx, f)
}

func (s storageRecordings) RecordingFiles(ctx context.Context, id storage.RecordingID) ([]*storage.RecordingFile, error) {
	return s.db.File.GetAll(ctx, id)
}

func (s storageRecordings) RecordingFile(ctx context.Context, id storage.RecordingID, name string) (*storage.RecordingFile, error) {
	return s.db.File.Get(ctx, id, name)
}

func (s storageRecordings) FilesOf(ctx context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error) {
	return s.db.File.GetAllFor(ctx, ids)
}

func (s storageRecordings) DeleteRecording(ctx context.Context, id storage.RecordingID) error {
	return s.db.Recording.Delete(ctx, id)
}

// Recording is a recording as the API shows it.
type Recording struct {
	ID           storage.RecordingID    `json:"id"`
	RoomID       id.RoomID              `json:"room_id"`
	ConfID       string                 `json:"conf_id"`
	State        storage.RecordingState `json:"state"`
	Error        string                 `json:"error,omitempty"`
	StartedAt    time.Time              `json:"started_at"`
	EndedAt      *time.Time             `json:"ended_at"` // null while recording
	DurationMS   int64                  `json:"duration_ms"`
	Participants []id.UserID            `json:"participants"`
	Tracks       []Track                `json:"tracks"`
	// RoomName is the room's name at recording time.
	RoomName string `json:"room_name,omitempty"`
	// StopReason says why it stopped: stopped, empty, no_media,
	// max_duration, call_ended, removed, shutdown, size_limit, disk_full,
	// recorder_restarted; absent while recording.
	StopReason string `json:"stop_reason,omitempty"`
	// ExpiresAt is when retention deletes the recording (absent: never).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Mixdown is the one-file version of the recording, absent until one
	// was asked for.
	Mixdown *Mixdown `json:"mixdown,omitempty"`
	// Manifest is the recording's manifest.json, only in the single
	// recording response, null if the recording has none (yet).
	Manifest *json.RawMessage `json:"manifest,omitempty"`
}

// Track is one file of a recording.
type Track struct {
	UserID    id.UserID   `json:"user_id"`
	DeviceID  id.DeviceID `json:"device_id"`
	Purpose   string      `json:"purpose"`
	Kind      string      `json:"kind"`      // "audio" or "video"
	Container string      `json:"container"` // "ogg" or "webm"
	// Codec is the main codec's MIME type (the video one for video files);
	// Codecs lists all of them.
	Codec      string    `json:"codec"`
	Codecs     []string  `json:"codecs"`
	File       string    `json:"file"`
	Bytes      int64     `json:"bytes"`
	DurationMS int64     `json:"duration_ms"`
	StartedAt  time.Time `json:"started_at"`
	// OffsetMS is StartedAt relative to the recording's start: where the
	// file sits on the call's timeline.
	OffsetMS      int64                  `json:"offset_ms"`
	Segment       int                    `json:"segment"`
	Width         int                    `json:"width,omitempty"`
	Height        int                    `json:"height,omitempty"`
	MuteIntervals []storage.Interval     `json:"mute_intervals"`
	State         storage.RecordingState `json:"state"`
	// DisplayName and AvatarURL (mxc://) are the participant's profile
	// in the room at recording time.
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// Mixdown is a recording's mixdown job and its files (kind "mixdown":
// mixdown.ogg, and mixdown.webm when anyone sent video).
type Mixdown struct {
	State    storage.MixdownState `json:"state"`
	Progress float64              `json:"progress"` // 0..1
	Error    string               `json:"error,omitempty"`
	Files    []Track              `json:"files"`
}

// RecordingList is the body of GET /api/v1/recordings.
type RecordingList struct {
	Recordings []Recording `json:"recordings"`
	// NextCursor fetches the next page; absent on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

type recordingsResource struct {
	db            Recordings
	files         Files
	mix           Mixdowns
	retentionDays int
}

type ctxKey int

const recordingKey ctxKey = iota

func (rs recordingsResource) Routes() chi.Router {
	r := newRouter()
	r.Use(rs.available)
	r.Get("/", rs.list)
	r.Route("/{id}", func(r chi.Router) {
		// With, not Use: a wrong method is 405 before the id is looked at.
		r.With(rs.recordingCtx).Get("/", rs.get)
		r.With(rs.recordingCtx).Delete("/", rs.delete)
		r.With(rs.recordingCtx).Get("/files/{file}", rs.file)
		r.With(rs.recordingCtx).Post("/mixdown", rs.remix)
	})
	return r
}

func (rs recordingsResource) available(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rs.db == nil || rs.files == nil {
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "Recordings are not available in this process")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// pathParam returns a URL parameter decoded: chi matches on the raw path
// when it has escapes, so an encoded "%2F" stays inside one parameter and
// must be decoded (and then validated) here.
func pathParam(r *http.Request, name string) (string, error) {
	return url.PathUnescape(chi.URLParam(r, name))
}

// recordingCtx validates {id}, loads the recording (400/404 early) and puts
// it into the request context.
func (rs recordingsResource) recordingCtx(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := pathParam(r, "id")
		if err != nil || storage.CheckKey(raw) != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidParam, "Malformed recording id: letters, digits, '.', '_' and '-' only")
			return
		}
		rec, err := rs.db.GetRecording(r.Context(), storage.RecordingID(raw))
		if err != nil {
			internalError(w, r, err, "Failed to load the recording")
			return
		} else if rec == nil {
			writeError(w, http.StatusNotFound, CodeNotFound, "No recording with id "+raw)
			return
		}
		ctx := zerolog.Ctx(r.Context()).With().Str("recording_id", string(rec.ID)).Logger().WithContext(r.Context())
		next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, recordingKey, rec)))
	})
}

func recordingFrom(r *http.Request) *storage.Recording {
	return r.Context().Value(recordingKey).(*storage.Recording)
}

// cursor is the position after the last recording of a page (keyset).
type cursor struct {
	StartedMS int64               `json:"t"`
	ID        storage.RecordingID `json:"i"`
}

func encodeCursor(c cursor) string {
	data, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(data)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err == nil && (c.StartedMS <= 0 || storage.CheckKey(string(c.ID)) != nil) {
		err = errors.New("bad cursor")
	}
	return c, err
}

var validStates = map[storage.RecordingState]bool{
	storage.StateRecording: true, storage.StateFinished: true, storage.StateFailed: true, storage.StateRepaired: true,
}

// listFilter parses the query of the listing; the error text is for the client.
func listFilter(q url.Values) (storage.ListFilter, error) {
	f := storage.ListFilter{Limit: DefaultListLimit}
	if v := q.Get("room_id"); v != "" {
		if err := checkRoomID(v); err != nil {
			return f, fmt.Errorf("query parameter room_id: %w", err)
		}
		f.RoomID = id.RoomID(v)
	}
	if v := q.Get("state"); v != "" {
		if !validStates[storage.RecordingState(v)] {
			return f, errors.New("query parameter state: must be one of recording, finished, failed, repaired")
		}
		f.State = storage.RecordingState(v)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return f, fmt.Errorf("query parameter limit: must be a positive integer (at most %d)", MaxListLimit)
		}
		f.Limit = min(n, MaxListLimit)
	}
	if v := q.Get("cursor"); v != "" {
		c, err := decodeCursor(v)
		if err != nil {
			return f, errors.New("query parameter cursor: not a cursor this API returned")
		}
		f.After = &storage.ListCursor{StartedAt: time.UnixMilli(c.StartedMS), ID: c.ID}
	}
	return f, nil
}

func (rs recordingsResource) list(w http.ResponseWriter, r *http.Request) {
	f, err := listFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParam, err.Error())
		return
	}
	limit := f.Limit
	f.Limit++ // one more tells whether there is a next page
	recs, err := rs.db.ListRecordings(r.Context(), f)
	if err != nil {
		internalError(w, r, err, "Failed to list recordings")
		return
	}
	out := RecordingList{Recordings: make([]Recording, 0, min(len(recs), limit))}
	if len(recs) > limit {
		recs = recs[:limit]
		last := recs[limit-1]
		out.NextCursor = encodeCursor(cursor{StartedMS: last.StartedAt.UnixMilli(), ID: last.ID})
	}
	ids := make([]storage.RecordingID, len(recs))
	for i, rec := range recs {
		ids[i] = rec.ID
	}
	files, err := rs.db.FilesOf(r.Context(), ids)
	if err != nil {
		internalError(w, r, err, "Failed to list recording files")
		return
	}
	for _, rec := range recs {
		out.Recordings = append(out.Recordings, rs.withExpiry(toRecording(rec, files[rec.ID], time.Now())))
	}
	writeJSON(w, http.StatusOK, out)
}

func (rs recordingsResource) get(w http.ResponseWriter, r *http.Request) {
	rec := recordingFrom(r)
	files, err := rs.db.RecordingFiles(r.Context(), rec.ID)
	if err != nil {
		internalError(w, r, err, "Failed to list recording files")
		return
	}
	out := rs.withExpiry(toRecording(rec, files, time.Now()))
	if rs.mix != nil {
		m, err := rs.mix.GetMixdown(r.Context(), rec.ID)
		if err != nil {
			internalError(w, r, err, "Failed to load the mixdown")
			return
		}
		if m != nil {
			if out.Mixdown == nil {
				out.Mixdown = &Mixdown{Files: []Track{}}
			}
			out.Mixdown.State, out.Mixdown.Progress, out.Mixdown.Error = m.State, m.Progress, m.Error
		}
	}
	manifest := rs.manifest(r.Context(), rec)
	out.Manifest = &manifest
	writeJSON(w, http.StatusOK, out)
}

// manifest reads the recording's manifest.json, or JSON null when it has
// none (recordings in progress) or it cannot be read (logged).
func (rs recordingsResource) manifest(ctx context.Context, rec *storage.Recording) json.RawMessage {
	null := json.RawMessage("null")
	f, err := rs.files.Open(ctx, rec.Folder, ManifestName)
	if errors.Is(err, storage.ErrNotFound) {
		return null
	} else if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to open manifest")
		return null
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	switch {
	case err != nil:
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to read manifest")
	case len(data) > maxManifestBytes || !json.Valid(data):
		zerolog.Ctx(ctx).Warn().Int("bytes", len(data)).Msg("Manifest is too large or not JSON")
	default:
		return data
	}
	return null
}

func (rs recordingsResource) delete(w http.ResponseWriter, r *http.Request) {
	rec := recordingFrom(r)
	if rec.State == storage.StateRecording {
		writeError(w, http.StatusConflict, CodeInProgress, "The recording is still in progress: stop it first (DELETE /api/v1/calls/{room_id})")
		return
	}
	// Files first: if removing the rows then fails, a retry finds the
	// recording again and DeleteFolder of a missing folder is no error.
	if err := rs.files.DeleteFolder(r.Context(), rec.Folder); err != nil {
		internalError(w, r, err, "Failed to delete the recording's files")
		return
	}
	if err := rs.db.DeleteRecording(r.Context(), rec.ID); err != nil {
		internalError(w, r, err, "Failed to delete the recording")
		return
	}
	zerolog.Ctx(r.Context()).Info().Msg("Recording deleted through the API")
	w.WriteHeader(http.StatusNoContent)
}

// file serves one listed file of the recording. The name is checked
// against the recording's own file list before the store sees it.
func (rs recordingsResource) file(w http.ResponseWriter, r *http.Request) {
	rec := recordingFrom(r)
	name, err := pathParam(r, "file")
	if err != nil || storage.CheckKey(name) != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParam, "Malformed file name: one path component of letters, digits, '.', '_' and '-'")
		return
	}
	contentType := "application/json"
	if name != ManifestName {
		row, err := rs.db.RecordingFile(r.Context(), rec.ID, name)
		if err != nil {
			internalError(w, r, err, "Failed to read the file row")
			return
		}
		if row == nil {
			writeError(w, http.StatusNotFound, CodeNotFound, "The recording has no file "+name)
			return
		}
		contentType = fileContentType(row)
	}
	f, err := rs.files.Open(r.Context(), rec.Folder, name)
	if errors.Is(err, storage.ErrNotFound) {
		writeError(w, http.StatusNotFound, CodeNotFound, "The file "+name+" is missing from the file store")
		return
	} else if err != nil {
		internalError(w, r, err, "Failed to open the file")
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, f.Size, f.ModTime.UnixNano()))
	h.Set("Cache-Control", "private, no-cache")
	h.Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", name))
	http.ServeContent(w, r, name, f.ModTime, f)
}

// fileContentType picks the MIME type from the container (the row's kind,
// else the file's extension) and whether it has video.
func fileContentType(f *storage.RecordingFile) string {
	container := containerOf(f)
	switch container {
	case "ogg":
		return "audio/ogg"
	case "webm":
		if mediaKind(f, container) == "audio" {
			return "audio/webm"
		}
		return "video/webm"
	default:
		return "application/octet-stream"
	}
}

func containerOf(f *storage.RecordingFile) string {
	switch k := strings.ToLower(f.Kind); k {
	case "ogg", "webm":
		return k
	}
	switch strings.ToLower(path.Ext(f.Name)) {
	case ".ogg", ".opus", ".oga":
		return "ogg"
	case ".webm":
		return "webm"
	}
	return ""
}

// mediaKind is "video" when the file has a video codec (or, without codec
// information, is WebM), else "audio".
func mediaKind(f *storage.RecordingFile, container string) string {
	for _, c := range f.Codecs {
		if strings.HasPrefix(strings.ToLower(c), "video/") {
			return "video"
		}
	}
	if len(f.Codecs) == 0 && container == "webm" {
		return "video"
	}
	return "audio"
}

func toRecording(rec *storage.Recording, files []*storage.RecordingFile, now time.Time) Recording {
	out := Recording{
		ID: rec.ID, RoomID: rec.RoomID, RoomName: rec.RoomName, StopReason: rec.StopReason, ConfID: rec.ConfID, State: rec.State, Error: rec.Error,
		StartedAt: rec.StartedAt.UTC(), Participants: []id.UserID{}, Tracks: make([]Track, 0, len(files)),
	}
	seen := map[id.UserID]bool{}
	var lastEnd time.Time
	for _, f := range files {
		if f.Purpose == storage.PurposeMixdown {
			if out.Mixdown == nil {
				out.Mixdown = &Mixdown{State: storage.MixdownFinished, Progress: 1, Files: []Track{}}
			}
			out.Mixdown.Files = append(out.Mixdown.Files, Track{Kind: "mixdown", Container: containerOf(f), Codecs: f.Codecs,
				Codec: firstOr(f.Codecs), File: f.Name, Bytes: f.Bytes, DurationMS: f.Duration.Milliseconds(),
				StartedAt: f.StartedAt.UTC(), MuteIntervals: []storage.Interval{}, State: f.State})
			continue
		}
		if !seen[f.UserID] {
			seen[f.UserID] = true
			out.Participants = append(out.Participants, f.UserID)
		}
		container := containerOf(f)
		t := Track{
			UserID: f.UserID, DeviceID: f.DeviceID, Purpose: f.Purpose, Kind: mediaKind(f, container), Container: container,
			Codecs: f.Codecs, File: f.Name, Bytes: f.Bytes, DurationMS: f.Duration.Milliseconds(),
			StartedAt: f.StartedAt.UTC(), OffsetMS: f.StartedAt.Sub(rec.StartedAt).Milliseconds(),
			Segment: f.Segment, Width: f.Width, Height: f.Height, MuteIntervals: f.MuteIntervals, State: f.State,
			DisplayName: f.DisplayName, AvatarURL: f.AvatarURL,
		}
		if t.Codecs == nil {
			t.Codecs = []string{}
		}
		if len(t.Codecs) > 0 {
			t.Codec = t.Codecs[0]
		}
		if t.MuteIntervals == nil {
			t.MuteIntervals = []storage.Interval{}
		}
		if end := f.StartedAt.Add(f.Duration); end.After(lastEnd) {
			lastEnd = end
		}
		out.Tracks = append(out.Tracks, t)
	}
	end := rec.EndedAt
	if !end.IsZero() {
		e := end.UTC()
		out.EndedAt = &e
	} else if rec.State == storage.StateRecording {
		end = now
	} else {
		end = lastEnd
	}
	if end.After(rec.StartedAt) {
		out.DurationMS = end.Sub(rec.StartedAt).Milliseconds()
	}
	return out
}

func firstOr(codecs []string) string {
	if len(codecs) > 0 {
		return codecs[0]
	}
	return ""
}

// withExpiry sets when retention deletes the recording.
func (rs recordingsResource) withExpiry(out Recording) Recording {
	if rs.retentionDays > 0 && out.State != storage.StateRecording {
		e := out.StartedAt.Add(time.Duration(rs.retentionDays) * 24 * time.Hour)
		out.ExpiresAt = &e
	}
	return out
}

// remix queues the recording's mixdown (again): 202 with the job.
func (rs recordingsResource) remix(w http.ResponseWriter, r *http.Request) {
	rec := recordingFrom(r)
	if rs.mix == nil {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "Mixdowns are not available in this process")
		return
	}
	if rec.State == storage.StateRecording {
		writeError(w, http.StatusConflict, CodeInProgress, "The recording is still in progress: a mixdown is made when it ends")
		return
	}
	m, err := rs.mix.EnqueueMixdown(r.Context(), rec.ID)
	if errors.Is(err, ErrMixdownQueueFull) {
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "Too many mixdowns are waiting; try again later")
		return
	} else if err != nil {
		internalError(w, r, err, "Failed to queue the mixdown")
		return
	}
	writeJSON(w, http.StatusAccepted, Mixdown{State: m.State, Progress: m.Progress, Error: m.Error, Files: []Track{}})
}
