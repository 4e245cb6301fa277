package recording

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSafeName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   []string
		want string // "" = only check the invariants
	}{
		{name: "matrix user", in: []string{"@alice:example.org"}, want: "alice_example.org"},
		{name: "user device purpose", in: []string{"@bob:matrix.org", "ABCDEFGH", "m.usermedia"}, want: "bob_matrix.org-ABCDEFGH-m.usermedia"},
		{name: "port in server name", in: []string{"@carol:example.org:8448"}, want: "carol_example.org_8448"},
		{name: "room id", in: []string{"!room:example.org"}, want: "room_example.org"},
		{name: "empty", in: []string{""}, want: "unnamed"},
		{name: "no parts", in: nil, want: "unnamed"},
		{name: "dot dot", in: []string{".."}},
		{name: "traversal", in: []string{"../../etc/passwd"}},
		{name: "absolute", in: []string{"/etc/passwd"}},
		{name: "backslash traversal", in: []string{`..\..\windows`}},
		{name: "dots inside", in: []string{"@a..b:x"}},
		{name: "control chars", in: []string{"@evil\x00\n\r\t:x"}},
		{name: "unicode", in: []string{"@ålice:exämple.org"}},
		{name: "rtl override", in: []string{"@a\u202egpj.exe:x"}},
		{name: "long", in: []string{"@" + strings.Repeat("a", 500) + ":example.org"}},
		{name: "many long parts", in: []string{strings.Repeat("x", 100), strings.Repeat("y", 100), strings.Repeat("z", 100)}},
		{name: "hidden file", in: []string{".bashrc"}},
		{name: "only separators", in: []string{"///"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := SafeName(tc.in...)
			if tc.want != "" {
				require.Equal(t, tc.want, got)
			}
			require.NotEmpty(t, got)
			require.LessOrEqual(t, len(got), maxSafeNameLen)
			require.NotContains(t, got, "..")
			require.NotContains(t, got, "/")
			require.NotContains(t, got, `\`)
			require.False(t, strings.HasPrefix(got, "."), got)
			for _, r := range got {
				require.True(t, r == '.' || r == '-' || r == '_' || r == '~' ||
					(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'), "rune %q in %q", r, got)
			}
			// joined to a directory it stays directly inside it
			require.Equal(t, "/rec", filepath.Dir(filepath.Join("/rec", got)))
			// stable, and idempotent (a SafeName is a valid BaseName)
			require.Equal(t, got, SafeName(tc.in...))
			require.Equal(t, got, SafeName(got))
		})
	}
	// lossy mappings stay distinct
	require.NotEqual(t, SafeName("@ålice:x"), SafeName("@älice:x"))
	require.NotEqual(t, SafeName(strings.Repeat("a", 300)+"1"), SafeName(strings.Repeat("a", 300)+"2"))
}

func TestNewStreamWriterRejectsUnsafeBaseName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "../x", "a/b", "@alice:example.org", ".hidden"} {
		_, err := NewStreamWriter(testCtx(t), StreamConfig{Dir: t.TempDir(), BaseName: name, Audio: &TrackParams{MimeType: MimeTypeOpus}})
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	_, err := NewStreamWriter(testCtx(t), StreamConfig{Dir: t.TempDir(), BaseName: "x", Video: &TrackParams{MimeType: "video/H264"}})
	require.ErrorIs(t, err, ErrUnsupportedCodec)
}
