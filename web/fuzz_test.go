package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

// readOnlyRecordings keeps the fuzzer's DELETEs from changing the seeded
// database between inputs, so a crash reproduces.
type readOnlyRecordings struct{ web.Recordings }

func (readOnlyRecordings) DeleteRecording(context.Context, storage.RecordingID) error { return nil }

// checkedFiles is a read-only file store that counts keys reaching it
// unchecked (that must never happen, whatever the path).
type checkedFiles struct {
	next      web.Files
	unchecked atomic.Int64
}

func (cf *checkedFiles) Open(ctx context.Context, folder, name string) (*storage.StoredFile, error) {
	if storage.CheckKey(folder, name) != nil {
		cf.unchecked.Add(1)
	}
	return cf.next.Open(ctx, folder, name)
}

func (cf *checkedFiles) DeleteFolder(_ context.Context, folder string) error {
	if storage.CheckKey(folder) != nil {
		cf.unchecked.Add(1)
	}
	return nil
}

// FuzzAPI sends arbitrary methods, paths (path parameters, query) and
// bodies, with a valid token and an arbitrary Host, to the whole handler
// over a real database and file store. No input may cause a 500 (a panic
// becomes one through the recoverer), reach the file store with an unsafe
// key, or get an API error that is not a JSON error object.
func FuzzAPI(f *testing.F) {
	seeds := []struct {
		method, target, host, body string
	}{
		{http.MethodGet, "/api/v1/recordings", "127.0.0.1:29331", ""},
		{http.MethodGet, "/api/v1/recordings?room_id=%21roomA%3Aexample.org&state=finished&limit=2", "", ""},
		{http.MethodGet, "/api/v1/recordings?cursor=eyJ0IjoiMjAyNS0wMS0wMlQwMzowNDowNVoiLCJpZCI6Im9sZCJ9&limit=-1", "", ""},
		{http.MethodGet, "/api/v1/recordings?cursor=%ff%fe&limit=99999999999999999999", "", ""},
		{http.MethodGet, "/api/v1/recordings/old", "localhost", ""},
		{http.MethodGet, "/api/v1/recordings/old/files/alice.ogg", "", ""},
		{http.MethodGet, "/api/v1/recordings/old/files/manifest.json", "", ""},
		{http.MethodGet, "/api/v1/recordings/old/files/%2e%2e%2fsecret.txt", "", ""},
		{http.MethodGet, "/api/v1/recordings/%2e%2e/files/..%2f..%2fsecret.txt", "", ""},
		{http.MethodGet, "/api/v1/recordings/old/files/a%00b", "", ""},
		{http.MethodDelete, "/api/v1/recordings/old", "", ""},
		{http.MethodGet, "/api/v1/calls", "[::1]:1", ""},
		{http.MethodPost, "/api/v1/calls", "", `{"room_id":"!roomA:example.org"}`},
		{http.MethodPost, "/api/v1/calls", "", `{"room_id":"#alias:example.org"}`},
		{http.MethodPost, "/api/v1/calls", "", `{"room_id":123}`},
		{http.MethodPost, "/api/v1/calls", "", `{"room_id":"!a:b"} {"trailing":1}`},
		{http.MethodPost, "/api/v1/calls", "", `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`},
		{http.MethodPost, "/api/v1/calls", "", "{\"room_id\":\"!\xff\xfe:x\"}"},
		{http.MethodDelete, "/api/v1/calls/%21roomA%3Aexample.org", "", ""},
		{http.MethodDelete, "/api/v1/calls/%21%00%3Ax", "", ""},
		{"PROPFIND", "/api/v1/recordings", "evil.example", ""},
		{http.MethodGet, "/readyz", "", ""},
		{http.MethodGet, "/static/..%2fweb.go", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, s.host, []byte(s.body))
	}

	e := newEnv(f)
	e.seed("old", roomA, storage.StateFinished, t0, oggTrack("alice.ogg", alice, 0))
	e.calls.hasCall[roomA] = true
	files := &checkedFiles{next: e.store}
	nop := zerolog.Nop()
	h := web.New(web.Options{
		Recordings: readOnlyRecordings{web.StorageRecordings(e.db)},
		Files:      files,
		Calls:      e.calls,
		Tokens:     []string{testToken},
		Log:        &nop,
	})
	ctx := nop.WithContext(context.Background())

	f.Fuzz(func(t *testing.T, method, target, host string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) {
			return // net/http rejects these before any handler runs
		}
		r := (&http.Request{
			Method: method, URL: u, RequestURI: target, Host: host,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:        http.Header{"Authorization": {"Bearer " + testToken}},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
		}).WithContext(ctx)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q (Host %q) answered %d: %s", method, target, host, w.Code, w.Body.String())
		}
		if n := files.unchecked.Load(); n > 0 {
			t.Fatalf("%s %q reached the file store with an unchecked key", method, target)
		}
		if strings.HasPrefix(u.Path, "/api/") && w.Code >= 400 && method != http.MethodHead {
			var resp web.ErrorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.ErrCode == "" {
				t.Fatalf("%s %q: error %d is not a JSON error: %q", method, target, w.Code, w.Body.String())
			}
		}
	})
}

// validMethod is net/http's rule for a request method: a non-empty token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}
