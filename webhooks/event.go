package webhooks

import (
	"net/url"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
)

// EventType names an event.
type EventType string

// Event types.
const (
	RecordingStarted  EventType = "recording.started"
	RecordingFinished EventType = "recording.finished"
	RecordingFailed   EventType = "recording.failed"
	MixdownFinished   EventType = "mixdown.finished"
)

// Event is the JSON body of a delivery.
type Event struct {
	// ID is the idempotency id: one per event, the same on every retry.
	ID        string    `json:"id"`
	Type      EventType `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	Recording Recording `json:"recording"`
	// Mixdown is set on mixdown.finished.
	Mixdown *Mixdown `json:"mixdown,omitempty"`
}

// Recording is the recording an event is about.
type Recording struct {
	ID         storage.RecordingID    `json:"id"`
	RoomID     id.RoomID              `json:"room_id"`
	RoomName   string                 `json:"room_name,omitempty"`
	State      storage.RecordingState `json:"state"`
	Error      string                 `json:"error,omitempty"`
	StopReason string                 `json:"stop_reason,omitempty"` // why the recorder stopped it itself, e.g. size_limit
	StartedAt  time.Time              `json:"started_at"`
	EndedAt    *time.Time             `json:"ended_at"`
	DurationMS int64                  `json:"duration_ms"`
	// URL is the recording in the API (absolute with api.public_url).
	URL   string `json:"url"`
	Files []File `json:"files"`
}

// Mixdown is the outcome of a mixdown.
type Mixdown struct {
	State storage.MixdownState `json:"state"`
	Error string               `json:"error,omitempty"`
	Files []File               `json:"files"`
}

// File is one file of a recording.
type File struct {
	Name        string      `json:"name"`
	Kind        string      `json:"kind"` // "mixdown", or the participant file's container: "ogg", "webm"
	Purpose     string      `json:"purpose,omitempty"`
	UserID      id.UserID   `json:"user_id,omitempty"`
	DeviceID    id.DeviceID `json:"device_id,omitempty"`
	DisplayName string      `json:"display_name,omitempty"`
	Bytes       int64       `json:"bytes"`
	DurationMS  int64       `json:"duration_ms"`
	URL         string      `json:"url"`
}

// RecordingURL is the API URL of a recording below base (api.public_url;
// empty gives a path).
func RecordingURL(base string, recID storage.RecordingID) string {
	return strings.TrimRight(base, "/") + "/api/v1/recordings/" + url.PathEscape(string(recID))
}

// NewEvent describes rec and its files (mixdown files go into Mixdown
// when mix is set) for an event of type typ.
func NewEvent(typ EventType, eventID string, rec *storage.Recording, files []*storage.RecordingFile, mix *storage.Mixdown, base string, now time.Time) Event {
	ev := Event{ID: eventID, Type: typ, CreatedAt: now.UTC(), Recording: Recording{
		ID: rec.ID, RoomID: rec.RoomID, RoomName: rec.RoomName, State: rec.State, Error: rec.Error, StopReason: rec.StopReason,
		StartedAt: rec.StartedAt.UTC(), URL: RecordingURL(base, rec.ID), Files: []File{},
	}}
	if !rec.EndedAt.IsZero() {
		e := rec.EndedAt.UTC()
		ev.Recording.EndedAt = &e
		ev.Recording.DurationMS = rec.EndedAt.Sub(rec.StartedAt).Milliseconds()
	}
	if mix != nil {
		ev.Mixdown = &Mixdown{State: mix.State, Error: mix.Error, Files: []File{}}
	}
	for _, f := range files {
		out := File{Name: f.Name, Kind: f.Kind, Purpose: f.Purpose, UserID: f.UserID, DeviceID: f.DeviceID, DisplayName: f.DisplayName,
			Bytes: f.Bytes, DurationMS: f.Duration.Milliseconds(), URL: ev.Recording.URL + "/files/" + url.PathEscape(f.Name)}
		if f.Purpose == storage.PurposeMixdown {
			out.Kind, out.Purpose = "mixdown", ""
			if ev.Mixdown != nil {
				ev.Mixdown.Files = append(ev.Mixdown.Files, out)
			}
			continue
		}
		ev.Recording.Files = append(ev.Recording.Files, out)
	}
	return ev
}
