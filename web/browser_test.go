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
	"github.com/matrix-recorder/recorder/web"
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
	require.Contains(t, calls, "@bob:example.org (connected) 🔒 no key yet — media is end-to-end encrypted and no key has arrived",
		"an encrypted participant without a key is shown with the reason")

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

// TestBrowserPlaysMixdown: a recording with a mixdown opens on the mixdown
// (the WebM, since someone sent video), which plays; the per-participant
// view is one click away. Rooms and people are shown by name, ids on hover.
func TestBrowserPlaysMixdown(t *testing.T) {
	mix := &fakeMixdowns{jobs: map[storage.RecordingID]*storage.Mixdown{}}
	e := newEnv(t, func(o *web.Options) { o.RetentionDays, o.Mixdowns = 30, mix })
	e.seed("nomix", roomB, storage.StateFinished, t0.Add(-time.Hour), oggTrack("x.ogg", alice, 0))
	rec := e.seed("mix1", roomA, storage.StateFinished, t0,
		oggTrack("alice.ogg", alice, 0),
		webmTrack("bob.webm", bob, 1500*time.Millisecond))
	rec.RoomName = "Weekly sync"
	_, err := e.db.Exec(e.ctx, `UPDATE recording SET room_name=$2 WHERE id=$1`, rec.ID, rec.RoomName)
	require.NoError(t, err)
	_, err = e.db.Exec(e.ctx, `UPDATE recording_file SET display_name='Alice A.' WHERE name='alice.ogg'`)
	require.NoError(t, err)
	e.put(rec.Folder, "mixdown.webm", readFile(t, webmMedia))
	e.put(rec.Folder, "mixdown.ogg", readFile(t, oggMedia))
	require.NoError(t, e.db.ReplaceMixdownFiles(e.ctx, rec.ID, []*storage.RecordingFile{
		{Name: "mixdown.ogg", Kind: "ogg", Codecs: []string{"audio/opus"}, Duration: 6 * time.Second, StartedAt: t0, State: storage.StateFinished},
		{Name: "mixdown.webm", Kind: "webm", Codecs: []string{"video/VP8", "audio/opus"}, Duration: 6 * time.Second, StartedAt: t0, State: storage.StateFinished},
	}))

	srv := httptest.NewServer(e.handler)
	defer srv.Close()
	tab := browser.New(t, 90*time.Second)
	ctx := tab.Ctx
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), testToken),
		chromedp.Click(css("#token-form button[type=submit]")),
		chromedp.WaitVisible(css(`#recordings tbody tr[data-id="mix1"]`)),
	), "sign in and list")
	row, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
		Room      string `json:"room"`
		RoomTitle string `json:"room_title"`
		People    string `json:"people"`
		Title     string `json:"title"`
	}](`(() => { const tds = document.querySelectorAll('#recordings tbody tr[data-id="mix1"] td');
		return { room: tds[0].textContent, room_title: tds[0].title, people: tds[3].textContent, title: tds[3].querySelector('span').title }; })()`))
	require.NoError(t, err)
	require.Equal(t, "Weekly sync", row.Room)
	require.Equal(t, string(roomA), row.RoomTitle, "the room id on hover")
	require.Equal(t, "Alice A., "+string(bob), row.People)
	require.Equal(t, string(alice), row.Title, "the user id on hover")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css(`#recordings tbody tr[data-id="mix1"] button`)),
		chromedp.WaitVisible(css("#mixdown video")),
		chromedp.Poll[chromedp.Void](`(() => { const v = document.querySelector('#mixdown video');
			return v.src.startsWith('blob:') && v.readyState >= 1 && v.dataset.file === 'mixdown.webm'; })()`,
			chromedp.WithPollingTimeout(20*time.Second)),
	), "open: the mixdown is shown")
	hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#per-participant').hidden`))
	require.NoError(t, err)
	require.True(t, hidden, "per-participant view folded away")
	meta, err := chromedp.Run(ctx, chromedp.Text(css("#rec-meta")))
	require.NoError(t, err)
	require.Contains(t, meta, "Expires")
	require.Contains(t, meta, "Weekly sync ("+string(roomA)+")")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#mixdown video').play()`),
		chromedp.Poll[chromedp.Void](`document.querySelector('#mixdown video').currentTime > 1`, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Click(css("#show-tracks")),
		chromedp.WaitVisible(css("#tracks video")),
		chromedp.Poll[chromedp.Void](`document.querySelector('#mixdown video').paused`),
	), "play the mixdown, then open the per-participant view")
	heads, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#tracks h3')].map((h) => h.textContent + '|' + h.title)`))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"Alice A.|" + string(alice), string(bob) + "|" + string(bob)}, heads)

	// A recording without a mixdown opens on its tracks; one click asks for
	// the mixdown, and the page shows it waiting.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(css(`#recordings tbody tr[data-id="nomix"] button`)),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#tracks audio').length === 1 &&
			document.querySelector('#mixdown-state').textContent === 'No mixdown yet.' &&
			!document.querySelector('#per-participant').hidden && document.querySelector('#show-tracks').hidden`),
		chromedp.Click(css("#mixdown-make")),
		chromedp.Poll[chromedp.Void](`document.querySelector('#mixdown-state').textContent === 'Mixdown waiting…'`,
			chromedp.WithPollingTimeout(10*time.Second)),
	), "ask for a mixdown")
	require.Equal(t, []storage.RecordingID{"nomix"}, mix.Queued())
	require.Empty(t, tab.Exceptions(), "no uncaught exceptions in the page")
}
