package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/web"
)

// TestUnknownMethodsShareOneLabel: the method is a metrics label and is
// recorded before authentication; made-up methods must not each create a
// series.
func TestUnknownMethodsShareOneLabel(t *testing.T) {
	m := metrics.New()
	e := newEnv(t, func(o *web.Options) { o.Metrics = m })
	for i := range 50 {
		e.do(request{method: fmt.Sprintf("X%d", i), target: "/api/v1/recordings"})
	}
	body := e.get("/metrics").Body.String()
	methods := map[string]bool{}
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, "recorder_http_requests_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `method="`)
		method, _, _ := strings.Cut(rest, `"`)
		methods[method] = true
	}
	require.Contains(t, methods, "other", body)
	require.NotContains(t, methods, "X7", "a made-up method is no label value")
	require.LessOrEqual(t, len(methods), 2, "other and GET: %v", methods)
}

// TestHostIsChecked: a browser tricked by DNS rebinding sends the
// attacker's name as Host; only configured names, IP literals and
// localhost are served.
func TestHostIsChecked(t *testing.T) {
	e := newEnv(t)
	for _, host := range []string{"evil.example", "evil.example:29331", "127.0.0.1.evil.example", "localhost.evil.example"} {
		t.Run("refused "+host, func(t *testing.T) {
			w := e.do(request{target: "/api/v1/recordings", token: testToken, host: host})
			require.Equal(t, http.StatusMisdirectedRequest, w.Code, w.Body.String())
			w = e.do(request{target: "/healthz", host: host})
			require.Equal(t, http.StatusMisdirectedRequest, w.Code)
		})
	}
	for _, host := range []string{"127.0.0.1:29331", "127.0.0.1", "[::1]:29331", "localhost:29331", "LOCALHOST", "10.0.0.7:29331", "example.com"} {
		t.Run("served "+host, func(t *testing.T) {
			w := e.do(request{target: "/api/v1/recordings", token: testToken, host: host})
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		})
	}
}

// TestMetricsNeedATokenByDefault: metrics name rooms' activity and the
// recorder's internals; an operator opts out explicitly.
func TestMetricsNeedATokenByDefault(t *testing.T) {
	e := newEnv(t)
	requireError(t, e.do(request{target: "/metrics"}), http.StatusUnauthorized, web.CodeMissingToken)
	require.Equal(t, http.StatusOK, e.get("/metrics").Code)
}

// TestReadyWithoutTokenSaysOnlyReadyOrNot: readiness probes need no token,
// but the reasons (error texts with addresses, names of components) are
// for operators only.
func TestReadyWithoutTokenSaysOnlyReadyOrNot(t *testing.T) {
	down := func(context.Context) error { return errors.New("dial tcp 10.1.2.3:5432: connection refused") }
	e := newEnv(t, func(o *web.Options) { o.Ready = []web.ReadyCheck{{Name: "database", Check: down}} })
	w := e.do(request{target: "/readyz"})
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.JSONEq(t, `{"status":"unavailable"}`, w.Body.String())
	w = e.do(request{target: "/readyz", token: "wrong-token-wrong-token"})
	require.JSONEq(t, `{"status":"unavailable"}`, w.Body.String())
	w = e.get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Contains(t, w.Body.String(), "connection refused", "operators see the reasons")
}

// TestClientRequestIDMustBeShortAndPlain: the id goes into logs and back
// into a response header; a client's own id is kept only when it is a
// short plain token.
func TestClientRequestIDMustBeShortAndPlain(t *testing.T) {
	e := newEnv(t)
	w := e.do(request{target: "/healthz", headers: map[string]string{"X-Request-Id": "trace-0123_abc.9"}})
	require.Equal(t, "trace-0123_abc.9", w.Header().Get("X-Request-Id"))
	for _, bad := range []string{strings.Repeat("a", 200), "a b", "x\"}{\"admin\":true", "<script>", "é", "-leading"} {
		w := e.do(request{target: "/healthz", headers: map[string]string{"X-Request-Id": bad}})
		got := w.Header().Get("X-Request-Id")
		require.NotEqual(t, bad, got)
		require.NotEmpty(t, got)
		require.NotContains(t, e.logs.String(), bad)
	}
}

// TestPprofIsOptInAndNeedsAToken: profiles are served only when configured,
// and only to callers with a token.
func TestPprofIsOptInAndNeedsAToken(t *testing.T) {
	off := newEnv(t)
	require.Equal(t, http.StatusNotFound, off.get("/debug/pprof/").Code)
	on := newEnv(t, func(o *web.Options) { o.Pprof = true })
	requireError(t, on.do(request{target: "/debug/pprof/"}), http.StatusUnauthorized, web.CodeMissingToken)
	w := on.get("/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "goroutine profile")
}
