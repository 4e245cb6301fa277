package web

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/metrics"
	"github.com/matrix-recorder/recorder/storage"
)

// MaxBodyBytes is the largest request body the API reads; larger ones get 413.
const MaxBodyBytes = 64 << 10

// DefaultReadyTimeout bounds all readiness checks of one /readyz request together.
const DefaultReadyTimeout = 5 * time.Second

//go:embed static
var staticFS embed.FS

//go:embed openapi.json
var openAPIDoc []byte

// Recordings is what the API needs from the database. StorageRecordings
// adapts a *storage.DB.
type Recordings interface {
	// GetRecording returns the recording or nil if there is none.
	GetRecording(ctx context.Context, id storage.RecordingID) (*storage.Recording, error)
	// ListRecordings returns recordings newest first.
	ListRecordings(ctx context.Context, f storage.ListFilter) ([]*storage.Recording, error)
	// RecordingFiles returns a recording's file rows in timeline order.
	RecordingFiles(ctx context.Context, id storage.RecordingID) ([]*storage.RecordingFile, error)
	// RecordingFile returns one file row or nil if the recording has none by that name.
	RecordingFile(ctx context.Context, id storage.RecordingID, name string) (*storage.RecordingFile, error)
	// FilesOf returns the file rows of several recordings at once.
	FilesOf(ctx context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error)
	// DeleteRecording removes the recording and its file rows.
	DeleteRecording(ctx context.Context, id storage.RecordingID) error
}

// Mixdowns are the recordings' mixdown jobs (internal/app adapts the
// mixdown queue).
type Mixdowns interface {
	// GetMixdown returns the recording's mixdown job or nil.
	GetMixdown(ctx context.Context, id storage.RecordingID) (*storage.Mixdown, error)
	// EnqueueMixdown queues the recording's mixdown (again); ErrMixdownQueueFull
	// when too many wait.
	EnqueueMixdown(ctx context.Context, id storage.RecordingID) (*storage.Mixdown, error)
}

// ErrMixdownQueueFull is what Mixdowns.EnqueueMixdown returns when the queue is full.
var ErrMixdownQueueFull = errors.New("mixdown queue full")

// Files is what the API needs from the file store; storage.FileStore has it.
type Files interface {
	Open(ctx context.Context, folder, name string) (*storage.StoredFile, error)
	DeleteFolder(ctx context.Context, folder string) error
}

// Calls starts and stops recording calls. The lead's adapter in
// internal/app implements it over callbot.Manager and the archive, and
// maps their errors to ErrAlreadyRecording, ErrNoCall, ErrNotRecording and
// ErrForbidden.
type Calls interface {
	// Join makes a recorder join the room's current group call. The returned
	// CallInfo should carry the new recording's id.
	Join(ctx context.Context, roomID id.RoomID) (CallInfo, error)
	// Leave stops recording the room's call and leaves it.
	Leave(ctx context.Context, roomID id.RoomID) error
	// Active lists the calls being recorded.
	Active(ctx context.Context) []CallInfo
}

// CallInfo is one call being recorded.
type CallInfo struct {
	RoomID id.RoomID `json:"room_id"`
	// Kind is "mesh" (legacy full-mesh call) or "matrixrtc" (LiveKit SFU).
	Kind         string              `json:"kind,omitempty"`
	ConfID       string              `json:"conf_id"`
	RecordingID  storage.RecordingID `json:"recording_id,omitempty"`
	Participants []Participant       `json:"participants"`
	Since        time.Time           `json:"since"`
}

// Participant is one remote device in a recorded call.
type Participant struct {
	UserID   id.UserID   `json:"user_id"`
	DeviceID id.DeviceID `json:"device_id,omitempty"`
	// State is the peer connection's state (pion's spelling), if known.
	State string `json:"state,omitempty"`
	// Encrypted: the participant's media is end-to-end encrypted (a
	// MatrixRTC call in an encrypted room); KeysHeld is how many of its
	// media keys the recorder holds.
	Encrypted bool `json:"encrypted,omitempty"`
	KeysHeld  int  `json:"keys_held,omitempty"`
	// Note says why the participant is not (yet) recorded, if it is not.
	Note string `json:"note,omitempty"`
}

// ReadyCheck is one named readiness check of /readyz.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options are the handler's dependencies. Without Recordings and Files the
// /api/v1/recordings routes answer 503, and so do /api/v1/calls without Calls.
type Options struct {
	Recordings Recordings
	Files      Files
	Calls      Calls
	// Mixdowns, if set, shows mixdown progress and makes them on request.
	Mixdowns Mixdowns
	// RetentionDays (config recordings.retention) gives each recording its
	// expires_at; 0: recordings do not expire.
	RetentionDays int
	// Tokens are the accepted bearer tokens (config api.tokens).
	Tokens []string
	// Ready are run by /readyz, e.g. homeserver reachable, database open.
	Ready []ReadyCheck
	// ReadyTimeout bounds the checks of one /readyz; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Metrics is served on /metrics and counts HTTP requests; nil makes a fresh one.
	Metrics *metrics.Metrics
	// PublicMetrics serves /metrics without a token (config
	// api.protect_metrics: false); by default it needs one like the API.
	PublicMetrics bool
	// AllowedHosts are the host names (config api.allowed_hosts) a request's
	// Host may name, against DNS rebinding; IP literals and localhost are
	// always accepted, "*" accepts any name.
	AllowedHosts []string
	// TrustedProxies are CIDR prefixes of reverse proxies whose
	// X-Forwarded-For is believed for the client IP in the logs.
	TrustedProxies []string
	// Pprof serves Go's profiles under /debug/pprof/, behind the token
	// (config api.pprof); off by default.
	Pprof bool
	// Log is the base request logger; each request gets a child logger with
	// its request id in its context. Nil takes the logger of the request's
	// context, which Server.Start sets to the logger of its ctx.
	Log *zerolog.Logger
}

// New builds the HTTP handler: API, health, metrics and the web page.
func New(opts Options) http.Handler {
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	auth := newAuthenticator(opts.Tokens)

	r := newRouter()
	r.Use(withRequestID)
	if len(opts.TrustedProxies) > 0 {
		r.Use(middleware.ClientIPFromXFF(opts.TrustedProxies...))
	} else {
		r.Use(middleware.ClientIPFromRemoteAddr)
	}
	r.Use(requestLogger(opts.Log, opts.Metrics), recoverer, newHostChecker(opts.AllowedHosts).middleware,
		securityHeaders, limitBody(MaxBodyBytes), middleware.GetHead)

	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	hr := healthResource{checks: opts.Ready, timeout: opts.ReadyTimeout, auth: auth}
	r.Get("/healthz", hr.live)
	r.Get("/readyz", hr.ready)
	r.Group(func(r chi.Router) {
		if !opts.PublicMetrics {
			r.Use(auth.middleware)
		}
		r.Method(http.MethodGet, "/metrics", opts.Metrics.Handler())
	})
	if opts.Pprof {
		r.Group(func(r chi.Router) {
			r.Use(auth.middleware)
			r.HandleFunc("/debug/pprof/*", pprof.Index)
			r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			r.HandleFunc("/debug/pprof/profile", pprof.Profile)
			r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			r.HandleFunc("/debug/pprof/trace", pprof.Trace)
		})
	}

	r.Get("/", servePage)
	static, _ := fs.Sub(staticFS, "static")
	r.Get("/static/*", http.StripPrefix("/static/", staticHandler(static)).ServeHTTP)

	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/openapi.json", serveOpenAPI)
		r.Group(func(r chi.Router) {
			r.Use(auth.middleware)
			r.Mount("/recordings", recordingsResource{db: opts.Recordings, files: opts.Files, mix: opts.Mixdowns, retentionDays: opts.RetentionDays}.Routes())
			r.Mount("/calls", callsResource{calls: opts.Calls}.Routes())
		})
	})
	return r
}

func newRouter() chi.Router {
	r := chi.NewRouter()
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)
	return r
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openAPIDoc)
}

func servePage(w http.ResponseWriter, r *http.Request) {
	data, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		internalError(w, r, err, "Failed to read the page")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(data)
}

// staticHandler serves the embedded assets; a missing one is a JSON 404 and
// directories are not listed.
func staticHandler(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := fs.Stat(fsys, r.URL.Path)
		if r.URL.Path == "" || err != nil || info.IsDir() {
			writeError(w, http.StatusNotFound, CodeNotFound, "No such asset")
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
