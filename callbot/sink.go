package callbot

import (
	"context"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// Sink receives what the call bot gets from the participants. The recording
// layer implements it; tests use fakes.
type Sink interface {
	// CallJoined is called when the recorder joined a call, before any track.
	CallJoined(ctx context.Context, call CallInfo)
	// CallLeft is called when the recorder left, after every track ended.
	CallLeft(ctx context.Context, call CallInfo, at time.Time)
	// TrackStarted is called once per remote track. The returned TrackSink
	// gets the track's packets; nil discards them.
	TrackStarted(ctx context.Context, track *RemoteTrack) TrackSink
	// StreamChanged reports a stream's purpose or mute state as announced in
	// stream metadata, with the time it changed.
	StreamChanged(ctx context.Context, change StreamChange)
	// ParticipantLeft is called when a peer call ends (hangup, expiry, session
	// change, leave), after its tracks ended.
	ParticipantLeft(ctx context.Context, p PeerInfo, at time.Time)
}

// CallInfo identifies the recorder's presence in one group call.
type CallInfo struct {
	// ID is unique per joined call; the archive uses it as recording id.
	ID        string
	RoomID    id.RoomID
	ConfID    signaling.ConfID
	UserID    id.UserID
	DeviceID  id.DeviceID
	SessionID signaling.SessionID
	JoinedAt  time.Time
	// StopReason is why the recorder left (set for CallLeft).
	StopReason StopReason
}

// StopReason says why the recorder left a call. It is stored with the
// recording.
type StopReason string

// Why a recording stops.
const (
	StopAsked       StopReason = "stopped"      // a command or the API
	StopEmpty       StopReason = "empty"        // alone in the call for recording.empty_timeout
	StopNoMedia     StopReason = "no_media"     // no media for recording.no_media_timeout
	StopMaxDuration StopReason = "max_duration" // recording.max_duration reached
	StopCallEnded   StopReason = "call_ended"   // the group call was terminated
	StopRemoved     StopReason = "removed"      // the recorder user left or was removed from the room
	StopShutdown    StopReason = "shutdown"     // the recorder shut down
	StopSizeLimit   StopReason = "size_limit"   // the recording reached recordings.max_recording_size_mb
	StopDiskFull    StopReason = "disk_full"    // the recordings reached recordings.max_disk_usage_mb
	// StopInterrupted marks a recording the recorder never left (it was
	// killed); the next start repairs it.
	StopInterrupted StopReason = "interrupted"
)

// PeerInfo identifies one peer call: a remote device in one session.
type PeerInfo struct {
	RoomID    id.RoomID
	ConfID    signaling.ConfID
	CallID    signaling.CallID
	UserID    id.UserID
	DeviceID  id.DeviceID
	SessionID signaling.SessionID
}

// RemoteTrack is one received track.
type RemoteTrack struct {
	Peer     PeerInfo
	StreamID string // msid stream id: the key of the stream metadata
	TrackID  string
	Kind     webrtc.RTPCodecType
	Codec    webrtc.RTPCodecParameters
	SSRC     webrtc.SSRC
	Purpose  signaling.Purpose // from metadata; m.usermedia when unknown
	Started  time.Time
	// RequestKeyframe asks the sender for a keyframe (RTCP PLI). Safe to
	// call from any goroutine; a no-op for audio or after the peer closed.
	RequestKeyframe func()
	// Transform, when set, turns each received frame into the codec's frame
	// before it is written: media end-to-end decryption (MatrixRTC).
	Transform FrameTransform
}

// FrameTransform turns a received frame (an Opus packet, a whole video
// frame) into the frame to write; recording.FrameTransform has the same
// method. It appends to dst[:0]; an error skips the frame.
type FrameTransform interface {
	TransformFrame(dst, frame []byte) ([]byte, error)
}

// TrackSink consumes one track's packets. Its methods are called from the
// track's reader goroutine, one at a time.
type TrackSink interface {
	// WriteRTP gets each packet; the packet and its payload are only valid
	// during the call (the reader reuses its buffer).
	WriteRTP(pkt *rtp.Packet, arrival time.Time) error
	// SenderReport gets the NTP↔RTP mapping from each RTCP sender report.
	SenderReport(ntpTime uint64, rtpTime uint32, arrival time.Time)
	// Close is called once when the track ended.
	Close()
}

// StreamChange is a stream's state after a metadata update.
type StreamChange struct {
	Peer       PeerInfo
	StreamID   string
	Purpose    signaling.Purpose
	AudioMuted bool
	VideoMuted bool
	At         time.Time
}

// DiscardSink records nothing.
type DiscardSink struct{}

// CallJoined implements Sink.
func (DiscardSink) CallJoined(context.Context, CallInfo) {}

// CallLeft implements Sink.
func (DiscardSink) CallLeft(context.Context, CallInfo, time.Time) {}

// TrackStarted implements Sink.
func (DiscardSink) TrackStarted(context.Context, *RemoteTrack) TrackSink { return nil }

// StreamChanged implements Sink.
func (DiscardSink) StreamChanged(context.Context, StreamChange) {}

// ParticipantLeft implements Sink.
func (DiscardSink) ParticipantLeft(context.Context, PeerInfo, time.Time) {}

// Tee sends everything to several sinks.
type Tee []Sink

// CallJoined implements Sink.
func (t Tee) CallJoined(ctx context.Context, call CallInfo) {
	for _, s := range t {
		s.CallJoined(ctx, call)
	}
}

// CallLeft implements Sink.
func (t Tee) CallLeft(ctx context.Context, call CallInfo, at time.Time) {
	for _, s := range t {
		s.CallLeft(ctx, call, at)
	}
}

// TrackStarted implements Sink.
func (t Tee) TrackStarted(ctx context.Context, track *RemoteTrack) TrackSink {
	var sinks teeTrack
	for _, s := range t {
		if ts := s.TrackStarted(ctx, track); ts != nil {
			sinks = append(sinks, ts)
		}
	}
	if len(sinks) == 0 {
		return nil
	}
	return &sinks
}

// StreamChanged implements Sink.
func (t Tee) StreamChanged(ctx context.Context, change StreamChange) {
	for _, s := range t {
		s.StreamChanged(ctx, change)
	}
}

// ParticipantLeft implements Sink.
func (t Tee) ParticipantLeft(ctx context.Context, p PeerInfo, at time.Time) {
	for _, s := range t {
		s.ParticipantLeft(ctx, p, at)
	}
}

// teeTrack feeds several track sinks; a sink that fails is closed and
// dropped, the others go on. It fails only when none is left.
type teeTrack []TrackSink

func (tt *teeTrack) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	var lastErr error
	kept := (*tt)[:0]
	for _, s := range *tt {
		if err := s.WriteRTP(pkt, arrival); err != nil {
			s.Close()
			lastErr = err
			continue
		}
		kept = append(kept, s)
	}
	*tt = kept
	if len(kept) == 0 {
		return lastErr
	}
	return nil
}

func (tt *teeTrack) SenderReport(ntpTime uint64, rtpTime uint32, arrival time.Time) {
	for _, s := range *tt {
		s.SenderReport(ntpTime, rtpTime, arrival)
	}
}

func (tt *teeTrack) Close() {
	for _, s := range *tt {
		s.Close()
	}
	*tt = nil
}
