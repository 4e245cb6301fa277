// Package mediacheck checks recorded files with real tools: ffprobe, ffmpeg,
// mkvmerge and opusinfo (Debian: ffmpeg, mkvtoolnix, opus-tools).
package mediacheck

import (
	"bytes"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s is required by the media checks: apt-get install -y ffmpeg mkvtoolnix opus-tools", name)

	return p
}

// Run runs a media tool and returns its stdout and stderr.
func Run(t testing.TB, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(requireTool(t, name), args...) //nolint:gosec // test tools
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()

	return stdout.String(), stderr.String(), err
}

// Duration is the container duration ffprobe reports, in seconds.
func Duration(t testing.TB, path string) float64 {
	t.Helper()
	out, errOut, err := Run(t, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	d, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	require.NoError(t, err, "ffprobe duration of %s: %q %s", path, out, errOut)

	return d
}

// requireDecodesClean: ffmpeg -v error decodes the whole file without a
// message. Frames keep the file's own times (-fps_mode passthrough, the
// demuxer's time base): WebRTC video has a variable frame rate, and
// ffmpeg's default constant-rate output would merge frames closer than its
// guessed frame interval; two frames with the same time in the file itself
// are still reported.
func requireDecodesClean(t testing.TB, path string) {
	t.Helper()
	out, errOut, err := Run(t, "ffmpeg", "-nostdin", "-v", "error", "-i", path,
		"-fps_mode", "passthrough", "-enc_time_base:v", "-1", "-f", "null", "-")
	require.NoError(t, err, errOut)
	require.Empty(t, strings.TrimSpace(out+errOut), "ffmpeg reported problems decoding %s", path)
}

// requireSeeks: decoding from the middle works without messages and yields frames.
func requireSeeks(t testing.TB, path string, at float64) {
	t.Helper()
	ss := strconv.FormatFloat(at, 'f', 3, 64)
	out, errOut, err := Run(t, "ffmpeg", "-nostdin", "-v", "error", "-ss", ss, "-i", path, "-t", "0.5",
		"-fps_mode", "passthrough", "-enc_time_base:v", "-1", "-f", "null", "-")
	require.NoError(t, err, errOut)
	require.Empty(t, strings.TrimSpace(out+errOut), "seeking to %s in %s", ss, path)
	// and something is actually decoded after the seek point
	out, errOut, err = Run(t, "ffprobe", "-v", "error", "-read_intervals", ss+"%+0.5", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	require.NotEmpty(t, strings.TrimSpace(out), "no packets after seeking to %s in %s", ss, path)
}

// MkvmergeCodecs lists the codecs mkvmerge recognises in a WebM.
func MkvmergeCodecs(t testing.TB, path string) []string {
	t.Helper()
	out, errOut, err := Run(t, "mkvmerge", "-J", path)
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
	out, errOut, err := Run(t, "opusinfo", path)
	require.NoError(t, err, "%s%s", out, errOut)
	all := out + errOut
	require.NotContains(t, all, "WARNING", "opusinfo %s:\n%s", path, all)
	require.NotContains(t, all, "ERROR", "opusinfo %s:\n%s", path, all)
}

// Check runs every tool check on a produced file: ffprobe duration within
// tolerance of want (seconds), a clean full decode, a seek to the middle,
// mkvmerge recognising every track of a WebM, opusinfo clean on an Ogg.
func Check(t testing.TB, path string, want, tolerance float64) {
	t.Helper()
	got := Duration(t, path)
	require.InDelta(t, want, got, tolerance, "ffprobe duration of %s", path)
	requireDecodesClean(t, path)
	// the middle, on a 0.1 s grid (ffmpeg's null muxer complains about
	// 1/30 s rounding ties when seeking exactly between two frames)
	requireSeeks(t, path, math.Round(got*5)/10)
	if strings.HasSuffix(path, ".webm") {
		// mkvmerge recognises every track ffprobe sees (without OpusHead
		// CodecPrivate it would not list the Opus track)
		out, errOut, err := Run(t, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path)
		require.NoError(t, err, errOut)
		names := map[string]string{"opus": "Opus", "vp8": "VP8", "vp9": "VP9"}
		var want []string
		for _, c := range strings.Fields(out) {
			want = append(want, names[c])
		}
		require.NotEmpty(t, want)
		require.ElementsMatch(t, want, MkvmergeCodecs(t, path), "mkvmerge -J tracks of %s", path)
	} else {
		requireOpusinfoClean(t, path)
	}
}

// VideoFrames counts the video frames ffprobe reads from the first video
// stream of a file.
func VideoFrames(t testing.TB, path string) int {
	t.Helper()
	out, errOut, err := Run(t, "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path)
	require.NoError(t, err, errOut)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	require.NoError(t, err, "ffprobe frame count of %s: %q %s", path, out, errOut)

	return n
}

// AudioRate is the sample rate DecodeAudio returns.
const AudioRate = 8000

// DecodeAudio decodes the first audio stream of a file as ffmpeg does
// without resampling to the timeline (gaps in the stream's timestamps are
// not filled): mono 16-bit samples at AudioRate.
func DecodeAudio(t testing.TB, path string) []int16 {
	t.Helper()
	cmd := exec.Command(requireTool(t, "ffmpeg"), "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", //nolint:gosec // test tool
		"-ac", "1", "-ar", strconv.Itoa(AudioRate), "-f", "s16le", "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	b := stdout.Bytes()
	pcm := make([]int16, len(b)/2)
	for i := range pcm {
		pcm[i] = int16(uint16(b[2*i]) | uint16(b[2*i+1])<<8) //nolint:gosec // s16le
	}

	return pcm
}

// Peak is the largest absolute sample of pcm[from:to] (seconds at AudioRate,
// clipped to the slice).
func Peak(pcm []int16, from, to float64) int {
	a, b := int(from*AudioRate), int(to*AudioRate)
	a, b = max(a, 0), min(b, len(pcm))
	peak := 0
	for _, s := range pcm[a:max(a, b)] {
		v := int(s)
		if v < 0 {
			v = -v
		}
		peak = max(peak, v)
	}

	return peak
}
