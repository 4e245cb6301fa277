package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/metrics"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// newTestRecorder is a Recorder on a fresh SQLite database and local store.
func newTestRecorder(t *testing.T) (*Recorder, *storage.DB, string) {
	t.Helper()
	ctx := testutil.Ctx(t)
	dir := t.TempDir()
	db, err := storage.Open(ctx, storage.Options{Type: "sqlite3-fk-wal", URI: "file:" + filepath.Join(dir, "db.sqlite") + "?_txlock=immediate", MaxOpenConns: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	root := filepath.Join(dir, "recordings")
	store, err := storage.NewLocalStore(root)
	require.NoError(t, err)
	r, err := New(Options{DB: db, Store: store, Dir: root})
	require.NoError(t, err)
	return r, db, root
}

// opusPackets returns the test media's Opus packets.
func opusPackets(t *testing.T) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "media", "beeps-opus-48k-stereo.ogg"))
	require.NoError(t, err)
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	require.NoError(t, err)
	var out [][]byte
	for {
		payload, hdr, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if bytes.HasPrefix(payload, []byte("OpusTags")) || hdr.GranulePosition == 0 {
			continue
		}
		out = append(out, append([]byte(nil), payload...))
	}
}

// sendAudio feeds n 20 ms Opus packets into a track sink, starting at t0.
func sendAudio(t *testing.T, ts callbot.TrackSink, pkts [][]byte, n int, t0 time.Time) {
	t.Helper()
	for i := range n {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 960), SSRC: 1},
			Payload: pkts[i%len(pkts)]}
		require.NoError(t, ts.WriteRTP(p, t0.Add(time.Duration(i)*20*time.Millisecond)))
	}
}

// TestStreamsWithSamePurposeKeepTheirFiles: a participant whose screen
// share stops and starts again in one call (two streams, same purpose)
// gets two files and two rows; nothing is overwritten.
func TestStreamsWithSamePurposeKeepTheirFiles(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, _ := newTestRecorder(t)
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", UserID: "@recorder_1:localhost", DeviceID: "REC", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: "c1", UserID: "@bob:localhost", DeviceID: "FZ1Buwm-", SessionID: "s"}
	pkts := opusPackets(t)
	for i, stream := range []string{"share-one", "share-two"} {
		ts := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: stream, TrackID: stream + "-a", Kind: webrtc.RTPCodecTypeAudio,
			Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
			SSRC:  1, Purpose: signaling.PurposeScreenshare, RequestKeyframe: func() {}})
		require.NotNil(t, ts)
		sendAudio(t, ts, pkts, 50*(i+1), t0.Add(time.Duration(i)*3*time.Second))
		ts.Close()
	}
	r.CallLeft(ctx, call, t0.Add(10*time.Second))

	rec, err := db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	require.Len(t, files, 2, "both screen shares are kept")
	require.NotEqual(t, files[0].Name, files[1].Name)
	require.InDelta(t, 1.0, files[0].Duration.Seconds()+files[1].Duration.Seconds()-2, 0.2, "1 s and 2 s of audio")
	for _, f := range files {
		sf, err := r.store.Open(ctx, rec.Folder, f.Name)
		require.NoError(t, err)
		require.Equal(t, f.Bytes, sf.Size)
		require.NoError(t, sf.Close())
	}
}

// TestKeyframeRequestsReachTheVideoTrack: browsers announce the microphone
// track before the camera; the stream's writer must still ask the camera
// for key frames (not the audio track it was created with).
func TestKeyframeRequestsReachTheVideoTrack(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, _, _ := newTestRecorder(t)
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", JoinedAt: time.Now()}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: "c1", UserID: "@alice:localhost", DeviceID: "DEV"}
	var audioPLIs, videoPLIs atomic.Int64
	audio := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "a", Kind: webrtc.RTPCodecTypeAudio,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		SSRC:  1, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() { audioPLIs.Add(1) }})
	require.NotNil(t, audio)
	video := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "v", Kind: webrtc.RTPCodecTypeVideo,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}},
		SSRC:  2, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() { videoPLIs.Add(1) }})
	require.NotNil(t, video)
	require.Positive(t, videoPLIs.Load(), "the camera is asked for a key frame as soon as it appears")
	require.Zero(t, audioPLIs.Load())
	audio.Close()
	video.Close()
	r.CallLeft(ctx, call, time.Now())
}

// TestSpoolIsOwnerOnly: the spool holds private conversations in progress.
func TestSpoolIsOwnerOnly(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, _, root := newTestRecorder(t)
	r.CallJoined(ctx, callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", JoinedAt: time.Now()})
	for _, dir := range []string{filepath.Join(root, spoolName), filepath.Join(root, spoolName, "rec1")} {
		info, err := os.Stat(dir)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), info.Mode().Perm(), dir)
	}
	r.CallLeft(ctx, callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost"}, time.Now())
	info, err := os.Stat(filepath.Join(root, "rec1", "manifest.json"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

// TestLiveMetrics: bytes and frames written move while recording, not only
// when a file closes.
func TestLiveMetrics(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, _, _ := newTestRecorder(t)
	met := metrics.New()
	r.met = met
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, CallID: "c1", UserID: "@alice:localhost", DeviceID: "DEV"}
	ts := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "a", Kind: webrtc.RTPCodecTypeAudio,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		SSRC:  1, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() {}})
	require.NotNil(t, ts)
	sendAudio(t, ts, opusPackets(t), 3*reportEvery, t0)
	require.Eventually(t, func() bool {
		return promtest.ToFloat64(met.FramesWritten) > 0 && promtest.ToFloat64(met.BytesWritten) > 0
	}, 10*time.Second, 10*time.Millisecond, "frames and bytes are counted while recording")
	ts.Close()
	r.CallLeft(ctx, call, time.Now())
}

// TestRecordingSizeLimit: a recording that reaches its size limit is
// stopped (once) with the reason; with the disk full no new call is
// recorded.
func TestRecordingSizeLimit(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, _, _ := newTestRecorder(t)
	stops := make(chan string, 4)
	r.limits = Limits{MaxRecordingBytes: 10_000, OnLimit: func(_ context.Context, roomID id.RoomID, reason callbot.StopReason) {
		stops <- string(roomID) + " " + string(reason)
	}}
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, CallID: "c1", UserID: "@alice:localhost", DeviceID: "DEV"}
	ts := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "a", Kind: webrtc.RTPCodecTypeAudio,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		SSRC:  1, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() {}})
	require.NotNil(t, ts)
	sendAudio(t, ts, opusPackets(t), 8*reportEvery, t0)
	r.WaitStops()
	require.Equal(t, "!room:localhost "+string(StopReasonSizeLimit), <-stops)
	require.Empty(t, stops, "stopped once")
	ts.Close()
	call.StopReason = StopReasonSizeLimit // what the call bot reports after LeaveFor
	r.CallLeft(ctx, call, time.Now())
	rec, err := r.db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, string(StopReasonSizeLimit), rec.StopReason, "the reason is kept with the recording")

	r.limits.MaxDiskBytes = 1 // whatever is on disk is too much
	r.disk = newDiskUsage(r.disk.dir)
	r.CallJoined(ctx, callbot.CallInfo{ID: "rec2", RoomID: "!other:localhost", JoinedAt: t0})
	r.WaitStops()
	require.Equal(t, "!other:localhost "+string(StopReasonDiskFull), <-stops)
	require.Nil(t, r.call("!other:localhost"), "not recorded")
}

// stallFile is a recording file on a disk that stalls: its writes wait
// while stall says so.
type stallFile struct {
	recording.File
	stall func()
}

func (f stallFile) Write(p []byte) (int, error) {
	f.stall()
	return f.File.Write(p)
}

func (f stallFile) WriteAt(p []byte, off int64) (int, error) {
	f.stall()
	return f.File.WriteAt(p, off)
}

// TestSlowWriterDoesNotStallReaders: alice's files sit on a disk that
// stalls. Her track's reader still hands over every packet at once, bob's
// stream keeps being written meanwhile, the queue's depth shows as the
// high-water mark, and once the queue is full the overflow is dropped and
// counted instead of blocking. When the disk comes back everything queued
// is written: her file spans all she sent, the dropped packets as a gap.
func TestSlowWriterDoesNotStallReaders(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, _ := newTestRecorder(t)
	met := metrics.New()
	r.met = met
	var stalled, waited atomic.Bool
	resume := make(chan struct{})
	var resumeOnce sync.Once
	unstall := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(unstall)
	r.create = func(path string) (recording.File, error) {
		f, err := recording.CreateFile(path)
		if err != nil || !strings.Contains(filepath.Base(path), "alice") {
			return f, err
		}
		return stallFile{File: f, stall: func() {
			if stalled.Load() {
				waited.Store(true)
				<-resume
			}
		}}, nil
	}
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", UserID: "@recorder_1:localhost", DeviceID: "REC", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := func(user id.UserID) callbot.PeerInfo {
		return callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: signaling.CallID("c-" + user.Localpart()), UserID: user, DeviceID: "DEV", SessionID: "s"}
	}
	alice := r.TrackStarted(ctx, audioTrack(peer("@alice:localhost")))
	bob := r.TrackStarted(ctx, audioTrack(peer("@bob:localhost")))
	require.NotNil(t, alice)
	require.NotNil(t, bob)
	stalled.Store(true)

	// send writes packets [from, to) of 20 ms Opus to a sink, with a
	// sender report every 100 (as the track's RTCP reader would, under
	// the same lock in callbot), and returns the longest a call took; it
	// fails the test (and lets the disk go on) if the calls do not come
	// back within a deadline.
	pkts := opusPackets(t)
	send := func(ts callbot.TrackSink, from, to int) time.Duration {
		done := make(chan time.Duration, 1)
		go func() {
			var slowest time.Duration
			for i := from; i < to; i++ {
				at := t0.Add(time.Duration(i) * 20 * time.Millisecond)
				p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 960), SSRC: 1},
					Payload: pkts[i%len(pkts)]}
				start := time.Now()
				_ = ts.WriteRTP(p, at)
				if i%100 == 99 {
					ts.SenderReport(recording.TimeToNTP(at), p.Timestamp, at)
				}
				slowest = max(slowest, time.Since(start))
			}
			done <- slowest
		}()
		select {
		case d := <-done:
			return d
		case <-time.After(10 * time.Second):
			unstall()
			require.FailNow(t, "a track's reader is stalled by its writer's disk")
			return 0
		}
	}
	const n = 500 // 10 s of audio by arrival time
	slowest := send(alice, 0, n)
	send(bob, 0, n)
	require.Eventually(t, waited.Load, 10*time.Second, 10*time.Millisecond, "alice's writer never reached the stalled disk")
	// The call's loop tells of a mute (2 s to 4 s) meanwhile: it must not
	// wait either.
	muted := make(chan struct{})
	go func() {
		for i, on := range []bool{true, false} {
			r.StreamChanged(ctx, callbot.StreamChange{Peer: peer("@alice:localhost"), StreamID: "s", Purpose: signaling.PurposeUserMedia,
				AudioMuted: on, At: t0.Add(time.Duration(2+2*i) * time.Second)})
		}
		close(muted)
	}()
	select {
	case <-muted:
	case <-time.After(10 * time.Second):
		unstall()
		require.FailNow(t, "the call's loop is stalled by a writer's disk")
	}
	stream := func(key string) *streamRec {
		c := r.call(call.RoomID)
		c.lock.Lock()
		defer c.lock.Unlock()
		return c.streams[key]
	}
	bobStream := stream(streamKey("c-bob", "s"))
	require.Eventually(t, func() bool { return bobStream.w.Stats().Bytes > 0 }, 10*time.Second, 10*time.Millisecond,
		"bob's stream is not written while alice's disk stalls")
	aliceStream := stream(streamKey("c-alice", "s"))
	waiting := aliceStream.queue.len()
	high := promtest.ToFloat64(met.WriteQueueHighWater)
	t.Logf("slowest write into the stalled stream %v; %d packets wait in her queue; high-water mark %.0f", slowest, waiting, high)
	require.Less(t, slowest, 100*time.Millisecond)
	// All but what went in before her first file was opened (the writer
	// holds 1.5 s for sender reports).
	require.GreaterOrEqual(t, waiting, n-100, "alice's packets wait in her queue")
	require.GreaterOrEqual(t, high, float64(waiting))
	require.Zero(t, promtest.ToFloat64(met.WriteQueueDropped))

	// Past the queue's size: the overflow is dropped and counted, the
	// reader still does not wait.
	slowest = send(alice, n, n+queueSize)
	require.Less(t, slowest, 100*time.Millisecond)
	qHigh, qDropped := aliceStream.queue.stats()
	require.Equal(t, queueSize, qHigh)
	require.Positive(t, qDropped)
	require.InDelta(t, float64(qDropped), promtest.ToFloat64(met.WriteQueueDropped), 0)
	require.InDelta(t, float64(queueSize), promtest.ToFloat64(met.WriteQueueHighWater), 0)

	// The disk comes back: the queue is written, and what alice sends
	// next follows the dropped packets' gap.
	unstall()
	require.Eventually(t, func() bool { return aliceStream.queue.len() == 0 }, 10*time.Second, 10*time.Millisecond)
	const more = 50
	send(alice, n+queueSize, n+queueSize+more)
	alice.Close()
	bob.Close()
	r.CallLeft(ctx, call, time.Now())
	rec, err := db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	require.Len(t, files, 2)
	for _, f := range files {
		want := float64(n) * 0.02
		if f.UserID == "@alice:localhost" {
			want = float64(n+queueSize+more) * 0.02 // the dropped packets are a gap, not a shorter file
		}
		t.Logf("%s: %v, mutes %v", f.Name, f.Duration, f.MuteIntervals)
		require.InDelta(t, want, f.Duration.Seconds(), 0.1, f.Name)
		if f.UserID == "@alice:localhost" {
			require.Len(t, f.MuteIntervals, 1, "the mute told while the disk stalled is kept")
			require.WithinDuration(t, t0.Add(2*time.Second), f.MuteIntervals[0].Start, 50*time.Millisecond)
			require.WithinDuration(t, t0.Add(4*time.Second), f.MuteIntervals[0].End, 50*time.Millisecond)
		}
	}
}

// panicFile panics on its first write (a bug deep in a writer).
type panicFile struct{ recording.File }

func (panicFile) Write([]byte) (int, error) { panic("write bug") }

// TestWriterPanicContainedToStream: a panic while writing a queued packet
// stops that stream only: it is counted, the track's reader is told with
// an error, the other stream is recorded, and the recording still ends.
func TestWriterPanicContainedToStream(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, _ := newTestRecorder(t)
	met := metrics.New()
	r.met = met
	r.create = func(path string) (recording.File, error) {
		f, err := recording.CreateFile(path)
		if err != nil || !strings.Contains(filepath.Base(path), "alice") {
			return f, err
		}
		return panicFile{f}, nil
	}
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", UserID: "@recorder_1:localhost", DeviceID: "REC", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := func(user id.UserID) callbot.PeerInfo {
		return callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: signaling.CallID("c-" + user.Localpart()), UserID: user, DeviceID: "DEV", SessionID: "s"}
	}
	alice := r.TrackStarted(ctx, audioTrack(peer("@alice:localhost")))
	bob := r.TrackStarted(ctx, audioTrack(peer("@bob:localhost")))
	pkts := opusPackets(t)
	sendAudio(t, bob, pkts, 200, t0)
	var err error
	require.Eventually(t, func() bool {
		// Past the sync wait the writer opens its file and panics; the
		// reader learns it from a later write.
		for i := 0; i < 100 && err == nil; i++ {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(i), Timestamp: uint32(i * 960), SSRC: 1},
				Payload: pkts[i%len(pkts)]}
			err = alice.WriteRTP(p, t0.Add(time.Duration(i)*20*time.Millisecond))
		}
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the reader of the stream that panicked is never told")
	require.ErrorIs(t, err, errStreamPanicked)
	require.Positive(t, promtest.ToFloat64(met.Panics.WithLabelValues("stream")))
	alice.Close()
	bob.Close()
	r.CallLeft(ctx, call, time.Now())
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	var bobs int
	for _, f := range files {
		if f.UserID == "@bob:localhost" && f.State == storage.StateFinished {
			bobs++
			require.InDelta(t, 4.0, f.Duration.Seconds(), 0.1)
		}
	}
	require.Equal(t, 1, bobs, "bob's stream is recorded: %+v", files)
}
