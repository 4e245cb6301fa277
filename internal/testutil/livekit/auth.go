package livekit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	lkp "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// AuthService is a stand-in for element-hq/lk-jwt-service, the MatrixRTC
// authorization service: it checks a Matrix OpenID token with the user's
// homeserver (federation openid/userinfo), creates the LiveKit room and
// mints a LiveKit JWT. Both endpoints: /sfu/get (compatibility mode) and
// /get_token (matrix_2_0).
type AuthService struct {
	// URL is what memberships name as livekit_service_url.
	URL string
	// lkHTTP and lkWS are the LiveKit server's API and client URLs.
	lkHTTP, lkWS string
	// homeservers maps a matrix_server_name to its base URL (no DNS here).
	homeservers map[string]string
	http        *http.Client

	lock     sync.Mutex
	requests []Grant
	ttl      time.Duration // of the JWTs (default an hour)
}

// SetTokenTTL makes the JWTs handed out from now on valid for d.
func (a *AuthService) SetTokenTTL(d time.Duration) {
	a.lock.Lock()
	defer a.lock.Unlock()
	a.ttl = d
}

// Grant is one token the service handed out.
type Grant struct {
	Path       string
	Identity   string
	Room       string // the LiveKit room
	MatrixRoom id.RoomID
}

// LegacySFURequest is the body of POST /sfu/get.
type LegacySFURequest struct {
	Room        id.RoomID               `json:"room"`
	OpenIDToken mautrix.RespOpenIDToken `json:"openid_token"`
	DeviceID    id.DeviceID             `json:"device_id"`
}

// TokenRequest is the body of POST /get_token (matrix_2_0).
type TokenRequest struct {
	RoomID      id.RoomID               `json:"room_id"`
	SlotID      string                  `json:"slot_id"`
	OpenIDToken mautrix.RespOpenIDToken `json:"openid_token"`
	Member      struct {
		ID              string      `json:"id"`
		ClaimedUserID   id.UserID   `json:"claimed_user_id"`
		ClaimedDeviceID id.DeviceID `json:"claimed_device_id"`
	} `json:"member"`
}

// StartAuthService serves the stand-in on a free loopback port until the
// test ends. homeservers maps server names to homeserver base URLs.
func StartAuthService(t testing.TB, lk *Server, homeservers map[string]string) *AuthService {
	t.Helper()
	a := NewAuthService(lk.HTTPURL, lk.URL, homeservers)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("livekit: auth service: %v", err)
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	a.URL = "http://" + ln.Addr().String()
	return a
}

// NewAuthService builds the stand-in for the LiveKit server at lkHTTP
// (API) / lkWS (what clients connect to); serve Handler and set URL.
func NewAuthService(lkHTTP, lkWS string, homeservers map[string]string) *AuthService {
	return &AuthService{lkHTTP: lkHTTP, lkWS: lkWS, homeservers: homeservers, http: &http.Client{Timeout: 10 * time.Second}}
}

// Handler serves /sfu/get and /get_token (with CORS, for browsers).
func (a *AuthService) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sfu/get", a.sfuGet)
	mux.HandleFunc("POST /get_token", a.getToken)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	return cors(mux)
}

// cors lets browser clients (Element Call's origin) call the service, as
// lk-jwt-service does.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Grants returns the tokens handed out so far.
func (a *AuthService) Grants() []Grant {
	a.lock.Lock()
	defer a.lock.Unlock()
	return append([]Grant(nil), a.requests...)
}

// RoomName is the LiveKit room of a Matrix room's m.call session as
// lk-jwt-service names it (live run, matrixrtc.md §2.3): unpadded base64 of
// the SHA-256 of the JSON array [room id, "m.call#ROOM"].
func RoomName(roomID id.RoomID) string {
	data, _ := json.Marshal([]string{string(roomID), "m.call#ROOM"})
	sum := sha256.Sum256(data)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errcode": code, "error": msg})
}

// userInfo checks an OpenID token with its homeserver.
func (a *AuthService) userInfo(ctx context.Context, tok mautrix.RespOpenIDToken) (id.UserID, error) {
	base, ok := a.homeservers[tok.MatrixServerName]
	if !ok {
		return "", fmt.Errorf("unknown homeserver %q", tok.MatrixServerName)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		base+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(tok.AccessToken), nil)
	if err != nil {
		return "", err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo answered %d: %s", resp.StatusCode, data)
	}
	var info struct {
		Sub id.UserID `json:"sub"`
	}
	if err = json.Unmarshal(data, &info); err != nil || info.Sub == "" {
		return "", fmt.Errorf("bad userinfo answer: %s", data)
	}
	if _, server, err := info.Sub.Parse(); err != nil || server != tok.MatrixServerName {
		return "", fmt.Errorf("userinfo sub %s is not on %s", info.Sub, tok.MatrixServerName)
	}
	return info.Sub, nil
}

func (a *AuthService) grant(ctx context.Context, w http.ResponseWriter, path, identity string, roomID id.RoomID) {
	room := RoomName(roomID)
	rooms := lksdk.NewRoomServiceClient(a.lkHTTP, APIKey, APISecret)
	if _, err := rooms.CreateRoom(ctx, &lkp.CreateRoomRequest{Name: room, EmptyTimeout: 300, DepartureTimeout: 20}); err != nil {
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "failed to create the LiveKit room: "+err.Error())
		return
	}
	a.lock.Lock()
	ttl := a.ttl
	a.lock.Unlock()
	if ttl <= 0 {
		ttl = time.Hour
	}
	at := auth.NewAccessToken(APIKey, APISecret)
	canPublish, canSubscribe := true, true
	at.SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room, CanPublish: &canPublish, CanSubscribe: &canSubscribe}).
		SetIdentity(identity).SetValidFor(ttl)
	jwt, err := at.ToJWT()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "M_UNKNOWN", err.Error())
		return
	}
	a.lock.Lock()
	a.requests = append(a.requests, Grant{Path: path, Identity: identity, Room: room, MatrixRoom: roomID})
	a.lock.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"url": a.lkWS, "jwt": jwt})
}

func (a *AuthService) sfuGet(w http.ResponseWriter, r *http.Request) {
	var req LegacySFURequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Room == "" || req.DeviceID == "" {
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "room, openid_token and device_id are required")
		return
	}
	userID, err := a.userInfo(r.Context(), req.OpenIDToken)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", err.Error())
		return
	}
	a.grant(r.Context(), w, "/sfu/get", string(userID)+":"+string(req.DeviceID), req.Room)
}

func (a *AuthService) getToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.RoomID == "" || req.Member.ClaimedDeviceID == "" {
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "room_id, openid_token and member are required")
		return
	}
	userID, err := a.userInfo(r.Context(), req.OpenIDToken)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", err.Error())
		return
	}
	// matrix_2_0: a hashed identity no compatibility-mode key matches.
	sum := sha256.Sum256([]byte(string(userID) + "|" + string(req.Member.ClaimedDeviceID) + "|" + req.Member.ID))
	a.grant(r.Context(), w, "/get_token", base64.RawStdEncoding.EncodeToString(sum[:]), req.RoomID)
}
