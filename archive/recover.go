package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// segmentSuffix is the "-NNN.webm" / "-NNN.ogg" a StreamWriter appends.
var segmentSuffix = regexp.MustCompile(`-\d{3,}\.(webm|ogg)$`)

// Recover handles what a crash or a failure left behind, before the call
// bot starts. In every interrupted ("recording") and failed recording with
// a spool folder, parts are repaired (recording.Repair) and every media
// file in the spool without a row (a segment finished but not yet stored
// at the crash) is checked the same way, stored and recorded; nothing
// recovery does not account for is deleted.
//
// An interrupted recording whose call is stored as active is returned to
// be continued: the caller rejoins the call (CallJoined with the recording
// id continues it) or, when the call has ended, closes it with Abandon.
// Other interrupted recordings are closed as repaired, with stop reason
// recorder_restarted.
func (r *Recorder) Recover(ctx context.Context) ([]*storage.ActiveCall, error) {
	log := zerolog.Ctx(ctx)
	calls, err := r.db.ActiveCall.GetAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list active calls: %w", err)
	}
	active := map[storage.RecordingID]*storage.ActiveCall{}
	for _, ac := range calls {
		active[ac.RecordingID] = ac
	}
	var resume []*storage.ActiveCall
	for _, state := range []storage.RecordingState{storage.StateRecording, storage.StateFailed} {
		recs, err := r.db.Recording.GetByState(ctx, state)
		if err != nil {
			return nil, fmt.Errorf("failed to list %s recordings: %w", state, err)
		}
		for _, rec := range recs {
			rlog := log.With().Str("recording_id", string(rec.ID)).Logger()
			ac := active[rec.ID]
			if state == storage.StateRecording && ac != nil && ac.RoomID == rec.RoomID {
				c, err := r.load(rlog.WithContext(ctx), rec)
				if err != nil {
					rlog.Err(err).Msg("Failed to load interrupted recording")
					continue
				}
				c.salvage(rlog.WithContext(ctx))
				r.lock.Lock()
				r.resumed[rec.ID] = c
				r.lock.Unlock()
				delete(active, rec.ID)
				resume = append(resume, ac)
				continue
			}
			if state == storage.StateFailed {
				if _, statErr := os.Stat(filepath.Join(r.spool, rec.Folder)); errors.Is(statErr, os.ErrNotExist) {
					continue
				}
			}
			if err = r.recoverOne(rlog.WithContext(ctx), rec); err != nil {
				rlog.Err(err).Msg("Failed to repair interrupted recording")
			}
		}
	}
	for _, ac := range active {
		if err = r.db.ActiveCall.Delete(ctx, ac.RoomID); err != nil {
			return nil, fmt.Errorf("failed to clear active call: %w", err)
		}
	}
	return resume, nil
}

// load reads a recording with its file rows: the manifest lists them and
// their base names are taken, so files written from now on never collide
// with stored ones.
func (r *Recorder) load(ctx context.Context, rec *storage.Recording) (*callRec, error) {
	if err := storage.CheckKey(rec.Folder); err != nil {
		return nil, err
	}
	c := newCallRec(r, rec)
	existing, err := r.db.File.GetAll(ctx, rec.ID)
	if err != nil {
		return nil, fmt.Errorf("failed to read file rows: %w", err)
	}
	for _, f := range existing {
		c.manifest.Repaired = c.manifest.Repaired || f.State == storage.StateRepaired
		c.manifest.Tracks = append(c.manifest.Tracks, recording.ManifestTrack{UserID: string(f.UserID), DeviceID: string(f.DeviceID),
			Purpose: f.Purpose, File: f.Name, Offset: f.StartedAt.Sub(rec.StartedAt), Repaired: f.State == storage.StateRepaired,
			FileResult: recording.FileResult{
				Path: f.Name, Kind: recording.FileKind(f.Kind), Codecs: f.Codecs, Bytes: f.Bytes, Duration: f.Duration, Start: f.StartedAt,
				Segment: f.Segment, Width: f.Width, Height: f.Height}})
		c.bases[baseOf(f.Name)] = true
		c.rows = append(c.rows, f.Name)
	}
	return c, nil
}

// baseOf is the stream base name of a file name.
func baseOf(name string) string {
	if b := segmentSuffix.ReplaceAllString(name, ""); b != name {
		return b
	}
	return strings.TrimSuffix(name, filepath.Ext(name))
}

// salvage stores what the spool holds of a recording: parts are repaired;
// a finished file without a row is run through the same repair (it is
// checked and its duration read) and stored. It returns the newest
// modification time of the files it stored.
func (c *callRec) salvage(ctx context.Context) time.Time {
	log := zerolog.Ctx(ctx)
	var last time.Time
	known := map[string]bool{}
	c.lock.Lock()
	for _, n := range c.rows {
		known[n] = true
	}
	for _, t := range c.manifest.Tracks {
		known[t.File] = true
	}
	c.lock.Unlock()
	c.reclaim(ctx, known)
	entries, err := os.ReadDir(c.spoolDir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn().Err(err).Msg("Failed to list the spool folder")
		}
		return last
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || known[name] || (filepath.Ext(name) != ".webm" && filepath.Ext(name) != ".ogg") {
			continue
		}
		path := filepath.Join(c.spoolDir, name)
		if _, err := os.Lstat(path + ".part"); err == nil {
			continue // a part of the same name: leave both to the operator
		}
		if err := os.Rename(path, path+".part"); err != nil {
			log.Warn().Err(err).Str("file", name).Msg("Failed to check an unstored finished file")
		}
	}
	results, err := recording.Repair(ctx, c.spoolDir)
	if err != nil {
		log.Warn().Err(err).Msg("Some parts could not be repaired; they stay in the spool")
	}
	for _, res := range results {
		if res.Removed || res.Path == "" {
			continue
		}
		meta := readStreamMeta(c.spoolDir, filepath.Base(res.Path))
		peer := callbot.PeerInfo{RoomID: c.rec.RoomID, UserID: meta.UserID, DeviceID: meta.DeviceID, SessionID: meta.SessionID}
		// The file's start is not in the part; its last write is about
		// its end.
		start := c.rec.StartedAt
		if info, statErr := os.Stat(res.Path); statErr == nil {
			if info.ModTime().After(last) {
				last = info.ModTime()
			}
			if s := info.ModTime().Add(-res.Duration); s.After(start) {
				start = s
			}
		}
		fr := recording.FileResult{Path: res.Path, Kind: res.Kind, Bytes: res.Bytes, Duration: res.Duration, Start: start}
		c.storeFile(ctx, peer, meta.Purpose, fr, storage.StateRepaired)
		c.lock.Lock()
		c.manifest.Repaired = true
		c.lock.Unlock()
		log.Info().Str("file", filepath.Base(res.Path)).Dur("duration", res.Duration).Msg("Repaired recording file")
	}
	return last
}

// reclaim takes back stored media files that have no row (stored right
// before a crash, the row never saved) into the spool, where salvage
// records them like any unstored file: every stored file has its row.
func (c *callRec) reclaim(ctx context.Context, known map[string]bool) {
	rc, ok := c.r.store.(storage.Reclaimer)
	if !ok {
		return
	}
	log := zerolog.Ctx(ctx)
	names, err := rc.List(ctx, c.rec.Folder)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to list the recording's stored files")
		return
	}
	for _, name := range names {
		if known[name] || (filepath.Ext(name) != ".webm" && filepath.Ext(name) != ".ogg") {
			continue
		}
		local := filepath.Join(c.spoolDir, name)
		if _, err := os.Lstat(local); err == nil {
			continue // a spooled file of that name: leave both to the operator
		}
		if err := os.MkdirAll(c.spoolDir, 0o700); err != nil {
			log.Warn().Err(err).Msg("Failed to create the spool folder")
			return
		}
		if err := rc.Reclaim(ctx, c.rec.Folder, name, local); err != nil {
			log.Warn().Err(err).Str("file", name).Msg("Failed to take back a stored file without a row")
			continue
		}
		log.Info().Str("file", name).Msg("Took back a stored file without a row")
	}
}

// cleanSpool removes what recovery and CallLeft account for (stream
// metadata, the manifest) and the spool folder if nothing else is left in
// it: a file the store refused stays, with its failed row.
func (c *callRec) cleanSpool(ctx context.Context) {
	entries, err := os.ReadDir(c.spoolDir)
	if err != nil {
		return
	}
	var left []string
	for _, e := range entries {
		if e.Type().IsRegular() && filepath.Ext(e.Name()) == ".json" {
			_ = os.Remove(filepath.Join(c.spoolDir, e.Name()))
			continue
		}
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		zerolog.Ctx(ctx).Warn().Strs("files", left).Str("spool", c.spoolDir).Msg("Files stay in the spool")
		return
	}
	_ = os.Remove(c.spoolDir)
}

// recoverOne closes an interrupted recording that is not continued, or
// stores what a failed one left in the spool.
func (r *Recorder) recoverOne(ctx context.Context, rec *storage.Recording) error {
	c, err := r.load(ctx, rec)
	if err != nil {
		return err
	}
	return c.close(ctx, c.salvage(ctx), storage.StopRecorderRestarted)
}

// Abandon closes a recording Recover returned when its call cannot be
// rejoined (it ended while the recorder was down): state repaired or
// finished, stop reason recorder_restarted.
func (r *Recorder) Abandon(ctx context.Context, recID storage.RecordingID) error {
	r.lock.Lock()
	c := r.resumed[recID]
	delete(r.resumed, recID)
	r.lock.Unlock()
	if c == nil {
		return nil
	}
	if err := c.close(ctx, time.Time{}, storage.StopRecorderRestarted); err != nil {
		return err
	}
	if err := r.db.ActiveCall.Delete(ctx, c.rec.RoomID); err != nil {
		return fmt.Errorf("failed to clear active call: %w", err)
	}
	return nil
}

// close ends a recovered recording: an interrupted one becomes repaired
// (finished if nothing needed repair) and ends with its last file; a
// failed one stays failed. The manifest is rewritten.
func (c *callRec) close(ctx context.Context, last time.Time, reason string) error {
	log := zerolog.Ctx(ctx)
	rec := c.rec
	c.lock.Lock()
	for _, t := range c.manifest.Tracks {
		if end := t.Start.Add(t.Duration); end.After(last) {
			last = end
		}
	}
	repaired, failed := c.manifest.Repaired, c.failed
	c.lock.Unlock()
	if rec.State == storage.StateRecording {
		if last.IsZero() {
			last = time.Now()
		}
		rec.State, rec.EndedAt, rec.StopReason = storage.StateFinished, last, reason
		if repaired {
			rec.State = storage.StateRepaired
		}
	}
	if failed != nil && rec.Error == "" {
		rec.Error = failed.Error()
	}
	c.lock.Lock()
	c.manifest.Ended = rec.EndedAt
	c.lock.Unlock()
	err := os.MkdirAll(c.spoolDir, 0o700)
	if err == nil {
		err = c.writeManifest(ctx)
	}
	if err != nil {
		log.Warn().Err(err).Msg("Failed to write manifest of repaired recording")
	}
	if err = rec.Save(ctx); err != nil {
		return fmt.Errorf("failed to save recording: %w", err)
	}
	c.cleanSpool(ctx)
	log.Info().Str("state", string(rec.State)).Str("stop_reason", rec.StopReason).Msg("Interrupted recording closed")
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

// Files is the file store as the operator API deletes from it: deleting a
// recording's folder also deletes what its spool folder still holds (a
// file the store refused, an unrepairable part), so no file outlives its
// rows.
func (r *Recorder) Files() storage.FileStore { return spoolDeleter{FileStore: r.store, spool: r.spool} }

type spoolDeleter struct {
	storage.FileStore
	spool string
}

// DeleteFolder implements storage.FileStore.
func (sd spoolDeleter) DeleteFolder(ctx context.Context, folder string) error {
	if err := storage.CheckKey(folder); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(sd.spool, folder)); err != nil {
		return fmt.Errorf("failed to delete the spooled files of %s: %w", folder, err)
	}
	return sd.FileStore.DeleteFolder(ctx, folder)
}
