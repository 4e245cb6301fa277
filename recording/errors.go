package recording

import "errors"

// ErrInvalidConfig is returned by NewStreamWriter for an unusable StreamConfig
// (no track, unsupported codec, unsafe base name, ...).
var ErrInvalidConfig = errors.New("invalid stream config")

// ErrUnsupportedCodec is returned for a codec the recorder cannot write.
// Only audio/opus, video/VP8 and video/VP9 are supported.
var ErrUnsupportedCodec = errors.New("unsupported codec")

// ErrWriterFailed marks a StreamWriter that hit an I/O error (for example a
// full disk). The writer stops writing; every later call returns an error
// wrapping ErrWriterFailed and the underlying cause. Other writers are not
// affected. The unfinished "*.part" file is left for Repair.
var ErrWriterFailed = errors.New("stream writer failed")

// ErrClosed is returned when a StreamWriter is used after Close.
var ErrClosed = errors.New("stream writer closed")

// ErrNotRepairable is wrapped by Repair for a "*.part" file that holds no
// usable media (it is removed) or cannot be parsed at all (it is kept).
var ErrNotRepairable = errors.New("file not repairable")

var (
	errShortPage     = errors.New("short ogg page")
	errBadPage       = errors.New("bad ogg page")
	errBadEBML       = errors.New("bad ebml data")
	errTargetExists  = errors.New("target file already exists")
	errPacketTooLong = errors.New("opus packet too long for one ogg page")
)
