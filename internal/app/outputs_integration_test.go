//go:build integration

package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/webhooks"
)

// Tones of the simulated participants (testdata/media/tone-*.ogg).
const (
	aliceTone = 600
	bobTone   = 1500
)

func toneSim(freq int, video bool) stack.SimOptions {
	return stack.SimOptions{Video: video, Tweak: func(c *simpeer.Config) {
		c.Audio = fmt.Sprintf("tone-%d-opus-48k-stereo.ogg", freq)
	}}
}

func waitMixdown(t *testing.T, s *stack.Stack, recID storage.RecordingID) *storage.Mixdown {
	t.Helper()
	var m *storage.Mixdown
	require.Eventually(t, func() bool {
		var err error
		m, err = s.App.DB.Mixdown.Get(s.Ctx(), recID)
		require.NoError(t, err)
		return m != nil && (m.State == storage.MixdownFinished || m.State == storage.MixdownFailed)
	}, 2*stack.Deadline, 100*time.Millisecond, "the mixdown did not end")
	require.Equal(t, storage.MixdownFinished, m.State, m.Error)
	return m
}

// TestMixdownOfRecordedCall: alice (audio only, a 600 Hz tone) is recorded
// from the start, bob (camera, 1500 Hz) joins two seconds later. The
// mixdown has one audio stream, and a WebM with one video and one audio
// stream, both as long as the call; alice sounds throughout, bob only from
// his offset. The API lists the files as kind mixdown and serves them with
// Range; names are kept as they were.
func TestMixdownOfRecordedCall(t *testing.T) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs, API: true, Configure: func(c *config.Config) {
		c.Mixdown.Enabled = true
		c.Recordings.Retention = 30
	}})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	require.NoError(t, alice.SetDisplayName(ctx, "Alice Liddell"))
	roomID := s.CallRoom(t, alice, bob.UserID)
	aliceOpts := toneSim(aliceTone, false)
	aliceOpts.CreateCall = true
	pa := s.Sim(t, roomID, alice, aliceOpts)

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pa)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 10)
	},
		stack.Deadline, 50*time.Millisecond)
	waitAudio(t, obs, alice.UserID, 2*time.Second)
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	require.NoError(t, bob.SetDisplayName(ctx, "Bob Builder"))
	pb := s.Sim(t, roomID, bob, toneSim(bobTone, true))
	waitConnected(t, s, roomID, pb)
	require.Eventually(t, func() bool { return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10) },
		stack.Deadline, 50*time.Millisecond)
	waitMedia(t, obs, bob.UserID, 2*time.Second)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	require.Equal(t, "Call", rec.RoomName)
	m := waitMixdown(t, s, rec.ID)
	require.InDelta(t, 1, m.Progress, 0.001)
	require.Eventually(t, func() bool { return counter(t, s, "recorder_mixdowns_total", "finished") == 1 }, stack.Deadline, 50*time.Millisecond)

	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	offset := map[string]float64{}
	var mix []*storage.RecordingFile
	for _, f := range files {
		switch {
		case f.Purpose == storage.PurposeMixdown:
			mix = append(mix, f)
		case f.UserID == alice.UserID:
			require.Equal(t, "Alice Liddell", f.DisplayName)
			offset["alice"] = f.StartedAt.Sub(rec.StartedAt).Seconds()
		case f.UserID == bob.UserID:
			require.Equal(t, "Bob Builder", f.DisplayName)
			offset["bob"] = f.StartedAt.Sub(rec.StartedAt).Seconds()
		}
	}
	require.Len(t, mix, 2, "mixdown.ogg and mixdown.webm")
	callLen := rec.EndedAt.Sub(rec.StartedAt).Seconds()
	t.Logf("call %.2fs, alice at %.2fs, bob at %.2fs", callLen, offset["alice"], offset["bob"])
	require.Greater(t, offset["bob"], offset["alice"]+1.5, "bob joined late")

	ogg, webm := storedPath(s, rec, "mixdown.ogg"), storedPath(s, rec, "mixdown.webm")
	require.InDelta(t, callLen, mediacheck.Duration(t, ogg), 0.3)
	require.InDelta(t, callLen, mediacheck.Duration(t, webm), 0.3)
	streams := mediacheck.Streams(t, ogg)
	require.Len(t, streams, 1)
	require.Equal(t, "opus", streams[0].CodecName)
	kinds := map[string]int{}
	for _, st := range mediacheck.Streams(t, webm) {
		kinds[st.CodecType]++
	}
	require.Equal(t, map[string]int{"audio": 1, "video": 1}, kinds)

	pcm := mediacheck.DecodeAudio(t, ogg)
	const on, off = 0.05, 0.01 // the tones have amplitude 0.2
	require.Greater(t, mediacheck.ToneLevel(pcm, aliceTone, offset["alice"]+0.3, callLen-0.3), on, "alice sounds")
	require.Less(t, mediacheck.ToneLevel(pcm, bobTone, 0, offset["bob"]-0.2), off, "bob is silent before he joined")
	require.Greater(t, mediacheck.ToneLevel(pcm, bobTone, offset["bob"]+0.3, callLen-0.3), on, "bob sounds after his offset")
	// Each second of the call, alice's tone is there (no gaps or drift).
	for at := offset["alice"] + 0.5; at < callLen-1; at++ {
		require.Greater(t, mediacheck.ToneLevel(pcm, aliceTone, at, at+0.5), on, "alice at %.1fs", at)
	}

	// The manifest keeps the names too.
	data, err := readStored(s, rec, recording.ManifestFileName)
	require.NoError(t, err)
	var man recording.Manifest
	require.NoError(t, json.Unmarshal(data, &man))
	require.Equal(t, "Call", man.RoomName)
	names := map[string]string{}
	for _, tr := range man.Tracks {
		names[tr.UserID] = tr.DisplayName
	}
	require.Equal(t, map[string]string{string(alice.UserID): "Alice Liddell", string(bob.UserID): "Bob Builder"}, names)

	// API: the mixdown is its own kind, served with Range.
	get := func(path string, rangeHdr string) (*http.Response, []byte) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL()+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+stack.APIToken)
		if rangeHdr != "" {
			req.Header.Set("Range", rangeHdr)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, body
	}
	resp, body := get("/api/v1/recordings/"+string(rec.ID), "")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var got struct {
		RoomName  string    `json:"room_name"`
		ExpiresAt time.Time `json:"expires_at"`
		Tracks    []struct {
			UserID      string `json:"user_id"`
			DisplayName string `json:"display_name"`
		} `json:"tracks"`
		Mixdown struct {
			State    string  `json:"state"`
			Progress float64 `json:"progress"`
			Files    []struct {
				Kind      string `json:"kind"`
				Container string `json:"container"`
				File      string `json:"file"`
				Bytes     int64  `json:"bytes"`
			} `json:"files"`
		} `json:"mixdown"`
	}
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, "Call", got.RoomName)
	require.WithinDuration(t, rec.StartedAt.Add(30*24*time.Hour), got.ExpiresAt, time.Millisecond)
	require.Len(t, got.Tracks, 2, "participant files only")
	require.Equal(t, "finished", got.Mixdown.State)
	require.Len(t, got.Mixdown.Files, 2)
	for _, f := range got.Mixdown.Files {
		require.Equal(t, "mixdown", f.Kind)
		resp, part := get("/api/v1/recordings/"+string(rec.ID)+"/files/"+f.File, "bytes=0-99")
		require.Equal(t, http.StatusPartialContent, resp.StatusCode)
		require.Len(t, part, 100)
		require.Equal(t, map[string]string{"ogg": "audio/ogg", "webm": "video/webm"}[f.Container], resp.Header.Get("Content-Type"))
	}
	listed := s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec list"))
	require.Contains(t, listed, "2 file(s), mixed down, expires ")
}

// readStored reads a stored file of a recording.
func readStored(s *stack.Stack, rec *storage.Recording, name string) ([]byte, error) {
	f, err := s.App.Store.Open(s.Ctx(), rec.Folder, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// hookReceiver is a webhook endpoint that checks signatures and counts the
// deliveries it acknowledged, by idempotency id.
type hookReceiver struct {
	t      *testing.T
	secret string

	lock     sync.Mutex
	mode     string // "down" (503), "hang" (never answers), "up" (200)
	hanging  chan struct{}
	acked    map[string][]byte // event id -> body
	ackCount map[string]int
	types    map[string]int
	badSig   int
	lastHdr  http.Header
	lastBody []byte
}

func (hr *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if err := webhooks.Verify(hr.secret, r.Header, body, time.Now(), webhooks.DefaultTolerance); err != nil {
		hr.lock.Lock()
		hr.badSig++
		hr.lock.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	hr.lock.Lock()
	mode := hr.mode
	hr.lastHdr, hr.lastBody = r.Header.Clone(), body
	if mode == "hang" && hr.hanging != nil {
		close(hr.hanging)
		hr.hanging = nil
	}
	hr.lock.Unlock()
	switch mode {
	case "down":
		w.WriteHeader(http.StatusServiceUnavailable)
	case "hang":
		<-r.Context().Done() // the sender gives up when it is stopped
	default:
		hr.lock.Lock()
		id := r.Header.Get(webhooks.HeaderID)
		hr.acked[id] = body
		hr.ackCount[id]++
		hr.types[r.Header.Get(webhooks.HeaderEvent)]++
		hr.lock.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}
}

func (hr *hookReceiver) setMode(mode string) {
	hr.lock.Lock()
	defer hr.lock.Unlock()
	hr.mode = mode
}

// TestWebhooksSurviveRestart: events of a recording and its mixdown wait
// while the receiver is down; the recorder is restarted while a delivery
// is in flight; afterwards every event arrives exactly once, signed, and a
// wrong signature is detected.
func TestWebhooksSurviveRestart(t *testing.T) {
	hr := &hookReceiver{t: t, secret: "hook-secret-0123456789", mode: "down",
		acked: map[string][]byte{}, ackCount: map[string]int{}, types: map[string]int{}}
	srv := httptest.NewServer(hr)
	t.Cleanup(srv.Close)
	const publicURL = "https://recorder.example.test"
	s := stack.Start(t, stack.Options{
		Configure: func(c *config.Config) {
			c.Mixdown.Enabled = true
			c.API.PublicURL = publicURL
			c.Webhooks = []config.WebhookConfig{{URL: srv.URL + "/hook", Secret: hr.secret}}
		},
		WebhookBackoff: func(int) time.Duration { return 200 * time.Millisecond },
	})
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	opts := toneSim(aliceTone, false)
	opts.CreateCall = true
	pa := s.Sim(t, roomID, alice, opts)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pa)
	sent := pa.Snapshot().SentPackets["audio"] // 2 s of media: 50 Opus packets a second
	require.Eventually(t, func() bool { return pa.Snapshot().SentPackets["audio"] >= sent+100 }, stack.Deadline, 20*time.Millisecond)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	rec := onlyRecording(t, s, roomID)
	s.WaitNotice(t, alice, roomID, "The recording: "+publicURL+"/#rec="+string(rec.ID))
	waitMixdown(t, s, rec.ID)
	require.Eventually(t, func() bool {
		n, err := s.App.DB.Outbox.Pending(ctx)
		require.NoError(t, err)
		return n == 3
	}, stack.Deadline, 50*time.Millisecond, "started, finished and mixdown.finished wait in the outbox")

	hanging := make(chan struct{})
	hr.lock.Lock()
	hr.mode, hr.hanging = "hang", hanging
	hr.lock.Unlock()
	select {
	case <-hanging:
	case <-time.After(stack.Deadline):
		t.Fatal("no delivery attempt while the receiver hangs")
	}
	s.StopApp(t) // kills the delivery in flight
	hr.setMode("up")
	s.StartApp(t)

	require.Eventually(t, func() bool {
		hr.lock.Lock()
		defer hr.lock.Unlock()
		return len(hr.acked) == 3
	}, stack.Deadline, 50*time.Millisecond, "every event is delivered after the restart")
	require.Never(t, func() bool { // nothing more comes
		hr.lock.Lock()
		defer hr.lock.Unlock()
		return len(hr.acked) > 3
	}, time.Second, 50*time.Millisecond, "an event was delivered twice")
	hr.lock.Lock()
	defer hr.lock.Unlock()
	require.Zero(t, hr.badSig)
	require.Equal(t, map[string]int{"recording.started": 1, "recording.finished": 1, "mixdown.finished": 1}, hr.types)
	for id, n := range hr.ackCount {
		require.Equal(t, 1, n, "event %s acknowledged once", id)
	}
	n, err := s.App.DB.Outbox.Pending(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.InDelta(t, 3, counter(t, s, "recorder_webhook_attempts_total", "delivered"), 0, "deliveries are counted")

	for _, body := range hr.acked {
		var ev webhooks.Event
		require.NoError(t, json.Unmarshal(body, &ev))
		require.Equal(t, rec.ID, ev.Recording.ID)
		require.Equal(t, roomID, ev.Recording.RoomID)
		require.Equal(t, "Call", ev.Recording.RoomName)
		switch ev.Type {
		case webhooks.RecordingStarted:
			require.Nil(t, ev.Recording.EndedAt)
		case webhooks.RecordingFinished:
			require.Equal(t, storage.StateFinished, ev.Recording.State)
			require.NotNil(t, ev.Recording.EndedAt)
			require.Len(t, ev.Recording.Files, 1)
			f := ev.Recording.Files[0]
			require.Positive(t, f.Bytes)
			require.Positive(t, f.DurationMS)
			require.Equal(t, publicURL+"/api/v1/recordings/"+string(rec.ID)+"/files/"+f.Name, f.URL)
		case webhooks.MixdownFinished:
			require.NotNil(t, ev.Mixdown)
			require.Equal(t, storage.MixdownFinished, ev.Mixdown.State)
			require.Len(t, ev.Mixdown.Files, 1, "audio only: mixdown.ogg")
			require.Equal(t, "mixdown", ev.Mixdown.Files[0].Kind)
			require.Equal(t, "mixdown.ogg", ev.Mixdown.Files[0].Name)
		}
	}

	// A receiver detects a forged or altered delivery.
	require.NoError(t, webhooks.Verify(hr.secret, hr.lastHdr, hr.lastBody, time.Now(), webhooks.DefaultTolerance))
	require.ErrorIs(t, webhooks.Verify("another-secret-0123456", hr.lastHdr, hr.lastBody, time.Now(), webhooks.DefaultTolerance), webhooks.ErrBadSignature)
	tampered := append([]byte(nil), hr.lastBody...)
	tampered[len(tampered)-2] ^= 1
	require.ErrorIs(t, webhooks.Verify(hr.secret, hr.lastHdr, tampered, time.Now(), webhooks.DefaultTolerance), webhooks.ErrBadSignature)
	require.ErrorIs(t, webhooks.Verify(hr.secret, hr.lastHdr, hr.lastBody, time.Now().Add(time.Hour), webhooks.DefaultTolerance), webhooks.ErrStale)
	require.ErrorIs(t, webhooks.Verify(hr.secret, http.Header{}, hr.lastBody, time.Now(), webhooks.DefaultTolerance), webhooks.ErrNoSignature)
}

// TestRepairedRecordingIsAnnounced: a recording a crash interrupted is
// repaired at the next start and then announced like one that ended
// (recording.finished) and queued for its mixdown.
func TestRepairedRecordingIsAnnounced(t *testing.T) {
	hr := &hookReceiver{t: t, secret: "hook-secret-0123456789", mode: "up",
		acked: map[string][]byte{}, ackCount: map[string]int{}, types: map[string]int{}}
	srv := httptest.NewServer(hr)
	t.Cleanup(srv.Close)
	s := stack.Start(t, stack.Options{Configure: func(c *config.Config) {
		c.Mixdown.Enabled = true
		c.Webhooks = []config.WebhookConfig{{URL: srv.URL, Secret: hr.secret}}
	}})
	ctx := s.Ctx()
	rec := s.App.DB.Recording.New("20260101T000000Z-crashed1", "!room:localhost", "20260101T000000Z-crashed1", time.Now().Add(-time.Minute))
	require.NoError(t, rec.Save(ctx)) // "recording", as a killed process leaves it
	s.RestartApp(t)

	require.Eventually(t, func() bool {
		hr.lock.Lock()
		defer hr.lock.Unlock()
		return hr.types["recording.finished"] == 1
	}, stack.Deadline, 50*time.Millisecond, "the repaired recording is announced")
	hr.lock.Lock()
	for _, body := range hr.acked {
		var ev webhooks.Event
		require.NoError(t, json.Unmarshal(body, &ev))
		require.Equal(t, rec.ID, ev.Recording.ID)
		// Repaired, or finished when there was nothing to repair.
		require.Contains(t, []storage.RecordingState{storage.StateRepaired, storage.StateFinished}, ev.Recording.State)
		require.NotNil(t, ev.Recording.EndedAt)
	}
	hr.lock.Unlock()
	m, err := s.App.DB.Mixdown.Get(ctx, rec.ID)
	require.NoError(t, err)
	require.NotNil(t, m, "a mixdown was asked for")
}

// counter is the value of a counter of the recorder's metrics with the
// given "result" label.
func counter(t *testing.T, s *stack.Stack, name, result string) float64 {
	t.Helper()
	mfs, err := s.App.Metrics.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRetentionInTheApp: with recordings.retention set, the recorder
// deletes an expired recording (files and rows) when it starts, keeps a
// recent one, and counts the deletion.
func TestRetentionInTheApp(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ctx := s.Ctx()
	add := func(recID storage.RecordingID, age time.Duration) {
		rec := s.App.DB.Recording.New(recID, "!room:localhost", string(recID), time.Now().Add(-age))
		rec.State, rec.EndedAt = storage.StateFinished, time.Now().Add(-age+time.Minute)
		require.NoError(t, rec.Save(ctx))
		local := filepath.Join(t.TempDir(), "a.ogg")
		require.NoError(t, os.WriteFile(local, []byte("x"), 0o600))
		require.NoError(t, s.App.Store.Put(ctx, rec.Folder, "a.ogg", local))
	}
	add("20200101T000000Z-expired1", 8*24*time.Hour)
	add("20200101T000000Z-recent01", 6*24*time.Hour)
	s.Config.Recordings.Retention = 7
	s.RestartApp(t)
	require.Eventually(t, func() bool {
		rec, err := s.App.DB.Recording.Get(ctx, "20200101T000000Z-expired1")
		require.NoError(t, err)
		return rec == nil
	}, stack.Deadline, 50*time.Millisecond, "the expired recording is deleted")
	_, err := os.Stat(filepath.Join(s.Config.Recordings.Path, "20200101T000000Z-expired1"))
	require.ErrorIs(t, err, os.ErrNotExist)
	rec, err := s.App.DB.Recording.Get(ctx, "20200101T000000Z-recent01")
	require.NoError(t, err)
	require.NotNil(t, rec)
	_, err = os.Stat(filepath.Join(s.Config.Recordings.Path, rec.Folder, "a.ogg"))
	require.NoError(t, err)
	mfs, err := s.App.Metrics.Registry.Gather()
	require.NoError(t, err)
	var expired float64
	for _, mf := range mfs {
		if mf.GetName() == "recorder_recordings_expired_total" {
			expired = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	require.InDelta(t, 1, expired, 0)
}
