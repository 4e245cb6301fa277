package web

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/rs/zerolog"
)

// Errors the Calls implementation returns; the handlers map them to statuses.
var (
	// ErrAlreadyRecording means the room's call is already being recorded (409).
	ErrAlreadyRecording = errors.New("the room's call is already being recorded")
	// ErrNoCall means the room has no group call to join (404).
	ErrNoCall = errors.New("the room has no active group call")
	// ErrNotRecording means the recorder is not in the room's call (404).
	ErrNotRecording = errors.New("the room's call is not being recorded")
	// ErrForbidden means the recorder may not join the room's call, e.g.
	// because of the room's power levels (403).
	ErrForbidden = errors.New("the recorder is not allowed to join the room's call")
)

// Error codes of the API, Matrix style.
const (
	CodeMissingToken   = "M_MISSING_TOKEN"
	CodeUnknownToken   = "M_UNKNOWN_TOKEN"
	CodeNotJSON        = "M_NOT_JSON"
	CodeBadJSON        = "M_BAD_JSON"
	CodeInvalidParam   = "M_INVALID_PARAM"
	CodeNotFound       = "M_NOT_FOUND"
	CodeUnrecognized   = "M_UNRECOGNIZED"
	CodeTooLarge       = "M_TOO_LARGE"
	CodeForbidden      = "M_FORBIDDEN"
	CodeUnknown        = "M_UNKNOWN"
	CodeUnavailable    = "M_UNAVAILABLE"
	CodeInProgress     = "M_RECORDING_IN_PROGRESS"
	CodeAlreadyRunning = "M_ALREADY_RECORDING"
	CodeNoCall         = "M_NO_CALL"
	CodeNotRecording   = "M_NOT_RECORDING"
	CodeNotReady       = "M_NOT_READY"
)

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		// Only our own response types are marshalled; this cannot happen.
		status, data = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Failed to encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorResponse{ErrCode: code, Error: msg})
}

// internalError logs err (with the request id the logger middleware put in
// the context) and answers 500 without the internal details.
func internalError(w http.ResponseWriter, r *http.Request, err error, what string) {
	zerolog.Ctx(r.Context()).Err(err).Msg(what)
	writeError(w, http.StatusInternalServerError, CodeUnknown, what+"; see the recorder's log (request "+requestID(r)+")")
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, CodeUnrecognized, "No such endpoint")
}

func methodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusMethodNotAllowed, CodeUnrecognized, "Method not allowed on this endpoint")
}
