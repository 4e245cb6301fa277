package recording

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewStreamWriterRejectsUnsafeBaseName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "../x", "a/b", "@alice:example.org", ".hidden"} {
		_, err := NewStreamWriter(testCtx(t), StreamConfig{Dir: t.TempDir(), BaseName: name, Audio: &TrackParams{MimeType: MimeTypeOpus}})
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	_, err := NewStreamWriter(testCtx(t), StreamConfig{Dir: t.TempDir(), BaseName: "x", Video: &TrackParams{MimeType: "video/H264"}})
	require.ErrorIs(t, err, ErrUnsupportedCodec)
}
