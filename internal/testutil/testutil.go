// Package testutil holds the small helpers every test package shares; the
// real parts tests run against (homeserver, browser clients, PostgreSQL,
// media checks, the whole recorder) are in its subpackages.
package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Ctx returns a context carrying a logger that writes to the test's log.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger().WithContext(context.Background())
}

// ModuleRoot walks up from the working directory to the directory holding
// go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("failed to get working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitUntil checks cond on a 10 ms ticker until it holds, and fails the test
// with msg() when within has passed. Unlike require.Eventually it runs cond on
// the test's own goroutine and starts none, so it suits goroutine counts.
func WaitUntil(t testing.TB, within time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			if !cond() {
				t.Fatal(msg())
			}
			return
		case <-tick.C:
		}
	}
}
