package recording

import (
	"testing"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/stretchr/testify/require"
)

func TestNewStreamWriterRejectsUnsafeBaseName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "../x", "a/b", "@alice:example.org", ".hidden"} {
		_, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: t.TempDir(), BaseName: name, Audio: &TrackParams{MimeType: MimeTypeOpus}})
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	_, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{Dir: t.TempDir(), BaseName: "x", Video: &TrackParams{MimeType: "video/H264"}})
	require.ErrorIs(t, err, ErrUnsupportedCodec)
}
