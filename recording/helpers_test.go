package recording

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

const mediaDir = "../testdata/media"

func testCtx(t *testing.T) context.Context {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)

	return log.WithContext(context.Background())
}

// loadOpus returns the Opus packets of the test Ogg file (one per page).
func loadOpus(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(mediaDir, "beeps-opus-48k-stereo.ogg"))
	require.NoError(t, err, "test media missing: run scripts/gen-testmedia.sh")
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	require.NoError(t, err)
	var pkts [][]byte
	for {
		payload, hdr, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if bytes.HasPrefix(payload, []byte("OpusTags")) || hdr.GranulePosition == 0 {
			continue
		}
		require.Equal(t, 960, opusPacketSamples(payload), "test media must hold one 20 ms packet per page")
		pkts = append(pkts, append([]byte(nil), payload...))
	}
	require.NotEmpty(t, pkts)

	return pkts
}

// loadIVF returns the frames of an IVF test file.
func loadIVF(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(mediaDir, name))
	require.NoError(t, err, "test media missing: run scripts/gen-testmedia.sh")
	defer f.Close()
	r, _, err := ivfreader.NewWith(f)
	require.NoError(t, err)
	var frames [][]byte
	for {
		fr, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		frames = append(frames, append([]byte(nil), fr...))
	}
	require.NotEmpty(t, frames)

	return frames
}

// tpkt is one synthetic packet with its (sender) capture time and arrival.
type tpkt struct {
	kind    Kind
	pkt     *rtp.Packet
	sent    time.Duration // capture time since stream start
	arrival time.Time
	frame   int // index of the audio packet / video frame
}

type srcOpts struct {
	ssrc     uint32
	seq      uint16
	ts       uint32
	delay    time.Duration // network delay added to arrival
	codec    string        // video: MimeTypeVP8 / MimeTypeVP9
	fps      int
	firstIdx int // index of the first frame (for time offsets)
}

// packetizeAudio turns Opus packets into RTP (20 ms each).
func packetizeAudio(pkts [][]byte, o srcOpts, t0 time.Time) []tpkt {
	p := rtp.NewPacketizerWithOptions(1200, &codecs.OpusPayloader{}, rtp.NewFixedSequencer(o.seq), opusSampleRate,
		rtp.WithSSRC(o.ssrc), rtp.WithPayloadType(111), rtp.WithTimestamp(o.ts))
	var out []tpkt
	for i, data := range pkts {
		sent := time.Duration(o.firstIdx+i) * 20 * time.Millisecond
		for _, r := range p.Packetize(data, 960) {
			out = append(out, tpkt{kind: KindAudio, pkt: r, sent: sent, arrival: t0.Add(sent + o.delay), frame: o.firstIdx + i})
		}
	}

	return out
}

// packetizeVideo turns VP8/VP9 frames into RTP at o.fps.
func packetizeVideo(frames [][]byte, o srcOpts, t0 time.Time) []tpkt {
	var pl rtp.Payloader = &codecs.VP8Payloader{EnablePictureID: true}
	if o.codec == MimeTypeVP9 {
		pl = &codecs.VP9Payloader{}
	}
	step := uint32(90000 / o.fps)
	p := rtp.NewPacketizerWithOptions(1200, pl, rtp.NewFixedSequencer(o.seq), 90000,
		rtp.WithSSRC(o.ssrc), rtp.WithPayloadType(96), rtp.WithTimestamp(o.ts))
	var out []tpkt
	for i, data := range frames {
		sent := time.Duration(o.firstIdx+i) * time.Second / time.Duration(o.fps)
		pkts := p.Packetize(data, step)
		for j, r := range pkts {
			// spread a frame's packets over 1 ms so they are distinct
			at := t0.Add(sent + o.delay + time.Duration(j)*time.Millisecond/time.Duration(len(pkts)+1))
			out = append(out, tpkt{kind: KindVideo, pkt: r, sent: sent, arrival: at, frame: o.firstIdx + i})
		}
	}

	return out
}

// merge orders packets of several tracks by arrival (stable).
func merge(lists ...[]tpkt) []tpkt {
	var out []tpkt
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].arrival.Before(out[j].arrival) })

	return out
}

// feed writes all packets and returns the first error.
func feed(w *StreamWriter, pkts []tpkt) error {
	for _, p := range pkts {
		if err := w.WriteRTP(p.kind, p.pkt, p.arrival); err != nil {
			return err
		}
	}

	return nil
}

// ---- real tools ----

func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s is required by the recording tests: apt-get install -y ffmpeg mkvtoolnix opus-tools", name)

	return p
}

func run(t testing.TB, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(requireTool(t, name), args...) //nolint:gosec // test tools
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()

	return stdout.String(), stderr.String(), err
}

func ffprobeDuration(t testing.TB, path string) float64 {
	t.Helper()
	out, errOut, err := run(t, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	d, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	require.NoError(t, err, "ffprobe duration of %s: %q %s", path, out, errOut)

	return d
}

// requireDecodesClean: ffmpeg -v error decodes the whole file without a message.
func requireDecodesClean(t testing.TB, path string) {
	t.Helper()
	out, errOut, err := run(t, "ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-")
	require.NoError(t, err, errOut)
	require.Empty(t, strings.TrimSpace(out+errOut), "ffmpeg reported problems decoding %s", path)
}

// requireSeeks: decoding from the middle works without messages and yields frames.
func requireSeeks(t testing.TB, path string, at float64) {
	t.Helper()
	ss := strconv.FormatFloat(at, 'f', 3, 64)
	out, errOut, err := run(t, "ffmpeg", "-nostdin", "-v", "error", "-ss", ss, "-i", path, "-t", "0.5", "-f", "null", "-")
	require.NoError(t, err, errOut)
	require.Empty(t, strings.TrimSpace(out+errOut), "seeking to %s in %s", ss, path)
	// and something is actually decoded after the seek point
	out, errOut, err = run(t, "ffprobe", "-v", "error", "-read_intervals", ss+"%+0.5", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	require.NotEmpty(t, strings.TrimSpace(out), "no packets after seeking to %s in %s", ss, path)
}

// mkvmergeCodecs lists the codecs mkvmerge recognises in a WebM.
func mkvmergeCodecs(t testing.TB, path string) []string {
	t.Helper()
	out, errOut, err := run(t, "mkvmerge", "-J", path)
	require.NoError(t, err, "%s%s", out, errOut)
	re := regexp.MustCompile(`"codec":\s*"([^"]+)"`)
	var codecs []string
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		codecs = append(codecs, m[1])
	}

	return codecs
}

// requireOpusinfoClean: opusinfo reports no error or warning.
func requireOpusinfoClean(t testing.TB, path string) {
	t.Helper()
	out, errOut, err := run(t, "opusinfo", path)
	require.NoError(t, err, "%s%s", out, errOut)
	all := out + errOut
	require.NotContains(t, all, "WARNING", "opusinfo %s:\n%s", path, all)
	require.NotContains(t, all, "ERROR", "opusinfo %s:\n%s", path, all)
}

// checkFile runs every tool check on a produced file; want is the expected
// duration (the RTP span written).
func checkFile(t testing.TB, path string, want float64) {
	t.Helper()
	got := ffprobeDuration(t, path)
	require.InDelta(t, want, got, 0.1, "ffprobe duration of %s", path)
	requireDecodesClean(t, path)
	// the middle, on a 0.1 s grid (ffmpeg's null muxer complains about
	// 1/30 s rounding ties when seeking exactly between two frames)
	requireSeeks(t, path, math.Round(got*5)/10)
	if strings.HasSuffix(path, ".webm") {
		// mkvmerge recognises every track ffprobe sees (without OpusHead
		// CodecPrivate it would not list the Opus track)
		out, errOut, err := run(t, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path)
		require.NoError(t, err, errOut)
		names := map[string]string{"opus": "Opus", "vp8": "VP8", "vp9": "VP9"}
		var want []string
		for _, c := range strings.Fields(out) {
			want = append(want, names[c])
		}
		require.NotEmpty(t, want)
		require.ElementsMatch(t, want, mkvmergeCodecs(t, path), "mkvmerge -J tracks of %s", path)
	} else {
		requireOpusinfoClean(t, path)
	}
}
