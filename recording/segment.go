package recording

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

type segment struct {
	index     int
	kind      FileKind
	path      string
	part      string
	file      *stickyFile
	start     time.Time
	ogg       *oggOpusWriter
	webm      *webmMuxer
	width     int
	height    int
	codecs    []string
	hasAudio  bool
	audioOpen bool  // WebM: the pre-skip silence has been written
	audioEnd  int64 // end of the last audio written, ns from start
	audioNext int64 // WebM: 48 kHz sample position where the next audio packet is due
	sender    bool
}

// tryStart opens the first file once enough is known: a keyframe (streams
// with video) and sender reports for A/V alignment, or the waits expired.
func (s *StreamWriter) tryStart(now time.Time, force bool) {
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	hasA := a != nil && len(a.pending) > 0
	hasV := v != nil && len(v.pending) > 0 // pending video starts with a keyframe
	if !hasA && !hasV {
		return
	}
	waited := now.Sub(s.first)
	synced := (a == nil || a.srHave) && (v == nil || v.srHave)
	syncOK := force || synced || waited >= s.cfg.SyncWait
	switch {
	case hasV && syncOK:
		s.start(FileKindWebM)
	case hasA && syncOK && (v == nil || force || waited >= s.cfg.KeyframeWait):
		s.start(FileKindOgg)
	}
}

// start opens the first segment and writes the pending samples into it.
func (s *StreamWriter) start(kind FileKind) {
	var in []*trackState
	for _, t := range s.tracks {
		if t == nil || len(t.pending) == 0 || (kind == FileKindOgg && t.kind == KindVideo) {
			continue
		}
		in = append(in, t)
	}
	s.decideDomain(in)
	var origin time.Time
	for _, t := range in {
		s.lockAnchor(t)
		if w := t.wallOf(t.pending[0].ext); origin.IsZero() || w.Before(origin) {
			origin = w
		}
	}
	v := s.tracks[trackVideo]
	width, height := 0, 0
	if kind == FileKindWebM {
		width, height = v.pending[0].width, v.pending[0].height
	}
	s.open(kind, origin, width, height)
	if s.err != nil {
		return
	}
	// Write pending samples in wall-clock order across tracks.
	for _, t := range s.tracks {
		if t == nil {
			continue
		}
		if kind == FileKindOgg && t.kind == KindVideo {
			s.dropPending(t)
		}
	}
	a := s.tracks[trackAudio]
	ai, vi := 0, 0
	for s.err == nil {
		var t *trackState
		var p pendingSample
		switch {
		case a != nil && ai < len(a.pending) && (v == nil || vi >= len(v.pending) || !a.wallOf(a.pending[ai].ext).After(v.wallOf(v.pending[vi].ext))):
			t, p = a, a.pending[ai]
			ai++
		case v != nil && vi < len(v.pending):
			t, p = v, v.pending[vi]
			vi++
		default:
		}
		if t == nil {
			break
		}
		if t.kind == KindVideo && p.key && (p.width != s.seg.width || p.height != s.seg.height) {
			s.rotate(t, p.ext, p.width, p.height)
			if s.err != nil {
				break
			}
		}
		s.write(t, p.ext, *p.buf, p.key)
	}
	for _, t := range s.tracks {
		if t == nil {
			continue
		}
		s.dropPending(t)
	}
}

// open creates a segment file starting at wall-clock origin.
func (s *StreamWriter) open(kind FileKind, origin time.Time, width, height int) {
	seg := &segment{index: s.nextSeg, kind: kind, start: origin, width: width, height: height, sender: s.senderDomain}
	s.nextSeg++
	ext := ".ogg"
	if kind == FileKindWebM {
		ext = ".webm"
	}
	seg.path = filepath.Join(s.cfg.Dir, fmt.Sprintf("%s-%03d%s", s.cfg.BaseName, seg.index, ext))
	seg.part = seg.path + ".part"
	if _, err := os.Lstat(seg.path); err == nil {
		s.fail(seg, fmt.Errorf("%w: %s", errTargetExists, seg.path))

		return
	}
	f, err := s.cfg.Create(seg.part)
	if err != nil {
		s.fail(nil, err)

		return
	}
	seg.file = &stickyFile{f: f}
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	if kind == FileKindWebM {
		seg.hasAudio = a != nil
		codec := "V_VP8"
		if v.asm.vp9 {
			codec = "V_VP9"
		}
		vs := &webmTrackSpec{codec: codec, width: width, height: height}
		var as *webmTrackSpec
		seg.codecs = append(seg.codecs, v.params.MimeType)
		if a != nil {
			as = &webmTrackSpec{channels: int(a.params.Channels)}
			seg.codecs = append(seg.codecs, MimeTypeOpus)
		}
		seg.webm, err = newWebMMuxer(seg.file, vs, as, origin, &s.pool)
	} else {
		seg.hasAudio = true
		seg.codecs = []string{MimeTypeOpus}
		var serial [4]byte
		_, _ = rand.Read(serial[:])
		seg.ogg, err = newOggOpusWriter(seg.file, binary.LittleEndian.Uint32(serial[:]), uint8(a.params.Channels), "matrix-recorder") //nolint:gosec // 1 or 2
		if err == nil {
			err = seg.file.err()
		}
	}
	if err != nil {
		s.fail(seg, err)

		return
	}
	s.seg = seg
	s.log.Debug().Str("path", seg.part).Str("kind", string(kind)).Time("start", origin).Msg("recording file opened")
}

// dropPending returns a track's held samples' buffers to the pool.
func (s *StreamWriter) dropPending(t *trackState) {
	for _, p := range t.pending {
		s.pool.put(p.buf)
	}
	t.pending = t.pending[:0]
	t.pendingBytes = 0
}

// rotate finishes the current segment and opens a WebM one for a video
// keyframe at ext. Audio continues from where the previous file ended.
func (s *StreamWriter) rotate(v *trackState, ext int64, w, h int) {
	old := s.seg
	s.lockAnchor(v)
	keyWall := v.wallOf(ext)
	origin := keyWall
	if old != nil && old.hasAudio {
		audioEnd := old.start.Add(time.Duration(old.audioEnd))
		if old.webm != nil {
			// flush first so audioEnd covers everything queued
			if err := old.webm.drain(true); err != nil {
				s.fail(old, err)

				return
			}
			audioEnd = old.start.Add(time.Duration(old.audioEnd))
		}
		if audioEnd.Before(origin) && audioEnd.After(keyWall.Add(-rotateLookback)) {
			origin = audioEnd
		}
	}
	s.finish()
	if s.err != nil {
		return
	}
	s.open(FileKindWebM, origin, w, h)
}

// write puts one sample into the current segment.
func (s *StreamWriter) write(t *trackState, ext int64, data []byte, key bool) {
	seg := s.seg
	if seg == nil {
		return
	}
	s.lockAnchor(t)
	media := t.wallOf(ext).Sub(seg.start)
	if media < 0 {
		if t.kind == KindVideo {
			s.stats.DroppedFrames++
		}

		return
	}
	var err error
	if t.kind == KindAudio {
		pos := (int64(media)*opusSampleRate + int64(time.Second)/2) / int64(time.Second)
		n := int64(OpusPacketSamples(data))
		switch {
		case seg.ogg != nil:
			var filled int64
			filled, err = seg.ogg.writePacket(pos, data)
			s.stats.SilenceSamples += filled
			if err == nil {
				err = seg.file.err()
			}
		case seg.webm != nil && seg.hasAudio:
			err = s.writeWebMAudio(seg, t.params.Channels > 1, pos, n, data)
		}
		if end := (pos + n) * int64(time.Second) / opusSampleRate; end > seg.audioEnd {
			seg.audioEnd = end
		}
	} else if seg.webm != nil {
		err = seg.webm.push(trackVideo, int64(media/time.Millisecond), key, data)
	}
	if err != nil {
		s.fail(seg, err)

		return
	}
	s.stats.FramesWritten++
}

// writeWebMAudio puts an Opus packet whose first sample is at pos (48 kHz
// samples from the file's start) into a WebM segment. The track starts with
// the pre-skip's worth of silence (CodecDelay); a gap since the previous
// packet (mute, DTX, loss) is filled with silence frames so the audio
// timeline stays continuous, as in the Ogg writer.
func (s *StreamWriter) writeWebMAudio(seg *segment, stereo bool, pos, n int64, data []byte) error {
	if !seg.audioOpen {
		seg.audioOpen = true
		seg.audioNext = pos
		for i := range int64(opusPreSkip / 960) {
			if err := seg.webm.push(trackAudio, (pos+i*960)/48, false, opusSilence(960, stereo)); err != nil {
				return err
			}
		}
	}
	if gap := pos - seg.audioNext; gap >= 120 && gap <= oggMaxFill {
		for gap >= 120 {
			f := int64(960)
			for f > gap {
				f /= 2
			}
			if err := seg.webm.push(trackAudio, (seg.audioNext+opusPreSkip)/48, false, opusSilence(int(f), stereo)); err != nil {
				return err
			}
			seg.audioNext += f
			gap -= f
			s.stats.SilenceSamples += f
		}
	}
	seg.audioNext = max(seg.audioNext, pos+n)

	return seg.webm.push(trackAudio, (pos+opusPreSkip)/48, false, data)
}

// finish finalizes the current segment and records its result.
func (s *StreamWriter) finish() {
	seg := s.seg
	if seg == nil {
		return
	}
	s.seg = nil
	var err error
	var dur time.Duration
	if seg.webm != nil {
		err = seg.webm.close()
		dur = seg.webm.duration()
	} else {
		err = seg.ogg.close()
		if err == nil {
			err = seg.file.err()
		}
		dur = time.Duration(seg.ogg.duration() * int64(time.Second) / opusSampleRate)
	}
	if cerr := seg.file.closeFile(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fail(nil, fmt.Errorf("failed to finalize %s: %w", seg.part, err))

		return
	}
	if err := os.Rename(seg.part, seg.path); err != nil {
		s.fail(nil, fmt.Errorf("failed to rename %s: %w", seg.part, err))

		return
	}
	res := FileResult{
		Path: seg.path, Kind: seg.kind, Codecs: seg.codecs, Bytes: seg.file.size(), Duration: dur,
		Start: seg.start, Segment: seg.index, SenderReports: seg.sender,
	}
	if seg.kind == FileKindWebM {
		res.Width, res.Height = seg.width, seg.height
	}
	res.MuteIntervals = s.muteIntervals(seg.start, dur)
	s.results = append(s.results, res)
	if s.cfg.OnSegment != nil {
		s.cfg.OnSegment(res)
	}
	s.log.Info().Str("path", res.Path).Dur("duration", dur).Int64("bytes", res.Bytes).Msg("recording file finished")
}

// muteIntervals clips the stream's mute spans to a file's timeline.
func (s *StreamWriter) muteIntervals(start time.Time, dur time.Duration) []Interval {
	var out []Interval
	end := start.Add(dur)
	for _, m := range s.mutes {
		me := m.end
		if me.IsZero() || me.After(end) {
			me = end
		}
		ms := m.start
		if ms.Before(start) {
			ms = start
		}
		if !me.After(ms) {
			continue
		}
		out = append(out, Interval{Kind: m.kind, Start: ms.Sub(start), End: me.Sub(start)})
	}

	return out
}

// fail marks the writer failed. The segment's file is closed (ebml-go's
// goroutine is released) and its .part is left for Repair.
func (s *StreamWriter) fail(seg *segment, err error) {
	if s.err != nil {
		return
	}
	s.err = fmt.Errorf("%w: %s: %w", ErrWriterFailed, s.cfg.BaseName, err)
	s.log.Debug().Err(err).Msg("recording writer failed") // returned to the caller, who logs it
	if seg == nil {
		seg = s.seg
	}
	s.seg = nil
	if seg != nil && seg.file != nil {
		if seg.webm != nil {
			_ = seg.webm.close()
		}
		_ = seg.file.closeFile()
	}
}
