package simpeer

import (
	"fmt"
	"time"
)

// Frame is one encoded media frame of a test media file and how long it lasts.
type Frame struct {
	Data     []byte
	Duration time.Duration
}

// LoadFrames reads every frame of a test media file: Opus from Ogg
// (AudioFile) or VP8 from IVF (VideoFile, ScreenFile), for senders that
// packetize themselves (the LiveKit participants of the MatrixRTC tests).
func LoadFrames(path string, audio bool) ([]Frame, error) {
	var (
		s    *source
		err  error
		rate float64 = videoClockRate
	)
	if audio {
		s, err = loadOpus(path)
		rate = opusClockRate
	} else {
		s, err = loadVP8(path)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load %s: %w", path, err)
	}
	out := make([]Frame, len(s.frames))
	for i, f := range s.frames {
		out[i] = Frame{Data: f.data, Duration: time.Duration(float64(f.ticks) / rate * float64(time.Second))}
	}
	return out, nil
}

// PadVP8 pads VP8 frames as Config.VideoFrameBytes does: to at least n
// bytes, key frames to 3n (a camera of a chosen bitrate).
func PadVP8(frames []Frame, n int) []Frame {
	in := make([]frame, len(frames))
	for i, f := range frames {
		in[i] = frame{data: f.Data}
	}
	padded := padFrames(in, n)
	out := make([]Frame, len(frames))
	for i, f := range frames {
		out[i] = Frame{Data: padded[i].data, Duration: f.Duration}
	}
	return out
}
