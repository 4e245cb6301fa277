package signaling

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds on a session description from a peer: real calls carry a few
// media sections (audio, camera, screen share) in a few kilobytes.
const (
	MaxSDPBytes         = 64 << 10
	MaxSDPMediaSections = 16
)

// ErrBadSDP means a session description is refused before pion sees it.
var ErrBadSDP = errors.New("session description refused")

// CheckSDP bounds a peer's session description in size and media sections;
// each one costs the recorder transceivers and tracks.
func CheckSDP(sdp string) error {
	if len(sdp) > MaxSDPBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadSDP, len(sdp), MaxSDPBytes)
	}
	if n := strings.Count(sdp, "\nm=") + boolInt(strings.HasPrefix(sdp, "m=")); n > MaxSDPMediaSections {
		return fmt.Errorf("%w: %d media sections, at most %d", ErrBadSDP, n, MaxSDPMediaSections)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
