package recording

import (
	"encoding/binary"

	"github.com/pion/rtp/codecs"
	"github.com/pion/rtp/codecs/vp9"
)

// maxFrameBytes bounds one video frame. A frame that grows beyond it (no
// marker bit ever comes, or a sender gone wrong) is dropped as broken, so
// no participant can make the recorder hold unbounded memory. 4 MiB is far
// above what real-time VP8/VP9 encoders produce even for 4K key frames.
const maxFrameBytes = 4 << 20

// frameAssembler turns in-order RTP packets of a VP8 or VP9 track into
// complete frames. A frame is complete when its marker bit arrives; a frame
// with a hole (reported loss, a missing start or end) is broken and dropped.
// The frame buffer is reused.
type frameAssembler struct {
	vp9    bool
	vp8pkt codecs.VP8Packet
	vp9pkt codecs.VP9Packet

	active  bool
	broken  bool
	ts      uint32
	keyHint bool // the payload descriptor says keyframe (VP9: !P)
	buf     []byte
}

// assembledFrame is a complete frame; data aliases the assembler's buffer.
type assembledFrame struct {
	data   []byte
	key    bool
	width  int // set for keyframes when known
	height int
}

// push adds one packet; lost is the number of packets missing right before
// it. It returns a complete frame when p completes one, and whether a frame
// was lost (broken or incomplete) since the last call.
func (a *frameAssembler) push(p jbPacket) (assembledFrame, bool, bool) {
	lostFrame := false
	if p.lost > 0 && a.active {
		a.broken = true
	}
	if p.lost > 0 {
		lostFrame = true
	}
	if a.active && p.ts != a.ts {
		// The previous frame never saw its marker: incomplete.
		lostFrame = true
		a.active = false
	}
	var payload []byte
	var start bool
	if a.vp9 {
		// pion's Unmarshal appends the reference lists to the reused packet
		// (flexible mode): empty them first, keeping their capacity.
		a.vp9pkt.PDiff, a.vp9pkt.PGTID, a.vp9pkt.PGU, a.vp9pkt.PGPDiff =
			a.vp9pkt.PDiff[:0], a.vp9pkt.PGTID[:0], a.vp9pkt.PGU[:0], a.vp9pkt.PGPDiff[:0]
		pl, err := a.vp9pkt.Unmarshal(p.payload)
		if err != nil {
			a.broken = true

			return assembledFrame{}, false, true
		}
		payload, start = pl, a.vp9pkt.B
		if start {
			a.keyHint = !a.vp9pkt.P
		}
	} else {
		pl, err := a.vp8pkt.Unmarshal(p.payload)
		if err != nil {
			a.broken = true

			return assembledFrame{}, false, true
		}
		payload, start = pl, a.vp8pkt.S == 1 && a.vp8pkt.PID == 0
	}
	if !a.active {
		a.active = true
		a.ts = p.ts
		a.buf = a.buf[:0]
		a.broken = !start // a frame must begin with its first packet
	}
	if len(a.buf)+len(payload) > maxFrameBytes {
		if !a.broken {
			lostFrame = true
		}
		a.broken = true
		a.buf = a.buf[:0]
	} else if !a.broken {
		a.buf = append(a.buf, payload...)
	}
	if !p.marker {
		return assembledFrame{}, false, lostFrame
	}
	a.active = false
	if a.broken || len(a.buf) == 0 {
		return assembledFrame{}, false, true
	}
	return a.frame(a.buf), true, lostFrame
}

// frame describes a complete frame of the track (data may be the
// transformed frame the assembler gave out).
func (a *frameAssembler) frame(data []byte) assembledFrame {
	f := assembledFrame{data: data}
	if a.vp9 {
		f.key, f.width, f.height = vp9Keyframe(data, a.keyHint)
	} else {
		f.key, f.width, f.height = vp8Keyframe(data)
	}

	return f
}

// vp8Keyframe reports whether a VP8 frame is a keyframe and its dimensions
// (RFC 6386 §9.1: 3-byte frame tag, start code 9d 01 2a, 14-bit sizes).
func vp8Keyframe(b []byte) (bool, int, int) {
	if len(b) < 10 || b[0]&1 != 0 {
		return false, 0, 0
	}
	if b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
		return false, 0, 0
	}
	w := int(binary.LittleEndian.Uint16(b[6:]) & 0x3fff)
	h := int(binary.LittleEndian.Uint16(b[8:]) & 0x3fff)

	return true, w, h
}

// vp9Keyframe reports whether a VP9 frame is a keyframe (descriptor P bit
// clear and the uncompressed header says key frame) and its dimensions.
func vp9Keyframe(b []byte, hint bool) (bool, int, int) {
	if !hint {
		return false, 0, 0
	}
	var h vp9.Header
	if err := h.Unmarshal(b); err != nil || h.NonKeyFrame || h.ShowExistingFrame {
		return false, 0, 0
	}

	return true, int(h.Width()), int(h.Height())
}
