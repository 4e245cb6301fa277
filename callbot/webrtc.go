package callbot

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
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

// APIOptions are what NewAPI takes besides the config.
type APIOptions struct {
	// Log receives pion's logs.
	Log zerolog.Logger
	// Wire interceptors go first in the chain, closest to the network
	// (below the NACK responder): tests shape a lossy network with them.
	Wire []interceptor.Factory
	// DefaultInterceptors takes pion's default set, with its stats
	// interceptor (bookkeeping on every packet for GetStats, which the
	// recorder never calls): the load tool's bare pion joiner.
	DefaultInterceptors bool
}

// registerInterceptors registers what a receiver needs: NACKs for lost
// packets (and the responder, idle without sent media), receiver reports,
// simulcast header extensions, and transport-wide congestion control
// feedback (browsers estimate their send bandwidth from it). pion's
// defaults add the stats interceptor on top.
func registerInterceptors(m *webrtc.MediaEngine, ir *interceptor.Registry, defaults bool) error {
	if defaults {
		return webrtc.RegisterDefaultInterceptors(m, ir)
	}
	if err := webrtc.ConfigureNack(m, ir); err != nil {
		return err
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return err
	}
	if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
		return err
	}
	return webrtc.ConfigureTWCCSender(m, ir)
}

// NewAPI builds the pion API from config: codecs, NACK/RTCP reports/TWCC
// interceptors, port range or UDP mux, NAT 1:1 and interface filters, and
// the filter that keeps peers' candidates to allowed networks. The returned
// closer releases the UDP mux, if any. The simulated participants in tests
// build theirs with it too.
func NewAPI(cfg config.WebRTCConfig, opts APIOptions) (*webrtc.API, func() error, error) {
	log := opts.Log
	m, err := newMediaEngine()
	if err != nil {
		return nil, nil, err
	}
	ir := &interceptor.Registry{}
	for _, f := range opts.Wire {
		ir.Add(f)
	}
	if err = registerInterceptors(m, ir, opts.DefaultInterceptors); err != nil {
		return nil, nil, fmt.Errorf("failed to register interceptors: %w", err)
	}
	se := webrtc.SettingEngine{LoggerFactory: pionLogs{log: log}}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	std, err := stdnet.NewNet()
	if err != nil {
		return nil, nil, fmt.Errorf("failed to list network interfaces: %w", err)
	}
	se.SetNet(bufferedNet{std})
	warnSmallReadBuffers(log)
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
	allowed, err := peerFilter(cfg)
	if err != nil {
		return nil, nil, err
	}
	se.SetRemoteIPFilter(allowed)
	if cfg.UDPMuxPort != 0 {
		host := "0.0.0.0"
		if cfg.LoopbackOnly {
			host = "127.0.0.1"
		}
		conn, err := net.ListenPacket("udp4", net.JoinHostPort(host, fmt.Sprint(cfg.UDPMuxPort)))
		if err != nil {
			return nil, nil, fmt.Errorf("failed to listen on UDP mux port %d: %w", cfg.UDPMuxPort, err)
		}
		if uc, ok := conn.(*net.UDPConn); ok {
			_ = uc.SetReadBuffer(udpReadBuffer) // every peer's media: a bigger burst to hold
		}
		mux := webrtc.NewICEUDPMux(pionLogs{log: log}.NewLogger("udpmux"), conn)
		se.SetICEUDPMux(mux)
		closer = mux.Close
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), closer, nil
}

// udpReadBuffer is the receive buffer asked for each UDP socket pion
// opens (one per peer, or the one UDP mux socket). The kernel's default
// (212 KB, about 90 datagrams once counted with their overhead) overflowed
// in the load tool while 20 calls joined at once: every peer's DTLS
// handshake and signalling kept the readers off the CPU for a moment. The
// kernel caps it at net.core.rmem_max and uses the memory only while
// datagrams wait.
const udpReadBuffer = 4 << 20

// bufferedNet is the standard network whose UDP sockets get
// udpReadBuffer.
type bufferedNet struct{ *stdnet.Net }

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(udpReadBuffer)
	}
	return c, nil
}

// rmemMax is where Linux says how big a socket's receive buffer may be.
const rmemMax = "/proc/sys/net/core/rmem_max"

// warnSmallReadBuffers says once per API when the kernel caps the UDP
// receive buffers below udpReadBuffer, and how to raise the cap.
func warnSmallReadBuffers(log zerolog.Logger) {
	data, err := os.ReadFile(rmemMax)
	if err != nil {
		return // not Linux, or no /proc: nothing to say
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || limit >= udpReadBuffer {
		return
	}
	log.Warn().Int("rmem_max", limit).Int("wanted", udpReadBuffer).
		Msg("The kernel caps UDP receive buffers below what the recorder asks for: bursts of media (many calls joining at once) may overflow them and lose packets; raise it with sysctl -w net.core.rmem_max=4194304")
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598): not a
// public address.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// peerFilter says which addresses a peer's ICE candidates may name: public
// unicast addresses, the configured peer networks, and loopback when the
// recorder itself is loopback-only. Everything else (loopback, RFC 1918,
// link-local such as 169.254.169.254, CGNAT, multicast, unspecified) is
// never contacted, so a participant cannot steer the recorder's STUN checks
// at internal services.
func peerFilter(cfg config.WebRTCConfig) (func(net.IP) bool, error) {
	var nets []netip.Prefix
	for _, c := range cfg.PeerNetworks {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("bad webrtc.peer_networks entry %q: %w", c, err)
		}
		nets = append(nets, p.Masked())
	}
	loopback := cfg.LoopbackOnly
	return func(ip net.IP) bool {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			return false
		}
		addr = addr.Unmap()
		for _, p := range nets {
			if p.Contains(addr) {
				return true
			}
		}
		if addr.IsLoopback() {
			return loopback
		}
		return addr.IsGlobalUnicast() && !addr.IsPrivate() && !cgnat.Contains(addr)
	}, nil
}
