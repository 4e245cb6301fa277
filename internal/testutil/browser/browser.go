// Package browser starts Debian's headless Chromium for tests and drives it
// with chromedp. Every browser gets a fresh profile in a temporary folder
// and is killed when the test ends.
package browser

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// DefaultPath is where Debian's chromium package puts the browser.
const DefaultPath = "/usr/bin/chromium"

// Path is the browser to run: $CHROMIUM if set, else DefaultPath.
func Path() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return DefaultPath
}

// lockedWriter collects the browser's output for the test log.
type lockedWriter struct {
	lock sync.Mutex
	b    strings.Builder
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.lock.Lock()
	defer lw.lock.Unlock()
	return lw.b.Write(p)
}

func (lw *lockedWriter) String() string {
	lw.lock.Lock()
	defer lw.lock.Unlock()
	return lw.b.String()
}

// Tab is one tab of a headless Chromium.
type Tab struct {
	// Ctx is the chromedp context of the tab, for chromedp.Do and chromedp.Run.
	Ctx context.Context

	lock    sync.Mutex
	console []chromedp.ConsoleMessage
}

// Console returns what the page wrote to its console so far, uncaught
// exceptions included.
func (tab *Tab) Console() []chromedp.ConsoleMessage {
	tab.lock.Lock()
	defer tab.lock.Unlock()
	return append([]chromedp.ConsoleMessage(nil), tab.console...)
}

// Exceptions returns the uncaught exceptions and unhandled rejections so far.
func (tab *Tab) Exceptions() []string {
	var out []string
	for _, m := range tab.Console() {
		if m.IsException() {
			out = append(out, m.Text)
		}
	}
	return out
}

// New starts a headless Chromium and returns its first tab. The whole
// browser lives at most timeout; it is stopped at the end of the test, and
// if the test failed, the page's console and the browser's output are logged.
func New(t testing.TB, timeout time.Duration) *Tab {
	t.Helper()
	path := Path()
	_, err := os.Stat(path)
	require.NoError(t, err, "Chromium is needed: apt-get install -y chromium (or set $CHROMIUM)")

	out := &lockedWriter{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.WindowSize(1280, 1000),
		chromedp.CombinedOutput(out),
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf), chromedp.WithErrorf(t.Logf))
	tab := &Tab{Ctx: tabCtx}
	consoleDone := make(chan struct{})
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // kills the browser and waits for it
		cancelTimeout()
		<-consoleDone
		if t.Failed() {
			for _, m := range tab.Console() {
				t.Logf("Page console: %s", m)
			}
			t.Logf("Chromium output:\n%s", out.String())
		}
	})
	// Start the browser now so a broken install fails here, clearly; Console
	// subscribes at once, so nothing the page logs later is lost.
	messages := chromedp.Console(tabCtx)
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			tab.lock.Lock()
			tab.console = append(tab.console, m)
			tab.lock.Unlock()
		}
	}()
	require.NoError(t, chromedp.Do(tabCtx), "failed to start %s", path)
	return tab
}

// ArtifactDir is where a test keeps files worth looking at afterwards
// (screenshots): $TEST_ARTIFACTS/<test name> if TEST_ARTIFACTS is set,
// else a temporary folder of the test.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("TEST_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}
