package recording

import (
	"time"
)

// wallOf maps an unwrapped RTP timestamp to wall-clock time.
func (t *trackState) wallOf(ext int64) time.Time {
	return t.anchorWall.Add(time.Duration((ext - t.anchorExt) * int64(time.Second) / t.clock))
}

// senderWall maps ext to the sender's NTP clock (needs srHave).
func (t *trackState) senderWall(ext int64) time.Time {
	d := int64(int32(uint32(ext) - t.srRTP)) //nolint:gosec // wrap intended

	return t.srNTP.Add(time.Duration(d * int64(time.Second) / t.clock))
}

// arrivalWall maps ext through the first packet's arrival time.
func (t *trackState) arrivalWall(ext int64) time.Time {
	return t.arrWall.Add(time.Duration((ext - t.arrExt) * int64(time.Second) / t.clock))
}

// decideDomain fixes how the stream's tracks are mapped when the first
// file opens. Times are always reported on the local clock (so files of
// different participants, whose clocks differ, share one call timeline).
// If every track going into the file has a sender report, all tracks are
// mapped through their reports (that is what aligns audio and video) and
// shifted onto the local clock by domainOffset = arrival - sender time of
// the reference track's first packet (audio if present). Otherwise tracks
// are mapped by arrival time and aligned later (align).
func (s *StreamWriter) decideDomain(in []*trackState) {
	s.senderDomain = len(in) > 0
	for _, t := range in {
		s.senderDomain = s.senderDomain && t.srHave
	}
	if s.senderDomain {
		ref := in[len(in)-1] // tracks are ordered video, audio
		s.domainOffset = ref.arrWall.Sub(ref.senderWall(ref.arrExt))
	}
}

// lockAnchor fixes a track's mapping when it is first written to a file.
func (s *StreamWriter) lockAnchor(t *trackState) {
	if t.anchorLocked {
		return
	}
	t.anchorLocked = true
	t.anchorExt = t.ext
	if s.senderDomain && t.srHave {
		t.anchorWall, t.aligned = t.senderWall(t.ext).Add(s.domainOffset), true

		return
	}
	t.anchorWall = t.arrivalWall(t.ext)
	s.align()
}

// align moves locked tracks that are not yet aligned onto sender time as
// soon as the reports allow it. In the sender domain a track goes to its own
// report's mapping. In the arrival domain audio is the reference: once both
// tracks have reports, video is moved so that the two keep the offset their
// reports give. Corrections only ever move a track later: if the track
// would have to move earlier, the other track moves later instead, so no
// written media has to be dropped (a P-frame dropped would break the
// picture); the file gets a short gap. Corrections smaller than
// srCorrectMin are not applied. With a single track there is nothing to
// align.
func (s *StreamWriter) align() {
	a, v := s.tracks[trackAudio], s.tracks[trackVideo]
	if a == nil || v == nil || !a.anchorLocked || !v.anchorLocked {
		return
	}
	if !s.senderDomain && a.srHave && !a.aligned {
		a.aligned = true // the reference
	}
	for _, t := range []*trackState{a, v} {
		if !t.srHave || t.aligned {
			continue
		}
		o := a
		if t == a {
			o = v
		}
		var want time.Time
		switch {
		case s.senderDomain:
			want = t.senderWall(t.ext).Add(s.domainOffset)
		case t == v && a.aligned:
			off := a.wallOf(a.ext).Sub(a.senderWall(a.ext))
			want = t.senderWall(t.ext).Add(off)
		default:
			continue
		}
		t.aligned = true
		c := want.Sub(t.wallOf(t.ext))
		if c < srCorrectMin && c > -srCorrectMin {
			continue
		}
		s.log.Debug().Str("kind", string(t.kind)).Dur("correction", c).Msg("aligning tracks on sender reports")
		if c > 0 {
			t.anchorWall = t.anchorWall.Add(c)
		} else {
			o.anchorWall = o.anchorWall.Add(-c)
		}
	}
}

// SenderReport records an RTCP sender report (from rtcp.SenderReport:
// SSRC, NTPTime, RTPTime) for the track with that SSRC. Until a file is
// opened, reports move the track onto sender time so audio and video align;
// afterwards the mapping stays fixed (the file timeline is continuous).
func (s *StreamWriter) SenderReport(ssrc uint32, ntpTime uint64, rtpTime uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tracks {
		if t == nil || t.params.SSRC != ssrc {
			continue
		}
		t.srHave = true
		t.srNTP = ntpToTime(ntpTime)
		t.srRTP = rtpTime
	}
	s.align()
}

// ntpToTime converts a 64-bit NTP timestamp (seconds since 1900, 32.32
// fixed point) to time.Time.
func ntpToTime(ntp uint64) time.Time {
	const ntpEpochOffset = 2208988800
	sec := int64(ntp>>32) - ntpEpochOffset //nolint:gosec // fits
	frac := (ntp & 0xFFFFFFFF) * uint64(time.Second) >> 32

	return time.Unix(sec, int64(frac)) //nolint:gosec // < 1e9
}

// TimeToNTP converts t to a 64-bit NTP timestamp (for tests and callers
// that synthesise sender reports).
func TimeToNTP(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	sec := uint64(t.Unix() + ntpEpochOffset)                   //nolint:gosec // after 1900
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second) //nolint:gosec // < 1e9

	return sec<<32 | frac
}
