package callbot

import (
	"net"
	"testing"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"
)

func webrtcConfig() webrtc.Configuration { return webrtc.Configuration{} }

func freeUDPPort(t *testing.T) int {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).Port
}

// TestMediaEngineOnlyRecordableCodecs checks an offer from the bot lists
// exactly Opus, VP8 and VP9.
func TestMediaEngineOnlyRecordableCodecs(t *testing.T) {
	m, err := newMediaEngine()
	require.NoError(t, err)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer pc.Close()
	_, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio)
	require.NoError(t, err)
	_, err = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo)
	require.NoError(t, err)
	offer, err := pc.CreateOffer(nil)
	require.NoError(t, err)
	require.Contains(t, offer.SDP, "opus/48000/2")
	require.Contains(t, offer.SDP, "VP8/90000")
	require.Contains(t, offer.SDP, "VP9/90000")
	require.NotContains(t, offer.SDP, "H264")
	require.NotContains(t, offer.SDP, "AV1")
}
