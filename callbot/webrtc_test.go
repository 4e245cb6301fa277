package callbot

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
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

func TestNewAPIOptions(t *testing.T) {
	_, closer, err := NewAPI(config.WebRTCConfig{UDPPortMin: 40000, UDPPortMax: 40100, NAT1To1IPs: []string{"203.0.113.7"}, LoopbackOnly: true}, APIOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, closer())
	_, _, err = NewAPI(config.WebRTCConfig{UDPPortMin: 50000, UDPPortMax: 40000}, APIOptions{Log: zerolog.Nop()})
	require.Error(t, err)

	api, closer, err := NewAPI(config.WebRTCConfig{UDPMuxPort: freeUDPPort(t), LoopbackOnly: true}, APIOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	pc, err := api.NewPeerConnection(webrtcConfig())
	require.NoError(t, err)
	require.NoError(t, pc.Close())
	require.NoError(t, closer())
}

// remoteCandidates lists the remote candidate addresses pion kept.
func remoteCandidates(t *testing.T, pc *webrtc.PeerConnection) []string {
	t.Helper()
	var out []string
	for _, s := range pc.GetStats() {
		if c, ok := s.(webrtc.ICECandidateStats); ok && c.Type == webrtc.StatsTypeRemoteCandidate {
			out = append(out, net.JoinHostPort(c.IP, strconv.Itoa(int(c.Port))))
		}
	}
	return out
}

// TestPeerCandidatesFiltered: a participant's ICE candidates may not point
// the recorder's connectivity checks at internal services (loopback,
// cloud metadata, RFC 1918, link-local); only configured networks are
// allowed besides public addresses. Each run ends with an allowed loopback
// marker candidate: candidates are taken in order, so once the marker is
// there every earlier one was decided.
func TestPeerCandidatesFiltered(t *testing.T) {
	// Through pion, only loopback candidates are used, so a broken filter
	// sends nothing beyond this machine; the other ranges are checked on
	// the filter itself below.
	hostile := []string{"127.0.0.1 6379", "127.0.0.1 2379"}
	try := func(cfg config.WebRTCConfig, addrs []string, marker string) []string {
		t.Helper()
		api, closer, err := NewAPI(cfg, APIOptions{Log: zerolog.Nop()})
		require.NoError(t, err)
		defer closer()
		offerer, err := api.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer offerer.Close()
		_, err = offerer.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio)
		require.NoError(t, err)
		offer, err := offerer.CreateOffer(nil)
		require.NoError(t, err)
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer pc.Close()
		require.NoError(t, pc.SetRemoteDescription(offer))
		for i, a := range append(addrs, strings.Replace(marker, ":", " ", 1)) {
			cand := fmt.Sprintf("candidate:%d 1 udp 2130706431 %s typ host", i+1, a)
			require.NoError(t, pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: cand}))
		}
		var got []string
		require.Eventually(t, func() bool {
			got = remoteCandidates(t, pc)
			return slices.Contains(got, marker)
		}, 5*time.Second, 5*time.Millisecond, "the allowed marker candidate was not taken")
		return slices.DeleteFunc(got, func(a string) bool { return a == marker })
	}
	const marker = "127.0.0.2:40009"
	require.Empty(t, try(config.WebRTCConfig{PeerNetworks: []string{"127.0.0.2/32"}}, hostile, marker), "public addresses and the configured network only")
	require.ElementsMatch(t, []string{"127.0.0.1:40001"}, try(config.WebRTCConfig{LoopbackOnly: true}, []string{"127.0.0.1 40001"}, marker),
		"a loopback-only recorder talks to loopback peers")
	require.ElementsMatch(t, []string{"127.0.0.1:40002"}, try(config.WebRTCConfig{PeerNetworks: []string{"127.0.0.0/8"}}, []string{"127.0.0.1 40002"}, marker),
		"configured networks are allowed")
	allowed, err := peerFilter(config.WebRTCConfig{})
	require.NoError(t, err)
	for _, ip := range []string{"127.0.0.1", "169.254.169.254", "10.0.0.7", "172.16.0.1", "192.168.1.1", "100.64.0.1", "::1", "fe80::1", "fc00::1", "0.0.0.0", "224.0.0.1"} {
		require.False(t, allowed(net.ParseIP(ip)), ip)
	}
	for _, ip := range []string{"8.8.8.8", "2001:4860::8888", "::ffff:1.1.1.1"} {
		require.True(t, allowed(net.ParseIP(ip)), ip) // decided only, never contacted
	}
	_, _, err = NewAPI(config.WebRTCConfig{PeerNetworks: []string{"not-a-net"}}, APIOptions{})
	require.Error(t, err)
}

// FuzzRemoteDescription: whatever session description a peer's invite
// carries, if CheckSDP lets it through, pion gets it as the recorder gives
// it (SetRemoteDescription, CreateAnswer); nothing may panic.
func FuzzRemoteDescription(f *testing.F) {
	f.Add("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\n")
	f.Add("v=0\r\nm=video 9 RTP/AVP 96\r\n")
	f.Add("")
	api, closer, err := NewAPI(config.WebRTCConfig{LoopbackOnly: true}, APIOptions{Log: zerolog.Nop()})
	require.NoError(f, err)
	f.Cleanup(func() { _ = closer() })
	f.Fuzz(func(t *testing.T, sdp string) {
		if signaling.CheckSDP(sdp) != nil {
			return
		}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		require.NoError(t, err)
		defer pc.Close()
		if pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}) == nil {
			_, _ = pc.CreateAnswer(nil)
		}
	})
}

// TestReceiverFeedback: the recorder's interceptors (pion's defaults less
// the stats bookkeeping) still give a sender what a browser needs of a
// receiver: receiver reports, NACKs for lost packets, and transport-wide
// congestion control feedback.
func TestReceiverFeedback(t *testing.T) {
	cfg := config.WebRTCConfig{LoopbackOnly: true}
	recAPI, closeRec, err := NewAPI(cfg, APIOptions{Log: zerolog.Nop()})
	require.NoError(t, err)
	defer closeRec()
	twccSeq, err := twcc.NewHeaderExtensionInterceptor()
	require.NoError(t, err)
	sendAPI, closeSend, err := NewAPI(cfg, APIOptions{Log: zerolog.Nop(), DefaultInterceptors: true, Wire: []interceptor.Factory{twccSeq}})
	require.NoError(t, err)
	defer closeSend()

	sender, err := sendAPI.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer sender.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "cam")
	require.NoError(t, err)
	rtpSender, err := sender.AddTrack(track)
	require.NoError(t, err)
	recv, err := recAPI.NewPeerConnection(webrtc.Configuration{})
	require.NoError(t, err)
	defer recv.Close()
	recv.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	})

	offer, err := sender.CreateOffer(nil)
	require.NoError(t, err)
	gathered := webrtc.GatheringCompletePromise(sender)
	require.NoError(t, sender.SetLocalDescription(offer))
	<-gathered
	require.NoError(t, recv.SetRemoteDescription(*sender.LocalDescription()))
	answer, err := recv.CreateAnswer(nil)
	require.NoError(t, err)
	gathered = webrtc.GatheringCompletePromise(recv)
	require.NoError(t, recv.SetLocalDescription(answer))
	<-gathered
	require.NoError(t, sender.SetRemoteDescription(*recv.LocalDescription()))

	var lock sync.Mutex
	seen := map[string]bool{}
	go func() {
		for {
			pkts, _, err := rtpSender.ReadRTCP()
			if err != nil {
				return
			}
			lock.Lock()
			for _, p := range pkts {
				switch p.(type) {
				case *rtcp.ReceiverReport:
					seen["receiver report"] = true
				case *rtcp.TransportLayerNack:
					seen["nack"] = true
				case *rtcp.TransportLayerCC:
					seen["twcc"] = true
				}
			}
			lock.Unlock()
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		lock.Lock()
		done := len(seen) == 3
		lock.Unlock()
		if done {
			break
		}
		require.False(t, time.Now().After(deadline), "the sender got only %v", seen)
		<-tick.C
		if seq%50 == 25 {
			continue // lost on the way: the receiver asks for it
		}
		// A VP8 key frame header, so the packet is a whole frame.
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
			Payload: []byte{0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}}
		require.NoError(t, track.WriteRTP(pkt))
	}
}

// TestUDPReadBuffer: the sockets pion opens through the recorder's network
// ask for udpReadBuffer (the kernel caps it at net.core.rmem_max and
// reports twice what it grants); the kernel's default was too small for a
// burst of many calls joining.
func TestUDPReadBuffer(t *testing.T) {
	std, err := stdnet.NewNet()
	require.NoError(t, err)
	conn, err := bufferedNet{std}.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer conn.Close()
	raw, err := conn.(*net.UDPConn).SyscallConn()
	require.NoError(t, err)
	var size int
	require.NoError(t, raw.Control(func(fd uintptr) {
		size, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}))
	require.NoError(t, err)
	data, err := os.ReadFile(rmemMax)
	require.NoError(t, err)
	limit, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	require.GreaterOrEqual(t, size, 2*min(limit, udpReadBuffer), "the socket's receive buffer")
	if limit > 212992 {
		require.Greater(t, size, 2*212992, "more than the kernel's usual default")
	}
}
