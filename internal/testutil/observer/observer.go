// Package observer is a callbot.Sink for tests: it records which tracks the
// call bot received, how many RTP packets each got, and every stream change.
package observer

import (
	"context"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// Track is what was seen of one received track.
type Track struct {
	Info       callbot.RemoteTrack
	Packets    int
	FirstRTP   time.Time
	Closed     bool
	SenderRept int
	// firstTS and lastTS are the RTP timestamps of the first and the latest
	// packet, for the media time the track has covered.
	firstTS, lastTS uint32
}

// Span is the media time between the track's first and latest packet.
func (t Track) Span() time.Duration {
	if t.Packets == 0 || t.Info.Codec.ClockRate == 0 {
		return 0
	}
	return time.Duration(t.lastTS-t.firstTS) * time.Second / time.Duration(t.Info.Codec.ClockRate)
}

// Observer implements callbot.Sink. All methods are safe for concurrent use.
type Observer struct {
	lock    sync.Mutex
	tracks  []*Track
	changes []callbot.StreamChange
	left    []callbot.PeerInfo
	calls   []callbot.CallInfo
	ended   []callbot.CallInfo
}

var _ callbot.Sink = (*Observer)(nil)

// New returns an empty Observer.
func New() *Observer { return &Observer{} }

// CallJoined implements callbot.Sink.
func (o *Observer) CallJoined(_ context.Context, call callbot.CallInfo) {
	o.lock.Lock()
	defer o.lock.Unlock()
	o.calls = append(o.calls, call)
}

// CallLeft implements callbot.Sink.
func (o *Observer) CallLeft(_ context.Context, call callbot.CallInfo, _ time.Time) {
	o.lock.Lock()
	defer o.lock.Unlock()
	o.ended = append(o.ended, call)
}

// TrackStarted implements callbot.Sink.
func (o *Observer) TrackStarted(_ context.Context, t *callbot.RemoteTrack) callbot.TrackSink {
	o.lock.Lock()
	defer o.lock.Unlock()
	tr := &Track{Info: *t}
	o.tracks = append(o.tracks, tr)
	return &trackSink{o: o, t: tr}
}

// StreamChanged implements callbot.Sink.
func (o *Observer) StreamChanged(_ context.Context, change callbot.StreamChange) {
	o.lock.Lock()
	defer o.lock.Unlock()
	o.changes = append(o.changes, change)
}

// ParticipantLeft implements callbot.Sink.
func (o *Observer) ParticipantLeft(_ context.Context, p callbot.PeerInfo, _ time.Time) {
	o.lock.Lock()
	defer o.lock.Unlock()
	o.left = append(o.left, p)
}

type trackSink struct {
	o *Observer
	t *Track
}

func (ts *trackSink) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	ts.o.lock.Lock()
	defer ts.o.lock.Unlock()
	if ts.t.Packets == 0 {
		ts.t.FirstRTP = arrival
		ts.t.firstTS = pkt.Timestamp
	}
	ts.t.lastTS = pkt.Timestamp
	ts.t.Packets++
	return nil
}

func (ts *trackSink) SenderReport(uint64, uint32, time.Time) {
	ts.o.lock.Lock()
	defer ts.o.lock.Unlock()
	ts.t.SenderRept++
}

func (ts *trackSink) Close() {
	ts.o.lock.Lock()
	defer ts.o.lock.Unlock()
	ts.t.Closed = true
}

// Tracks returns copies of the tracks received from a user (all users when
// empty), in arrival order.
func (o *Observer) Tracks(user id.UserID) []Track {
	o.lock.Lock()
	defer o.lock.Unlock()
	var out []Track
	for _, t := range o.tracks {
		if user == "" || t.Info.Peer.UserID == user {
			out = append(out, *t)
		}
	}
	return out
}

// HasMedia reports whether a user's track of that kind and purpose got at
// least minPackets packets.
func (o *Observer) HasMedia(user id.UserID, kind webrtc.RTPCodecType, purpose signaling.Purpose, minPackets int) bool {
	for _, t := range o.Tracks(user) {
		if t.Info.Kind == kind && (purpose == "" || t.Info.Purpose == purpose) && t.Packets >= minPackets {
			return true
		}
	}
	return false
}

// Span is the longest media span of a user's tracks of that kind and purpose.
func (o *Observer) Span(user id.UserID, kind webrtc.RTPCodecType, purpose signaling.Purpose) time.Duration {
	var span time.Duration
	for _, t := range o.Tracks(user) {
		if t.Info.Kind == kind && (purpose == "" || t.Info.Purpose == purpose) {
			span = max(span, t.Span())
		}
	}
	return span
}

// FirstPacket is when the first RTP packet from user arrived (zero if none).
func (o *Observer) FirstPacket(user id.UserID) time.Time {
	var first time.Time
	for _, t := range o.Tracks(user) {
		if !t.FirstRTP.IsZero() && (first.IsZero() || t.FirstRTP.Before(first)) {
			first = t.FirstRTP
		}
	}
	return first
}

// Changes returns the stream changes reported for a user.
func (o *Observer) Changes(user id.UserID) []callbot.StreamChange {
	o.lock.Lock()
	defer o.lock.Unlock()
	var out []callbot.StreamChange
	for _, c := range o.changes {
		if c.Peer.UserID == user {
			out = append(out, c)
		}
	}
	return out
}

// Left returns the peer calls that ended.
func (o *Observer) Left() []callbot.PeerInfo {
	o.lock.Lock()
	defer o.lock.Unlock()
	return append([]callbot.PeerInfo(nil), o.left...)
}

// Ended returns the calls the bot left.
func (o *Observer) Ended() []callbot.CallInfo {
	o.lock.Lock()
	defer o.lock.Unlock()
	return append([]callbot.CallInfo(nil), o.ended...)
}
