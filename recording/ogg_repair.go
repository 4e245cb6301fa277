package recording

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

// repairOgg keeps the pages up to the last one with a valid CRC and sets EOS
// on it.
func repairOgg(part, final string) (RepairResult, error) {
	res := RepairResult{Part: part, Kind: FileKindOgg}
	if err := checkTarget(final); err != nil {
		return res, err
	}
	f, err := os.OpenFile(part, os.O_RDWR, 0) //nolint:gosec // path from ReadDir of the caller's dir
	if err != nil {
		return res, fmt.Errorf("failed to open: %w", err)
	}
	defer func() { _ = f.Close() }()
	r := bufio.NewReaderSize(f, 64*1024)
	var off, lastStart, lastEnd int64
	var granule int64
	preSkip := int64(-1)
	pages := 0
	page := make([]byte, 0, oggPageHeaderLen+oggMaxSegments+oggMaxSegments*255)
	for {
		p, err := readOggPage(r, page)
		if err != nil {
			break // EOF, truncated or corrupt: keep what came before
		}
		page = p
		if pages == 0 {
			body := p[oggPageHeaderLen+int(p[26]):]
			if len(body) < 19 || !bytes.HasPrefix(body, []byte("OpusHead")) {
				return res, fmt.Errorf("%w: not an Ogg Opus stream", ErrNotRepairable)
			}
			preSkip = int64(binary.LittleEndian.Uint16(body[10:]))
		}
		pages++
		lastStart = off
		off += int64(len(p))
		lastEnd = off
		if g := int64(binary.LittleEndian.Uint64(p[6:])); g >= 0 && pages > 2 { //nolint:gosec // granule
			granule = g
		}
	}
	if pages <= 2 || granule <= preSkip {
		// Headers only: nothing to play.
		_ = f.Close()
		if err := os.Remove(part); err != nil {
			return res, fmt.Errorf("failed to remove empty part: %w", err)
		}
		res.Removed = true

		return res, nil
	}
	if err := f.Truncate(lastEnd); err != nil {
		return res, fmt.Errorf("failed to truncate: %w", err)
	}
	last := make([]byte, lastEnd-lastStart)
	if _, err := f.ReadAt(last, lastStart); err != nil {
		return res, fmt.Errorf("failed to read last page: %w", err)
	}
	last[5] |= oggFlagEOS
	binary.LittleEndian.PutUint32(last[22:], 0)
	binary.LittleEndian.PutUint32(last[22:], oggCRC(0, last))
	if _, err := f.WriteAt(last, lastStart); err != nil {
		return res, fmt.Errorf("failed to write last page: %w", err)
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("failed to sync: %w", err)
	}
	if err := os.Rename(part, final); err != nil {
		return res, fmt.Errorf("failed to rename: %w", err)
	}
	res.Path, res.Bytes = final, lastEnd
	res.Duration = time.Duration((granule - preSkip) * int64(time.Second) / opusSampleRate)

	return res, nil
}

// readOggPage reads one page into buf and checks its CRC.
func readOggPage(r *bufio.Reader, buf []byte) ([]byte, error) {
	buf = buf[:oggPageHeaderLen]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: %w", errShortPage, err)
	}
	if string(buf[:4]) != "OggS" || buf[4] != 0 {
		return nil, errBadPage
	}
	nseg := int(buf[26])
	buf = buf[:oggPageHeaderLen+nseg]
	if _, err := io.ReadFull(r, buf[oggPageHeaderLen:]); err != nil {
		return nil, fmt.Errorf("%w: %w", errShortPage, err)
	}
	size := 0
	for _, l := range buf[oggPageHeaderLen:] {
		size += int(l)
	}
	hl := len(buf)
	buf = buf[:hl+size]
	if _, err := io.ReadFull(r, buf[hl:]); err != nil {
		return nil, fmt.Errorf("%w: %w", errShortPage, err)
	}
	want := binary.LittleEndian.Uint32(buf[22:])
	binary.LittleEndian.PutUint32(buf[22:], 0)
	got := oggCRC(0, buf)
	binary.LittleEndian.PutUint32(buf[22:], want)
	if got != want {
		return nil, errBadPage
	}

	return buf, nil
}
