// Package callbot joins Matrix legacy full-mesh group calls (MSC3401, as spoken
// by matrix-js-sdk's GroupCall and Hydrogen) as a virtual recorder user: it
// publishes its member event, calls or answers every other device with one pion
// PeerConnection each and hands every received track and stream change to a
// Sink (the recording layer).
//
// Each joined call is owned by one goroutine (Call.run) that holds all of its
// state; pion callbacks, the room events and the virtual user's to-device
// events only post typed messages into it (messages.go). The loop sleeps until
// the next message or the earliest deadline in its state; no timer polls.
//
// Files: manager.go (the Manager, calls by room), join.go (joining a call),
// call.go (the loop, its timers, leaving), members.go (member state to peer
// calls), signals.go (admitting and acting on signalling), peercall.go and
// peer.go (one peer call), sender.go (to-device sending), matrix.go (what the
// call bot needs of the Matrix side, which provides the virtual users'
// devices), sink.go (what it hands to the recording layer).
package callbot
