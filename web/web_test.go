package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/web"
)

func TestAuth(t *testing.T) {
	e := newEnv(t)
	e.seed("old", roomA, "finished", t0, oggTrack("alice.ogg", alice, 0))

	protected := []request{
		{target: "/api/v1/recordings"},
		{target: "/api/v1/recordings/old"},
		{target: "/api/v1/recordings/nope"},
		{target: "/api/v1/recordings/old/files/alice.ogg"},
		{target: "/api/v1/recordings/old/files/%2e%2e%2fsecret.txt"},
		{method: http.MethodDelete, target: "/api/v1/recordings/old"},
		{target: "/api/v1/calls"},
		{method: http.MethodPost, target: "/api/v1/calls", body: strings.NewReader(`{"room_id":"!roomA:example.org"}`)},
		{method: http.MethodDelete, target: "/api/v1/calls/%21roomA%3Aexample.org"},
	}
	credentials := []struct {
		name    string
		header  string
		errcode string
	}{
		{"no header", "", web.CodeMissingToken},
		{"empty bearer", "Bearer ", web.CodeMissingToken},
		{"basic auth", "Basic dXNlcjpwYXNz", web.CodeMissingToken},
		{"wrong token", "Bearer wrong", web.CodeUnknownToken},
		{"token prefix", "Bearer " + testToken[:len(testToken)-1], web.CodeUnknownToken},
		{"token with suffix", "Bearer " + testToken + "x", web.CodeUnknownToken},
		{"case differs", "Bearer " + strings.ToUpper(testToken), web.CodeUnknownToken},
	}
	for _, cred := range credentials {
		for _, req := range protected {
			name := cred.name + " " + req.method + " " + req.target
			t.Run(name, func(t *testing.T) {
				if req.method == "" {
					req.method = http.MethodGet
				}
				if cred.header != "" {
					req.headers = map[string]string{"Authorization": cred.header}
				}
				if req.body != nil {
					req.body = strings.NewReader(`{"room_id":"!roomA:example.org"}`)
				}
				w := e.do(req)
				requireError(t, w, http.StatusUnauthorized, cred.errcode)
				require.Contains(t, w.Header().Get("WWW-Authenticate"), "Bearer")
			})
		}
	}
	require.Empty(t, e.calls.Active(e.ctx), "no unauthenticated request got through")
	require.Equal(t, http.StatusOK, e.get("/api/v1/recordings/old").Code, "nothing was deleted")

	t.Run("every configured token works, scheme is case-insensitive", func(t *testing.T) {
		for _, h := range []string{"Bearer another-token", "Bearer " + testToken, "bearer " + testToken} {
			w := e.do(request{target: "/api/v1/recordings", headers: map[string]string{"Authorization": h}})
			require.Equal(t, http.StatusOK, w.Code, h)
		}
	})

	t.Run("no tokens configured locks the API", func(t *testing.T) {
		locked := newEnv(t, func(o *web.Options) { o.Tokens = []string{""} })
		requireError(t, locked.do(request{target: "/api/v1/recordings", headers: map[string]string{"Authorization": "Bearer "}}),
			http.StatusUnauthorized, web.CodeMissingToken)
		requireError(t, locked.get("/api/v1/recordings"), http.StatusUnauthorized, web.CodeUnknownToken)
	})
}

func TestPublicRoutes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		target      string
		contentType string
		contains    string
	}{
		{"/", "text/html; charset=utf-8", "<title>Recorder</title>"},
		{"/static/app.js", "text/javascript; charset=utf-8", "class Timeline"},
		{"/static/app.css", "text/css; charset=utf-8", ".tracks"},
		{"/healthz", "application/json", `"status":"ok"`},
		{"/readyz", "application/json", `"status":"ok"`},
		{"/api/v1/openapi.json", "application/json", `"openapi": "3.1.0"`},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			w := e.do(request{target: tt.target})
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			require.Equal(t, tt.contentType, w.Header().Get("Content-Type"))
			require.Contains(t, w.Body.String(), tt.contains)
			require.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
			require.Contains(t, w.Header().Get("Content-Security-Policy"), "media-src 'self' blob:")
		})
	}

	t.Run("metrics can be made public", func(t *testing.T) {
		p := newEnv(t, func(o *web.Options) { o.PublicMetrics = true })
		w := p.do(request{target: "/metrics"})
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", w.Header().Get("Content-Type"))
		require.Contains(t, w.Body.String(), "recorder_active_calls")
	})

	t.Run("metrics count requests by route", func(t *testing.T) {
		m := metrics.New()
		p := newEnv(t, func(o *web.Options) { o.Metrics = m })
		m.ActiveCalls.Set(3)
		p.get("/api/v1/recordings/nope")
		body := p.get("/metrics").Body.String()
		require.Contains(t, body, "recorder_active_calls 3")
		require.Contains(t, body, `recorder_http_requests_total{code="404",method="GET",route="/api/v1/recordings/{id}"} 1`)
	})

	notFound := []string{"/static/", "/static/nope.js", "/static/../web.go", "/nope", "/api/v1", "/api/v1/nope", "/api/v2/recordings"}
	for _, target := range notFound {
		t.Run("404 "+target, func(t *testing.T) {
			w := e.do(request{target: target, token: testToken})
			require.Equal(t, http.StatusNotFound, w.Code, w.Body.String())
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
		})
	}

	methods := []struct{ method, target string }{
		{http.MethodPut, "/api/v1/recordings"},
		{http.MethodPost, "/api/v1/recordings/old"},
		{http.MethodPatch, "/api/v1/calls"},
		{http.MethodPost, "/healthz"},
		{http.MethodDelete, "/"},
	}
	for _, tt := range methods {
		t.Run("405 "+tt.method+" "+tt.target, func(t *testing.T) {
			requireError(t, e.do(request{method: tt.method, target: tt.target, token: testToken}), http.StatusMethodNotAllowed, web.CodeUnrecognized)
		})
	}

	t.Run("413 on any route", func(t *testing.T) {
		big := strings.Repeat("x", 2<<20)
		requireError(t, e.do(request{method: http.MethodDelete, target: "/api/v1/recordings/old", token: testToken, body: strings.NewReader(big)}),
			http.StatusRequestEntityTooLarge, web.CodeTooLarge)
	})
}

func TestReady(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	tests := []struct {
		name   string
		checks []web.ReadyCheck
		status int
		failed map[string]string
	}{
		{"no checks", nil, http.StatusOK, nil},
		{"all fine", []web.ReadyCheck{{"database", ok}, {"homeserver", ok}}, http.StatusOK, nil},
		{"homeserver down", []web.ReadyCheck{{"database", ok}, {"homeserver", down}}, http.StatusServiceUnavailable,
			map[string]string{"homeserver": "connection refused"}},
		{"check hangs", []web.ReadyCheck{{"database", hang}, {"homeserver", ok}}, http.StatusServiceUnavailable,
			map[string]string{"database": "context deadline exceeded"}},
		{"check panics", []web.ReadyCheck{{"database", func(context.Context) error { panic("nil db") }}}, http.StatusServiceUnavailable,
			map[string]string{"database": "check panicked: nil db"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *web.Options) { o.Ready, o.ReadyTimeout = tt.checks, 50*time.Millisecond })
			w := e.get("/readyz")
			require.Equal(t, tt.status, w.Code)
			resp := decode[web.HealthResponse](t, w)
			require.Len(t, resp.Failed, len(tt.failed))
			for name, want := range tt.failed {
				require.Contains(t, resp.Failed[name], want)
			}
			require.Equal(t, http.StatusOK, e.do(request{target: "/healthz"}).Code, "liveness does not run the checks")
		})
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t)
	w := e.do(request{method: http.MethodPost, target: "/api/v1/calls?x=1", token: testToken, body: strings.NewReader(`{"room_id":"!quiet:example.org"}`)})
	require.Equal(t, http.StatusNotFound, w.Code)
	reqID := w.Header().Get("X-Request-Id")
	require.NotEmpty(t, reqID)
	var entry map[string]any
	for line := range strings.SplitSeq(e.logs.String(), "\n") {
		if strings.Contains(line, `"HTTP request"`) {
			require.NoError(t, json.Unmarshal([]byte(line), &entry))
		}
	}
	require.NotNil(t, entry, e.logs.String())
	require.Equal(t, reqID, entry["request_id"])
	require.Equal(t, "POST", entry["method"])
	require.Equal(t, "/api/v1/calls", entry["path"], "no query in the log")
	require.Equal(t, "/api/v1/calls", entry["route"])
	require.EqualValues(t, 404, entry["status"])
	require.Equal(t, "warn", entry["level"])
	require.NotContains(t, e.logs.String(), testToken, "tokens are never logged")
}
