package web

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

type healthResource struct {
	checks  []ReadyCheck
	timeout time.Duration
	auth    *authenticator
}

// HealthResponse is the body of /healthz and /readyz.
type HealthResponse struct {
	Status string `json:"status"` // "ok" or "unavailable"
	// Failed maps the name of every failed readiness check to its error;
	// only callers with an API token get it.
	Failed map[string]string `json:"failed,omitempty"`
}

func (healthResource) live(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
}

type checkResult struct {
	i   int
	err error
}

// ready runs every check at once and waits at most readyTimeout for them;
// a check that has not answered by then counts as failed. Probes need no
// token and learn only ready or not; the reasons (error texts with
// addresses, component names) go to callers with an API token.
func (hr healthResource) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), hr.timeout)
	defer cancel()
	results := make(chan checkResult, len(hr.checks)) // buffered: late checks never block
	for i, c := range hr.checks {
		go func() {
			defer func() {
				if rec := recover(); rec != nil {
					results <- checkResult{i, fmt.Errorf("check panicked: %v", rec)}
				}
			}()
			results <- checkResult{i, c.Check(ctx)}
		}()
	}
	failed := map[string]string{}
	pending := make(map[int]bool, len(hr.checks))
	for i := range hr.checks {
		pending[i] = true
	}
	for len(pending) > 0 {
		select {
		case res := <-results:
			delete(pending, res.i)
			if res.err != nil {
				failed[hr.checks[res.i].Name] = res.err.Error()
			}
		case <-ctx.Done():
			for i := range pending {
				failed[hr.checks[i].Name] = "timed out: " + ctx.Err().Error()
			}
			pending = nil
		}
	}
	if len(failed) > 0 {
		if token, ok := bearerToken(r); !ok || !hr.auth.valid(token) {
			failed = nil
		}
		writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "unavailable", Failed: failed})
		return
	}
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
}
