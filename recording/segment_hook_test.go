package recording

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/storage/naming"
)

// TestOnSegmentReportsEachFinishedFile: a segment finished by a resolution
// change is reported while the writer is still open (so the archive can
// store it at once), and the last one when Close finalizes it.
func TestOnSegmentReportsEachFinishedFile(t *testing.T) {
	t.Parallel()
	vp8 := loadIVF(t, "vp8-320x240.ivf")
	small := loadIVF(t, "vp8-160x120.ivf")
	frames := append(append([][]byte(nil), vp8[:90]...), small[90:]...)
	var lock sync.Mutex
	var got []FileResult
	cfg := StreamConfig{
		Dir: t.TempDir(), BaseName: naming.Safe("@alice:example.org", "DEV", "hook"),
		Video: &TrackParams{MimeType: MimeTypeVP8, ClockRate: 90000, SSRC: 2222},
		OnSegment: func(res FileResult) {
			lock.Lock()
			defer lock.Unlock()
			got = append(got, res)
		},
	}
	w, err := NewStreamWriter(testutil.Ctx(t), cfg)
	require.NoError(t, err)
	require.NoError(t, feed(w, packetizeVideo(frames, srcOpts{ssrc: 2222, codec: MimeTypeVP8, fps: 30}, t0)))
	lock.Lock()
	require.Len(t, got, 1, "the first segment is reported when the resolution changes")
	require.Equal(t, 0, got[0].Segment)
	_, err = os.Stat(got[0].Path)
	require.NoError(t, err, "a reported segment has its final name")
	lock.Unlock()
	res, err := w.Close(testutil.Ctx(t))
	require.NoError(t, err)
	lock.Lock()
	defer lock.Unlock()
	require.Len(t, got, 2)
	require.Equal(t, res, got)
}

// TestRepairRemovesWebMWithoutCluster: a WebM part cut off before its first
// cluster (a kill right after a segment was opened, e.g. at a resolution
// change) holds no media: it is removed like an Ogg with only its headers,
// not kept in the spool for ever.
func TestRepairRemovesWebMWithoutCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: dir, BaseName: "v",
		Video: &TrackParams{MimeType: MimeTypeVP8, ClockRate: 90000, SSRC: 2222}})
	require.NoError(t, err)
	require.NoError(t, feed(w, packetizeVideo(loadIVF(t, "vp8-320x240.ivf")[:60], srcOpts{ssrc: 2222, codec: MimeTypeVP8, fps: 30}, t0)))
	res, err := w.Close(testutil.Ctx(t))
	require.NoError(t, err)
	data, err := os.ReadFile(res[0].Path)
	require.NoError(t, err)
	cluster := bytes.Index(data, []byte{0x1F, 0x43, 0xB6, 0x75})
	require.Positive(t, cluster)
	part := filepath.Join(dir, "cut-000.webm.part")
	require.NoError(t, os.WriteFile(part, data[:cluster], 0o600))

	got, err := Repair(testutil.Ctx(t), dir)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.True(t, got[0].Removed)
	require.NoFileExists(t, part)
}

// TestRepairRemovesWebMOfOneInstant: a part whose blocks all have one
// timestamp (a single key frame) has no span to play and is removed.
func TestRepairRemovesWebMOfOneInstant(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: dir, BaseName: "v",
		Video: &TrackParams{MimeType: MimeTypeVP8, ClockRate: 90000, SSRC: 2222}})
	require.NoError(t, err)
	require.NoError(t, feed(w, packetizeVideo(loadIVF(t, "vp8-320x240.ivf")[:60], srcOpts{ssrc: 2222, codec: MimeTypeVP8, fps: 30}, t0)))
	res, err := w.Close(testutil.Ctx(t))
	require.NoError(t, err)
	data, err := os.ReadFile(res[0].Path)
	require.NoError(t, err)
	// Keep the headers and the first cluster up to its first block's end.
	cluster := bytes.Index(data, []byte{0x1F, 0x43, 0xB6, 0x75})
	require.Positive(t, cluster)
	block := bytes.Index(data[cluster:], []byte{0xA3}) + cluster
	require.Greater(t, block, cluster)
	// 0xA3, a size vint, then the block: cut just after the first block.
	size, n := int(data[block+1]), 1
	switch {
	case size&0x80 != 0:
		size &= 0x7F
	case size&0x40 != 0:
		size, n = (size&0x3F)<<8|int(data[block+2]), 2
	default:
		size, n = (size&0x1F)<<16|int(data[block+2])<<8|int(data[block+3]), 3
	}
	part := filepath.Join(dir, "one-000.webm.part")
	require.NoError(t, os.WriteFile(part, data[:block+1+n+size], 0o600))

	got, err := Repair(testutil.Ctx(t), dir)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.True(t, got[0].Removed, "%+v", got[0])
	require.NoFileExists(t, part)
}
