package recording

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Ogg Opus writer (RFC 3533 pages, RFC 7845 mapping), written for recording
// real-time RTP: the caller gives each packet's position on the 48 kHz
// timeline, gaps are filled with Opus silence frames so the granule position
// keeps wall-clock time, pages are flushed every oggPageDuration (bounding
// what a crash can lose), and the last page gets EOS on Close.

const (
	oggPageHeaderLen = 27
	oggMaxSegments   = 255
	// oggPageDuration is how much audio is collected per page (48 kHz samples).
	oggPageDuration = 48000 / 5 // 200 ms
	// opusPreSkip is the pre-skip we declare (RFC 7845 §4.2 recommends at least
	// 80 ms when starting from a running encoder). We prepend exactly that much
	// silence, so playback time 0 is the first real packet's start.
	opusPreSkip = 3840
	// opusSampleRate is the Opus granule/timestamp rate.
	opusSampleRate = 48000
	oggFlagBOS     = 0x02
	oggFlagEOS     = 0x04
	oggFlagCont    = 0x01
	// oggMaxFill bounds silence filling for one gap (one hour); longer gaps
	// are not filled (a timestamp discontinuity, not a pause).
	oggMaxFill = 3600 * opusSampleRate
)

// oggCRCTable is the CRC-32 table of Ogg (polynomial 0x04c11db7, no reflection).
var oggCRCTable = func() (t [256]uint32) { //nolint:gochecknoglobals // constant table
	for i := range 256 {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}

	return t
}()

func oggCRC(crc uint32, b []byte) uint32 {
	for _, v := range b {
		crc = crc<<8 ^ oggCRCTable[byte(crc>>24)^v]
	}

	return crc
}

// opusHead returns the 19-byte OpusHead (RFC 7845 §5.1, mapping family 0).
func opusHead(channels uint8, preSkip uint16) []byte {
	b := make([]byte, 19)
	copy(b, "OpusHead")
	b[8] = 1
	b[9] = channels
	binary.LittleEndian.PutUint16(b[10:], preSkip)
	binary.LittleEndian.PutUint32(b[12:], opusSampleRate)
	// output gain 0, mapping family 0

	return b
}

// opusTags returns an OpusTags header with the vendor string and comments.
func opusTags(vendor string, comments ...string) []byte {
	n := 8 + 4 + len(vendor) + 4
	for _, c := range comments {
		n += 4 + len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, "OpusTags"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(vendor))) //nolint:gosec // short constant
	b = append(b, vendor...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(comments))) //nolint:gosec // few
	for _, c := range comments {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(c))) //nolint:gosec // short
		b = append(b, c...)
	}

	return b
}

// opusFrameSamples returns the 48 kHz samples of one frame for a TOC config.
func opusFrameSamples(config byte) int {
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		return [4]int{480, 960, 1920, 2880}[config&3]
	case config < 16: // Hybrid: 10, 20 ms
		return [2]int{480, 960}[config&1]
	default: // CELT: 2.5, 5, 10, 20 ms
		return [4]int{120, 240, 480, 960}[config&3]
	}
}

// OpusPacketSamples returns the 48 kHz sample count of an Opus packet
// (RFC 6716 §3.1), or 0 if the packet is malformed.
func OpusPacketSamples(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	per := opusFrameSamples(p[0] >> 3)
	switch p[0] & 3 {
	case 0:
		return per
	case 1, 2:
		return 2 * per
	default:
		if len(p) < 2 {
			return 0
		}
		n := int(p[1] & 0x3f)
		if n*per > 5760 {
			return 0
		}

		return n * per
	}
}

// opusSilence holds a CELT-only code-0 "silence" frame for each CELT frame
// size (2.5, 5, 10, 20 ms); the TOC byte's stereo bit is set per stream.
// 0xFF 0xFE makes the range decoder read the silence flag as set.
func opusSilence(samples int, stereo bool) []byte {
	var config byte
	switch samples {
	case 960:
		config = 31
	case 480:
		config = 30
	case 240:
		config = 29
	default:
		config = 28
	}
	toc := config << 3
	if stereo {
		toc |= 0x04
	}

	return []byte{toc, 0xFF, 0xFE}
}

// oggOpusWriter writes one Ogg Opus logical stream to w.
type oggOpusWriter struct {
	w       io.Writer
	serial  uint32
	seq     uint32
	stereo  bool
	granule int64 // samples (incl. pre-skip) up to the end of the last packet added
	bytes   int64

	// pending page
	segs      []byte // lacing values
	data      []byte // packet bytes
	pageStart int64  // granule at the start of the pending page
	page      []byte // page assembly buffer, reused
	silence   [4][]byte
}

func newOggOpusWriter(w io.Writer, serial uint32, channels uint8, vendor string) (*oggOpusWriter, error) {
	o := &oggOpusWriter{
		w:      w,
		serial: serial,
		stereo: channels > 1,
		segs:   make([]byte, 0, oggMaxSegments),
		data:   make([]byte, 0, 16*1024),
		page:   make([]byte, 0, oggPageHeaderLen+oggMaxSegments+16*1024),
	}
	for i, n := range []int{120, 240, 480, 960} {
		o.silence[i] = opusSilence(n, o.stereo)
	}
	// Header pages: OpusHead alone on the BOS page, OpusTags alone on the next.
	if err := o.writeHeaderPage(opusHead(channels, opusPreSkip), oggFlagBOS); err != nil {
		return nil, err
	}
	if err := o.writeHeaderPage(opusTags(vendor), 0); err != nil {
		return nil, err
	}

	return o, nil
}

func (o *oggOpusWriter) writeHeaderPage(p []byte, flags byte) error {
	if err := o.add(p, 0); err != nil {
		return err
	}

	return o.flush(flags, 0)
}

// writePacket adds an Opus packet whose first sample is at PCM position pos
// (48 kHz samples from the start of the file, after pre-skip). A gap before it
// is filled with silence; a packet that starts before the end of the previous
// one is still written (the granule then runs at most a packet ahead of RTP).
// It returns the number of silence samples inserted for gaps (not counting
// the pre-skip prefix).
func (o *oggOpusWriter) writePacket(pos int64, pkt []byte) (int64, error) {
	n := OpusPacketSamples(pkt)
	if n == 0 {
		return 0, nil // malformed or empty packet: skip, it carries no time
	}
	var filled int64
	if gap := pos + opusPreSkip - o.granule; gap >= 120 && gap <= oggMaxFill {
		prefix := max(0, opusPreSkip-o.granule)
		var err error
		filled, err = o.fill(gap)
		filled = max(0, filled-prefix)
		if err != nil {
			return filled, err
		}
	}

	return filled, o.addPacket(pkt, n)
}

// fill inserts silence frames covering gap samples (rounded down to 2.5 ms).
func (o *oggOpusWriter) fill(gap int64) (int64, error) {
	var done int64
	for gap-done >= 120 {
		i, n := 3, int64(960)
		for n > gap-done {
			i--
			n /= 2
		}
		if err := o.addPacket(o.silence[i], int(n)); err != nil {
			return done, err
		}
		done += n
	}

	return done, nil
}

func (o *oggOpusWriter) addPacket(pkt []byte, samples int) error {
	// Flush before adding so the pending page is never empty: Close can then
	// put EOS on a page that carries audio.
	need := len(pkt)/255 + 1
	if len(o.segs) > 0 && (o.granule-o.pageStart >= oggPageDuration || len(o.segs)+need > oggMaxSegments) {
		if err := o.flush(0, o.granule); err != nil {
			return err
		}
	}
	if err := o.add(pkt, samples); err != nil {
		return err
	}

	return nil
}

// add appends a packet to the pending page.
func (o *oggOpusWriter) add(pkt []byte, samples int) error {
	need := len(pkt)/255 + 1
	if need > oggMaxSegments {
		return errPacketTooLong
	}
	if len(o.segs) == 0 {
		o.pageStart = o.granule
	}
	for rest := len(pkt); ; rest -= 255 {
		if rest < 255 {
			o.segs = append(o.segs, byte(rest))

			break
		}
		o.segs = append(o.segs, 255)
	}
	o.data = append(o.data, pkt...)
	o.granule += int64(samples)

	return nil
}

// flush writes the pending page with the given header flags and granule.
func (o *oggOpusWriter) flush(flags byte, granule int64) error {
	p := o.page[:0]
	p = append(p, "OggS"...)
	p = append(p, 0, flags)
	p = binary.LittleEndian.AppendUint64(p, uint64(granule)) //nolint:gosec // non-negative
	p = binary.LittleEndian.AppendUint32(p, o.serial)
	p = binary.LittleEndian.AppendUint32(p, o.seq)
	p = append(p, 0, 0, 0, 0) // CRC
	p = append(p, byte(len(o.segs)))
	p = append(p, o.segs...)
	p = append(p, o.data...)
	binary.LittleEndian.PutUint32(p[22:], oggCRC(0, p))
	o.page = p
	o.seq++
	o.segs = o.segs[:0]
	o.data = o.data[:0]
	n, err := o.w.Write(p)
	o.bytes += int64(n)
	if err != nil {
		return fmt.Errorf("failed to write ogg page: %w", err)
	}

	return nil
}

// close writes the pending page with EOS. If nothing is pending (no audio
// was ever written) an empty EOS page ends the stream.
func (o *oggOpusWriter) close() error {
	return o.flush(oggFlagEOS, o.granule)
}

// duration returns the playable duration in 48 kHz samples.
func (o *oggOpusWriter) duration() int64 {
	if o.granule < opusPreSkip {
		return 0
	}

	return o.granule - opusPreSkip
}
