package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// callTimeout bounds joining or leaving a call for one request. The work
// is detached from the request's cancellation so a client that goes away
// does not leave a half-joined call behind.
const callTimeout = 60 * time.Second

// CallList is the body of GET /api/v1/calls.
type CallList struct {
	Calls []CallInfo `json:"calls"`
}

// StartRequest is the body of POST /api/v1/calls.
type StartRequest struct {
	RoomID string `json:"room_id"`
}

type callsResource struct {
	calls Calls
}

func (cr callsResource) Routes() chi.Router {
	r := newRouter()
	r.Use(cr.available)
	r.Get("/", cr.list)
	r.Post("/", cr.start)
	r.Delete("/{room_id}", cr.stop)
	return r
}

func (cr callsResource) available(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cr.calls == nil {
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "Call control is not available in this process")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkRoomID accepts "!opaque:server" and the server-less "!opaque" of
// room version 12; the error text is for the client.
func checkRoomID(s string) error {
	switch {
	case s == "":
		return errors.New("room id is empty")
	case len(s) > 255:
		return errors.New("room id is longer than 255 bytes")
	case s[0] != '!':
		return errors.New("room id must start with '!' (aliases like #room:server are not accepted)")
	case len(s) == 1 || strings.HasPrefix(s, "!:"):
		return errors.New("room id has an empty local part")
	case strings.HasSuffix(s, ":"):
		return errors.New("room id has an empty server name")
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f || c > 0x7e {
			return errors.New("room id may only contain printable ASCII without spaces")
		}
	}
	return nil
}

func (cr callsResource) list(w http.ResponseWriter, r *http.Request) {
	calls := cr.calls.Active(r.Context())
	if calls == nil {
		calls = []CallInfo{}
	}
	for i := range calls {
		if calls[i].Participants == nil {
			calls[i].Participants = []Participant{}
		}
	}
	writeJSON(w, http.StatusOK, CallList{Calls: calls})
}

// decodeBody reads one JSON value into v and answers 400/413 itself.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	var maxErr *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return true
	case errors.As(err, &maxErr):
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "Request body is larger than the limit")
	case errors.As(err, &typeErr):
		writeError(w, http.StatusBadRequest, CodeBadJSON, "Field "+typeErr.Field+" has the wrong type, expected "+typeErr.Type.String())
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, CodeNotJSON, "Request body is empty: expected a JSON object")
	default:
		writeError(w, http.StatusBadRequest, CodeNotJSON, "Request body is not valid JSON: "+err.Error())
	}
	return false
}

func (cr callsResource) start(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.RoomID == "" {
		writeError(w, http.StatusBadRequest, CodeBadJSON, "Field room_id is required")
		return
	}
	if err := checkRoomID(req.RoomID); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParam, "Field room_id: "+err.Error())
		return
	}
	roomID := id.RoomID(req.RoomID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), callTimeout)
	defer cancel()
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Logger()
	ctx = log.WithContext(ctx)
	info, err := cr.calls.Join(ctx, roomID)
	switch {
	case err == nil:
		log.Info().Str("recording_id", string(info.RecordingID)).Msg("Recording started through the API")
		if info.RoomID == "" {
			info.RoomID = roomID
		}
		if info.Participants == nil {
			info.Participants = []Participant{}
		}
		writeJSON(w, http.StatusAccepted, info)
	case errors.Is(err, ErrAlreadyRecording):
		writeError(w, http.StatusConflict, CodeAlreadyRunning, "The call in "+req.RoomID+" is already being recorded")
	case errors.Is(err, ErrNoCall):
		writeError(w, http.StatusNotFound, CodeNoCall, "Room "+req.RoomID+" has no active group call")
	case errors.Is(err, ErrForbidden):
		writeError(w, http.StatusForbidden, CodeForbidden, "The recorder may not join the call in "+req.RoomID+": "+err.Error())
	default:
		internalError(w, r.WithContext(ctx), err, "Failed to start recording")
	}
}

func (cr callsResource) stop(w http.ResponseWriter, r *http.Request) {
	raw, err := pathParam(r, "room_id")
	if err == nil {
		err = checkRoomID(raw)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParam, "Malformed room id in the path (URL-encode it): "+err.Error())
		return
	}
	roomID := id.RoomID(raw)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), callTimeout)
	defer cancel()
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Logger()
	ctx = log.WithContext(ctx)
	err = cr.calls.Leave(ctx, roomID)
	switch {
	case err == nil:
		log.Info().Msg("Recording stopped through the API")
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrNotRecording):
		writeError(w, http.StatusNotFound, CodeNotRecording, "The call in "+raw+" is not being recorded")
	default:
		internalError(w, r.WithContext(ctx), err, "Failed to stop recording")
	}
}
