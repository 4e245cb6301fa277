package livekit

import (
	"bytes"

	"github.com/pion/rtp/codecs"
)

// vp8Blank8x8 starts the VP8 key frame a LiveKit SFU sends in place of video
// when a track is muted or its subscription closes (livekit-server
// pkg/sfu/downtrack.go VP8KeyFrame8x8, sent at 30 fps for a fraction of a
// second "to clear client side buffers"): frame tag, start code, 8x8.
var vp8Blank8x8 = []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x08, 0x00, 0x08, 0x00}

// isBlankVP8 reports whether an RTP payload is such an SFU-made blank
// frame: recorded, it would start a new 8x8 file at every mute and leave.
func isBlankVP8(payload []byte) bool {
	var pkt codecs.VP8Packet
	frame, err := pkt.Unmarshal(payload)
	if err != nil || pkt.S != 1 || pkt.PID != 0 {
		return false
	}
	return bytes.HasPrefix(frame, vp8Blank8x8)
}

// opusSilenceLen is the length of the SFU's Opus silence frame: a 20 ms
// CELT silence TOC and padding, 80 bytes (livekit-server OpusSilenceFrame),
// followed by the room's SIF trailer when E2EE is on.
const opusSilenceLen = 80

// isBlankOpus reports whether an RTP payload is the silence frame a LiveKit
// SFU sends after a mute and when a subscription closes. Its timestamps
// repeat the track's last one, so recording it breaks the timeline; the
// writer fills the gap with silence anyway.
func isBlankOpus(payload []byte) bool {
	if len(payload) < opusSilenceLen || payload[0] != 0xf8 || payload[1] != 0xff || payload[2] != 0xfe {
		return false
	}
	for _, b := range payload[3:opusSilenceLen] {
		if b != 0 {
			return false
		}
	}
	return true
}

// vp8KeyFrameSize returns the size of a VP8 key frame starting in this RTP
// payload (RFC 6386 §9.1), ok false for anything else.
func vp8KeyFrameSize(payload []byte) (w, h int, ok bool) {
	var pkt codecs.VP8Packet
	frame, err := pkt.Unmarshal(payload)
	if err != nil || pkt.S != 1 || pkt.PID != 0 || len(frame) < 10 || frame[0]&1 != 0 ||
		frame[3] != 0x9d || frame[4] != 0x01 || frame[5] != 0x2a {
		return 0, 0, false
	}
	return int(frame[6]) | int(frame[7]&0x3f)<<8, int(frame[8]) | int(frame[9]&0x3f)<<8, true
}
