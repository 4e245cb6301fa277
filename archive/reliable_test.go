package archive

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

// ivfFrames returns the frames of a test IVF file.
func ivfFrames(t *testing.T, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "media", name))
	require.NoError(t, err)
	defer f.Close()
	r, _, err := ivfreader.NewWith(f)
	require.NoError(t, err)
	var out [][]byte
	for {
		fr, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, append([]byte(nil), fr...))
	}
}

// sendVideo feeds VP8 frames at 30 fps into a track sink, starting at t0.
func sendVideo(t *testing.T, ts callbot.TrackSink, frames [][]byte, t0 time.Time) {
	t.Helper()
	p := rtp.NewPacketizerWithOptions(1200, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewRandomSequencer(), 90000,
		rtp.WithSSRC(2), rtp.WithPayloadType(96), rtp.WithTimestamp(0))
	for i, fr := range frames {
		at := t0.Add(time.Duration(i) * time.Second / 30)
		for _, pkt := range p.Packetize(fr, 3000) {
			require.NoError(t, ts.WriteRTP(pkt, at))
		}
	}
}

func videoTrack(peer callbot.PeerInfo) *callbot.RemoteTrack {
	return &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "v", Kind: webrtc.RTPCodecTypeVideo,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}},
		SSRC:  2, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() {}}
}

func audioTrack(peer callbot.PeerInfo) *callbot.RemoteTrack {
	return &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "a", Kind: webrtc.RTPCodecTypeAudio,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		SSRC:  1, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() {}}
}

// TestSegmentStoredWhenFinalized: a segment finished by a resolution change
// is stored and recorded right away, not only when the stream ends (a
// crash in between used to lose it).
func TestSegmentStoredWhenFinalized(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, _ := newTestRecorder(t)
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", UserID: "@recorder_1:localhost", DeviceID: "REC", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: "c1", UserID: "@bob:localhost", DeviceID: "BOB", SessionID: "s"}
	ts := r.TrackStarted(ctx, videoTrack(peer))
	require.NotNil(t, ts)
	big, small := ivfFrames(t, "vp8-320x240.ivf"), ivfFrames(t, "vp8-160x120.ivf")
	sendVideo(t, ts, append(append([][]byte(nil), big[:90]...), small[90:]...), t0)
	require.Eventually(t, func() bool {
		files, err := db.File.GetAll(ctx, "rec1")
		require.NoError(t, err)
		return len(files) == 1 && files[0].Segment == 0 && files[0].State == storage.StateFinished
	}, 10*time.Second, 10*time.Millisecond, "the first segment is not stored while the stream goes on")
	ts.Close()
	r.CallLeft(ctx, call, time.Now())
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	require.Len(t, files, 2)
	rec, err := db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
}

// crashedRecording is a recording row left in state by a crash, with its
// spool folder.
func crashedRecording(t *testing.T, db *storage.DB, root string, state storage.RecordingState) (*storage.Recording, string) {
	t.Helper()
	rec := db.Recording.New("rec1", "!room:localhost", "rec1", time.Now().Add(-time.Minute))
	rec.State = state
	require.NoError(t, rec.Save(testutil.Ctx(t)))
	spool := filepath.Join(root, spoolName, "rec1")
	require.NoError(t, os.MkdirAll(spool, 0o700))
	return rec, spool
}

func copyMedia(t *testing.T, to string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "media", "beeps-opus-48k-stereo.ogg"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o600))
}

// TestRecoverKeepsWhatItDoesNotKnow: a finished segment a crash left in
// the spool (renamed, not yet stored) is stored with a row; a file recovery
// does not account for is never deleted.
func TestRecoverKeepsWhatItDoesNotKnow(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	rec, spool := crashedRecording(t, db, root, storage.StateRecording)
	copyMedia(t, filepath.Join(spool, "bob-000.ogg"))
	copyMedia(t, filepath.Join(spool, "bob-001.ogg.part"))
	stray := filepath.Join(spool, "notes.txt")
	require.NoError(t, os.WriteFile(stray, []byte("?"), 0o600))

	_, err := r.Recover(ctx)
	require.NoError(t, err)
	files, err := db.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		_, err := os.Stat(filepath.Join(root, rec.Folder, f.Name))
		require.NoError(t, err, "row without file")
	}
	require.ElementsMatch(t, []string{"bob-000.ogg", "bob-001.ogg"}, names)
	_, err = os.Stat(stray)
	require.NoError(t, err, "recovery deleted a file it does not know")
}

// TestRecoverStoresPartsOfFailedRecordings: a recording that failed (a
// write error) still has the parts of its other streams; they are repaired
// and stored like any crash's.
func TestRecoverStoresPartsOfFailedRecordings(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	rec, spool := crashedRecording(t, db, root, storage.StateFailed)
	copyMedia(t, filepath.Join(spool, "bob-000.ogg.part"))
	_, err := r.Recover(ctx)
	require.NoError(t, err)
	files, err := db.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.Equal(t, "bob-000.ogg", files[0].Name)
	_, err = os.Stat(filepath.Join(spool, "bob-000.ogg.part"))
	require.ErrorIs(t, err, os.ErrNotExist)
	got, err := db.Recording.Get(ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateFailed, got.State)
}

// TestRejoinContinuesTheRecording: after a restart the call is recorded
// into the same recording; new files get names of their own and the
// manifest lists the files from before the restart too.
func TestRejoinContinuesTheRecording(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	t0 := time.Now().Add(-time.Minute)
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", UserID: "@recorder_1:localhost", DeviceID: "REC", SessionID: "one", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: "c1", UserID: "@bob:localhost", DeviceID: "BOB", SessionID: "s"}
	pkts := opusPackets(t)
	ts := r.TrackStarted(ctx, audioTrack(peer))
	sendAudio(t, ts, pkts, 50, t0)
	ts.Close()
	// The process dies here, after the file was stored: no CallLeft. A
	// new one recovers and rejoins.
	require.NoError(t, r.Stop(ctx))
	r2, err := New(Options{DB: db, Store: r.store, Dir: root})
	require.NoError(t, err)
	resume, err := r2.Recover(ctx)
	require.NoError(t, err)
	require.Len(t, resume, 1)
	require.Equal(t, storage.RecordingID("rec1"), resume[0].RecordingID)
	call2 := call
	call2.SessionID, call2.JoinedAt = "two", time.Now()
	r2.CallJoined(ctx, call2)
	ts = r2.TrackStarted(ctx, audioTrack(peer)) // same peer call: same base name
	sendAudio(t, ts, pkts, 50, time.Now())
	ts.Close()
	r2.CallLeft(ctx, call2, time.Now())

	rec, err := db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	require.WithinDuration(t, t0, rec.StartedAt, time.Millisecond)
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	require.Len(t, files, 2)
	require.NotEqual(t, files[0].Name, files[1].Name)
	data, err := os.ReadFile(filepath.Join(root, "rec1", recording.ManifestFileName))
	require.NoError(t, err)
	var m recording.Manifest
	require.NoError(t, json.Unmarshal(data, &m))
	require.Len(t, m.Tracks, 2, "the manifest lists the files from before the restart")
	require.WithinDuration(t, t0, m.Started, time.Millisecond)
}

// TestKeyframeRequestNotUnderTheCallLock: the writer asks for a key frame
// while it is created; that request (an RTCP write in a real call) runs
// without the recording's lock, so it can neither stall nor deadlock the
// call's other streams (here it reports a stream change, which takes the
// lock).
func TestKeyframeRequestNotUnderTheCallLock(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, _, _ := newTestRecorder(t)
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", ConfID: "conf", JoinedAt: time.Now()}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, ConfID: call.ConfID, CallID: "c1", UserID: "@alice:localhost", DeviceID: "DEV"}
	track := videoTrack(peer)
	track.RequestKeyframe = func() {
		r.StreamChanged(ctx, callbot.StreamChange{Peer: peer, StreamID: "other", At: time.Now()})
	}
	done := make(chan callbot.TrackSink, 1)
	go func() { done <- r.TrackStarted(ctx, track) }()
	select {
	case ts := <-done:
		require.NotNil(t, ts)
		ts.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("TrackStarted deadlocked: the key frame request ran under the call's lock")
	}
	r.CallLeft(ctx, call, time.Now())
}

// TestRecoverRecordsStoredFilesWithoutRow: a crash between storing a file
// and saving its row leaves a stored file nobody lists; recovery records
// it.
func TestRecoverRecordsStoredFilesWithoutRow(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	rec, _ := crashedRecording(t, db, root, storage.StateRecording)
	require.NoError(t, os.MkdirAll(filepath.Join(root, rec.Folder), 0o700))
	copyMedia(t, filepath.Join(root, rec.Folder, "bob-000.ogg"))
	_, err := r.Recover(ctx)
	require.NoError(t, err)
	files, err := db.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.Equal(t, "bob-000.ogg", files[0].Name)
	_, err = os.Stat(filepath.Join(root, rec.Folder, "bob-000.ogg"))
	require.NoError(t, err)
}

// TestAbandonClosesWithStopReason: a recording whose call ended while the
// recorder was down is closed with stop reason recorder_restarted, its
// files kept and its active call forgotten.
func TestAbandonClosesWithStopReason(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	rec, spool := crashedRecording(t, db, root, storage.StateRecording)
	copyMedia(t, filepath.Join(spool, "bob-000.ogg.part"))
	require.NoError(t, db.ActiveCall.Put(ctx, &storage.ActiveCall{RoomID: rec.RoomID, RecordingID: rec.ID, ConfID: "conf",
		UserID: "@recorder_1:localhost", DeviceID: "REC", SessionID: "old", JoinedAt: rec.StartedAt}))
	resume, err := r.Recover(ctx)
	require.NoError(t, err)
	require.Len(t, resume, 1)
	require.NoError(t, r.Abandon(ctx, rec.ID))
	got, err := db.Recording.Get(ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StateRepaired, got.State)
	require.Equal(t, storage.StopRecorderRestarted, got.StopReason)
	require.False(t, got.EndedAt.IsZero())
	files, err := db.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 1)
	calls, err := db.ActiveCall.GetAll(ctx)
	require.NoError(t, err)
	require.Empty(t, calls)
	_, err = os.Stat(filepath.Join(root, rec.Folder, recording.ManifestFileName))
	require.NoError(t, err)
}

// TestDeleteRemovesSpooledFiles: deleting a recording through the API also
// deletes what its spool folder still holds (a file the store refused keeps
// a row until then).
func TestDeleteRemovesSpooledFiles(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	rec, spool := crashedRecording(t, db, root, storage.StateFailed)
	copyMedia(t, filepath.Join(spool, "refused-000.ogg"))
	require.NoError(t, os.MkdirAll(filepath.Join(root, rec.Folder), 0o700))
	require.NoError(t, r.Files().DeleteFolder(ctx, rec.Folder))
	require.NoDirExists(t, spool)
	require.NoDirExists(t, filepath.Join(root, rec.Folder))
}
