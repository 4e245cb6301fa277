package commands

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/storage"
)

type fakeRecordings struct {
	rows    []*storage.Recording
	listErr error
	filter  storage.ListFilter
}

func (fr *fakeRecordings) List(_ context.Context, f storage.ListFilter) ([]*storage.Recording, error) {
	fr.filter = f
	return fr.rows, fr.listErr
}

type fakeFiles struct {
	calls int
	files map[storage.RecordingID][]*storage.RecordingFile
}

func (ff *fakeFiles) GetAllFor(_ context.Context, ids []storage.RecordingID) (map[storage.RecordingID][]*storage.RecordingFile, error) {
	ff.calls++
	out := map[storage.RecordingID][]*storage.RecordingFile{}
	for _, recID := range ids {
		out[recID] = ff.files[recID]
	}
	return out, nil
}

func TestListReadsFilesInOneQuery(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	recs := &fakeRecordings{rows: []*storage.Recording{
		{ID: "r2", StartedAt: start, State: storage.StateRecording},
		{ID: "r1", StartedAt: start.Add(-time.Hour), EndedAt: start.Add(-time.Hour + 90*time.Second), State: storage.StateFinished},
	}}
	files := &fakeFiles{files: map[storage.RecordingID][]*storage.RecordingFile{"r1": {{}, {}, {}}, "r2": {{}}}}
	reply := list(ctx, recs, files, "!room:test", 0)
	require.Equal(t, 1, files.calls, "one file query for the whole list")
	require.Equal(t, storage.ListFilter{RoomID: "!room:test", Limit: ListLimit}, recs.filter)
	require.Contains(t, reply, "* `r2` 2026-01-02 03:04 UTC, in progress, recording, 1 file(s)")
	require.Contains(t, reply, "* `r1` 2026-01-02 02:04 UTC, 1m30s, finished, 3 file(s)")

	require.Contains(t, list(ctx, &fakeRecordings{}, files, "!room:test", 0), "no recordings")
	require.Contains(t, list(ctx, &fakeRecordings{listErr: errors.New("db down")}, files, "!room:test", 0), "couldn't read")
}

type fakeCalls struct{ err error }

func (fc fakeCalls) Join(context.Context, id.RoomID) (callbot.CallStatus, error) {
	return callbot.CallStatus{UserID: "@recorder_1:test"}, fc.err
}
func (fc fakeCalls) Leave(context.Context, id.RoomID) error { return fc.err }
func (fc fakeCalls) Status(context.Context, id.RoomID) (callbot.CallStatus, error) {
	return callbot.CallStatus{UserID: "@recorder_1:test", Peers: []callbot.PeerStatus{{
		PeerInfo: callbot.PeerInfo{UserID: "@alice:test", DeviceID: "ALICE"}, State: callbot.PeerConnected, Tracks: []string{"m.usermedia/audio/audio/opus"},
	}}}, fc.err
}

func TestCallCommandReplies(t *testing.T) {
	ctx := context.Background()
	require.Equal(t, "Joining the call as @recorder_1:test.", start(ctx, fakeCalls{}, "!r:test"))
	require.Contains(t, start(ctx, fakeCalls{err: callbot.ErrAlreadyJoined}, "!r:test"), "already")
	require.Contains(t, start(ctx, fakeCalls{err: callbot.ErrNoCall}, "!r:test"), "no group call")
	require.Empty(t, start(ctx, fakeCalls{err: callbot.ErrPowerLevel}, "!r:test"), "the power level notice already went out")
	require.Equal(t, "Left the call.", stop(ctx, fakeCalls{}, "!r:test"))
	require.Contains(t, stop(ctx, fakeCalls{err: callbot.ErrNotJoined}, "!r:test"), "not in this room's call")
	require.Contains(t, status(ctx, fakeCalls{}, "!r:test"), "* @alice:test (ALICE): connected, tracks m.usermedia/audio/audio/opus")
	require.Contains(t, status(ctx, fakeCalls{err: callbot.ErrNotJoined}, "!r:test"), "not in this room's call")
}

// TestOutputsInReplies: `list` says when recordings expire and counts a
// mixdown apart.
func TestOutputsInReplies(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	recs := &fakeRecordings{rows: []*storage.Recording{
		{ID: "r2", StartedAt: start, State: storage.StateRecording},
		{ID: "r1", StartedAt: start.Add(-time.Hour), EndedAt: start.Add(-time.Hour + 90*time.Second), State: storage.StateFinished},
	}}
	files := &fakeFiles{files: map[storage.RecordingID][]*storage.RecordingFile{
		"r1": {{}, {Purpose: storage.PurposeMixdown}}, "r2": {{}},
	}}
	reply := list(ctx, recs, files, "!room:test", 30)
	require.Contains(t, reply, "* `r2` 2026-01-02 03:04 UTC, in progress, recording, 1 file(s)\n", "a recording in progress does not expire")
	require.Contains(t, reply, "* `r1` 2026-01-02 02:04 UTC, 1m30s, finished, 1 file(s), mixed down, expires 2026-02-01 02:04 UTC")

}
