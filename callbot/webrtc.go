package callbot

import (
	"fmt"
	"net"
	"slices"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/config"
)

// Payload types match what browsers offer most often, so answers rarely need
// remapping; any offered payload type is accepted regardless.
const (
	ptOpus = 111
	ptVP8  = 96
	ptVP9  = 98
)

var videoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBGoogREMB}, {Type: webrtc.TypeRTCPFBTransportCC},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"}, {Type: webrtc.TypeRTCPFBNACK},
	{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
}

// newMediaEngine registers only the codecs the recorder can write: Opus, VP8
// and VP9 profile 0. Offers of anything else (H.264, AV1) negotiate away.
func newMediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	codecs := []struct {
		params webrtc.RTPCodecParameters
		kind   webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}},
		}, PayloadType: ptOpus}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback,
		}, PayloadType: ptVP8}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFeedback,
		}, PayloadType: ptVP9}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if err := m.RegisterCodec(c.params, c.kind); err != nil {
			return nil, fmt.Errorf("failed to register %s: %w", c.params.MimeType, err)
		}
	}
	return m, nil
}

// newAPI builds the pion API from config: codecs, NACK/RTCP reports/TWCC
// interceptors, port range or UDP mux, NAT 1:1 and interface filters. The
// returned closer releases the UDP mux, if any.
func newAPI(cfg config.WebRTCConfig, log zerolog.Logger) (*webrtc.API, func() error, error) {
	m, err := newMediaEngine()
	if err != nil {
		return nil, nil, err
	}
	ir := &interceptor.Registry{}
	if err = webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, nil, fmt.Errorf("failed to register interceptors: %w", err)
	}
	se := webrtc.SettingEngine{LoggerFactory: pionLogs{log: log}}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	closer := func() error { return nil }
	if cfg.UDPPortMin != 0 {
		if err = se.SetEphemeralUDPPortRange(cfg.UDPPortMin, cfg.UDPPortMax); err != nil {
			return nil, nil, fmt.Errorf("bad UDP port range: %w", err)
		}
	}
	if len(cfg.NAT1To1IPs) > 0 {
		// Announce the public addresses instead of the host ones (1:1 NAT).
		if err = se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: cfg.NAT1To1IPs, AsCandidateType: webrtc.ICECandidateTypeHost,
		}); err != nil {
			return nil, nil, fmt.Errorf("bad webrtc.nat_1to1_ips: %w", err)
		}
	}
	if len(cfg.Interfaces) > 0 {
		se.SetInterfaceFilter(func(name string) bool { return slices.Contains(cfg.Interfaces, name) })
	}
	if cfg.LoopbackOnly {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	if cfg.UDPMuxPort != 0 {
		host := "0.0.0.0"
		if cfg.LoopbackOnly {
			host = "127.0.0.1"
		}
		conn, err := net.ListenPacket("udp4", net.JoinHostPort(host, fmt.Sprint(cfg.UDPMuxPort)))
		if err != nil {
			return nil, nil, fmt.Errorf("failed to listen on UDP mux port %d: %w", cfg.UDPMuxPort, err)
		}
		mux := webrtc.NewICEUDPMux(pionLogs{log: log}.NewLogger("udpmux"), conn)
		se.SetICEUDPMux(mux)
		closer = mux.Close
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), closer, nil
}
