package web_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

type fakeMixdowns struct {
	lock   sync.Mutex
	jobs   map[storage.RecordingID]*storage.Mixdown
	full   bool
	queued []storage.RecordingID
}

func (fm *fakeMixdowns) GetMixdown(_ context.Context, recID storage.RecordingID) (*storage.Mixdown, error) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	return fm.jobs[recID], nil
}

func (fm *fakeMixdowns) Queued() []storage.RecordingID {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	return append([]storage.RecordingID(nil), fm.queued...)
}

func (fm *fakeMixdowns) EnqueueMixdown(_ context.Context, recID storage.RecordingID) (*storage.Mixdown, error) {
	fm.lock.Lock()
	defer fm.lock.Unlock()
	if fm.full {
		return nil, web.ErrMixdownQueueFull
	}
	fm.queued = append(fm.queued, recID)
	m := &storage.Mixdown{RecordingID: recID, State: storage.MixdownQueued}
	fm.jobs[recID] = m
	return m, nil
}

// TestMixdownInAPI: mixdown files are their own kind and not tracks; the
// job's state and progress show in the single recording; a mixdown can be
// asked for except while recording; expires_at follows the retention.
func TestMixdownInAPI(t *testing.T) {
	mix := &fakeMixdowns{jobs: map[storage.RecordingID]*storage.Mixdown{}}
	e := newEnv(t, func(o *web.Options) { o.Mixdowns, o.RetentionDays = mix, 10 })
	rec := e.seed("r1", roomA, storage.StateFinished, t0, oggTrack("alice.ogg", alice, 0))
	e.seed("live", roomB, storage.StateRecording, t0)
	e.put(rec.Folder, "mixdown.ogg", readFile(t, oggMedia))
	require.NoError(t, e.db.ReplaceMixdownFiles(e.ctx, rec.ID, []*storage.RecordingFile{
		{Name: "mixdown.ogg", Kind: "ogg", Codecs: []string{"audio/opus"}, Bytes: 10, Duration: 6 * time.Second, StartedAt: t0, State: storage.StateFinished},
	}))
	mix.jobs["r1"] = &storage.Mixdown{RecordingID: "r1", State: storage.MixdownRunning, Progress: 0.25}

	got := decode[web.Recording](t, e.get("/api/v1/recordings/r1"))
	require.Len(t, got.Tracks, 1)
	require.Equal(t, []string{string(alice)}, []string{string(got.Participants[0])})
	require.NotNil(t, got.Mixdown)
	require.Equal(t, storage.MixdownRunning, got.Mixdown.State)
	require.InDelta(t, 0.25, got.Mixdown.Progress, 0.001)
	require.Len(t, got.Mixdown.Files, 1)
	require.Equal(t, "mixdown", got.Mixdown.Files[0].Kind)
	require.Equal(t, "ogg", got.Mixdown.Files[0].Container)
	require.NotNil(t, got.ExpiresAt)
	require.Equal(t, t0.Add(10*24*time.Hour), *got.ExpiresAt)

	list := decode[web.RecordingList](t, e.get("/api/v1/recordings"))
	for _, r := range list.Recordings {
		if r.ID == "live" {
			require.Nil(t, r.ExpiresAt, "a recording in progress does not expire")
		} else {
			require.Len(t, r.Mixdown.Files, 1)
		}
	}

	w := e.do(request{method: http.MethodGet, target: "/api/v1/recordings/r1/files/mixdown.ogg", token: testToken, headers: map[string]string{"Range": "bytes=0-9"}})
	require.Equal(t, http.StatusPartialContent, w.Code)
	require.Equal(t, "audio/ogg", w.Header().Get("Content-Type"))

	w = e.do(request{method: http.MethodPost, target: "/api/v1/recordings/r1/mixdown", token: testToken})
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	require.Equal(t, storage.MixdownQueued, decode[web.Mixdown](t, w).State)
	require.Equal(t, []storage.RecordingID{"r1"}, mix.queued)
	requireError(t, e.do(request{method: http.MethodPost, target: "/api/v1/recordings/live/mixdown", token: testToken}), http.StatusConflict, web.CodeInProgress)
	requireError(t, e.do(request{method: http.MethodPost, target: "/api/v1/recordings/none/mixdown", token: testToken}), http.StatusNotFound, web.CodeNotFound)
	require.Equal(t, http.StatusUnauthorized, e.do(request{method: http.MethodPost, target: "/api/v1/recordings/r1/mixdown"}).Code)
	mix.full = true
	requireError(t, e.do(request{method: http.MethodPost, target: "/api/v1/recordings/r1/mixdown", token: testToken}), http.StatusServiceUnavailable, web.CodeUnavailable)

	noMix := newEnv(t)
	noMix.seed("r1", roomA, storage.StateFinished, t0)
	requireError(t, noMix.do(request{method: http.MethodPost, target: "/api/v1/recordings/r1/mixdown", token: testToken}), http.StatusServiceUnavailable, web.CodeUnavailable)
}
