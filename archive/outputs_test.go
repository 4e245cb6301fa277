package archive

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
)

type fakeEvents struct {
	lock  sync.Mutex
	calls []string
	ended *storage.Recording
}

func (fe *fakeEvents) RecordingStarted(_ context.Context, rec *storage.Recording) {
	fe.lock.Lock()
	defer fe.lock.Unlock()
	fe.calls = append(fe.calls, "started "+string(rec.ID)+" "+rec.RoomName)
}

func (fe *fakeEvents) RecordingEnded(_ context.Context, rec *storage.Recording) {
	fe.lock.Lock()
	defer fe.lock.Unlock()
	fe.calls = append(fe.calls, "ended "+string(rec.ID)+" "+string(rec.State))
	fe.ended = rec
}

type fakeProfiles struct{}

func (fakeProfiles) RoomName(context.Context, id.RoomID) string { return "Standup" }

func (fakeProfiles) Member(_ context.Context, _ id.RoomID, userID id.UserID) (string, string) {
	return "Name of " + userID.Localpart(), "mxc://test/" + userID.Localpart()
}

// TestEventsAndNames: the archive tells Events when a recording starts
// (with the room's name) and when it has ended (after its rows and
// manifest), and keeps each participant's name in the rows and manifest.
func TestEventsAndNames(t *testing.T) {
	ctx := testutil.Ctx(t)
	r, db, root := newTestRecorder(t)
	ev := &fakeEvents{}
	r.events, r.names = ev, fakeProfiles{}
	t0 := time.Now()
	call := callbot.CallInfo{ID: "rec1", RoomID: "!room:localhost", JoinedAt: t0}
	r.CallJoined(ctx, call)
	peer := callbot.PeerInfo{RoomID: call.RoomID, CallID: "c1", UserID: "@alice:localhost", DeviceID: "DEV"}
	ts := r.TrackStarted(ctx, &callbot.RemoteTrack{Peer: peer, StreamID: "s", TrackID: "a", Kind: webrtc.RTPCodecTypeAudio,
		Codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		SSRC:  1, Purpose: signaling.PurposeUserMedia, RequestKeyframe: func() {}})
	require.NotNil(t, ts)
	sendAudio(t, ts, opusPackets(t), 100, t0)
	ts.Close()
	r.CallLeft(ctx, call, time.Now())

	require.Equal(t, []string{"started rec1 Standup", "ended rec1 finished"}, ev.calls)
	rec, err := db.Recording.Get(ctx, "rec1")
	require.NoError(t, err)
	require.Equal(t, "Standup", rec.RoomName)
	require.Empty(t, rec.StopReason)
	files, err := db.File.GetAll(ctx, "rec1")
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.Equal(t, "Name of alice", files[0].DisplayName)
	require.Equal(t, "mxc://test/alice", files[0].AvatarURL)
	data, err := os.ReadFile(filepath.Join(root, rec.Folder, recording.ManifestFileName))
	require.NoError(t, err, "the manifest is stored before RecordingEnded")
	var man recording.Manifest
	require.NoError(t, json.Unmarshal(data, &man))
	require.Equal(t, "Standup", man.RoomName)
	require.Equal(t, "Name of alice", man.Tracks[0].DisplayName)
	require.Equal(t, "mxc://test/alice", man.Tracks[0].AvatarURL)
}
