package signaling

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckSDP(t *testing.T) {
	ok := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
	require.NoError(t, CheckSDP(ok))
	require.ErrorIs(t, CheckSDP(strings.Repeat("a=x\r\n", MaxSDPBytes)), ErrBadSDP)
	many := "v=0\r\n" + strings.Repeat("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", MaxSDPMediaSections+1)
	require.ErrorIs(t, CheckSDP(many), ErrBadSDP)
}
