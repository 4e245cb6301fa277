package web_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

func post(e *env, body string) *bytesResponse {
	w := e.do(request{method: http.MethodPost, target: "/api/v1/calls", token: testToken, body: strings.NewReader(body),
		headers: map[string]string{"Content-Type": "application/json"}})
	return &bytesResponse{w.Code, w.Body.Bytes()}
}

type bytesResponse struct {
	code int
	body []byte
}

func TestCalls(t *testing.T) {
	e := newEnv(t)
	e.calls.hasCall[roomA] = true
	e.calls.hasCall[roomB] = true
	e.calls.joinErr["!locked:example.org"] = fmt.Errorf("power levels: %w", web.ErrForbidden)
	e.calls.joinErr["!broken:example.org"] = errors.New("homeserver exploded")

	t.Run("none active", func(t *testing.T) {
		w := e.get("/api/v1/calls")
		require.Equal(t, http.StatusOK, w.Code)
		require.JSONEq(t, `{"calls":[]}`, w.Body.String())
	})

	t.Run("start", func(t *testing.T) {
		w := e.do(request{method: http.MethodPost, target: "/api/v1/calls", token: testToken,
			body: strings.NewReader(`{"room_id": "!roomA:example.org"}`)})
		require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
		info := decode[web.CallInfo](t, w)
		require.Equal(t, roomA, info.RoomID)
		require.Equal(t, storage.RecordingID("rec-1"), info.RecordingID)
	})

	t.Run("active", func(t *testing.T) {
		list := decode[web.CallList](t, e.get("/api/v1/calls"))
		require.Len(t, list.Calls, 1)
		c := list.Calls[0]
		require.Equal(t, roomA, c.RoomID)
		require.Equal(t, "conf1", c.ConfID)
		require.Equal(t, []web.Participant{{UserID: alice, DeviceID: "ALICE", State: "connected"},
			{UserID: bob, DeviceID: "BOB", State: "connected", Encrypted: true,
				Note: "media is end-to-end encrypted and no key has arrived from this device yet: not recorded"}}, c.Participants)
		require.False(t, c.Since.IsZero())
	})

	startErrors := []struct {
		name    string
		body    string
		status  int
		errcode string
		text    string
	}{
		{"already recording", `{"room_id": "!roomA:example.org"}`, http.StatusConflict, web.CodeAlreadyRunning, "already"},
		{"room without call", `{"room_id": "!quiet:example.org"}`, http.StatusNotFound, web.CodeNoCall, "no active group call"},
		{"forbidden", `{"room_id": "!locked:example.org"}`, http.StatusForbidden, web.CodeForbidden, "power levels"},
		{"internal error", `{"room_id": "!broken:example.org"}`, http.StatusInternalServerError, web.CodeUnknown, "request"},
		{"alias", `{"room_id": "#room:example.org"}`, http.StatusBadRequest, web.CodeInvalidParam, "room_id"},
		{"user id", `{"room_id": "@alice:example.org"}`, http.StatusBadRequest, web.CodeInvalidParam, "room_id"},
		{"bare word", `{"room_id": "room"}`, http.StatusBadRequest, web.CodeInvalidParam, "must start with '!'"},
		{"only bang", `{"room_id": "!"}`, http.StatusBadRequest, web.CodeInvalidParam, "empty local part"},
		{"empty server", `{"room_id": "!abc:"}`, http.StatusBadRequest, web.CodeInvalidParam, "empty server name"},
		{"space", `{"room_id": "!a b:example.org"}`, http.StatusBadRequest, web.CodeInvalidParam, "printable ASCII"},
		{"too long", `{"room_id": "!` + strings.Repeat("a", 300) + `:x"}`, http.StatusBadRequest, web.CodeInvalidParam, "255"},
		{"missing room_id", `{}`, http.StatusBadRequest, web.CodeBadJSON, "room_id is required"},
		{"room_id not a string", `{"room_id": 42}`, http.StatusBadRequest, web.CodeBadJSON, "room_id"},
		{"malformed JSON", `{"room_id": "!roomB:example.org"`, http.StatusBadRequest, web.CodeNotJSON, "not valid JSON"},
		{"not JSON at all", `room_id=!roomB:example.org`, http.StatusBadRequest, web.CodeNotJSON, "not valid JSON"},
		{"trailing data", `{"room_id": "!roomB:example.org"} {}`, http.StatusBadRequest, web.CodeNotJSON, "trailing"},
		{"empty body", ``, http.StatusBadRequest, web.CodeNotJSON, "empty"},
		{"array", `[]`, http.StatusBadRequest, web.CodeBadJSON, "wrong type"},
	}
	for _, tt := range startErrors {
		t.Run("start "+tt.name, func(t *testing.T) {
			w := e.do(request{method: http.MethodPost, target: "/api/v1/calls", token: testToken, body: strings.NewReader(tt.body)})
			resp := requireError(t, w, tt.status, tt.errcode)
			require.Contains(t, resp.Error, tt.text)
		})
	}

	t.Run("start with a 2 MiB body", func(t *testing.T) {
		big := `{"room_id": "!roomB:example.org", "pad": "` + strings.Repeat("x", 2<<20) + `"}`
		// With Content-Length: refused before reading.
		w := e.do(request{method: http.MethodPost, target: "/api/v1/calls", token: testToken, body: strings.NewReader(big)})
		requireError(t, w, http.StatusRequestEntityTooLarge, web.CodeTooLarge)
		// Chunked, without Content-Length: refused while reading.
		w = e.do(request{method: http.MethodPost, target: "/api/v1/calls", token: testToken, body: io.MultiReader(strings.NewReader(big))})
		requireError(t, w, http.StatusRequestEntityTooLarge, web.CodeTooLarge)
		require.Len(t, e.calls.Active(e.ctx), 1, "nothing was started")
	})

	t.Run("stop", func(t *testing.T) {
		w := e.do(request{method: http.MethodDelete, target: "/api/v1/calls/%21roomA%3Aexample.org", token: testToken})
		require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
		require.JSONEq(t, `{"calls":[]}`, e.get("/api/v1/calls").Body.String())
	})

	stopErrors := []struct {
		name    string
		target  string
		status  int
		errcode string
	}{
		{"not recording", "/api/v1/calls/%21roomA%3Aexample.org", http.StatusNotFound, web.CodeNotRecording},
		{"not recording, unencoded", "/api/v1/calls/!roomB:example.org", http.StatusNotFound, web.CodeNotRecording},
		{"alias", "/api/v1/calls/%23room%3Aexample.org", http.StatusBadRequest, web.CodeInvalidParam},
		{"not an id", "/api/v1/calls/room", http.StatusBadRequest, web.CodeInvalidParam},
		{"encoded slash", "/api/v1/calls/%21a%2F..%2Fb%3Ax", http.StatusNotFound, web.CodeNotRecording},
	}
	for _, tt := range stopErrors {
		t.Run("stop "+tt.name, func(t *testing.T) {
			w := e.do(request{method: http.MethodDelete, target: tt.target, token: testToken})
			requireError(t, w, tt.status, tt.errcode)
		})
	}

	t.Run("start again after stop", func(t *testing.T) {
		r := post(e, `{"room_id":"!roomA:example.org"}`)
		require.Equal(t, http.StatusAccepted, r.code, string(r.body))
		require.True(t, bytes.Contains(r.body, []byte(`"recording_id":"rec-2"`)), string(r.body))
	})
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t, func(o *web.Options) { o.Calls, o.Recordings = nil, nil })
	for _, req := range []request{
		{target: "/api/v1/calls"},
		{method: http.MethodPost, target: "/api/v1/calls", body: strings.NewReader(`{"room_id":"!a:b"}`)},
		{method: http.MethodDelete, target: "/api/v1/calls/%21a%3Ab"},
		{target: "/api/v1/recordings"},
		{target: "/api/v1/recordings/x/files/y.ogg"},
	} {
		req.token = testToken
		requireError(t, e.do(req), http.StatusServiceUnavailable, web.CodeUnavailable)
	}
	// Still authenticated first.
	requireError(t, e.do(request{target: "/api/v1/calls"}), http.StatusUnauthorized, web.CodeMissingToken)
}

var _ web.Calls = (*fakeCalls)(nil)

// The room id type the interface uses is mautrix's.
var _ id.RoomID = web.CallInfo{}.RoomID
