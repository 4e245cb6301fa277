package recording

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ManifestFileName is the name WriteManifest gives the manifest in a
// recording directory.
const ManifestFileName = "manifest.json"

// Manifest describes one recording: the call and every file written for
// it, each with its wall-clock start so all participants can be placed on
// one call timeline.
type Manifest struct {
	RecordingID string          `json:"recording_id"`
	RoomID      string          `json:"room_id"`
	RoomName    string          `json:"room_name,omitempty"` // at recording time
	ConfID      string          `json:"conf_id,omitempty"`
	Started     time.Time       `json:"started"`
	Ended       time.Time       `json:"ended,omitzero"`
	Repaired    bool            `json:"repaired,omitempty"` // some file came from Repair
	Tracks      []ManifestTrack `json:"tracks"`
	// StopReason says why the recording stopped.
	StopReason string `json:"stop_reason,omitempty"`
	// Excluded lists participants whose streams were not written because
	// they had not consented (recording.require_consent).
	Excluded []ManifestExcluded `json:"excluded,omitempty"`
}

// ManifestExcluded is a participant left out for lack of consent, from
// From until Until (zero: until the end) when they consented.
type ManifestExcluded struct {
	UserID string    `json:"user_id"`
	From   time.Time `json:"from"`
	Until  time.Time `json:"until,omitzero"`
}

// ManifestTrack is one file of one participant stream. Durations are
// encoded in nanoseconds.
type ManifestTrack struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id,omitempty"`
	// DisplayName and AvatarURL are the participant's profile in the room
	// at recording time.
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	Purpose     string `json:"purpose,omitempty"` // e.g. "usermedia", "screenshare"
	// File is the base name of the file, relative to the manifest.
	File string `json:"file"`
	// Offset is Start relative to the Manifest's Started.
	Offset time.Duration `json:"offset"`
	FileResult
	Repaired bool `json:"repaired,omitempty"`
}

// NewManifestTrack fills a ManifestTrack from a FileResult.
// The file's path is reduced to its base name (the manifest sits next to
// the files and must not leak server paths).
func NewManifestTrack(m *Manifest, userID, deviceID, purpose string, r FileResult) ManifestTrack {
	r.Path = filepath.Base(r.Path)

	return ManifestTrack{
		UserID: userID, DeviceID: deviceID, Purpose: purpose,
		File: filepath.Base(r.Path), Offset: r.Start.Sub(m.Started), FileResult: r,
	}
}

// WriteManifest writes m as dir/manifest.json atomically (temp file, sync,
// rename), replacing an older manifest.
func WriteManifest(dir string, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode manifest: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ManifestFileName+".*.tmp")
	if err != nil {
		return fmt.Errorf("failed to create manifest: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()

		return fmt.Errorf("failed to write manifest: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()

		return fmt.Errorf("failed to sync manifest: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to close manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, ManifestFileName)); err != nil {
		return fmt.Errorf("failed to rename manifest: %w", err)
	}

	return nil
}
