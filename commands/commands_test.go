package commands

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/rooms"
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
		{ID: "r1", StartedAt: start.Add(-time.Hour), EndedAt: start.Add(-time.Hour + 90*time.Second), State: storage.StateFinished,
			StopReason: string(callbot.StopEmpty)},
	}}
	files := &fakeFiles{files: map[storage.RecordingID][]*storage.RecordingFile{"r1": {{}, {}, {}}, "r2": {{}}}}
	opts := Options{Recordings: recs, Files: files, Recording: config.Default().Recording}
	reply := list(ctx, opts, "!room:test", 5)
	require.Equal(t, 1, files.calls, "one file query for the whole list")
	require.Equal(t, storage.ListFilter{RoomID: "!room:test", Limit: 5}, recs.filter)
	require.Contains(t, reply, "* `r2` 2026-01-02 03:04 UTC, in progress, recording, 1 file(s)")
	require.Contains(t, reply, "* `r1` 2026-01-02 02:04 UTC, 1m30s, finished, 3 file(s), everyone else left the call (30s alone)")

	opts.PublicURL = "https://rec.example.org/"
	require.Contains(t, list(ctx, opts, "!room:test", 5), "[r1](https://rec.example.org/#rec=r1)")

	require.Contains(t, list(ctx, Options{Recordings: &fakeRecordings{}, Files: files}, "!room:test", 5), "no recordings")
	failed := list(ctx, Options{Recordings: &fakeRecordings{listErr: errors.New("db down")}, Files: files}, "!room:test", 5)
	require.Contains(t, failed, "couldn't read")
	require.Contains(t, failed, "reference `")
	require.NotContains(t, failed, "db down", "no internals in the room")
}

type fakeRoom struct {
	err    error
	joined bool
	status rooms.Status
	last   *storage.Recording
	active bool
}

func (fr fakeRoom) StartRecording(context.Context, id.RoomID, id.UserID) (callbot.CallStatus, error) {
	return callbot.CallStatus{UserID: "@recorder_1:test"}, fr.err
}
func (fr fakeRoom) StopRecording(context.Context, id.RoomID, id.UserID) error { return fr.err }
func (fr fakeRoom) RoomStatus(context.Context, id.RoomID) (rooms.Status, *storage.Recording, bool) {
	return fr.status, fr.last, fr.active
}
func (fr fakeRoom) SetAuto(context.Context, id.RoomID, bool) (bool, error) { return fr.joined, fr.err }
func (fr fakeRoom) Consent(context.Context, id.RoomID, id.UserID) error    { return fr.err }

func TestCommandReplies(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Recording
	require.Equal(t, "Joining the call as @recorder_1:test to record it.", start(ctx, fakeRoom{}, "!r:test", "@a:test"))
	require.Contains(t, start(ctx, fakeRoom{err: callbot.ErrAlreadyJoined}, "!r:test", "@a:test"), "already being recorded")
	require.Contains(t, start(ctx, fakeRoom{err: callbot.ErrNoCall}, "!r:test", "@a:test"), "no group call")
	require.Empty(t, start(ctx, fakeRoom{err: callbot.ErrPowerLevel}, "!r:test", "@a:test"), "the call bot's notice says which level")
	other := start(ctx, fakeRoom{err: errors.New("M_FORBIDDEN: secret internals")}, "!r:test", "@a:test")
	require.Contains(t, other, "homeserver or the recorder refused something (reference `")
	require.NotContains(t, other, "secret internals")
	require.Equal(t, "Left the call; the recording is stopped.", stop(ctx, fakeRoom{}, "!r:test", "@a:test"))
	require.Contains(t, stop(ctx, fakeRoom{err: callbot.ErrNotJoined}, "!r:test", "@a:test"), "not being recorded")

	joined := time.Now().Add(-time.Minute)
	st := status(ctx, fakeRoom{active: true, status: rooms.Status{
		Call: callbot.CallStatus{UserID: "@recorder_1:test", JoinedAt: joined, Peers: []callbot.PeerStatus{{
			PeerInfo: callbot.PeerInfo{UserID: "@alice:test", DeviceID: "ALICE"}, State: callbot.PeerConnected, Tracks: []string{"m.usermedia/audio/audio/opus"},
		}}},
		StartedBy: "@alice:test", Recorded: []id.UserID{"@alice:test"}, Bytes: 3 << 20,
	}}, "!r:test", cfg)
	require.Contains(t, st, "**Recording** the mesh call since")
	require.Contains(t, st, "started by @alice:test")
	require.Contains(t, st, "3.0 MiB received so far")
	require.Contains(t, st, "Recording: @alice:test")
	require.Contains(t, st, "* @alice:test (ALICE): connected, tracks m.usermedia/audio/audio/opus")
	require.Equal(t, "Not recording.", status(ctx, fakeRoom{}, "!r:test", cfg))
	// MatrixRTC in an encrypted room: whether keys are held, and why a
	// participant is not recorded yet.
	e2ee := status(ctx, fakeRoom{active: true, status: rooms.Status{
		Call: callbot.CallStatus{Kind: "matrixrtc", UserID: "@recorder_rtc1:test", JoinedAt: joined, Peers: []callbot.PeerStatus{
			{PeerInfo: callbot.PeerInfo{UserID: "@alice:test", DeviceID: "ALICE"}, State: callbot.PeerConnected, Encrypted: true, KeysHeld: 2},
			{PeerInfo: callbot.PeerInfo{UserID: "@bob:test", DeviceID: "BOB"}, State: callbot.PeerConnected, Encrypted: true,
				Note: "media is end-to-end encrypted and no key has arrived from this device yet: not recorded"},
		}},
	}}, "!r:test", cfg)
	require.Contains(t, e2ee, "* @alice:test (ALICE): connected, end-to-end encrypted media (2 keys)\n")
	require.Contains(t, e2ee, "* @bob:test (BOB): connected, end-to-end encrypted media (0 keys): media is end-to-end encrypted and no key has arrived")
	require.Contains(t, status(ctx, fakeRoom{last: &storage.Recording{ID: "r1", StopReason: string(callbot.StopNoMedia)}}, "!r:test", cfg),
		"no audio or video arrived for 5m0s")

	require.Contains(t, auto(ctx, fakeRoom{}, "!r:test", nil, "!rec"), "Usage: `!rec auto on`")
	require.Contains(t, auto(ctx, fakeRoom{}, "!r:test", []string{"on"}, "!rec"), "every call that starts")
	require.Contains(t, auto(ctx, fakeRoom{joined: true}, "!r:test", []string{"on"}, "!rec"), "I'm joining it")
	require.Contains(t, auto(ctx, fakeRoom{}, "!r:test", []string{"off"}, "!rec"), "Auto-record is off")
	require.Contains(t, consent(ctx, fakeRoom{}, "!r:test", "@a:test", true), "recorded from now on")
	require.Contains(t, consent(ctx, fakeRoom{err: errors.New("db")}, "!r:test", "@a:test", true), "reference `")
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
	reply := list(ctx, Options{Recordings: recs, Files: files, Recording: config.Default().Recording, RetentionDays: 30}, "!room:test", 5)
	require.Contains(t, reply, "* `r2` 2026-01-02 03:04 UTC, in progress, recording, 1 file(s)\n", "a recording in progress does not expire")
	require.Contains(t, reply, "* `r1` 2026-01-02 02:04 UTC, 1m30s, finished, 1 file(s), mixed down, expires 2026-02-01 02:04 UTC")

}

// TestOutsideTextIsEscaped: what participants choose (device IDs, stream
// purposes, user IDs with '_') cannot format the bot's notices or put
// links in them.
func TestOutsideTextIsEscaped(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default().Recording
	st := status(ctx, fakeRoom{active: true, status: rooms.Status{
		Call: callbot.CallStatus{UserID: "@recorder_1:test", JoinedAt: time.Now(), Peers: []callbot.PeerStatus{{
			PeerInfo: callbot.PeerInfo{UserID: "@_evil_:test", DeviceID: "**[click](https://evil.example)**"}, State: callbot.PeerConnected,
			Tracks: []string{"[x](https://evil.example)/video/VP8"},
		}}},
		StartedBy: "@_evil_:test",
	}}, "!r:test", cfg)
	rendered := format.RenderMarkdown(st, true, false)
	require.NotContains(t, rendered.FormattedBody, "<a ", "no links from participants")
	require.NotContains(t, rendered.FormattedBody, "<strong>click", "no formatting from participants")
	require.NotContains(t, rendered.FormattedBody, "<em>evil", "no emphasis from '_' in user IDs")
	require.Contains(t, rendered.Body, "@_evil_:test")
}

// TestOperatorRecordingsAreTheOperators: a recording started through the
// API is stopped by recorder admins (or the API), not by any member who
// may stop recordings, unless configured.
func TestOperatorRecordingsAreTheOperators(t *testing.T) {
	ctx := context.Background()
	room := fakeRoom{active: true, status: rooms.Status{ByOperator: true}}
	opts := Options{Room: room}
	require.Contains(t, stopAsked(ctx, opts, "!r:test", "@a:test", config.PermissionUser), "started by the recorder's operator")
	require.Contains(t, stopAsked(ctx, opts, "!r:test", "@admin:test", config.PermissionAdmin), "recording is stopped")
	opts.MembersStopOperatorRecordings = true
	require.Contains(t, stopAsked(ctx, opts, "!r:test", "@a:test", config.PermissionUser), "recording is stopped")
	member := Options{Room: fakeRoom{active: true, status: rooms.Status{StartedBy: "@a:test"}}}
	require.Contains(t, stopAsked(ctx, member, "!r:test", "@b:test", config.PermissionUser), "recording is stopped")
}
