package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// errFailNow is the panic value of cmdTB.FailNow, recovered by runCmdPoint.
var errFailNow = errors.New("loadtest: point failed")

// cmdTB lets the command use the test helpers (homeserver, require) that
// take a testing.TB. Only the methods below are implemented; the embedded
// nil interface only satisfies testing.TB's private method. FailNow must be
// called on the goroutine that runs the point (as in a test).
type cmdTB struct {
	testing.TB

	ctx  context.Context
	work string

	mu       sync.Mutex
	cleanups []func()
	errs     []string
}

func newCmdTB(ctx context.Context, work string) *cmdTB {
	return &cmdTB{ctx: ctx, work: work}
}

func (*cmdTB) Helper()      {}
func (*cmdTB) Name() string { return "loadtest" }

func (t *cmdTB) TempDir() string {
	dir, err := os.MkdirTemp(t.work, "point-")
	if err != nil {
		t.Fatalf("failed to create a temporary directory: %v", err)
	}
	return dir
}

func (t *cmdTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *cmdTB) Log(args ...any) {
	zerolog.Ctx(t.ctx).Info().Msg(strings.TrimSpace(fmt.Sprintln(args...)))
}
func (t *cmdTB) Logf(format string, args ...any) {
	zerolog.Ctx(t.ctx).Info().Msg(fmt.Sprintf(format, args...))
}

func (t *cmdTB) Error(args ...any) { t.fail(strings.TrimSpace(fmt.Sprintln(args...))) }
func (t *cmdTB) Errorf(format string, args ...any) {
	t.fail(fmt.Sprintf(format, args...))
}

func (t *cmdTB) Fatal(args ...any) {
	t.Error(args...)
	t.FailNow()
}

func (t *cmdTB) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	t.FailNow()
}

func (*cmdTB) FailNow() { panic(errFailNow) }

func (t *cmdTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.errs) > 0
}

func (t *cmdTB) fail(msg string) {
	zerolog.Ctx(t.ctx).Error().Msg(msg)
	t.mu.Lock()
	t.errs = append(t.errs, msg)
	t.mu.Unlock()
}

// err is every failure so far as one error.
func (t *cmdTB) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Errorf("%w: %s", errFailNow, strings.Join(t.errs, "; "))
}

// runCleanups runs the cleanups, last registered first.
func (t *cmdTB) runCleanups() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		t.runCleanup(f)
	}
}

// runCleanup runs one cleanup; a failure in it is recorded, not raised.
func (t *cmdTB) runCleanup(f func()) {
	defer func() {
		if r := recover(); r != nil && r != errFailNow { //nolint:errorlint // a sentinel panic value
			panic(r)
		}
	}()
	f()
}
