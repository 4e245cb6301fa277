package web_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/web"
)

func TestServerGracefulStop(t *testing.T) {
	logs := &syncBuffer{}
	ctx := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.DebugLevel).WithContext(context.Background())
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/", web.New(web.Options{}))
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	srv := web.NewServer("127.0.0.1:0", mux)
	require.NoError(t, srv.Start(ctx))
	base := "http://" + srv.Addr()

	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_ = resp.Body.Close()

	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"path":"/healthz"`) },
		5*time.Second, 5*time.Millisecond, "requests are logged with the logger of Start's ctx")
	resp, err = http.Get(base + "/api/v1/recordings")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	t.Run("busy port", func(t *testing.T) {
		err := web.NewServer(srv.Addr(), mux).Start(ctx)
		require.Error(t, err)
		require.Contains(t, err.Error(), srv.Addr())
	})

	// A request in flight when Stop is called still completes.
	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{string(b), err}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stopped <- srv.Stop(stopCtx)
	}()
	// Stop closes the listener first; wait for that, then let the request finish.
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", srv.Addr())
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 5*time.Second, 5*time.Millisecond)
	close(release)
	res := <-slow
	require.NoError(t, res.err)
	require.Equal(t, "done", res.body)
	require.NoError(t, <-stopped)
	require.NoError(t, srv.Stop(ctx), "stopping twice is harmless")
}
