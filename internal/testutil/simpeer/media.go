package simpeer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/recording"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// Test media file names in Config.MediaDir (made by scripts/gen-testmedia.sh).
const (
	AudioFile  = "beeps-opus-48k-stereo.ogg"
	VideoFile  = "vp8-320x240.ivf"
	ScreenFile = "vp8-160x120.ivf"
	// LongGOPFile is the camera of a browser-like participant: a key frame
	// only at the start of its 10 s.
	LongGOPFile = "vp8-320x240-longgop.ivf"
)

// Browser makes a participant's media behave like a browser's where it
// matters to a recorder. The zero value is the plain simulator: media files
// looped with a key frame every second, PLIs ignored, a perfect network.
type Browser struct {
	// Probes sends bursts of padding-only RTP on the camera's SSRC, as
	// browsers probe bandwidth when no RTX is negotiated.
	Probes bool
	// KeyframesOnRequest sends a long-GOP camera (a key frame every 10 s)
	// and a key frame right after each PLI or FIR.
	KeyframesOnRequest bool
	// RampUp sends the camera's first second at 160x120 and then switches
	// to 320x240 at a key frame: a resolution change during ramp-up.
	RampUp bool
	// Loss drops this fraction of outgoing RTP packets on the wire, below
	// the NACK responder (so retransmissions may repair them); Reorder sends
	// this fraction one packet late. Seed makes the pattern repeatable.
	Loss, Reorder float64
	Seed          int64
}

// probeEvery and probePackets shape the padding probes: this many
// padding-only packets after every probeEvery-th camera frame.
const (
	probeEvery   = 10
	probePackets = 4
)

const (
	rtpMTU         = 1200
	opusClockRate  = 48000
	videoClockRate = 90000
	// defaultOpusTicks is one 20 ms Opus frame.
	defaultOpusTicks = 960
)

var (
	opusCapability = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: opusClockRate, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
	vp8Capability  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: videoClockRate}
)

// frame is one encoded media frame and its duration in RTP clock ticks,
// taken from the file (Ogg granule positions, IVF timestamps).
type frame struct {
	data  []byte
	ticks uint32
}

// source loops a media file in real time into every attached local track.
// All tracks get the same RTP packets (pion rewrites SSRC and payload type
// per binding); RTP timestamps advance with the media, also while muted.
type source struct {
	kind       webrtc.RTPCodecType
	capability webrtc.RTPCodecCapability
	frames     []frame
	payloader  func() rtp.Payloader

	mu     sync.Mutex
	tracks map[*webrtc.TrackLocalStaticRTP]struct{}

	muted atomic.Bool
	sent  atomic.Uint64

	// browser-like behaviour (see Browser); fixed before run
	ramp         []frame // played once before frames
	probes       bool
	keyOnRequest bool
	wantKey      atomic.Bool
	replay       atomic.Bool   // play the ramp again, then the camera from its key frame
	keyRequests  atomic.Uint64 // PLIs and FIRs received
	padding      atomic.Uint64 // padding-only packets sent
	framesSent   atomic.Uint64 // frames sent
}

// requestKeyframe is called for a PLI or FIR from any receiver.
func (s *source) requestKeyframe() {
	s.keyRequests.Add(1)
	if s.keyOnRequest {
		s.wantKey.Store(true)
	}
}

func (s *source) attach(t *webrtc.TrackLocalStaticRTP) {
	s.mu.Lock()
	s.tracks[t] = struct{}{}
	s.mu.Unlock()
}

func (s *source) detach(t *webrtc.TrackLocalStaticRTP) {
	s.mu.Lock()
	delete(s.tracks, t)
	s.mu.Unlock()
}

func (s *source) attached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tracks) > 0
}

func (s *source) snapshot() []*webrtc.TrackLocalStaticRTP {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*webrtc.TrackLocalStaticRTP, 0, len(s.tracks))
	for t := range s.tracks {
		out = append(out, t)
	}
	return out
}

// run paces the frames in real time until ctx ends. While muted it sends
// nothing but keeps the RTP clock running. A browser-like source plays its
// ramp first, goes back to its key frame (frame 0) on request, and sends
// padding probes.
func (s *source) run(ctx context.Context) {
	pk := rtp.NewPacketizer(rtpMTU, 0, 0, s.payloader(), rtp.NewRandomSequencer(), s.capability.ClockRate)
	start := time.Now()
	var mediaTime time.Duration
	timer := time.NewTimer(0)
	defer timer.Stop()
	ramp := s.ramp
	for i, n := 0, 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		switch {
		case !s.attached():
			// Encoding starts with the first receiver, at the beginning.
			ramp, i = s.ramp, 0
		case s.replay.Swap(false) && len(s.ramp) > 0:
			ramp, i = s.ramp, 0
		case s.wantKey.Swap(false):
			if len(ramp) > 0 {
				ramp = s.ramp // a key frame at the ramp's resolution
			} else {
				i = 0 // the key frame
			}
		}
		var f frame
		if len(ramp) > 0 {
			f, ramp = ramp[0], ramp[1:]
		} else {
			f, i = s.frames[i], (i+1)%len(s.frames)
		}
		if s.muted.Load() {
			pk.SkipSamples(f.ticks)
		} else {
			pkts := pk.Packetize(f.data, f.ticks)
			if s.probes && n%probeEvery == probeEvery-1 {
				pad := pk.GeneratePadding(probePackets)
				pkts = append(pkts, pad...)
				s.padding.Add(uint64(len(pad)))
			}
			for _, t := range s.snapshot() {
				for _, p := range pkts {
					// Errors come from bindings of closed connections; they
					// are detached by their call.
					_ = t.WriteRTP(p)
				}
			}
			s.sent.Add(uint64(len(pkts)))
			s.framesSent.Add(1)
		}
		mediaTime += time.Duration(f.ticks) * time.Second / time.Duration(s.capability.ClockRate)
		timer.Reset(time.Until(start.Add(mediaTime)))
	}
}

func newSource(kind webrtc.RTPCodecType, capability webrtc.RTPCodecCapability, frames []frame, payloader func() rtp.Payloader) *source {
	return &source{kind: kind, capability: capability, frames: frames, payloader: payloader, tracks: map[*webrtc.TrackLocalStaticRTP]struct{}{}}
}

func loadOpus(path string) (*source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read audio: %w", err)
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to open ogg %s: %w", path, err)
	}
	var frames []frame
	prev := int64(-1)
	for {
		payload, hdr, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("failed to read ogg %s: %w", path, err)
		}
		if bytes.HasPrefix(payload, []byte("OpusTags")) || len(payload) == 0 {
			continue
		}
		// The packet's own duration (TOC); granule positions are a fallback
		// only, since the last page's granule is end-trimmed.
		ticks := uint32(recording.OpusPacketSamples(payload)) //nolint:gosec // at most 5760
		granule := int64(hdr.GranulePosition)
		if ticks == 0 {
			ticks = defaultOpusTicks
			if prev >= 0 && granule > prev && granule-prev <= opusClockRate {
				ticks = uint32(granule - prev)
			}
		}
		prev = granule
		frames = append(frames, frame{data: payload, ticks: ticks})
	}
	if len(frames) == 0 {
		return nil, fmt.Errorf("no audio frames in %s", path)
	}
	return newSource(webrtc.RTPCodecTypeAudio, opusCapability, frames, func() rtp.Payloader { return &codecs.OpusPayloader{} }), nil
}

func loadVP8(path string) (*source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read video: %w", err)
	}
	r, fh, err := ivfreader.NewWith(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to open ivf %s: %w", path, err)
	}
	if fh.TimebaseDenominator == 0 || fh.TimebaseNumerator == 0 {
		return nil, fmt.Errorf("bad ivf timebase in %s", path)
	}
	type raw struct {
		data []byte
		pts  uint64
	}
	var raws []raw
	for {
		payload, hdr, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("failed to read ivf %s: %w", path, err)
		}
		// pion's reader reports pts*den/num; undo that to get the pts in
		// timebase units (num/den seconds).
		raws = append(raws, raw{payload, hdr.Timestamp * uint64(fh.TimebaseNumerator) / uint64(fh.TimebaseDenominator)})
	}
	if len(raws) == 0 {
		return nil, fmt.Errorf("no video frames in %s", path)
	}
	toTicks := func(d uint64) uint32 {
		return uint32(d * videoClockRate * uint64(fh.TimebaseNumerator) / uint64(fh.TimebaseDenominator))
	}
	frames := make([]frame, len(raws))
	last := uint32(videoClockRate / 30)
	for i, rf := range raws {
		ticks := last
		if i+1 < len(raws) && raws[i+1].pts > rf.pts {
			ticks = toTicks(raws[i+1].pts - rf.pts)
		}
		last = ticks
		frames[i] = frame{data: rf.data, ticks: ticks}
	}
	return newSource(webrtc.RTPCodecTypeVideo, vp8Capability, frames, func() rtp.Payloader { return &codecs.VP8Payloader{EnablePictureID: true} }), nil
}

// newAPI builds the participant's pion API the way the recorder builds its
// own (callbot.NewAPI), loopback-only, with a lossy wire when asked.
func newAPI(b Browser) (*webrtc.API, error) {
	var wire []interceptor.Factory
	if b.Loss > 0 || b.Reorder > 0 {
		wire = append(wire, &wireFactory{loss: b.Loss, reorder: b.Reorder, seed: b.Seed})
	}
	api, _, err := callbot.NewAPI(config.WebRTCConfig{LoopbackOnly: true}, callbot.APIOptions{Log: zerolog.Nop(), Wire: wire})
	if err != nil {
		return nil, fmt.Errorf("failed to build the webrtc api: %w", err)
	}
	return api, nil
}

// wireFactory makes wire interceptors: a lossy, reordering network for the
// RTP a participant sends.
type wireFactory struct {
	loss, reorder float64
	seed          int64
	n             atomic.Int64
}

func (f *wireFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &wire{f: f, rng: rand.New(rand.NewPCG(uint64(f.seed), uint64(f.n.Add(1))))}, nil //nolint:gosec // test network
}

// wire drops and reorders outgoing RTP (one peer connection).
type wire struct {
	interceptor.NoOp
	f   *wireFactory
	mu  sync.Mutex
	rng *rand.Rand
}

type heldPacket struct {
	header  rtp.Header
	payload []byte
	attrs   interceptor.Attributes
}

func (w *wire) BindLocalStream(_ *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	var held *heldPacket
	var mu sync.Mutex
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		w.mu.Lock()
		r := w.rng.Float64()
		w.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r < w.f.loss:
			return len(payload), nil
		case r < w.f.loss+w.f.reorder && held == nil:
			held = &heldPacket{header: h.Clone(), payload: append([]byte(nil), payload...), attrs: a}
			return len(payload), nil
		}
		n, err := writer.Write(h, payload, a)
		if held != nil {
			_, _ = writer.Write(&held.header, held.payload, held.attrs)
			held = nil
		}
		return n, err
	})
}
