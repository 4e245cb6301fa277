package signaling

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCompareIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"@alice:a", "@bob:a", -1},
		{"@bob:a", "@alice:a", 1},
		{"@a:x", "@a:x", 0},
		{"@a:x", "@a:xy", -1},
		{"@A:x", "@a:x", -1}, // uppercase sorts first
		{"@1:x", "@c1:x", -1},
		// JavaScript compares UTF-16 code units: a non-BMP character (high
		// surrogate 0xD83D) sorts before U+E000, although its UTF-8 bytes
		// (0xF0...) sort after U+E000's (0xEE...).
		{"\U0001F600", "\uE000", -1},
		{"\uE000", "\U0001F600", 1},
		{"\U0001F600", "\U0001F601", -1},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, CompareIDs(tt.a, tt.b), "%q vs %q", tt.a, tt.b)
	}
	require.Less(t, "\uE000", "\U0001F600", "Go byte order differs here")
}

func TestShouldInvite(t *testing.T) {
	tests := []struct {
		name          string
		local, remote DeviceKey
		want          bool
	}{
		{"lower user id calls", DeviceKey{"@alice:example.org", "ZZZ"}, DeviceKey{"@bob:example.org", "AAA"}, true},
		{"higher user id waits", DeviceKey{"@bob:example.org", "AAA"}, DeviceKey{"@alice:example.org", "ZZZ"}, false},
		{"bot named zzz is callee", DeviceKey{"@zzz-recorder:example.org", "BOT"}, DeviceKey{"@alice:example.org", "X"}, false},
		{"same user lower device calls", DeviceKey{"@a:example.org", "DEVA"}, DeviceKey{"@a:example.org", "DEVB"}, true},
		{"same user higher device waits", DeviceKey{"@a:example.org", "DEVB"}, DeviceKey{"@a:example.org", "DEVA"}, false},
		{"self", DeviceKey{"@a:example.org", "D"}, DeviceKey{"@a:example.org", "D"}, false},
		{"user id decides before device id", DeviceKey{"@a:example.org", "ZZZ"}, DeviceKey{"@b:example.org", "AAA"}, true},
		{"server part compared too", DeviceKey{"@a:a.org", "D"}, DeviceKey{"@a:b.org", "D"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, ShouldInvite(tt.local, tt.remote))
			if tt.local != tt.remote {
				require.NotEqual(t, tt.want, ShouldInvite(tt.remote, tt.local), "exactly one side calls")
			}
		})
	}
}

func TestGlare(t *testing.T) {
	tests := []struct {
		name     string
		existing *ExistingCall
		incoming CallID
		want     InviteAction
	}{
		{"no existing call", nil, "1700000000000x", InviteAnswer},
		{"same call id is a duplicate", &ExistingCall{CallID: "1700000000000x", PendingOutbound: true}, "1700000000000x", InviteDuplicate},
		{"glare, ours lower: theirs is hung up replaced", &ExistingCall{CallID: "1700000000000a", PendingOutbound: true}, "1700000000000b", InviteRejectIncoming},
		{"glare, theirs lower: ours is replaced", &ExistingCall{CallID: "1700000000000b", PendingOutbound: true}, "1700000000000a", InviteReplaceExisting},
		{"js id (digits) beats hydrogen id (c...)", &ExistingCall{CallID: "c0123456789abcd", PendingOutbound: true}, "1700000000000a", InviteReplaceExisting},
		{"hydrogen invite loses to our js-style id", &ExistingCall{CallID: "1700000000000a", PendingOutbound: true}, "c0123456789abcd", InviteRejectIncoming},
		{"connected call replaced by fresh invite (js-sdk)", &ExistingCall{CallID: "1700000000000a"}, "1700000000000b", InviteReplaceExisting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, DecideInvite(tt.existing, tt.incoming), DecideInvite(tt.existing, tt.incoming).String())
		})
	}
	require.Equal(t, CallID("a"), GlareWinner("a", "b"))
	require.Equal(t, CallID("a"), GlareWinner("b", "a"))
	require.Equal(t, CallID("a"), GlareWinner("a", "a"))
}
