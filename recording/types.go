package recording

import (
	"time"
)

// Kind is a track kind.
type Kind string

// Track kinds.
const (
	KindAudio Kind = "audio"
	KindVideo Kind = "video"
)

// FileKind is the container of a recorded file.
type FileKind string

// Containers.
const (
	FileKindWebM FileKind = "webm"
	FileKindOgg  FileKind = "ogg"
)

// Supported codec MIME types (compared case-insensitively, as in pion).
const (
	MimeTypeOpus = "audio/opus"
	MimeTypeVP8  = "video/VP8"
	MimeTypeVP9  = "video/VP9"
)

// Defaults for StreamConfig.
const (
	DefaultSyncWait     = 1500 * time.Millisecond
	DefaultKeyframeWait = 5 * time.Second
	DefaultJitterDelay  = 400 * time.Millisecond
)

// TrackParams describes one negotiated track (from pion's TrackRemote.Codec()
// and SSRC()).
type TrackParams struct {
	MimeType  string // MimeTypeOpus, MimeTypeVP8 or MimeTypeVP9
	ClockRate uint32 // RTP clock rate; 0 means the codec's default (48000 / 90000)
	Channels  uint16 // Opus channels; 0 means 2
	SSRC      uint32 // media SSRC, to route SenderReport calls
	// Transform, when set, turns every received frame (an Opus packet, a
	// whole depacketized video frame) into the codec's frame before it is
	// written: the media end-to-end decryption a call transport provides.
	Transform FrameTransform
}

// FrameTransform turns a received frame into the frame to write. It is
// called from the goroutine writing the track, under the writer's lock.
type FrameTransform interface {
	// TransformFrame appends the frame to write to dst[:0] and returns it
	// (dst is the writer's reused buffer). An error skips the frame: it is
	// counted (Stats.UndecryptableFrames), logged once per burst, never
	// written, and video then waits for a key frame (PLI).
	TransformFrame(dst, frame []byte) ([]byte, error)
}

// StreamConfig configures a StreamWriter.
type StreamConfig struct {
	// Dir is the directory the files are written to; it must exist.
	Dir string
	// BaseName is the file name prefix chosen by the caller. It must be a
	// naming.Safe result (naming.Safe(BaseName) == BaseName); files are
	// named BaseName-NNN.webm / .ogg with NNN the segment index.
	BaseName string
	// Audio and Video are the tracks of the stream; at least one is needed.
	Audio, Video *TrackParams
	// RequestKeyframe is called (never under a lock, from the goroutine that
	// called WriteRTP, SetMuted, AddTrack or NewStreamWriter) when the writer
	// needs a video keyframe; the caller sends a PLI. It may be nil.
	RequestKeyframe func()
	// Clock returns the current time; it is only used when an arrival or
	// event time is zero. Defaults to time.Now.
	Clock func() time.Time
	// Create creates a file; defaults to CreateFile.
	Create CreateFunc
	// OnSegment, if set, is called with each file as soon as it is
	// finalized under its final name: on a rotation (resolution change,
	// audio-only to WebM) while the writer keeps running, and for the last
	// file in Close. It runs on the goroutine that finished the file with
	// the writer's lock held: it must not block and must not call the
	// writer. Close still returns every file.
	OnSegment func(FileResult)
	// FirstSegment is the index of the first file (for a writer that
	// continues a stream after a rejoin).
	FirstSegment int
	// SyncWait is how long (by arrival time) media is held before the first
	// file is opened, waiting for RTCP sender reports of all tracks so audio
	// and video can be aligned. Defaults to DefaultSyncWait.
	SyncWait time.Duration
	// KeyframeWait is how long a stream with video waits for the first
	// keyframe before it starts an audio-only Ogg file. Defaults to
	// DefaultKeyframeWait.
	KeyframeWait time.Duration
	// JitterDelay is how long a missing packet is waited for. Defaults to
	// DefaultJitterDelay.
	JitterDelay time.Duration
}

// Interval is a span of a file's timeline (offsets from its start).
type Interval struct {
	Kind  Kind          `json:"kind"`
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
}

// FileResult describes one finished file.
type FileResult struct {
	Path     string        `json:"path"`   // final path
	Kind     FileKind      `json:"kind"`   // webm or ogg
	Codecs   []string      `json:"codecs"` // MIME types, video first
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"duration"`
	// Start is the local wall-clock time of the file's time zero (media
	// time mapped to the local clock, see package doc). All files of a call,
	// of all participants, can be placed on one timeline with it.
	Start         time.Time  `json:"start"`
	Segment       int        `json:"segment"`
	Width         int        `json:"width,omitempty"`
	Height        int        `json:"height,omitempty"`
	MuteIntervals []Interval `json:"mute_intervals,omitempty"`
	// SenderReports reports whether the stream's tracks were mapped through
	// RTCP sender reports from the start (A/V aligned from the first frame);
	// otherwise arrival time was used until the reports came (align).
	SenderReports bool `json:"sender_reports"`
}

// Stats counts what a StreamWriter dropped or repaired.
type Stats struct {
	LostPackets      uint64 // given up after the jitter delay
	LatePackets      uint64 // arrived after their slot was given up
	DuplicatePackets uint64
	DroppedFrames    uint64 // video frames dropped (broken, or waiting for a keyframe)
	// UndecryptableFrames are frames the track's Transform rejected.
	UndecryptableFrames uint64
	KeyframeRequests    uint64
	SilenceSamples      int64  // 48 kHz samples of silence inserted (Ogg and WebM)
	FramesWritten       uint64 // audio packets and video frames written to files
	Bytes               int64  // bytes written to files so far, the current one included
}
