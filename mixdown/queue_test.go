package mixdown

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// memStore is an in-memory Store.
type memStore struct {
	lock  sync.Mutex
	recs  map[storage.RecordingID]*storage.Recording
	files map[storage.RecordingID][]*storage.RecordingFile
	mix   map[storage.RecordingID]storage.Mixdown
}

func (ms *memStore) GetRecording(_ context.Context, id storage.RecordingID) (*storage.Recording, error) {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	return ms.recs[id], nil
}

func (ms *memStore) Files(_ context.Context, id storage.RecordingID) ([]*storage.RecordingFile, error) {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	return append([]*storage.RecordingFile(nil), ms.files[id]...), nil
}

func (ms *memStore) PutMixdown(_ context.Context, m *storage.Mixdown) error {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	ms.mix[m.RecordingID] = *m
	return nil
}

func (ms *memStore) SetProgress(_ context.Context, id storage.RecordingID, p float64) error {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	m := ms.mix[id]
	m.Progress = p
	ms.mix[id] = m
	return nil
}

func (ms *memStore) UnfinishedMixdowns(context.Context) ([]*storage.Mixdown, error) {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	var out []*storage.Mixdown
	for _, m := range ms.mix {
		if m.State == storage.MixdownQueued || m.State == storage.MixdownRunning {
			out = append(out, &m)
		}
	}
	return out, nil
}

func (ms *memStore) ReplaceMixdownFiles(_ context.Context, id storage.RecordingID, files []*storage.RecordingFile) error {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	var keep []*storage.RecordingFile
	for _, f := range ms.files[id] {
		if f.Purpose != storage.PurposeMixdown {
			keep = append(keep, f)
		}
	}
	ms.files[id] = append(keep, files...)
	return nil
}

func (ms *memStore) state(id storage.RecordingID) storage.Mixdown {
	ms.lock.Lock()
	defer ms.lock.Unlock()
	return ms.mix[id]
}

// setup stores a recording of one Ogg file (or of garbage) with its manifest.
func setup(t *testing.T, garbage bool) (*memStore, *storage.LocalStore, string) {
	t.Helper()
	dir := t.TempDir()
	store, err := storage.NewLocalStore(filepath.Join(dir, "recordings"))
	require.NoError(t, err)
	start := time.Now().Add(-time.Minute)
	src := filepath.Join(dir, "a.ogg")
	if garbage {
		require.NoError(t, os.WriteFile(src, []byte("not an ogg file at all"), 0o600))
	} else {
		synth(t, src, 600, false, 2*time.Second)
	}
	require.NoError(t, store.Put(context.Background(), "r1", "a.ogg", src))
	man := recording.Manifest{RecordingID: "r1", RoomID: "!r:test", Started: start, Ended: start.Add(3 * time.Second),
		Tracks: []recording.ManifestTrack{{UserID: "@a:test", Purpose: "m.usermedia", File: "a.ogg", Offset: time.Second,
			FileResult: recording.FileResult{Kind: recording.FileKindOgg, Codecs: []string{"audio/opus"}, Start: start.Add(time.Second), Duration: 2 * time.Second}}}}
	require.NoError(t, recording.WriteManifest(dir, man))
	require.NoError(t, store.Put(context.Background(), "r1", recording.ManifestFileName, filepath.Join(dir, recording.ManifestFileName)))
	ms := &memStore{
		recs: map[storage.RecordingID]*storage.Recording{"r1": {ID: "r1", Folder: "r1", State: storage.StateFinished, StartedAt: start, EndedAt: start.Add(3 * time.Second)},
			"live": {ID: "live", Folder: "live", State: storage.StateRecording, StartedAt: start}},
		files: map[storage.RecordingID][]*storage.RecordingFile{"r1": {{RecordingID: "r1", Name: "a.ogg", UserID: "@a:test", Kind: "ogg", State: storage.StateFinished}}},
		mix:   map[storage.RecordingID]storage.Mixdown{},
	}
	return ms, store, dir
}

func runQueue(t *testing.T, ms *memStore, store *storage.LocalStore, dir string) (*Queue, chan storage.Mixdown) {
	t.Helper()
	done := make(chan storage.Mixdown, 4)
	q, err := NewQueue(Options{Store: ms, Files: store, WorkDir: filepath.Join(dir, "work"), Done: func(_ context.Context, m *storage.Mixdown) { done <- *m }})
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(q.Stop)
	return q, done
}

func TestQueueMixesDown(t *testing.T) {
	ms, store, dir := setup(t, false)
	q, done := runQueue(t, ms, store, dir)
	_, err := q.Enqueue(context.Background(), "live")
	require.ErrorIs(t, err, ErrInProgress)
	_, err = q.Enqueue(context.Background(), "nope")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = q.Enqueue(context.Background(), "r1")
	require.NoError(t, err)
	m := <-done
	require.Equal(t, storage.MixdownFinished, m.State, m.Error)
	files, _ := ms.Files(context.Background(), "r1")
	require.Len(t, files, 2)
	require.Equal(t, AudioName, files[1].Name)
	require.Equal(t, storage.PurposeMixdown, files[1].Purpose)
	require.InDelta(t, 3*time.Second, files[1].Duration, float64(time.Millisecond))
	f, err := store.Open(context.Background(), "r1", AudioName)
	require.NoError(t, err)
	require.Equal(t, files[1].Bytes, f.Size)
	_ = f.Close()

	// Again (on demand): replaced, not added.
	_, err = q.Enqueue(context.Background(), "r1")
	require.NoError(t, err)
	require.Equal(t, storage.MixdownFinished, (<-done).State)
	files, _ = ms.Files(context.Background(), "r1")
	require.Len(t, files, 2)
	entries, err := os.ReadDir(filepath.Join(dir, "work"))
	require.NoError(t, err)
	require.Empty(t, entries, "the work folder is cleaned up")
}

// TestFailedMixdownTouchesNothing: ffmpeg fails on a broken file; the job
// is marked failed with ffmpeg's reason, the participant file is as it
// was and there is no mixdown file or row.
func TestFailedMixdownTouchesNothing(t *testing.T) {
	ms, store, dir := setup(t, true)
	before, err := os.ReadFile(filepath.Join(dir, "recordings", "r1", "a.ogg"))
	require.NoError(t, err)
	q, done := runQueue(t, ms, store, dir)
	_, err = q.Enqueue(context.Background(), "r1")
	require.NoError(t, err)
	m := <-done
	require.Equal(t, storage.MixdownFailed, m.State)
	require.Contains(t, m.Error, "ffmpeg failed")
	require.Equal(t, storage.MixdownFailed, ms.state("r1").State)
	after, err := os.ReadFile(filepath.Join(dir, "recordings", "r1", "a.ogg"))
	require.NoError(t, err)
	require.Equal(t, before, after)
	files, _ := ms.Files(context.Background(), "r1")
	require.Len(t, files, 1)
	_, err = os.Stat(filepath.Join(dir, "recordings", "r1", AudioName))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestQueueResumesAfterRestart: a job a stop interrupted ("running") or
// that was still queued runs at the next start.
func TestQueueResumesAfterRestart(t *testing.T) {
	ms, store, dir := setup(t, false)
	ms.mix["r1"] = storage.Mixdown{RecordingID: "r1", State: storage.MixdownRunning, QueuedAt: time.Now()}
	_, done := runQueue(t, ms, store, dir)
	require.Equal(t, storage.MixdownFinished, (<-done).State)
}

// TestPlanFromManifest: the manifest's files become inputs at their
// offsets; segments of a stream share its tile; names come from the rows
// (else the user id); camera-off spans hide the tile; files that were not
// stored, failed or are a mixdown are left out.
func TestPlanFromManifest(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.NewLocalStore(dir)
	require.NoError(t, err)
	start := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	track := func(user, device, purpose, file string, at, d time.Duration, codecs ...string) recording.ManifestTrack {
		return recording.ManifestTrack{UserID: user, DeviceID: device, Purpose: purpose, File: file, Offset: at,
			FileResult: recording.FileResult{Codecs: codecs, Start: start.Add(at), Duration: d}}
	}
	bob1 := track("@bob:t", "B", "m.usermedia", "bob-0.webm", time.Second, 2*time.Second, "video/VP8", "audio/opus")
	bob1.MuteIntervals = []recording.Interval{{Kind: recording.KindVideo, Start: 500 * time.Millisecond, End: time.Second},
		{Kind: recording.KindAudio, Start: 0, End: time.Second}}
	man := &recording.Manifest{Started: start, Ended: start.Add(10 * time.Second), Tracks: []recording.ManifestTrack{
		track("@alice:t", "A", "m.usermedia", "alice.ogg", 0, 10*time.Second, "audio/opus"),
		bob1,
		track("@bob:t", "B", "m.usermedia", "bob-1.webm", 5*time.Second, 3*time.Second, "video/VP8", "audio/opus"),
		track("@bob:t", "B", "m.screenshare", "bob-screen.webm", 6*time.Second, time.Second, "video/VP8"),
		track("@carol:t", "C", "m.usermedia", "carol.ogg", 0, time.Second, "audio/opus"),   // failed
		track("@dave:t", "D", "m.usermedia", "dave.ogg", 0, time.Second, "audio/opus"),     // no row: stayed in the spool
		track("", "", storage.PurposeMixdown, "mixdown.ogg", 0, time.Second, "audio/opus"), // not ours to mix
	}}
	rows := []*storage.RecordingFile{
		{Name: "alice.ogg", DisplayName: "Alice"}, {Name: "bob-0.webm"}, {Name: "bob-1.webm"}, {Name: "bob-screen.webm"},
		{Name: "carol.ogg", State: storage.StateFailed}, {Name: "mixdown.ogg", Purpose: storage.PurposeMixdown},
	}
	q, err := NewQueue(Options{Store: &memStore{}, Files: store, WorkDir: dir})
	require.NoError(t, err)
	rec := &storage.Recording{ID: "r", Folder: "r", StartedAt: start, EndedAt: start.Add(10 * time.Second)}
	p, err := q.plan(context.Background(), rec, man, rows, dir)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, p.Duration)
	require.Len(t, p.Inputs, 4)
	require.True(t, p.HasVideo())
	type got struct {
		file, label string
		offset      time.Duration
		audio       bool
		video       bool
		screen      bool
	}
	var out []got
	for _, in := range p.Inputs {
		out = append(out, got{filepath.Base(in.Path), in.Label, in.Offset, in.Audio, in.Video, in.Screen})
	}
	require.Equal(t, []got{
		{"alice.ogg", "Alice", 0, true, false, false},
		{"bob-0.webm", "@bob:t", time.Second, true, true, false},
		{"bob-1.webm", "@bob:t", 5 * time.Second, true, true, false},
		{"bob-screen.webm", "@bob:t (screen)", 6 * time.Second, false, true, true},
	}, out)
	require.Equal(t, p.Inputs[1].Tile, p.Inputs[2].Tile, "segments share a tile")
	require.NotEqual(t, p.Inputs[1].Tile, p.Inputs[3].Tile)
	require.Equal(t, [][2]time.Duration{{500 * time.Millisecond, time.Second}}, p.Inputs[1].VideoOff, "only camera-off spans")
}
