package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

const (
	roomA id.RoomID = "!roomA:example.org"
	roomB id.RoomID = "!roomB:example.org"
	alice id.UserID = "@alice:example.org"
	bob   id.UserID = "@bob:example.org"
)

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

// seedThree stores three recordings: "old" (room A, finished, two tracks),
// "mid" (room B, failed) and "new" (room A, still recording).
func seedThree(e *env) {
	e.seed("old", roomA, storage.StateFinished, t0,
		oggTrack("alice.ogg", alice, 0),
		webmTrack("bob.webm", bob, 1500*time.Millisecond))
	e.seed("mid", roomB, storage.StateFailed, t0.Add(time.Hour), oggTrack("alice-b.ogg", alice, 0))
	e.seed("new", roomA, storage.StateRecording, t0.Add(2*time.Hour))
}

func ids(list web.RecordingList) []storage.RecordingID {
	out := []storage.RecordingID{}
	for _, r := range list.Recordings {
		out = append(out, r.ID)
	}
	return out
}

func TestListRecordings(t *testing.T) {
	e := newEnv(t)
	seedThree(e)

	tests := []struct {
		name  string
		query string
		want  []storage.RecordingID
	}{
		{"all, newest first", "", []storage.RecordingID{"new", "mid", "old"}},
		{"by room", "?room_id=" + "%21roomA%3Aexample.org", []storage.RecordingID{"new", "old"}},
		{"by room unencoded", "?room_id=!roomB:example.org", []storage.RecordingID{"mid"}},
		{"by state", "?state=finished", []storage.RecordingID{"old"}},
		{"by room and state", "?room_id=!roomA:example.org&state=recording", []storage.RecordingID{"new"}},
		{"no match", "?room_id=!nothing:example.org", []storage.RecordingID{}},
		{"limit over max is capped", "?limit=100000", []storage.RecordingID{"new", "mid", "old"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := e.get("/api/v1/recordings" + tt.query)
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			list := decode[web.RecordingList](t, w)
			require.Equal(t, tt.want, ids(list))
			require.Empty(t, list.NextCursor)
		})
	}

	t.Run("shape", func(t *testing.T) {
		w := e.get("/api/v1/recordings?state=finished")
		var raw struct {
			Recordings []map[string]any `json:"recordings"`
		}
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &raw))
		require.Len(t, raw.Recordings, 1)
		rec := raw.Recordings[0]
		for _, key := range []string{"id", "room_id", "conf_id", "state", "started_at", "ended_at", "duration_ms", "participants", "tracks"} {
			require.Contains(t, rec, key)
		}
		require.NotContains(t, rec, "manifest", "the listing has no manifests")
		require.Equal(t, "2025-03-04T10:00:00Z", rec["started_at"])
		require.Equal(t, "2025-03-04T10:00:06Z", rec["ended_at"])
		require.EqualValues(t, 6000, rec["duration_ms"])
		require.Equal(t, []any{string(alice), string(bob)}, rec["participants"])
		tracks := rec["tracks"].([]any)
		require.Len(t, tracks, 2)
		for _, tr := range tracks {
			for _, key := range []string{"user_id", "device_id", "purpose", "kind", "codec", "file", "bytes", "duration_ms", "started_at", "mute_intervals"} {
				require.Contains(t, tr, key)
			}
		}
		video := tracks[1].(map[string]any)
		require.Equal(t, "video", video["kind"])
		require.Equal(t, "webm", video["container"])
		require.Equal(t, "video/VP8", video["codec"])
		require.Equal(t, "bob.webm", video["file"])
		require.EqualValues(t, 1500, video["offset_ms"])
		require.EqualValues(t, 5000, video["duration_ms"])
		require.Equal(t, "2025-03-04T10:00:01.5Z", video["started_at"])
		require.Equal(t, "audio", tracks[0].(map[string]any)["kind"])
	})

	t.Run("in progress", func(t *testing.T) {
		list := decode[web.RecordingList](t, e.get("/api/v1/recordings?state=recording"))
		require.Len(t, list.Recordings, 1)
		require.Nil(t, list.Recordings[0].EndedAt)
		require.Positive(t, list.Recordings[0].DurationMS, "a running recording's duration runs until now")
		require.Empty(t, list.Recordings[0].Tracks)
		require.NotNil(t, list.Recordings[0].Tracks, "tracks is [] rather than null")
		require.NotNil(t, list.Recordings[0].Participants)
	})

	t.Run("cursor pages", func(t *testing.T) {
		var got []storage.RecordingID
		target := "/api/v1/recordings?limit=2"
		pages := 0
		for {
			list := decode[web.RecordingList](t, e.get(target))
			pages++
			got = append(got, ids(list)...)
			if list.NextCursor == "" {
				break
			}
			target = "/api/v1/recordings?limit=2&cursor=" + list.NextCursor
		}
		require.Equal(t, 2, pages)
		require.Equal(t, []storage.RecordingID{"new", "mid", "old"}, got)
	})

	t.Run("pages do not shift when a recording starts meanwhile", func(t *testing.T) {
		first := decode[web.RecordingList](t, e.get("/api/v1/recordings?limit=2"))
		require.Equal(t, []storage.RecordingID{"new", "mid"}, ids(first))
		e.seed("newest", "!roomA:example.org", storage.StateRecording, time.Now())
		second := decode[web.RecordingList](t, e.get("/api/v1/recordings?limit=2&cursor="+first.NextCursor))
		require.Equal(t, []storage.RecordingID{"old"}, ids(second))
		require.NoError(t, e.db.Recording.Delete(e.t.Context(), "newest"))
	})

	bad := []struct {
		name  string
		query string
		want  string
	}{
		{"limit zero", "?limit=0", "limit"},
		{"limit negative", "?limit=-3", "limit"},
		{"limit not a number", "?limit=ten", "limit"},
		{"unknown state", "?state=deleted", "state"},
		{"alias instead of room id", "?room_id=%23room%3Aexample.org", "room_id"},
		{"user id instead of room id", "?room_id=@alice:example.org", "room_id"},
		{"cursor garbage", "?cursor=%21%21%21", "cursor"},
		{"cursor not ours", "?cursor=bm90IGpzb24", "cursor"},
		{"cursor negative", "?cursor=eyJvIjotMX0", "cursor"},
	}
	for _, tt := range bad {
		t.Run("400 "+tt.name, func(t *testing.T) {
			resp := requireError(t, e.get("/api/v1/recordings"+tt.query), http.StatusBadRequest, web.CodeInvalidParam)
			require.Contains(t, resp.Error, tt.want, "the error says what was wrong")
		})
	}
}

func TestGetRecording(t *testing.T) {
	e := newEnv(t)
	seedThree(e)

	t.Run("finished with manifest", func(t *testing.T) {
		w := e.get("/api/v1/recordings/old")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		rec := decode[web.Recording](t, w)
		require.Equal(t, storage.RecordingID("old"), rec.ID)
		require.Equal(t, roomA, rec.RoomID)
		require.Equal(t, "conf-old", rec.ConfID)
		require.Equal(t, storage.StateFinished, rec.State)
		require.Len(t, rec.Tracks, 2)
		require.NotNil(t, rec.Manifest)
		var m struct {
			RecordingID string `json:"recording_id"`
			Tracks      []struct {
				File string `json:"file"`
			} `json:"tracks"`
		}
		require.NoError(t, json.Unmarshal(*rec.Manifest, &m))
		require.Equal(t, "old", m.RecordingID)
		require.Len(t, m.Tracks, 2)
	})

	t.Run("in progress has a null manifest", func(t *testing.T) {
		w := e.get("/api/v1/recordings/new")
		require.Equal(t, http.StatusOK, w.Code)
		var raw map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &raw))
		require.JSONEq(t, "null", string(raw["manifest"]))
		require.JSONEq(t, "null", string(raw["ended_at"]))
	})

	t.Run("broken manifest is null", func(t *testing.T) {
		e.seed("broken", roomB, storage.StateRepaired, t0)
		require.NoError(t, os.WriteFile(filepath.Join(e.root, "broken", web.ManifestName), []byte("{not json"), 0o600))
		rec := decode[web.Recording](t, e.get("/api/v1/recordings/broken"))
		require.Nil(t, rec.Manifest, "manifest is null")
	})

	errs := []struct {
		name    string
		target  string
		status  int
		errcode string
	}{
		{"unknown", "/api/v1/recordings/nope", http.StatusNotFound, web.CodeNotFound},
		{"id with space", "/api/v1/recordings/a%20b", http.StatusBadRequest, web.CodeInvalidParam},
		{"id with encoded slash", "/api/v1/recordings/..%2fold", http.StatusBadRequest, web.CodeInvalidParam},
		{"id dot dot", "/api/v1/recordings/%2e%2e", http.StatusBadRequest, web.CodeInvalidParam},
		{"id too long", "/api/v1/recordings/" + strings.Repeat("a", 300), http.StatusBadRequest, web.CodeInvalidParam},
		{"id with percent", "/api/v1/recordings/%25zz", http.StatusBadRequest, web.CodeInvalidParam},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			requireError(t, e.get(tt.target), tt.status, tt.errcode)
		})
	}
}

func TestRecordingFile(t *testing.T) {
	e := newEnv(t)
	seedThree(e)
	ogg := readFile(t, oggMedia)
	webm := readFile(t, webmMedia)

	t.Run("content types", func(t *testing.T) {
		tests := []struct {
			file        string
			contentType string
			body        []byte
		}{
			{"alice.ogg", "audio/ogg", ogg},
			{"bob.webm", "video/webm", webm},
			{"manifest.json", "application/json", nil},
		}
		for _, tt := range tests {
			t.Run(tt.file, func(t *testing.T) {
				w := e.get("/api/v1/recordings/old/files/" + tt.file)
				require.Equal(t, http.StatusOK, w.Code, w.Body.String())
				require.Equal(t, tt.contentType, w.Header().Get("Content-Type"))
				require.Equal(t, "bytes", w.Header().Get("Accept-Ranges"))
				require.NotEmpty(t, w.Header().Get("ETag"))
				require.NotEmpty(t, w.Header().Get("Last-Modified"))
				if tt.body != nil {
					require.Equal(t, strconv.Itoa(len(tt.body)), w.Header().Get("Content-Length"))
					require.True(t, bytes.Equal(tt.body, w.Body.Bytes()), "the served bytes are the stored file")
				}
			})
		}
	})

	t.Run("range", func(t *testing.T) {
		tests := []struct {
			rng          string
			from, to     int // inclusive
			contentRange string
		}{
			{"bytes=0-99", 0, 99, "bytes 0-99/" + strconv.Itoa(len(ogg))},
			{"bytes=1000-1999", 1000, 1999, "bytes 1000-1999/" + strconv.Itoa(len(ogg))},
			{"bytes=-10", len(ogg) - 10, len(ogg) - 1, "bytes " + strconv.Itoa(len(ogg)-10) + "-" + strconv.Itoa(len(ogg)-1) + "/" + strconv.Itoa(len(ogg))},
		}
		for _, tt := range tests {
			t.Run(tt.rng, func(t *testing.T) {
				w := e.do(request{target: "/api/v1/recordings/old/files/alice.ogg", token: testToken, headers: map[string]string{"Range": tt.rng}})
				require.Equal(t, http.StatusPartialContent, w.Code)
				require.Equal(t, tt.contentRange, w.Header().Get("Content-Range"))
				require.Equal(t, ogg[tt.from:tt.to+1], w.Body.Bytes())
				require.Equal(t, "audio/ogg", w.Header().Get("Content-Type"))
			})
		}
		w := e.do(request{target: "/api/v1/recordings/old/files/alice.ogg", token: testToken,
			headers: map[string]string{"Range": "bytes=999999-"}})
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, w.Code)
	})

	t.Run("etag", func(t *testing.T) {
		first := e.get("/api/v1/recordings/old/files/bob.webm")
		etag := first.Header().Get("ETag")
		require.Regexp(t, `^"[0-9a-f]+-[0-9a-f]+"$`, etag)
		w := e.do(request{target: "/api/v1/recordings/old/files/bob.webm", token: testToken,
			headers: map[string]string{"If-None-Match": etag}})
		require.Equal(t, http.StatusNotModified, w.Code)
		require.Empty(t, w.Body.Bytes())
		w = e.do(request{target: "/api/v1/recordings/old/files/bob.webm", token: testToken,
			headers: map[string]string{"If-None-Match": `"other"`}})
		require.Equal(t, http.StatusOK, w.Code)
		w = e.do(request{target: "/api/v1/recordings/old/files/bob.webm", token: testToken,
			headers: map[string]string{"If-Range": etag, "Range": "bytes=0-9"}})
		require.Equal(t, http.StatusPartialContent, w.Code)
	})

	t.Run("head", func(t *testing.T) {
		w := e.do(request{method: http.MethodHead, target: "/api/v1/recordings/old/files/alice.ogg", token: testToken})
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, strconv.Itoa(len(ogg)), w.Header().Get("Content-Length"))
		require.Empty(t, w.Body.Bytes())
	})

	// A file of another recording, a file in the store's root and one next to it.
	require.NoError(t, os.WriteFile(filepath.Join(e.root, "stray.ogg"), ogg, 0o600))
	traversal := []struct {
		name   string
		target string
		status int
	}{
		{"dot dot slash", "/api/v1/recordings/old/files/../../../secret.txt", http.StatusNotFound},
		{"dot dot slash to sibling recording", "/api/v1/recordings/old/files/../mid/files/alice-b.ogg", http.StatusNotFound},
		{"encoded dots and slashes", "/api/v1/recordings/old/files/%2e%2e%2f%2e%2e%2fsecret.txt", http.StatusBadRequest},
		{"encoded slash", "/api/v1/recordings/old/files/..%2f..%2fsecret.txt", http.StatusBadRequest},
		{"upper-case encoding", "/api/v1/recordings/old/files/..%2F..%2Fsecret.txt", http.StatusBadRequest},
		{"encoded dot dot alone", "/api/v1/recordings/old/files/%2e%2e", http.StatusBadRequest},
		{"dot dot alone", "/api/v1/recordings/old/files/..", http.StatusBadRequest},
		{"double encoded", "/api/v1/recordings/old/files/%252e%252e%252fsecret.txt", http.StatusBadRequest},
		{"absolute", "/api/v1/recordings/old/files//etc/passwd", http.StatusNotFound},
		{"encoded absolute", "/api/v1/recordings/old/files/%2Fetc%2Fpasswd", http.StatusBadRequest},
		{"backslash", "/api/v1/recordings/old/files/..%5c..%5csecret.txt", http.StatusBadRequest},
		{"hidden file", "/api/v1/recordings/old/files/.manifest.json", http.StatusBadRequest},
		{"nul byte", "/api/v1/recordings/old/files/alice.ogg%00.txt", http.StatusBadRequest},
		{"file of another recording", "/api/v1/recordings/old/files/alice-b.ogg", http.StatusNotFound},
		{"file in the store root", "/api/v1/recordings/old/files/stray.ogg", http.StatusNotFound},
		{"unknown file", "/api/v1/recordings/old/files/carol.ogg", http.StatusNotFound},
		{"recording dot dot", "/api/v1/recordings/%2e%2e/files/stray.ogg", http.StatusBadRequest},
	}
	for _, tt := range traversal {
		t.Run("traversal "+tt.name, func(t *testing.T) {
			before := len(e.files.Opened())
			w := e.get(tt.target)
			require.Equal(t, tt.status, w.Code, w.Body.String())
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.NotContains(t, w.Body.String(), "top secret")
			require.Len(t, e.files.Opened(), before, "the store was not asked for anything")
		})
	}

	t.Run("traversal with a raw backslash", func(t *testing.T) {
		r := httptest.NewRequestWithContext(e.ctx, http.MethodGet, "/api/v1/recordings/old/files/x", nil)
		r.URL.Path = `/api/v1/recordings/old/files/..\..\secret.txt`
		r.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		e.handler.ServeHTTP(w, r)
		requireError(t, w, http.StatusBadRequest, web.CodeInvalidParam)
	})

	t.Run("traversal over a real connection", func(t *testing.T) {
		srv := httptest.NewServer(e.handler)
		defer srv.Close()
		for _, target := range []string{"/api/v1/recordings/old/files/%2e%2e%2f%2e%2e%2fsecret.txt", "/api/v1/recordings/old/files/../../secret.txt"} {
			req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, srv.URL+target, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			_ = resp.Body.Close()
			require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, resp.StatusCode, target)
		}
	})

	t.Run("listed but missing from the store", func(t *testing.T) {
		require.NoError(t, os.Remove(filepath.Join(e.root, "mid", "alice-b.ogg")))
		requireError(t, e.get("/api/v1/recordings/mid/files/alice-b.ogg"), http.StatusNotFound, web.CodeNotFound)
	})

	t.Run("unknown recording", func(t *testing.T) {
		requireError(t, e.get("/api/v1/recordings/nope/files/alice.ogg"), http.StatusNotFound, web.CodeNotFound)
	})
}

func TestDeleteRecording(t *testing.T) {
	e := newEnv(t)
	seedThree(e)
	del := func(recID string) *httptest.ResponseRecorder {
		return e.do(request{method: http.MethodDelete, target: "/api/v1/recordings/" + recID, token: testToken})
	}

	t.Run("in progress is 409", func(t *testing.T) {
		requireError(t, del("new"), http.StatusConflict, web.CodeInProgress)
		require.Equal(t, http.StatusOK, e.get("/api/v1/recordings/new").Code)
	})

	t.Run("finished", func(t *testing.T) {
		require.DirExists(t, filepath.Join(e.root, "old"))
		w := del("old")
		require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
		require.NoDirExists(t, filepath.Join(e.root, "old"))
		requireError(t, e.get("/api/v1/recordings/old"), http.StatusNotFound, web.CodeNotFound)
		files, err := e.db.File.GetAll(e.ctx, "old")
		require.NoError(t, err)
		require.Empty(t, files)
		require.Equal(t, []storage.RecordingID{"new", "mid"}, ids(decode[web.RecordingList](t, e.get("/api/v1/recordings"))))
		require.DirExists(t, filepath.Join(e.root, "mid"), "other recordings keep their files")
	})

	t.Run("again is 404", func(t *testing.T) {
		requireError(t, del("old"), http.StatusNotFound, web.CodeNotFound)
	})

	t.Run("failed recording", func(t *testing.T) {
		require.Equal(t, http.StatusNoContent, del("mid").Code)
	})

	t.Run("malformed id", func(t *testing.T) {
		requireError(t, del("%2e%2e"), http.StatusBadRequest, web.CodeInvalidParam)
	})
}

// failingRecordings fails (or panics) on every call.
type failingRecordings struct{ panic bool }

var errDB = errors.New("database is on fire")

func (fr failingRecordings) fail() error {
	if fr.panic {
		panic("boom")
	}
	return errDB
}

func (fr failingRecordings) GetRecording(context.Context, storage.RecordingID) (*storage.Recording, error) {
	return nil, fr.fail()
}

func (fr failingRecordings) ListRecordings(context.Context, storage.ListFilter) ([]*storage.Recording, error) {
	return nil, fr.fail()
}

func (fr failingRecordings) RecordingFiles(context.Context, storage.RecordingID) ([]*storage.RecordingFile, error) {
	return nil, fr.fail()
}

func (fr failingRecordings) RecordingFile(context.Context, storage.RecordingID, string) (*storage.RecordingFile, error) {
	return nil, fr.fail()
}

func (fr failingRecordings) FilesOf(context.Context, []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error) {
	return nil, fr.fail()
}

func (fr failingRecordings) DeleteRecording(context.Context, storage.RecordingID) error {
	return fr.fail()
}

func TestRecordingsInternalErrors(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run("panic="+strconv.FormatBool(panics), func(t *testing.T) {
			e := newEnv(t, func(o *web.Options) { o.Recordings = failingRecordings{panic: panics} })
			for _, target := range []string{"/api/v1/recordings", "/api/v1/recordings/x"} {
				w := e.get(target)
				resp := requireError(t, w, http.StatusInternalServerError, web.CodeUnknown)
				reqID := w.Header().Get("X-Request-Id")
				require.NotEmpty(t, reqID)
				require.Contains(t, resp.Error, reqID, "the error names the request id to find in the log")
				require.NotContains(t, resp.Error, "fire", "internal errors stay in the log")
			}
			logs := e.logs.String()
			if panics {
				require.Contains(t, logs, "Panic in HTTP handler")
				require.Contains(t, logs, `"stack"`)
				require.Contains(t, logs, "recordings.go", "the stack names the panicking code")
			} else {
				require.Contains(t, logs, "database is on fire")
			}
		})
	}
}
