package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// segmentSuffix is the "-NNN.webm" / "-NNN.ogg" a StreamWriter appends.
var segmentSuffix = regexp.MustCompile(`-\d{3,}\.(webm|ogg)$`)

// Recover finalizes the recordings a crash left in state "recording": their
// spooled parts are repaired (recording.Repair), stored and recorded, and the
// recording is marked repaired. Calls in progress are forgotten: the
// recorder does not rejoin them by itself.
func (r *Recorder) Recover(ctx context.Context) error {
	log := zerolog.Ctx(ctx)
	recs, err := r.db.Recording.GetByState(ctx, storage.StateRecording)
	if err != nil {
		return fmt.Errorf("failed to list interrupted recordings: %w", err)
	}
	for _, rec := range recs {
		if err = r.recoverOne(ctx, rec); err != nil {
			log.Err(err).Str("recording_id", string(rec.ID)).Msg("Failed to repair interrupted recording")
		}
	}
	calls, err := r.db.ActiveCall.GetAll(ctx)
	if err != nil {
		return fmt.Errorf("failed to list active calls: %w", err)
	}
	for _, ac := range calls {
		if err = r.db.ActiveCall.Delete(ctx, ac.RoomID); err != nil {
			return fmt.Errorf("failed to clear active call: %w", err)
		}
	}
	return nil
}

func (r *Recorder) recoverOne(ctx context.Context, rec *storage.Recording) error {
	log := zerolog.Ctx(ctx).With().Str("recording_id", string(rec.ID)).Logger()
	if err := storage.CheckKey(rec.Folder); err != nil {
		return err
	}
	c := &callRec{r: r, rec: rec, spoolDir: filepath.Join(r.spool, rec.Folder),
		manifest: recording.Manifest{RecordingID: string(rec.ID), RoomID: string(rec.RoomID), ConfID: rec.ConfID, Started: rec.StartedAt, Repaired: true}}
	existing, err := r.db.File.GetAll(ctx, rec.ID)
	if err != nil {
		return err
	}
	for _, f := range existing {
		c.manifest.Tracks = append(c.manifest.Tracks, recording.ManifestTrack{UserID: string(f.UserID), DeviceID: string(f.DeviceID),
			Purpose: f.Purpose, File: f.Name, Offset: f.StartedAt.Sub(rec.StartedAt), FileResult: recording.FileResult{
				Path: f.Name, Kind: recording.FileKind(f.Kind), Codecs: f.Codecs, Bytes: f.Bytes, Duration: f.Duration, Start: f.StartedAt,
				Segment: f.Segment, Width: f.Width, Height: f.Height}})
	}
	ended := rec.StartedAt
	results, err := recording.Repair(log.WithContext(ctx), c.spoolDir)
	if err != nil && !os.IsNotExist(err) {
		log.Warn().Err(err).Msg("Some parts could not be repaired")
	}
	for _, res := range results {
		if res.Removed || res.Path == "" {
			continue
		}
		meta := readStreamMeta(c.spoolDir, filepath.Base(res.Path))
		peer := callbot.PeerInfo{RoomID: rec.RoomID, UserID: meta.UserID, DeviceID: meta.DeviceID, SessionID: meta.SessionID}
		if info, statErr := os.Stat(res.Path); statErr == nil && info.ModTime().After(ended) {
			ended = info.ModTime()
		}
		// The file's own start time is not recoverable from the part; the
		// recording's start is the best bound.
		fr := recording.FileResult{Path: res.Path, Kind: res.Kind, Bytes: res.Bytes, Duration: res.Duration, Start: rec.StartedAt}
		c.storeFile(log.WithContext(ctx), peer, meta.Purpose, fr, storage.StateRepaired)
		log.Info().Str("file", filepath.Base(res.Path)).Dur("duration", res.Duration).Msg("Repaired recording file")
	}
	if ended.Equal(rec.StartedAt) {
		ended = time.Now()
	}
	rec.State, rec.EndedAt, c.manifest.Ended = storage.StateRepaired, ended, ended
	rec.StopReason, c.manifest.StopReason = string(callbot.StopInterrupted), string(callbot.StopInterrupted)
	if c.failed != nil {
		rec.Error = c.failed.Error()
	}
	if err = os.MkdirAll(c.spoolDir, 0o700); err == nil {
		err = c.writeManifest(ctx)
	}
	if err != nil {
		log.Warn().Err(err).Msg("Failed to write manifest of repaired recording")
	}
	if err = rec.Save(ctx); err != nil {
		return err
	}
	if c.failed == nil {
		_ = os.RemoveAll(c.spoolDir)
	}
	log.Info().Int("files", len(results)).Msg("Interrupted recording repaired")
	return nil
}

func readStreamMeta(dir, fileName string) streamMeta {
	base := segmentSuffix.ReplaceAllString(fileName, "")
	var meta streamMeta
	if data, err := os.ReadFile(filepath.Join(dir, base+".json")); err == nil {
		_ = json.Unmarshal(data, &meta)
	}
	if meta.UserID == "" {
		meta.UserID = "unknown"
	}
	return meta
}
