package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

const (
	testToken = "s3cret-operator-token"
	oggMedia  = "../testdata/media/beeps-opus-48k-stereo.ogg"
	webmMedia = "testdata/camera-vp8-opus.webm"
)

// env is a handler over a real SQLite database and a real local file store.
type env struct {
	t       testing.TB
	ctx     context.Context
	db      *storage.DB
	store   *storage.LocalStore
	root    string // the file store's directory
	files   *spyFiles
	calls   *fakeCalls
	logs    *syncBuffer
	handler http.Handler
}

type envOption func(*web.Options)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	logs := &syncBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.DebugLevel)
	ctx := log.WithContext(context.Background())
	dir := t.TempDir()
	db, err := storage.Open(ctx, storage.Options{
		Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(dir, "test.db") + "?_txlock=immediate", MaxOpenConns: 2,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	root := filepath.Join(dir, "store")
	store, err := storage.NewLocalStore(root)
	require.NoError(t, err)
	// A file next to the store that no request may ever reach.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("top secret"), 0o600))

	e := &env{t: t, ctx: ctx, db: db, store: store, root: root, logs: logs,
		files: &spyFiles{t: t, next: store}, calls: newFakeCalls()}
	o := web.Options{
		Recordings: web.StorageRecordings(db),
		Files:      e.files,
		Calls:      e.calls,
		Tokens:     []string{"another-token", testToken},
		Log:        &log,
		// httptest.NewRequest's Host.
		AllowedHosts: []string{"example.com"},
	}
	for _, opt := range opts {
		opt(&o)
	}
	e.handler = web.New(o)
	return e
}

// trackSpec is one file of a seeded recording.
type trackSpec struct {
	name     string
	src      string // media file to copy in
	user     id.UserID
	device   id.DeviceID
	kind     string // container: ogg or webm
	codecs   []string
	offset   time.Duration
	duration time.Duration
	mutes    []storage.Interval
}

func oggTrack(name string, user id.UserID, offset time.Duration) trackSpec {
	return trackSpec{name: name, src: oggMedia, user: user, device: "DEV" + id.DeviceID(name[:1]), kind: "ogg",
		codecs: []string{"audio/opus"}, offset: offset, duration: 5 * time.Second}
}

func webmTrack(name string, user id.UserID, offset time.Duration) trackSpec {
	return trackSpec{name: name, src: webmMedia, user: user, device: "DEV" + id.DeviceID(name[:1]), kind: "webm",
		codecs: []string{"video/VP8", "audio/opus"}, offset: offset, duration: 5 * time.Second}
}

// seed stores a recording: its row, its file rows, the files in the store
// and (unless it is still recording) a manifest.
func (e *env) seed(recID storage.RecordingID, room id.RoomID, state storage.RecordingState, started time.Time, tracks ...trackSpec) *storage.Recording {
	t := e.t
	t.Helper()
	rec := e.db.Recording.New(recID, room, string(recID), started)
	rec.ConfID = "conf-" + string(recID)
	rec.State = state
	if state != storage.StateRecording {
		rec.EndedAt = started.Add(6 * time.Second)
	}
	require.NoError(t, rec.Save(e.ctx))
	type manifestTrack struct {
		UserID string        `json:"user_id"`
		File   string        `json:"file"`
		Offset time.Duration `json:"offset"`
	}
	manifest := struct {
		RecordingID string          `json:"recording_id"`
		RoomID      string          `json:"room_id"`
		Started     time.Time       `json:"started"`
		Tracks      []manifestTrack `json:"tracks"`
	}{RecordingID: string(recID), RoomID: string(room), Started: started, Tracks: []manifestTrack{}}
	for _, tr := range tracks {
		e.put(rec.Folder, tr.name, readFile(t, tr.src))
		f := e.db.File.New(recID, tr.name)
		f.UserID, f.DeviceID, f.Purpose, f.Kind, f.Codecs = tr.user, tr.device, "m.usermedia", tr.kind, tr.codecs
		f.Bytes, f.Duration, f.StartedAt, f.State = int64(len(readFile(t, tr.src))), tr.duration, started.Add(tr.offset), storage.StateFinished
		f.MuteIntervals = tr.mutes
		if tr.kind == "webm" {
			f.Width, f.Height = 320, 240
		}
		require.NoError(t, f.Save(e.ctx))
		manifest.Tracks = append(manifest.Tracks, manifestTrack{UserID: string(tr.user), File: tr.name, Offset: tr.offset})
	}
	if state != storage.StateRecording {
		data, err := json.Marshal(manifest)
		require.NoError(t, err)
		e.put(rec.Folder, web.ManifestName, data)
	}
	return rec
}

// put stores data as folder/name through the store's own Put.
func (e *env) put(folder, name string, data []byte) {
	e.t.Helper()
	tmp := filepath.Join(e.t.TempDir(), name)
	require.NoError(e.t, os.WriteFile(tmp, data, 0o600))
	require.NoError(e.t, e.store.Put(e.ctx, folder, name, tmp))
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}

// request is one HTTP request against the handler.
type request struct {
	method  string
	target  string
	body    io.Reader
	token   string // "" sends no Authorization header
	headers map[string]string
	host    string // "" keeps httptest's example.com
}

func (e *env) do(req request) *httptest.ResponseRecorder {
	e.t.Helper()
	if req.method == "" {
		req.method = http.MethodGet
	}
	r := httptest.NewRequestWithContext(e.ctx, req.method, req.target, req.body)
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	for k, v := range req.headers {
		r.Header.Set(k, v)
	}
	if req.host != "" {
		r.Host = req.host
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return w
}

// get is an authenticated GET.
func (e *env) get(target string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do(request{target: target, token: testToken})
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	require.Equal(t, "application/json", w.Header().Get("Content-Type"), "body: %s", w.Body.String())
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &v), "body: %s", w.Body.String())
	return v
}

// requireError checks status and errcode of an error response.
func requireError(t *testing.T, w *httptest.ResponseRecorder, status int, errcode string) web.ErrorResponse {
	t.Helper()
	require.Equal(t, status, w.Code, "body: %s", w.Body.String())
	resp := decode[web.ErrorResponse](t, w)
	require.Equal(t, errcode, resp.ErrCode)
	require.NotEmpty(t, resp.Error)
	return resp
}

// spyFiles passes calls to the real store and fails the test if a name
// that is not a safe single component ever reaches it.
type spyFiles struct {
	t    testing.TB
	next web.Files

	lock   sync.Mutex
	opened []string
}

func (sf *spyFiles) Open(ctx context.Context, folder, name string) (*storage.StoredFile, error) {
	if err := storage.CheckKey(folder, name); err != nil {
		sf.t.Errorf("unchecked key reached the file store: %q/%q", folder, name)
	}
	sf.lock.Lock()
	sf.opened = append(sf.opened, folder+"/"+name)
	sf.lock.Unlock()
	return sf.next.Open(ctx, folder, name)
}

func (sf *spyFiles) DeleteFolder(ctx context.Context, folder string) error {
	if err := storage.CheckKey(folder); err != nil {
		sf.t.Errorf("unchecked folder reached the file store: %q", folder)
	}
	return sf.next.DeleteFolder(ctx, folder)
}

func (sf *spyFiles) Opened() []string {
	sf.lock.Lock()
	defer sf.lock.Unlock()
	return append([]string(nil), sf.opened...)
}

// fakeCalls is an in-memory Calls: rooms in hasCall have a call, joinErr
// forces an error for a room.
type fakeCalls struct {
	lock    sync.Mutex
	hasCall map[id.RoomID]bool
	joinErr map[id.RoomID]error
	active  map[id.RoomID]web.CallInfo
	nextID  int
}

func newFakeCalls() *fakeCalls {
	return &fakeCalls{hasCall: map[id.RoomID]bool{}, joinErr: map[id.RoomID]error{}, active: map[id.RoomID]web.CallInfo{}}
}

func (fc *fakeCalls) Join(_ context.Context, roomID id.RoomID) (web.CallInfo, error) {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	if err := fc.joinErr[roomID]; err != nil {
		return web.CallInfo{}, err
	}
	if _, ok := fc.active[roomID]; ok {
		return web.CallInfo{}, web.ErrAlreadyRecording
	}
	if !fc.hasCall[roomID] {
		return web.CallInfo{}, web.ErrNoCall
	}
	fc.nextID++
	info := web.CallInfo{RoomID: roomID, ConfID: "conf1", RecordingID: storage.RecordingID("rec-" + string(rune('0'+fc.nextID))),
		Participants: []web.Participant{{UserID: "@alice:example.org", DeviceID: "ALICE", State: "connected"},
			{UserID: "@bob:example.org", DeviceID: "BOB", State: "connected", Encrypted: true,
				Note: "media is end-to-end encrypted and no key has arrived from this device yet: not recorded"}},
		Since: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	fc.active[roomID] = info
	return info, nil
}

func (fc *fakeCalls) Leave(_ context.Context, roomID id.RoomID) error {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	if _, ok := fc.active[roomID]; !ok {
		return web.ErrNotRecording
	}
	delete(fc.active, roomID)
	return nil
}

func (fc *fakeCalls) Active(context.Context) []web.CallInfo {
	fc.lock.Lock()
	defer fc.lock.Unlock()
	out := []web.CallInfo{}
	for _, c := range fc.active {
		out = append(out, c)
	}
	return out
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	lock sync.Mutex
	b    bytes.Buffer
}

func (sb *syncBuffer) Write(p []byte) (int, error) {
	sb.lock.Lock()
	defer sb.lock.Unlock()
	return sb.b.Write(p)
}

func (sb *syncBuffer) String() string {
	sb.lock.Lock()
	defer sb.lock.Unlock()
	return sb.b.String()
}
