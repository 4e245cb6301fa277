package simpeer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// Call states as js-sdk names them (CallState), as far as the simulator
// goes through them.
const (
	StateCreateOffer  = "create_offer"
	StateInviteSent   = "invite_sent"
	StateCreateAnswer = "create_answer"
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateEnded        = "ended"
)

// TrackInfo is one remote track received on a peer call.
type TrackInfo struct {
	StreamID string
	TrackID  string
	Kind     webrtc.RTPCodecType
	MimeType string
	// Purpose is the stream's purpose from the remote stream metadata when
	// the track started ("" if the stream was not listed).
	Purpose   signaling.Purpose
	StartedAt time.Time
	// Packets is the number of RTP packets read so far.
	Packets uint64
	// LastPacketAt is when the last packet was read (zero if none).
	LastPacketAt time.Time
}

// MetadataChange is one stream metadata update received from the peer
// (invite, answer, negotiate or sdp_stream_metadata_changed).
type MetadataChange struct {
	At        time.Time
	EventType string
	Metadata  signaling.StreamMetadata
}

// CallInfo is the observable state of one peer call.
type CallInfo struct {
	CallID        signaling.CallID
	Remote        signaling.DeviceKey
	RemoteSession signaling.SessionID
	Outbound      bool
	State         string
	ICEState      webrtc.ICEConnectionState
	PeerState     webrtc.PeerConnectionState
	StartedAt     time.Time
	ConnectedAt   time.Time
	EndedAt       time.Time
	EndReason     signaling.HangupReason
	// EndedByRemote: the peer sent the hangup/reject (else we ended it).
	EndedByRemote bool
	Tracks        []TrackInfo
	// MetadataChanges lists every metadata update, oldest first.
	MetadataChanges []MetadataChange
	// RemoteMetadata is the merged remote stream metadata.
	RemoteMetadata signaling.StreamMetadata
	// Negotiations counts completed renegotiations (either direction).
	Negotiations int
}

// Ended reports whether the call is over.
func (c CallInfo) Ended() bool { return c.State == StateEnded }

// TracksWith returns the tracks with the given purpose.
func (c CallInfo) TracksWith(purpose signaling.Purpose) []TrackInfo {
	var out []TrackInfo
	for _, t := range c.Tracks {
		if t.Purpose == purpose {
			out = append(out, t)
		}
	}
	return out
}

// Packets sums the RTP packets received on tracks of kind.
func (c CallInfo) Packets(kind webrtc.RTPCodecType) uint64 {
	var n uint64
	for _, t := range c.Tracks {
		if t.Kind == kind {
			n += t.Packets
		}
	}
	return n
}

// ReceivedCounts counts received call signalling events.
type ReceivedCounts struct {
	Encrypted int
	Plaintext int
}

// Drop is a received signalling message the participant discarded.
type Drop struct {
	At        time.Time
	Sender    signaling.DeviceKey
	EventType string
	Reason    string
}

// Snapshot is a copy of a participant's observable state.
type Snapshot struct {
	SessionID signaling.SessionID
	ConfID    signaling.ConfID
	Joined    bool
	// Calls lists every peer call, oldest first.
	Calls []CallInfo
	// Glare counts invites that met our own pending invite to that device.
	Glare int
	Drops []Drop
	// Received counts the call signalling events that arrived, by transport.
	Received ReceivedCounts
	// SentPackets are RTP packets produced per source kind ("audio",
	// "video", "screen") while unmuted.
	SentPackets map[string]uint64
	// KeyframeRequests are the PLIs and FIRs received per source kind;
	// PaddingPackets the padding-only probe packets sent.
	KeyframeRequests map[string]uint64
	PaddingPackets   map[string]uint64
	// FramesSent counts frames (audio packets, video frames) sent per source.
	FramesSent map[string]uint64
	// MediaStart is when each source's clip first started playing (its
	// time 0 on the wall clock; zero before it was sent to anyone). The
	// clips' beeps and flashes are aligned at the source, so the offset
	// between two of these is the offset the sender put between them.
	MediaStart map[string]time.Time
	// Wire is what the lossy network did (zero without one).
	Wire WireStats
}

// Current returns the newest call with remote that has not ended.
func (s Snapshot) Current(remote signaling.DeviceKey) (CallInfo, bool) {
	for i := len(s.Calls) - 1; i >= 0; i-- {
		if s.Calls[i].Remote == remote && !s.Calls[i].Ended() {
			return s.Calls[i], true
		}
	}
	return CallInfo{}, false
}

// Call returns the call with callID.
func (s Snapshot) Call(callID signaling.CallID) (CallInfo, bool) {
	for _, c := range s.Calls {
		if c.CallID == callID {
			return c, true
		}
	}
	return CallInfo{}, false
}

// With returns every call with remote, oldest first.
func (s Snapshot) With(remote signaling.DeviceKey) []CallInfo {
	var out []CallInfo
	for _, c := range s.Calls {
		if c.Remote == remote {
			out = append(out, c)
		}
	}
	return out
}

// trackStats is shared between a track reader goroutine and snapshots.
type trackStats struct {
	info    TrackInfo // immutable after creation, except Purpose (under observer lock)
	packets atomic.Uint64
	lastAt  atomic.Int64 // unix nanos
}

// observer holds the observable state. The event loop writes it; anyone
// reads snapshots.
type observer struct {
	mu      sync.Mutex
	session signaling.SessionID
	conf    signaling.ConfID
	joined  bool
	calls   []*callRecord
	glare   int
	drops   []Drop
	rcvd    ReceivedCounts
	sources map[string]*source
	wire    *wireFactory // nil: a perfect network
}

type callRecord struct {
	info   CallInfo
	tracks []*trackStats
}

func (o *observer) update(fn func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fn()
}

func (o *observer) snapshot() Snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Snapshot{SessionID: o.session, ConfID: o.conf, Joined: o.joined, Glare: o.glare, Received: o.rcvd,
		SentPackets: map[string]uint64{}, KeyframeRequests: map[string]uint64{}, PaddingPackets: map[string]uint64{},
		FramesSent: map[string]uint64{}, MediaStart: map[string]time.Time{}, Wire: o.wire.stats()}
	s.Drops = append([]Drop(nil), o.drops...)
	for name, src := range o.sources {
		s.SentPackets[name] = src.sent.Load()
		s.KeyframeRequests[name] = src.keyRequests.Load()
		s.PaddingPackets[name] = src.padding.Load()
		s.FramesSent[name] = src.framesSent.Load()
		if at := src.startedAt.Load(); at != 0 {
			s.MediaStart[name] = time.Unix(0, at)
		}
	}
	for _, rec := range o.calls {
		ci := rec.info
		ci.MetadataChanges = append([]MetadataChange(nil), ci.MetadataChanges...)
		ci.RemoteMetadata = signaling.StreamMetadata{}.Merge(rec.info.RemoteMetadata)
		ci.Tracks = make([]TrackInfo, 0, len(rec.tracks))
		for _, ts := range rec.tracks {
			ti := ts.info
			ti.Packets = ts.packets.Load()
			if at := ts.lastAt.Load(); at != 0 {
				ti.LastPacketAt = time.Unix(0, at)
			}
			ci.Tracks = append(ci.Tracks, ti)
		}
		s.Calls = append(s.Calls, ci)
	}
	return s
}
