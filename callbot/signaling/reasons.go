package signaling

import "maunium.net/go/mautrix/event"

// HangupReason is the reason of m.call.hangup / m.call.reject. It is the
// mautrix type so values can be passed to mautrix APIs unchanged. Receivers
// must accept any string; an absent reason means ReasonUserHangup (§7).
type HangupReason = event.CallHangupReason

// Hangup reasons (§7). The first block is the spec enum, the rest are codes
// js-sdk/hydrogen emit and peers act on.
const (
	ReasonUserHangup      HangupReason = event.CallHangupUserHangup // "user_hangup"
	ReasonICEFailed       HangupReason = event.CallHangupICEFailed  // "ice_failed"
	ReasonICETimeout      HangupReason = "ice_timeout"
	ReasonInviteTimeout   HangupReason = event.CallHangupInviteTimeout   // "invite_timeout"
	ReasonUserMediaFailed HangupReason = event.CallHangupUserMediaFailed // "user_media_failed"
	ReasonUserBusy        HangupReason = "user_busy"
	ReasonUnknownError    HangupReason = event.CallHangupUnknownError // "unknown_error"

	ReasonReplaced             HangupReason = "replaced"
	ReasonNewSession           HangupReason = "new_session"
	ReasonSignallingTimeout    HangupReason = "signalling_timeout"
	ReasonAnsweredElsewhere    HangupReason = "answered_elsewhere"
	ReasonTransferred          HangupReason = "transferred"
	ReasonLocalOfferFailed     HangupReason = "local_offer_failed"
	ReasonNoUserMedia          HangupReason = "no_user_media"
	ReasonUnknownDevices       HangupReason = "unknown_devices"
	ReasonSendInvite           HangupReason = "send_invite"
	ReasonCreateAnswer         HangupReason = "create_answer"
	ReasonCreateOffer          HangupReason = "create_offer"
	ReasonSendAnswer           HangupReason = "send_answer"
	ReasonSetRemoteDescription HangupReason = "set_remote_description"
	ReasonSetLocalDescription  HangupReason = "set_local_description"
	ReasonKeepAliveTimeout     HangupReason = "keep_alive_timeout"
)

// RetriedBy reports whether a peer (hydrogen's errorCodesWithoutRetry, §3.5)
// re-places the call after it ended with this reason. Use a reason for which
// this is false (ReasonUserHangup) to end a call on purpose.
func RetriedBy(reason HangupReason) bool {
	switch reason {
	case "", ReasonUserHangup, ReasonAnsweredElsewhere, ReasonReplaced, ReasonUserBusy,
		ReasonTransferred, ReasonNewSession:
		return false
	default:
		return true
	}
}
