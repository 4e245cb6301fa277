package appservice

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"

	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// TestSlowVirtualUserStartBlocksNothingElse: while one virtual user is
// being set up against a slow homeserver (register, login, key upload),
// to-device events for the users already running are still delivered: the
// users' lock is not held across network I/O.
func TestSlowVirtualUserStartBlocksNothingElse(t *testing.T) {
	release := make(chan struct{})
	registering := make(chan struct{}, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/register") {
			select {
			case registering <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"fake"}`))
	}))
	defer hs.Close()
	cfg := testConfig()
	cfg.Homeserver.Address = hs.URL
	s, err := New(Options{Config: cfg, Txns: &memTxns{done: map[string]bool{}}, Version: "test"})
	require.NoError(t, err)
	ctx := zerolog.New(zerolog.NewTestWriter(t)).WithContext(context.Background())
	s.startLoops(ctx)
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(stopCtx))
	})
	got := make(chan e2ee.Received, 1)
	cli := &mautrix.Client{UserID: "@recorder_1:localhost", DeviceID: "RECDEV"}
	s.Users.users[cli.UserID] = &VirtualUser{Device: newDevice(cli, &plainCrypto{}, deviceOptions{handler: func(_ context.Context, received []e2ee.Received) {
		for _, rcv := range received {
			got <- rcv
		}
	}})}

	started := make(chan error, 1)
	go func() {
		_, err := s.Users.Get(ctx, "@recorder_2:localhost", nil)
		started <- err
	}()
	select {
	case <-registering:
	case <-time.After(5 * time.Second):
		t.Fatal("the second user was not registered")
	}
	body := `{"events":[],"de.sorunome.msc2409.to_device":[{"type":"m.call.invite","sender":"@alice:localhost",` +
		`"to_user_id":"@recorder_1:localhost","to_device_id":"RECDEV","content":{"call_id":"c1"}}]}`
	require.Equal(t, http.StatusOK, putTxn(t, s.Handler(), "t1", "hs-token", body).Code)
	select {
	case rcv := <-got:
		var content struct {
			CallID string `json:"call_id"`
		}
		require.NoError(t, json.Unmarshal(rcv.Content, &content))
		require.Equal(t, "c1", content.CallID)
	case <-time.After(2 * time.Second):
		t.Fatal("a to-device event waited for another user's setup")
	}
	close(release)
	require.Error(t, <-started, "the fake homeserver refuses everything")
}
