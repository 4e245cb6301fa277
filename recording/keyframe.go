package recording

import (
	"time"
)

// requestKeyframe calls the callback; never call it with s.mu held.
func (s *StreamWriter) requestKeyframe() {
	if s.cfg.RequestKeyframe != nil {
		s.cfg.RequestKeyframe()
	}
}

// unlock releases the lock and then fires a pending keyframe request.
func (s *StreamWriter) unlock() {
	want := s.wantKey
	s.wantKey = false
	s.mu.Unlock()
	if want {
		s.requestKeyframe()
	}
}

// checkKeyframe sends the periodic keyframe requests of the video track.
func (s *StreamWriter) checkKeyframe(now time.Time) {
	t := s.tracks[trackVideo]
	if t == nil || t.muted {
		return
	}
	switch {
	case t.needKey:
		s.maybePLI(t, now, pliRetryInterval)
	case !t.lastKey.IsZero() && now.Sub(t.lastKey) >= pliSafetyInterval:
		s.maybePLI(t, now, pliSafetyThrottle)
	}
}

func (s *StreamWriter) maybePLI(t *trackState, now time.Time, throttle time.Duration) {
	if t.muted || (!t.lastPLI.IsZero() && now.Sub(t.lastPLI) < throttle) {
		return
	}
	t.lastPLI = now
	s.wantKey = true
	s.stats.KeyframeRequests++
}
