// Package callbot joins Matrix legacy full-mesh group calls (MSC3401, as spoken
// by matrix-js-sdk's GroupCall and Hydrogen) as a virtual recorder user: it
// publishes its member event, calls or answers every other device with one pion
// PeerConnection each and hands every received track and stream change to a
// Sink (the recording layer).
//
// Each joined call is owned by one goroutine (Call.run) that holds all of its
// state; pion callbacks, the appservice's room events and the virtual user's
// to-device events only send messages into it.
package callbot
