package mixdown

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// File names of a recording's mixdown in its folder.
const (
	AudioName = "mixdown.ogg"
	VideoName = "mixdown.webm"
)

// queueSize bounds the jobs waiting in memory; more stay queued in the
// database and are picked up at the next start.
const queueSize = 256

// Errors of Enqueue.
var (
	// ErrInProgress means the recording is still being recorded.
	ErrInProgress = errors.New("the recording is still in progress")
	// ErrQueueFull means too many mixdowns are waiting.
	ErrQueueFull = errors.New("too many mixdowns are waiting")
	// ErrNotFound means there is no such recording.
	ErrNotFound = errors.New("no such recording")
)

// Store is what the queue needs from the database.
type Store interface {
	GetRecording(ctx context.Context, id storage.RecordingID) (*storage.Recording, error)
	Files(ctx context.Context, id storage.RecordingID) ([]*storage.RecordingFile, error)
	PutMixdown(ctx context.Context, m *storage.Mixdown) error
	SetProgress(ctx context.Context, id storage.RecordingID, p float64) error
	UnfinishedMixdowns(ctx context.Context) ([]*storage.Mixdown, error)
	// ReplaceMixdownFiles swaps the recording's mixdown file rows for files.
	ReplaceMixdownFiles(ctx context.Context, id storage.RecordingID, files []*storage.RecordingFile) error
}

// Files is what the queue needs from the file store.
type Files interface {
	Open(ctx context.Context, folder, name string) (*storage.StoredFile, error)
	Put(ctx context.Context, folder, name, localPath string) error
	Delete(ctx context.Context, folder, name string) error
}

// localPather is a file store whose files ffmpeg can read in place.
type localPather interface {
	LocalPath(folder, name string) (string, error)
}

// Options configure a Queue.
type Options struct {
	Store Store
	Files Files
	// WorkDir holds each job's temporary files.
	WorkDir string
	// Concurrency is how many mixdowns run at once (default 1).
	Concurrency int
	// Done is told about every finished or failed mixdown (webhooks).
	Done func(ctx context.Context, m *storage.Mixdown)
	// Registerer, if set, gets recorder_mixdowns_total{result}.
	Registerer prometheus.Registerer
}

// Queue runs mixdowns in the background.
type Queue struct {
	opts   Options
	jobs   chan storage.RecordingID
	lock   sync.Mutex
	queued map[storage.RecordingID]bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   *prometheus.CounterVec
}

// NewQueue makes a queue; Start runs it.
func NewQueue(opts Options) (*Queue, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	q := &Queue{opts: opts, jobs: make(chan storage.RecordingID, queueSize), queued: map[storage.RecordingID]bool{},
		done: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "recorder", Name: "mixdowns_total",
			Help: "Mixdowns that ended, by result (finished, failed)."}, []string{"result"})}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(q.done); err != nil {
			return nil, fmt.Errorf("failed to register mixdown metric: %w", err)
		}
	}
	return q, nil
}

// Start resumes the jobs a previous run left queued or running and starts
// the workers; they stop with Stop.
func (q *Queue) Start(ctx context.Context) error {
	if err := os.MkdirAll(q.opts.WorkDir, 0o700); err != nil {
		return fmt.Errorf("failed to create mixdown work folder: %w", err)
	}
	ctx, q.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ctx = zerolog.Ctx(ctx).With().Str("component", "mixdown").Logger().WithContext(ctx)
	pending, err := q.opts.Store.UnfinishedMixdowns(ctx)
	if err != nil {
		q.cancel()
		return fmt.Errorf("failed to load unfinished mixdowns: %w", err)
	}
	for i := 0; i < q.opts.Concurrency; i++ {
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			q.worker(ctx)
		}()
	}
	for _, m := range pending {
		if m.State == storage.MixdownRunning {
			zerolog.Ctx(ctx).Info().Str("recording_id", string(m.RecordingID)).Msg("Restarting a mixdown a stop interrupted")
		}
		q.push(ctx, m.RecordingID)
	}
	return nil
}

// Stop cancels running mixdowns (they are resumed at the next start) and
// waits for the workers.
func (q *Queue) Stop() {
	if q.cancel != nil {
		q.cancel()
	}
	q.wg.Wait()
}

// Enqueue asks for the recording's mixdown (again). A recording in
// progress cannot be mixed down; one already waiting is not queued twice.
func (q *Queue) Enqueue(ctx context.Context, recID storage.RecordingID) (*storage.Mixdown, error) {
	rec, err := q.opts.Store.GetRecording(ctx, recID)
	if err != nil {
		return nil, fmt.Errorf("failed to load recording: %w", err)
	} else if rec == nil {
		return nil, ErrNotFound
	} else if rec.State == storage.StateRecording {
		return nil, ErrInProgress
	}
	m := &storage.Mixdown{RecordingID: recID, State: storage.MixdownQueued, QueuedAt: time.Now()}
	q.lock.Lock()
	waiting := q.queued[recID]
	q.lock.Unlock()
	if waiting {
		return m, nil
	}
	if err = q.opts.Store.PutMixdown(ctx, m); err != nil {
		return nil, fmt.Errorf("failed to store mixdown job: %w", err)
	}
	if !q.push(ctx, recID) {
		return m, ErrQueueFull
	}
	return m, nil
}

func (q *Queue) push(ctx context.Context, recID storage.RecordingID) bool {
	q.lock.Lock()
	defer q.lock.Unlock()
	if q.queued[recID] {
		return true
	}
	select {
	case q.jobs <- recID:
		q.queued[recID] = true
		return true
	default:
		zerolog.Ctx(ctx).Warn().Str("recording_id", string(recID)).Msg("Mixdown queue is full; the job waits for the next start")
		return false
	}
}

func (q *Queue) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case recID := <-q.jobs:
			q.lock.Lock()
			delete(q.queued, recID)
			q.lock.Unlock()
			q.run(ctx, recID)
		}
	}
}

// run does one job and records its outcome. A failure never touches the
// recording's own files: everything is made in the work folder first.
func (q *Queue) run(ctx context.Context, recID storage.RecordingID) {
	log := zerolog.Ctx(ctx).With().Str("recording_id", string(recID)).Logger()
	ctx = log.WithContext(ctx)
	m := &storage.Mixdown{RecordingID: recID, State: storage.MixdownRunning, QueuedAt: time.Now(), StartedAt: time.Now()}
	if err := q.opts.Store.PutMixdown(ctx, m); err != nil {
		log.Err(err).Msg("Failed to mark mixdown running")
	}
	log.Info().Msg("Mixdown started")
	err := q.mix(ctx, recID)
	if ctx.Err() != nil {
		// Stopping: leave it "running"; the next start resumes it.
		log.Info().Msg("Mixdown interrupted by shutdown")
		return
	}
	m.EndedAt, m.State, m.Progress = time.Now(), storage.MixdownFinished, 1
	if err != nil {
		m.State, m.Error = storage.MixdownFailed, err.Error()
		log.Err(err).Msg("Mixdown failed")
	} else {
		log.Info().Dur("took", m.EndedAt.Sub(m.StartedAt)).Msg("Mixdown finished")
	}
	q.done.WithLabelValues(string(m.State)).Inc()
	if err := q.opts.Store.PutMixdown(ctx, m); err != nil {
		log.Err(err).Msg("Failed to store mixdown result")
	}
	if q.opts.Done != nil {
		q.opts.Done(ctx, m)
	}
}

func (q *Queue) mix(ctx context.Context, recID storage.RecordingID) error {
	rec, err := q.opts.Store.GetRecording(ctx, recID)
	if err != nil {
		return fmt.Errorf("failed to load recording: %w", err)
	} else if rec == nil {
		return ErrNotFound
	}
	rows, err := q.opts.Store.Files(ctx, recID)
	if err != nil {
		return fmt.Errorf("failed to load recording files: %w", err)
	}
	man, err := q.manifest(ctx, rec)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(q.opts.WorkDir, string(recID)+"-")
	if err != nil {
		return fmt.Errorf("failed to create work folder: %w", err)
	}
	defer func() { _ = os.RemoveAll(work) }()
	plan, err := q.plan(ctx, rec, man, rows, work)
	if err != nil {
		return err
	}
	if len(plan.Inputs) == 0 {
		return errors.New("the recording has no files to mix")
	}
	audio, video := filepath.Join(work, AudioName), filepath.Join(work, VideoName)
	var lastSaved time.Time
	progress := func(p float64) {
		if time.Since(lastSaved) < time.Second {
			return
		}
		lastSaved = time.Now()
		if err := q.opts.Store.SetProgress(ctx, recID, p); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to store mixdown progress")
		}
	}
	if err = Run(ctx, plan, work, audio, video, progress); err != nil {
		return err
	}
	outs := []*storage.RecordingFile{q.row(rec, AudioName, audio, "ogg", []string{"audio/opus"}, plan.Duration)}
	if plan.HasVideo() {
		outs = append(outs, q.row(rec, VideoName, video, "webm", []string{"video/VP8", "audio/opus"}, plan.Duration))
	}
	// The recording may have been deleted meanwhile (API, retention):
	// storing would make its folder again.
	if rec, err = q.opts.Store.GetRecording(ctx, recID); err != nil || rec == nil {
		return fmt.Errorf("the recording is gone: %w", errors.Join(ErrNotFound, err))
	}
	// Replace an older mixdown: delete its files, then store the new ones.
	for _, name := range []string{AudioName, VideoName} {
		if err = q.opts.Files.Delete(ctx, rec.Folder, name); err != nil {
			return fmt.Errorf("failed to remove the previous mixdown: %w", err)
		}
	}
	for _, f := range outs {
		if err = q.opts.Files.Put(ctx, rec.Folder, f.Name, filepath.Join(work, f.Name)); err != nil {
			return fmt.Errorf("failed to store %s: %w", f.Name, err)
		}
	}
	if err = q.opts.Store.ReplaceMixdownFiles(ctx, recID, outs); err != nil {
		return fmt.Errorf("failed to record mixdown files: %w", err)
	}
	return nil
}

func (q *Queue) row(rec *storage.Recording, name, path, kind string, codecs []string, d time.Duration) *storage.RecordingFile {
	f := &storage.RecordingFile{RecordingID: rec.ID, Name: name, Purpose: storage.PurposeMixdown, Kind: kind, Codecs: codecs,
		Duration: d, StartedAt: rec.StartedAt, State: storage.StateFinished, MuteIntervals: []storage.Interval{}}
	if st, err := os.Stat(path); err == nil {
		f.Bytes = st.Size()
	}
	return f
}

func (q *Queue) manifest(ctx context.Context, rec *storage.Recording) (*recording.Manifest, error) {
	f, err := q.opts.Files.Open(ctx, rec.Folder, recording.ManifestFileName)
	if err != nil {
		return nil, fmt.Errorf("failed to open manifest: %w", err)
	}
	defer f.Close()
	var m recording.Manifest
	if err = json.NewDecoder(io.LimitReader(f, 16<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("failed to read manifest: %w", err)
	}
	return &m, nil
}

// plan places the manifest's files on the call timeline. Names come from
// the file rows (profiles at recording time), else the user id.
func (q *Queue) plan(ctx context.Context, rec *storage.Recording, man *recording.Manifest, rows []*storage.RecordingFile, work string) (Plan, error) {
	byName := map[string]*storage.RecordingFile{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	start := man.Started
	if start.IsZero() {
		start = rec.StartedAt
	}
	end := man.Ended
	if end.IsZero() {
		end = rec.EndedAt
	}
	var lastEnd time.Time
	var p Plan
	for _, t := range man.Tracks {
		row := byName[t.File]
		if row == nil || row.Purpose == storage.PurposeMixdown || row.State == storage.StateFailed {
			continue // not stored (it stayed in the spool) or not ours to mix
		}
		in := Input{Tile: t.UserID + "\x00" + t.DeviceID + "\x00" + t.Purpose, Screen: strings.Contains(t.Purpose, "screenshare"),
			Label: row.DisplayName, Offset: t.Start.Sub(start), Duration: t.Duration}
		if in.Label == "" {
			in.Label = t.UserID
		}
		if in.Screen {
			in.Label += " (screen)"
		}
		for _, c := range t.Codecs {
			in.Audio = in.Audio || strings.HasPrefix(strings.ToLower(c), "audio/")
			in.Video = in.Video || strings.HasPrefix(strings.ToLower(c), "video/")
		}
		for _, iv := range t.MuteIntervals {
			if iv.Kind == recording.KindVideo {
				in.VideoOff = append(in.VideoOff, [2]time.Duration{iv.Start, iv.End})
			}
		}
		path, err := q.localPath(ctx, rec.Folder, t.File, work)
		if err != nil {
			return p, err
		}
		in.Path = path
		if e := t.Start.Add(t.Duration); e.After(lastEnd) {
			lastEnd = e
		}
		p.Inputs = append(p.Inputs, in)
	}
	if end.IsZero() { // a repaired recording without an end: its last file's
		end = lastEnd
	}
	p.Duration = end.Sub(start)
	if p.Duration <= 0 {
		return p, errors.New("the recording has no length")
	}
	return p, nil
}

// localPath is where ffmpeg reads a stored file: in place for a local
// store, else a copy in the work folder.
func (q *Queue) localPath(ctx context.Context, folder, name, work string) (string, error) {
	if lp, ok := q.opts.Files.(localPather); ok {
		return lp.LocalPath(folder, name)
	}
	src, err := q.opts.Files.Open(ctx, folder, name)
	if err != nil {
		return "", fmt.Errorf("failed to open %s: %w", name, err)
	}
	defer src.Close()
	dst := filepath.Join(work, "in-"+name)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600) //nolint:gosec // inside the work folder
	if err != nil {
		return "", fmt.Errorf("failed to copy %s: %w", name, err)
	}
	_, err = io.Copy(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("failed to copy %s: %w", name, err)
	}
	return dst, nil
}
