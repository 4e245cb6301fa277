package livekit

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

type fakeDevice struct{}

func (fakeDevice) UserID() id.UserID                                                  { return "@rec:example.org" }
func (fakeDevice) DeviceID() id.DeviceID                                              { return "RECDEV" }
func (fakeDevice) JoinRoom(context.Context, id.RoomID) error                          { return nil }
func (fakeDevice) SetState(context.Context, id.RoomID, event.Type, string, any) error { return nil }
func (fakeDevice) OpenIDToken(context.Context) (*mautrix.RespOpenIDToken, error) {
	return &mautrix.RespOpenIDToken{AccessToken: "tok", TokenType: "Bearer", MatrixServerName: "example.org", ExpiresIn: 3600}, nil
}

func TestAllowed(t *testing.T) {
	m := &Manager{cfg: Config{AllowedHosts: []string{"jwt.example.org", "sfu.example.org:7880"}}}
	require.True(t, m.allowed("https://jwt.example.org"))
	require.True(t, m.allowed("https://JWT.example.org:8443/livekit/jwt"), "a bare host allows any port")
	require.True(t, m.allowed("wss://sfu.example.org:7880"))
	require.False(t, m.allowed("wss://sfu.example.org:7881"), "host:port allows that port only")
	require.False(t, m.allowed("https://evil.example.net"))
	require.False(t, m.allowed("not a url"))
	require.True(t, (&Manager{}).allowed("https://anything.example"), "no list: any focus the call names")
}

func TestSFUToken(t *testing.T) {
	var got SFURequest
	sfuURL := "ws://127.0.0.1:7880"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, SFUGetPath, r.URL.Path)
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
		_ = json.NewEncoder(w).Encode(SFUResponse{URL: sfuURL, JWT: "jwt"})
	}))
	defer srv.Close()
	ctx := context.Background()

	m := &Manager{http: srv.Client()}
	resp, err := m.sfuToken(ctx, fakeDevice{}, "!room:example.org", srv.URL)
	require.NoError(t, err)
	require.Equal(t, SFUResponse{URL: sfuURL, JWT: "jwt"}, resp)
	require.Equal(t, id.RoomID("!room:example.org"), got.Room, "the Matrix room id, not an alias")
	require.Equal(t, id.DeviceID("RECDEV"), got.DeviceID)
	require.Equal(t, "tok", got.OpenIDToken.AccessToken)

	// The service is allowed, the SFU it names is not.
	m.cfg.AllowedHosts = []string{"127.0.0.1:" + srv.URL[len("http://127.0.0.1:"):]}
	_, err = m.sfuToken(ctx, fakeDevice{}, "!room:example.org", srv.URL)
	require.ErrorIs(t, err, ErrHostNotAllowed)
	// The service itself is not allowed: nothing is sent.
	m.cfg.AllowedHosts = []string{"jwt.example.org"}
	got = SFURequest{}
	_, err = m.sfuToken(ctx, fakeDevice{}, "!room:example.org", srv.URL)
	require.ErrorIs(t, err, ErrHostNotAllowed)
	require.Empty(t, got.Room)

	sfuURL = "file:///etc/passwd"
	m.cfg.AllowedHosts = nil
	_, err = m.sfuToken(ctx, fakeDevice{}, "!room:example.org", srv.URL)
	require.ErrorIs(t, err, ErrFocus)
}
