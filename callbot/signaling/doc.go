// Package signaling is the pure protocol layer for legacy full-mesh MSC3401
// group calls as spoken by matrix-js-sdk's GroupCall and hydrogen-web.
//
// It contains no network code, no WebRTC and no goroutines: it parses and
// composes the to-device signalling messages (m.call.invite, answer,
// candidates, ...), the room state events (org.matrix.msc3401.call and
// org.matrix.msc3401.call.member), implements the who-calls-whom and glare
// rules, and provides the sender seq counter and a receive-side Inbox (drop
// rules, seq reordering, buffering of messages for not yet seen call ids).
// Types that need timers (Reorder, Inbox) take the current time as an
// argument and report their next deadline; the caller's event loop owns the
// timer.
//
// Section references (§) point to shared/docs/protocol.md.
package signaling
