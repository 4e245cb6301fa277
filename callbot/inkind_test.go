package callbot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// TestAnswerInKind: a peer that signals in plaintext (js-sdk ≥ 37) gets
// plaintext, even when the same device talked Olm before (js-sdk 36 on the
// same device id); a peer that signals with Olm (Hydrogen, js-sdk ≤ 36)
// gets Olm.
func TestAnswerInKind(t *testing.T) {
	h := newHarness(t, nil)
	h.join()
	// @alice sorts before @recorder_1: she calls.
	alice := h.remote("@alice:test", "ALICEDEV")
	alice.olm = true
	alice.join(time.Now().Add(forever))
	alice.invite("olmcall")
	ans := h.fm.takeSent(t, alice.key, "m.call.answer")
	require.True(t, ans.encrypt, "an Olm peer is answered with Olm")

	// The same device comes back from a page that only speaks plaintext.
	alice.session = "sess-plain"
	alice.outbox = signaling.NewOutbox(alice.key.DeviceID, alice.session)
	alice.olm = false
	alice.publish(time.Now().Add(forever))
	alice.invite("plaincall")
	for {
		s := h.fm.takeSent(t, alice.key, "m.call.answer")
		if s.msg.Common().CallID == "plaincall" {
			require.False(t, s.encrypt, "a plaintext peer is answered in plaintext")
			break
		}
	}
}

// TestPlaceCallInKind: placing a call, the bot goes by what the device
// showed before: plaintext to a device that signalled in plaintext, Olm to
// one it knows nothing of (Hydrogen drops plaintext) and, when that invite
// goes unanswered, plaintext on the next attempt (a page that cannot read
// Olm).
func TestPlaceCallInKind(t *testing.T) {
	h := newHarness(t, func(m *Manager) {
		m.inviteTimeout, m.retryPeriod = 100*time.Millisecond, 20*time.Millisecond
	})
	h.join()
	zed := h.remote("@zed:test", "ZEDDEV")
	zed.join(time.Now().Add(forever))
	first := h.fm.takeSent(t, zed.key, "m.call.invite")
	require.True(t, first.encrypt, "first attempt to an unknown device: Olm")
	second := h.fm.takeSent(t, zed.key, "m.call.invite")
	require.False(t, second.encrypt, "the unanswered Olm invite is followed by a plaintext one")

	// A device that spoke plaintext (here: a hangup of its own call) is
	// called in plaintext from the start.
	yan := h.remote("@yan:test", "YANDEV")
	h.m.noteKind(yan.key, false)
	yan.join(time.Now().Add(forever))
	inv := h.fm.takeSent(t, yan.key, "m.call.invite")
	require.False(t, inv.encrypt)

	// A device that talked Olm (a js-sdk 36 page) is called in Olm; when
	// that goes unanswered (the same device id now on a js-sdk 43 page),
	// the next invite goes in plaintext.
	xav := h.remote("@xav:test", "XAVDEV")
	h.m.noteKind(xav.key, true)
	xav.join(time.Now().Add(forever))
	inv = h.fm.takeSent(t, xav.key, "m.call.invite")
	require.True(t, inv.encrypt, "a device that talked Olm is called in Olm")
	hangup := h.fm.takeSent(t, xav.key, "m.call.hangup")
	require.True(t, hangup.encrypt, "the unanswered invite is hung up the way it went")
	inv = h.fm.takeSent(t, xav.key, "m.call.invite")
	require.False(t, inv.encrypt, "the unanswered Olm invite is followed by a plaintext one")
}
