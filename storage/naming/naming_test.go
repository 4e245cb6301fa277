package naming

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSafe(t *testing.T) {
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
			got := Safe(tc.in...)
			if tc.want != "" {
				require.Equal(t, tc.want, got)
			}
			require.NotEmpty(t, got)
			require.LessOrEqual(t, len(got), MaxLen)
			require.NotContains(t, got, "..")
			require.NotContains(t, got, "/")
			require.NotContains(t, got, `\`)
			require.False(t, strings.HasPrefix(got, "."), got)
			for _, r := range got {
				require.True(t, r == '.' || r == '-' || r == '_' ||
					(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'), "rune %q in %q", r, got)
			}
			// joined to a directory it stays directly inside it
			require.Equal(t, "/rec", filepath.Dir(filepath.Join("/rec", got)))
			// stable, and idempotent (a SafeName is a valid BaseName)
			require.Equal(t, got, Safe(tc.in...))
			require.Equal(t, got, Safe(got))
		})
	}
	// lossy mappings stay distinct
	require.NotEqual(t, Safe("@ålice:x"), Safe("@älice:x"))
	require.NotEqual(t, Safe(strings.Repeat("a", 300)+"1"), Safe(strings.Repeat("a", 300)+"2"))
}

// FuzzSafe: whatever identifiers come from outside, Safe's result (with a
// segment suffix) passes Check, is stable and idempotent.
func FuzzSafe(f *testing.F) {
	for _, seed := range [][2]string{
		{"@bob:localhost", "FZ1Buwm-"}, {"@a_b:x.org", "_x_"}, {"@c:y", "dev.ice~1"}, {"@d:z", "..."}, {"@é:ü", "~"},
		{"@e:f", "-lead"}, {"@g:h", "a__b"}, {"", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, user, device string) {
		base := Safe(user, device, "usermedia", "callid")
		require.NoError(t, Check(base))
		for _, name := range []string{base + "-000.webm", base + "-012.ogg", base + ".json", base + "-2-000.webm.part"} {
			require.NoError(t, Check(name), "user %q device %q", user, device)
		}
		require.Equal(t, base, Safe(base))
		require.Equal(t, base, Safe(user, device, "usermedia", "callid"))
	})
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", ".", "..", ".hidden", "-flag", "a/b", `a\b`, "a..b", "a~b", "a b", "é", strings.Repeat("a", 231)} {
		require.ErrorIs(t, Check(bad), ErrUnsafe, "%q", bad)
	}
	for _, good := range []string{"a", "_x", "20261125T115026Z-vr25lxat", "bob_localhost-FZ1Buwm_07be9a90-usermedia-x-000.webm"} {
		require.NoError(t, Check(good), good)
	}
}
