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
	// this fraction one packet late; Duplicate sends this fraction twice.
	// Seed makes the pattern repeatable.
	Loss, Reorder, Duplicate float64
	// Jitter delays every packet on the wire by a random 0..Jitter, so
	// packets also overtake each other.
	Jitter time.Duration
	Seed   int64
}

// lossy reports whether the wire is not perfect.
func (b Browser) lossy() bool {
	return b.Loss > 0 || b.Reorder > 0 || b.Duplicate > 0 || b.Jitter > 0
}

// WireStats count what the lossy wire did to the RTP a participant sent
// (all its peer connections, every stream, retransmissions included).
type WireStats struct {
	Packets, Dropped, Reordered, Duplicated, Delayed uint64
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
	// startedAt is the clip's time 0 on the wall clock when it was first
	// sent (unix nanos; a source that restarts its clip on key frame
	// requests keeps its first start).
	startedAt atomic.Int64

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
			if s.startedAt.Load() == 0 && s.attached() && !s.muted.Load() {
				// This frame is due now; the clip began that much earlier.
				s.startedAt.Store(start.Add(mediaTime - s.clipOffset(i)).UnixNano())
			}
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

// clipOffset is the media time of frame i in the clip.
func (s *source) clipOffset(i int) time.Duration {
	var ticks uint64
	for _, f := range s.frames[:i] {
		ticks += uint64(f.ticks)
	}
	return time.Duration(ticks) * time.Second / time.Duration(s.capability.ClockRate)
}

func newSource(kind webrtc.RTPCodecType, capability webrtc.RTPCodecCapability, frames []frame, payloader func() rtp.Payloader) *source {
	return &source{kind: kind, capability: capability, frames: frames, payloader: payloader, tracks: map[*webrtc.TrackLocalStaticRTP]struct{}{}}
}

func loadOpus(path string) (*source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read audio: %w", err)
	}
	r, head, err := oggreader.NewWith(bytes.NewReader(data))
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
	// Loop the clip at its own length, the last granule less the
	// pre-skip: the encoder's last packet reaches past the end, and
	// looping it would make every loop a frame longer than the clip (the
	// audio drifting 20 ms per loop from a video clip of the same length).
	if clip := prev - int64(head.PreSkip); clip > 0 {
		var at int64
		for k, f := range frames {
			if at >= clip {
				frames = frames[:k]
				break
			}
			at += int64(f.ticks)
		}
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
// own (callbot.NewAPI), loopback-only, with a lossy wire when asked (nil
// factory otherwise), and with pion's default interceptors when it is the
// bare pion joiner.
func newAPI(b Browser, bare bool) (*webrtc.API, *wireFactory, error) {
	var wire []interceptor.Factory
	var wf *wireFactory
	if b.lossy() {
		wf = &wireFactory{loss: b.Loss, reorder: b.Reorder, dup: b.Duplicate, jitter: b.Jitter, seed: b.Seed}
		wire = append(wire, wf)
	}
	api, _, err := callbot.NewAPI(config.WebRTCConfig{LoopbackOnly: true}, callbot.APIOptions{Log: zerolog.Nop(), Wire: wire, DefaultInterceptors: bare})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to build the webrtc api: %w", err)
	}
	return api, wf, nil
}

// wireFactory makes wire interceptors: a lossy, reordering, duplicating,
// jittery network for the RTP a participant sends.
type wireFactory struct {
	loss, reorder, dup float64
	jitter             time.Duration
	seed               int64
	n                  atomic.Int64

	packets, dropped, reordered, duplicated, delayed atomic.Uint64
}

// stats copies the counters; zero for a perfect wire (nil).
func (f *wireFactory) stats() WireStats {
	if f == nil {
		return WireStats{}
	}
	return WireStats{Packets: f.packets.Load(), Dropped: f.dropped.Load(), Reordered: f.reordered.Load(),
		Duplicated: f.duplicated.Load(), Delayed: f.delayed.Load()}
}

func (f *wireFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &wire{f: f, rng: rand.New(rand.NewPCG(uint64(f.seed), uint64(f.n.Add(1))))}, nil //nolint:gosec // test network
}

// wire drops, reorders, duplicates and delays outgoing RTP (one peer
// connection).
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

func (w *wire) draw() (r, d float64, delay time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, d = w.rng.Float64(), w.rng.Float64()
	if w.f.jitter > 0 {
		delay = time.Duration(w.rng.Int64N(int64(w.f.jitter)))
	}
	return r, d, delay
}

func (w *wire) BindLocalStream(_ *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	var held *heldPacket
	var mu sync.Mutex
	// send puts one packet on the wire, after its jitter delay; the
	// delayed copy is the wire's own (the caller reuses its buffers).
	send := func(h *rtp.Header, payload []byte, a interceptor.Attributes, delay time.Duration) (int, error) {
		if delay <= 0 {
			return writer.Write(h, payload, a)
		}
		w.f.delayed.Add(1)
		hc, pc := h.Clone(), append([]byte(nil), payload...)
		// Errors come from closed connections, as for a real network.
		time.AfterFunc(delay, func() { _, _ = writer.Write(&hc, pc, a) })
		return len(payload), nil
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		r, d, delay := w.draw()
		w.f.packets.Add(1)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r < w.f.loss:
			w.f.dropped.Add(1)
			return len(payload), nil
		case r < w.f.loss+w.f.reorder && held == nil:
			w.f.reordered.Add(1)
			held = &heldPacket{header: h.Clone(), payload: append([]byte(nil), payload...), attrs: a}
			return len(payload), nil
		}
		n, err := send(h, payload, a, delay)
		if d < w.f.dup {
			w.f.duplicated.Add(1)
			_, _ = send(h, payload, a, delay)
		}
		if held != nil {
			_, _ = send(&held.header, held.payload, held.attrs, delay)
			held = nil
		}
		return n, err
	})
}
