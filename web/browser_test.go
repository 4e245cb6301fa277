//go:build integration

package web_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil/browser"
	"github.com/matrix-recorder/recorder/storage"
)

// TestBrowserPlaysRecording drives the page in headless Chromium: sign in
// with the token, find the recording in the list, open it, press play and
// see the media elements' clocks advance, each at its offset on the shared
// timeline.
func TestBrowserPlaysRecording(t *testing.T) {
	e := newEnv(t)
	e.seed("older", roomB, storage.StateFailed, t0.Add(-time.Hour), oggTrack("x.ogg", alice, 0))
	e.seed("call1", roomA, storage.StateFinished, t0,
		oggTrack("alice.ogg", alice, 0),
		webmTrack("bob.webm", bob, 1500*time.Millisecond))
	e.calls.hasCall[roomB] = true
	_, err := e.calls.Join(e.ctx, roomB)
	require.NoError(t, err)

	srv := httptest.NewServer(e.handler) // 127.0.0.1
	defer srv.Close()
	tab := browser.New(t, 90*time.Second)
	ctx := tab.Ctx
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), testToken),
		chromedp.Click(css("#token-form button[type=submit]")),
		chromedp.WaitVisible(css(`#recordings tbody tr[data-id="call1"]`)),
		chromedp.WaitVisible(css(`#calls tbody tr`)),
	), "sign in and list")

	row, err := chromedp.Run(ctx, chromedp.Text(css(`#recordings tbody tr[data-id="call1"]`)))
	require.NoError(t, err)
	require.Contains(t, row, string(roomA))
	require.Contains(t, row, "0:06", "duration")
	require.Contains(t, row, string(alice)+", "+string(bob))
	require.Contains(t, row, "finished")
	calls, err := chromedp.Run(ctx, chromedp.Text(css(`#calls tbody`)))
	require.NoError(t, err)
	require.Contains(t, calls, string(roomB), "the active call is shown")

	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`localStorage.getItem('recorder.api_token')`))
	require.NoError(t, err)
	require.Equal(t, testToken, stored, "the token is kept for the next visit")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css(`#recordings tbody tr[data-id="call1"] button`)),
		chromedp.WaitVisible(css("#player")),
		// Both files fetched (with the token) and their metadata loaded.
		chromedp.Poll[chromedp.Void](`(() => {
			const m = [...document.querySelectorAll('#tracks audio, #tracks video')];
			return m.length === 2 && m.every((x) => x.src.startsWith('blob:') && x.readyState >= 1);
		})()`, chromedp.WithPollingTimeout(20*time.Second)),
	), "open the recording")

	kinds, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#tracks audio, #tracks video')].map((m) => m.tagName.toLowerCase() + ':' + m.dataset.file)`))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"audio:alice.ogg", "video:bob.webm"}, kinds)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css("#play")),
		// The audio starts at 0; the video starts 1.5 s later on the timeline.
		chromedp.Poll[chromedp.Void](`document.querySelector('#tracks video').currentTime > 0.8`,
			chromedp.WithPollingTimeout(20*time.Second)),
	), "play")

	state, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Audio  float64 `json:"audio"`
		Video  float64 `json:"video"`
		Paused bool    `json:"paused"`
		Button string  `json:"button"`
		Clock  string  `json:"clock"`
	}](`({
		audio: document.querySelector('#tracks audio').currentTime,
		video: document.querySelector('#tracks video').currentTime,
		paused: document.querySelector('#tracks audio').paused,
		button: document.querySelector('#play').textContent,
		clock: document.querySelector('#clock').textContent,
	})`))
	require.NoError(t, err)
	t.Logf("Playback state: %+v", state)
	require.False(t, state.Paused)
	require.Equal(t, "Pause", state.Button)
	require.Greater(t, state.Audio, 2.0, "audio currentTime advanced")
	require.InDelta(t, 1.5, state.Audio-state.Video, 0.5, "the video is 1.5 s behind the audio, as on the call")

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 gives PNG
	require.NoError(t, err)
	shot := filepath.Join(browser.ArtifactDir(t), "recording-playing.png")
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("Screenshot: %s", shot)

	// Pause stops every element; seeking moves them all.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css("#play")),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('#tracks audio, #tracks video')].every((m) => m.paused)`),
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#seek'); s.value = '4'; s.dispatchEvent(new Event('input')); })()`),
		chromedp.Poll[chromedp.Void](`Math.abs(document.querySelector('#tracks audio').currentTime - 4) < 0.1 &&
			Math.abs(document.querySelector('#tracks video').currentTime - 2.5) < 0.1`),
	), "pause and seek")

	require.Empty(t, tab.Exceptions(), "no uncaught exceptions in the page")
}
