package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/internal/metrics"
)

func requestID(r *http.Request) string {
	return middleware.GetReqID(r.Context())
}

// maxRequestIDLength bounds a client's X-Request-Id.
const maxRequestIDLength = 64

// plainRequestID is what a client's X-Request-Id must look like to be kept:
// letters, digits, '.', '_' and '-', not starting with punctuation.
var plainRequestID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// withRequestID gives every request an id (in the context for
// middleware.GetReqID): the client's X-Request-Id when it is short and
// plain, so a proxy's id can be followed into our logs, else a fresh one.
// A client's id goes into logs and a response header, so anything longer or
// with other characters is replaced, not trusted.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqID := r.Header.Get(middleware.RequestIDHeader)
		if len(reqID) > maxRequestIDLength || !plainRequestID.MatchString(reqID) {
			reqID = newRequestID()
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), middleware.RequestIDKey, reqID)))
	})
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// methodLabel is the method as a metrics label: the standard methods by
// name, anything else as "other". The label is recorded for every request,
// before authentication, so a client must not be able to mint label values.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	default:
		return "other"
	}
}

// requestLogger puts a child of base with the request id into the request's
// context, logs every request when it is done (debug for successful reads,
// which the page polls, info otherwise, warn/error for failures) and counts
// it in the HTTP metrics by route pattern.
func requestLogger(base *zerolog.Logger, m *metrics.Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			parent := base
			if parent == nil {
				parent = zerolog.Ctx(r.Context())
			}
			log := parent.With().Str("request_id", requestID(r)).Logger()
			w.Header().Set("X-Request-Id", requestID(r))
			r = r.WithContext(log.WithContext(r.Context()))
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			defer func() {
				status := ww.Status()
				if status == 0 {
					status = http.StatusOK
				}
				dur := time.Since(start)
				route := "unmatched"
				if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.RoutePattern() != "" {
					route = rctx.RoutePattern()
				}
				method := methodLabel(r.Method)
				m.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
				m.HTTPDuration.WithLabelValues(route, method).Observe(dur.Seconds())

				var evt *zerolog.Event
				switch {
				case status >= 500:
					evt = log.Error()
				case status >= 400 && status != http.StatusNotModified:
					evt = log.Warn()
				case r.Method == http.MethodGet || r.Method == http.MethodHead:
					evt = log.Debug()
				default:
					evt = log.Info()
				}
				// The path only: the query may carry filters, never tokens,
				// but there is no reason to log it.
				evt.Str("method", method).
					Str("path", r.URL.Path).
					Str("route", route).
					Int("status", status).
					Int("bytes", ww.BytesWritten()).
					Dur("duration", dur).
					Str("client_ip", middleware.GetClientIP(r.Context())).
					Msg("HTTP request")
			}()
			next.ServeHTTP(ww, r)
		})
	}
}

// recoverer turns a handler panic into a logged error with stack and a 500.
// http.ErrAbortHandler is re-raised, as net/http expects.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if err, ok := rec.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(rec)
			}
			zerolog.Ctx(r.Context()).Error().
				Any("panic", rec).
				Bytes("stack", debug.Stack()).
				Msg("Panic in HTTP handler")
			if r.Header.Get("Connection") != "Upgrade" {
				writeError(w, http.StatusInternalServerError, CodeUnknown,
					"Internal error; see the recorder's log (request "+requestID(r)+")")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// securityHeaders: the page loads only its own scripts and styles and
// plays media from blob: URLs it made itself.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
			"connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; "+
			"form-action 'self'; frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}

// limitBody answers 413 at once when the declared length is over limit and
// otherwise caps the body, so a handler reading it gets *http.MaxBytesError.
func limitBody(limit int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit {
				writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge,
					"Request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, limit)
			}
			next.ServeHTTP(w, r)
		})
	}
}
