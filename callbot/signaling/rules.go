package signaling

import (
	"time"
	"unicode/utf8"
)

// Call placement policy (§3.2, §3.5).
const (
	// MaxInviteRetries is how often an invite to a device is re-attempted
	// before giving up on it (MSC3401, js-sdk, hydrogen: 3).
	MaxInviteRetries = 3
	// InviteTimeout: an invite without answer is hung up with
	// ReasonInviteTimeout after this long (js-sdk/hydrogen CALL_TIMEOUT_MS).
	InviteTimeout = 60 * time.Second
	// RetryInterval is js-sdk's retry loop period (retryCallInterval).
	RetryInterval = 5 * time.Second
	// RingGracePeriod: js-sdk ignores an invite whose local age exceeds
	// lifetime minus this.
	RingGracePeriod = 3 * time.Second
)

// CompareIDs compares two Matrix identifiers the way js-sdk and hydrogen do
// with the JavaScript string operators < and >: lexicographically by UTF-16
// code units. It returns -1, 0 or +1. For ASCII (all real user and device
// ids) this is plain byte order; it differs from Go's byte-wise UTF-8 order
// only between non-BMP characters and U+E000..U+FFFF.
func CompareIDs(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := firstUnit(ra), firstUnit(rb)
			if ua != ub {
				if ua < ub {
					return -1
				}
				return 1
			}
			// Same high surrogate: compare the low surrogates.
			if lowUnit(ra) < lowUnit(rb) {
				return -1
			}
			return 1
		}
		a, b = a[na:], b[nb:]
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	default:
		return 1
	}
}

// firstUnit is the first UTF-16 code unit of r.
func firstUnit(r rune) rune {
	if r >= 0x10000 {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

func lowUnit(r rune) rune {
	if r >= 0x10000 {
		return 0xDC00 + (r-0x10000)&0x3FF
	}
	return 0
}

// ShouldInvite reports whether local must send the invite to remote (§3.1):
// the side with the lower user id calls; for two devices of the same user
// the lower device id calls. session_id plays no part. Comparison is
// CompareIDs (JavaScript string order). This is js-sdk's wantsOutgoingCall
// (call B iff B.user >= A.user && (B.user != A.user || B.device > A.device))
// and hydrogen's callIfNeeded. A device never calls itself.
func ShouldInvite(local, remote DeviceKey) bool {
	if c := CompareIDs(string(local.UserID), string(remote.UserID)); c != 0 {
		return c < 0
	}
	return CompareIDs(string(local.DeviceID), string(remote.DeviceID)) < 0
}

// GlareWinner returns which of two call ids survives glare (§4): the
// lexicographically lower one (JavaScript order). Equal ids are the same
// call, not glare; a is returned.
func GlareWinner(a, b CallID) CallID {
	if CompareIDs(string(b), string(a)) < 0 {
		return b
	}
	return a
}

// InviteAction is what to do with an incoming invite from a device we may
// already have a peer call with.
type InviteAction int

const (
	// InviteAnswer: no existing call with that device; answer the invite.
	InviteAnswer InviteAction = iota
	// InviteReplaceExisting: hang up the existing call with ReasonReplaced
	// (send the hangup unless it never left the local side) and answer the
	// incoming one.
	InviteReplaceExisting
	// InviteRejectIncoming: keep the existing call; send m.call.hangup with
	// ReasonReplaced for the incoming call id.
	InviteRejectIncoming
	// InviteDuplicate: the invite is for the call we already have; ignore.
	InviteDuplicate
)

func (a InviteAction) String() string {
	switch a {
	case InviteAnswer:
		return "answer"
	case InviteReplaceExisting:
		return "replace_existing"
	case InviteRejectIncoming:
		return "reject_incoming"
	case InviteDuplicate:
		return "duplicate"
	default:
		return "unknown"
	}
}

// ExistingCall describes the bot's current peer call with the inviting
// device, for DecideInvite.
type ExistingCall struct {
	CallID CallID
	// PendingOutbound: it is our own invite that has not been answered yet
	// (states up to invite_sent). Only then is it glare.
	PendingOutbound bool
}

// DecideInvite applies the bot's glare rule (§4.4) to an incoming invite
// with call id incoming from a device with which we have existing (nil =
// none):
//   - our invite is still pending: lower call_id survives; the loser is hung
//     up with ReasonReplaced (ours, or theirs by its call id);
//   - our call is already connecting/connected (or it was their earlier
//     call): follow js-sdk, a fresh invite replaces it.
func DecideInvite(existing *ExistingCall, incoming CallID) InviteAction {
	switch {
	case existing == nil:
		return InviteAnswer
	case existing.CallID == incoming:
		return InviteDuplicate
	case !existing.PendingOutbound:
		return InviteReplaceExisting
	case GlareWinner(existing.CallID, incoming) == incoming:
		return InviteReplaceExisting
	default:
		return InviteRejectIncoming
	}
}
