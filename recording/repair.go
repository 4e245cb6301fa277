package recording

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/at-wat/ebml-go/webm"
	"github.com/rs/zerolog"
)

// partSuffix marks a file that is still being written.
const partSuffix = ".part"

// RepairResult describes one orphaned "*.part" file handled by Repair.
type RepairResult struct {
	Part     string        `json:"part"` // the orphaned file
	Path     string        `json:"path"` // the repaired file (empty if removed)
	Kind     FileKind      `json:"kind"`
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	// Removed is set when the part held no media at all and was deleted.
	Removed bool `json:"removed"`
}

// Repair finalizes the "*.webm.part" and "*.ogg.part" files left in dir by a
// crashed or failed writer, so that they play up to the last complete
// block/page: a WebM is remuxed (in Go, with ebml-go) into a new file with
// SeekHead, Cues and Duration; an Ogg is cut after its last complete page,
// which gets the EOS flag. Repaired files get their final name (without
// ".part"); parts without any media are removed. Call it at startup, before
// any writer uses dir. It returns what it handled so the caller can mark
// those recordings repaired; errors for single files are joined, and the
// other files are still processed.
func Repair(ctx context.Context, dir string) ([]RepairResult, error) {
	log := zerolog.Ctx(ctx)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", dir, err)
	}
	var out []RepairResult
	var errs []error
	for _, e := range entries {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())

			break
		}
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, partSuffix) {
			continue
		}
		part := filepath.Join(dir, name)
		final := strings.TrimSuffix(part, partSuffix)
		var res RepairResult
		var rerr error
		switch filepath.Ext(final) {
		case ".ogg":
			res, rerr = repairOgg(part, final)
		case ".webm":
			res, rerr = repairWebM(part, final)
		default:
			continue
		}
		if rerr != nil {
			errs = append(errs, fmt.Errorf("failed to repair %s: %w", part, rerr))
			log.Debug().Err(rerr).Str("path", part).Msg("recording file not repaired") // returned

			continue
		}
		log.Info().Str("path", res.Path).Bool("removed", res.Removed).Dur("duration", res.Duration).
			Msg("repaired orphaned recording file")
		out = append(out, res)
	}

	return out, errors.Join(errs...)
}

func checkTarget(final string) error {
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%w: %s", errTargetExists, final)
	}

	return nil
}

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

// EBML element ids used by the WebM walker.
const (
	idEBML        = 0x1A45DFA3
	idSegment     = 0x18538067
	idInfo        = 0x1549A966
	idTracks      = 0x1654AE6B
	idCluster     = 0x1F43B675
	idTimecode    = 0xE7
	idSimpleBlock = 0xA3
	idBlockGroup  = 0xA0
	idBlock       = 0xA1
	unknownSize   = -1
)

// ebmlReader reads EBML element headers from a stream, tracking the offset.
type ebmlReader struct {
	r   *bufio.Reader
	off int64
}

func (e *ebmlReader) vint(keepMarker bool) (int64, int, error) {
	b0, err := e.r.ReadByte()
	if err != nil {
		return 0, 0, err //nolint:wrapcheck // EOF is checked by callers
	}
	e.off++
	n := 1
	for mask := byte(0x80); n <= 8 && b0&mask == 0; mask >>= 1 {
		n++
	}
	if n > 8 {
		return 0, 0, errBadEBML
	}
	v := int64(b0)
	if !keepMarker {
		v &= int64(0xFF >> n)
	}
	allOnes := v == int64(0xFF>>n)
	for range n - 1 {
		b, err := e.r.ReadByte()
		if err != nil {
			return 0, 0, fmt.Errorf("%w: %w", errBadEBML, err)
		}
		e.off++
		v = v<<8 | int64(b)
		allOnes = allOnes && b == 0xFF
	}
	if !keepMarker && allOnes {
		return unknownSize, n, nil
	}

	return v, n, nil
}

// header reads an element id and size.
func (e *ebmlReader) header() (int64, int64, error) {
	id, _, err := e.vint(true)
	if err != nil {
		return 0, 0, err
	}
	size, _, err := e.vint(false)
	if err != nil {
		return 0, 0, err
	}

	return id, size, nil
}

func (e *ebmlReader) read(buf []byte) error {
	n, err := io.ReadFull(e.r, buf)
	e.off += int64(n)
	if err != nil {
		return fmt.Errorf("%w: %w", errBadEBML, err)
	}

	return nil
}

func (e *ebmlReader) skip(n int64) error {
	d, err := e.r.Discard(int(n))
	e.off += int64(d)
	if err != nil {
		return fmt.Errorf("%w: %w", errBadEBML, err)
	}

	return nil
}

// rawElement re-encodes an element header and its body so ebml.Unmarshal
// can parse it.
func (e *ebmlReader) rawElement(id, size int64) ([]byte, error) {
	if size < 0 || size > 1<<20 {
		return nil, errBadEBML
	}
	var hdr []byte
	for shift := 24; shift >= 0; shift -= 8 {
		if b := byte(id >> shift); b != 0 || len(hdr) > 0 {
			hdr = append(hdr, b)
		}
	}
	hdr = append(hdr, 0x01, byte(size>>48), byte(size>>40), byte(size>>32), byte(size>>24), byte(size>>16), byte(size>>8), byte(size))
	body := make([]byte, size)
	if err := e.read(body); err != nil {
		return nil, err
	}

	return append(hdr, body...), nil
}

// webmFrameOut is one block read back from a WebM.
type webmFrameOut struct {
	track uint64
	ts    int64
	key   bool
	data  []byte
}

// repairWebM reads the blocks that were completely written and remuxes them
// into a new seekable file.
func repairWebM(part, final string) (RepairResult, error) {
	res := RepairResult{Part: part, Kind: FileKindWebM}
	if err := checkTarget(final); err != nil {
		return res, err
	}
	in, err := os.Open(part) //nolint:gosec // path from ReadDir of the caller's dir
	if err != nil {
		return res, fmt.Errorf("failed to open: %w", err)
	}
	defer func() { _ = in.Close() }()
	e := &ebmlReader{r: bufio.NewReaderSize(in, 256*1024)}
	var info struct {
		Info webm.Info `ebml:"Info"`
	}
	var tracks struct {
		Tracks webm.Tracks `ebml:"Tracks"`
	}
	// EBML header, then the Segment and its children up to the first Cluster.
	id, size, err := e.header()
	if err != nil || id != idEBML || size < 0 {
		return res, fmt.Errorf("%w: no EBML header", ErrNotRepairable)
	}
	if err := e.skip(size); err != nil {
		return res, fmt.Errorf("%w: %w", ErrNotRepairable, err)
	}
	if id, _, err = e.header(); err != nil || id != idSegment {
		return res, fmt.Errorf("%w: no Segment", ErrNotRepairable)
	}
	for {
		id, size, err = e.header()
		if err != nil {
			return res, fmt.Errorf("%w: no Cluster: %w", ErrNotRepairable, err)
		}
		if id == idCluster {
			break
		}
		switch id {
		case idInfo, idTracks:
			raw, err := e.rawElement(id, size)
			if err != nil {
				return res, fmt.Errorf("%w: %w", ErrNotRepairable, err)
			}
			target := any(&tracks)
			if id == idInfo {
				target = &info
			}
			if err := ebml.Unmarshal(bytes.NewReader(raw), target); err != nil {
				return res, fmt.Errorf("%w: %w", ErrNotRepairable, err)
			}
		default:
			if size < 0 {
				return res, fmt.Errorf("%w: unknown-size element %x", ErrNotRepairable, id)
			}
			if err := e.skip(size); err != nil {
				return res, fmt.Errorf("%w: %w", ErrNotRepairable, err)
			}
		}
	}
	if len(tracks.Tracks.TrackEntry) == 0 {
		return res, fmt.Errorf("%w: no tracks", ErrNotRepairable)
	}
	tmp := final + ".repair"
	_ = os.Remove(tmp)
	w := &blockRewriter{}
	n, last, err := w.run(e, tmp, tracks.Tracks.TrackEntry, info.Info)
	if err != nil {
		_ = os.Remove(tmp)

		return res, err
	}
	if n == 0 {
		_ = os.Remove(tmp)
		_ = in.Close()
		if err := os.Remove(part); err != nil {
			return res, fmt.Errorf("failed to remove empty part: %w", err)
		}
		res.Removed = true

		return res, nil
	}
	if err := os.Rename(tmp, final); err != nil {
		return res, fmt.Errorf("failed to rename: %w", err)
	}
	_ = in.Close()
	if err := os.Remove(part); err != nil {
		return res, fmt.Errorf("failed to remove part: %w", err)
	}
	st, err := os.Stat(final)
	if err == nil {
		res.Bytes = st.Size()
	}
	res.Path = final
	res.Duration = last

	return res, nil
}

type blockRewriter struct {
	bufs [2][]byte
	cur  int
}

// run walks clusters starting with one whose header (size) was just read,
// and writes every complete block to a new file at tmp. It returns the
// number of blocks and the resulting Duration.
func (b *blockRewriter) run(e *ebmlReader, tmp string, entries []webm.TrackEntry, info webm.Info) (int, time.Duration, error) {
	out, err := CreateFile(tmp)
	if err != nil {
		return 0, 0, err
	}
	sf := &stickyFile{f: out}
	seg := info
	seg.Duration = 0
	if seg.TimecodeScale == 0 {
		seg.TimecodeScale = webm.DefaultSegmentInfo.TimecodeScale
	}
	seg.WritingApp = "matrix-recorder (repaired)"
	var fatal error
	opts := []mkvcore.BlockWriterOption{
		mkvcore.WithSegmentInfo(&seg),
		mkvcore.WithSeekHead(true),
		mkvcore.WithCues(webmCuesReserve),
		mkvcore.WithBlockInterceptor(nil),
		mkvcore.WithOnErrorHandler(func(error) {}),
		mkvcore.WithOnFatalHandler(func(err error) { fatal = err }),
	}
	for _, t := range entries {
		if t.TrackType == 1 {
			opts = append(opts, mkvcore.WithMinMaxClusterDuration(t.TrackNumber, webmMinCluster, webmMaxCluster))

			break
		}
	}
	ws, err := webm.NewSimpleBlockWriter(sf, entries, opts...)
	if err != nil {
		_ = sf.closeFile()

		return 0, 0, fmt.Errorf("failed to start webm writer: %w", err)
	}
	byTrack := map[uint64]webm.BlockWriteCloser{}
	for i, t := range entries {
		byTrack[t.TrackNumber] = ws[i]
	}
	n := 0
	var first, last int64 = -1, 0
	werr := b.walk(e, func(f webmFrameOut) {
		w, ok := byTrack[f.track]
		if !ok {
			return
		}
		buf := append(b.bufs[b.cur][:0], f.data...)
		b.bufs[b.cur] = buf
		b.cur ^= 1 // ebml-go holds the slice until the next Write returns
		_, _ = w.Write(f.key, f.ts, buf)
		if first < 0 {
			first = f.ts
		}
		last = f.ts
		n++
	})
	for _, w := range ws {
		_ = w.Close()
	}
	err = sf.closeFile()
	if err == nil {
		err = fatal
	}
	if err == nil && werr != nil && !errors.Is(werr, errBadEBML) && !errors.Is(werr, io.EOF) {
		err = werr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("failed to rewrite: %w", err)
	}
	if first < 0 {
		return 0, 0, nil
	}

	return n, time.Duration(last-first) * time.Duration(seg.TimecodeScale), nil
}

// walk calls fn for every complete block. It stops at the end of the data,
// at the first truncated element, or at the first element it cannot parse.
func (b *blockRewriter) walk(e *ebmlReader, fn func(webmFrameOut)) error {
	var tc int64
	var data []byte
	for {
		id, size, err := e.header()
		if err != nil {
			return err
		}
		switch id {
		case idCluster:
			// descend: a cluster's children (timecode, blocks) follow
		case idTimecode:
			if size < 1 || size > 8 {
				return errBadEBML
			}
			var v [8]byte
			if err := e.read(v[8-size:]); err != nil {
				return err
			}
			tc = int64(binary.BigEndian.Uint64(v[:])) //nolint:gosec // timecodes are small
		case idBlockGroup:
			// descend: its children follow (Block, durations, references)
			continue
		case idSimpleBlock, idBlock:
			if size < 4 || size > 64<<20 {
				return errBadEBML
			}
			if int64(cap(data)) < size {
				data = make([]byte, size)
			}
			data = data[:size]
			if err := e.read(data); err != nil {
				return err
			}
			f, ok := parseBlock(data, tc, id == idSimpleBlock)
			if ok {
				fn(f)
			}
		default:
			if size < 0 {
				return errBadEBML
			}
			if err := e.skip(size); err != nil {
				return err
			}
		}
	}
}

// parseBlock decodes an unlaced (Simple)Block.
func parseBlock(d []byte, clusterTC int64, simple bool) (webmFrameOut, bool) {
	n := 1
	for mask := byte(0x80); n <= 8 && d[0]&mask == 0; mask >>= 1 {
		n++
	}
	if n > 4 || len(d) < n+3 {
		return webmFrameOut{}, false
	}
	track := uint64(d[0]) & uint64(0xFF>>n)
	for _, c := range d[1:n] {
		track = track<<8 | uint64(c)
	}
	rel := int64(int16(binary.BigEndian.Uint16(d[n:]))) //nolint:gosec // signed on purpose
	flags := d[n+2]
	if flags&0x06 != 0 {
		return webmFrameOut{}, false // laced: never written by us
	}

	return webmFrameOut{
		track: track,
		ts:    clusterTC + rel,
		key:   simple && flags&0x80 != 0,
		data:  d[n+3:],
	}, true
}
