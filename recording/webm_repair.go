package recording

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/at-wat/ebml-go/webm"
)

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
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A valid header and Segment that end before the first
			// Cluster: the writer was stopped before any media was
			// written (a kill right after a new segment opened).
			return removeEmptyPart(in, part, res)
		}
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
	if n == 0 || last <= 0 {
		// No block, or blocks of a single instant (one frame: a kill
		// right after a segment opened), which no player takes for a
		// file: nothing to keep.
		_ = os.Remove(tmp)

		return removeEmptyPart(in, part, res)
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

// removeEmptyPart removes a part that holds no media.
func removeEmptyPart(in *os.File, part string, res RepairResult) (RepairResult, error) {
	_ = in.Close()
	if err := os.Remove(part); err != nil {
		return res, fmt.Errorf("failed to remove empty part: %w", err)
	}
	res.Removed = true

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
