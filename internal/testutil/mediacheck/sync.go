package mediacheck

import (
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The test clips (scripts/gen-testmedia.sh) beep for 100 ms and flash white
// for 100 ms together, once a second; these find both in a recorded file,
// on the file's own timeline.

var silenceEnd = regexp.MustCompile(`silence_end: ([0-9.]+)`)

// BeepOnsets returns the file times (seconds) where the first audio
// stream's silence ends. -copyts keeps the stream timestamps (ffmpeg would
// otherwise shift everything by the Opus track's negative start time, the
// codec delay).
func BeepOnsets(t testing.TB, path string) []float64 {
	t.Helper()
	_, errOut, err := Run(t, "ffmpeg", "-nostdin", "-hide_banner", "-copyts", "-i", path, "-map", "0:a:0",
		"-af", "silencedetect=noise=-30dB:d=0.2", "-f", "null", "-")
	require.NoError(t, err, errOut)
	var out []float64
	for _, m := range silenceEnd.FindAllStringSubmatch(errOut, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		require.NoError(t, err)
		out = append(out, v)
	}
	return out
}

// FlashOnsets returns the times (seconds) of the first video stream's
// frames that turn bright after a dark one.
func FlashOnsets(t testing.TB, path string) []float64 {
	t.Helper()
	out, errOut, err := Run(t, "ffprobe", "-v", "error", "-f", "lavfi", "-i", "movie="+path+",signalstats",
		"-show_entries", "frame=pts_time:frame_tags=lavfi.signalstats.YAVG", "-of", "csv=p=0")
	require.NoError(t, err, errOut)
	var res []float64
	prevBright := true
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 2 {
			continue
		}
		pts, err1 := strconv.ParseFloat(f[0], 64)
		y, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		bright := y > 128
		if bright && !prevBright {
			res = append(res, pts)
		}
		prevBright = bright
	}
	return res
}

// Nearest returns the value of xs closest to v (+Inf for none).
func Nearest(xs []float64, v float64) float64 {
	best := math.Inf(1)
	for _, x := range xs {
		if math.Abs(x-v) < math.Abs(best-v) {
			best = x
		}
	}
	return best
}

// PacketTimes returns the presentation times (seconds) of the packets of
// one stream ("v:0", "a:0") in file order, as the demuxer reads them.
func PacketTimes(t testing.TB, path, stream string) []float64 {
	t.Helper()
	out, errOut, err := Run(t, "ffprobe", "-v", "error", "-select_streams", stream,
		"-show_entries", "packet=pts_time", "-of", "json", path)
	require.NoError(t, err, errOut)
	var res struct {
		Packets []struct {
			PTS string `json:"pts_time"`
		} `json:"packets"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	times := make([]float64, 0, len(res.Packets))
	for i, p := range res.Packets {
		v, err := strconv.ParseFloat(p.PTS, 64)
		require.NoError(t, err, "ffprobe time of packet %d of %s in %s: %q", i, stream, path, p.PTS)
		times = append(times, v)
	}
	return times
}

// RequireStrictlyIncreasing fails unless every time is later than the one
// before: no packet or frame written twice, none out of order.
func RequireStrictlyIncreasing(t testing.TB, times []float64, what string) {
	t.Helper()
	for i := 1; i < len(times); i++ {
		require.Greater(t, times[i], times[i-1], "%s: time %d (%.4f s) is not after time %d (%.4f s)", what, i, times[i], i-1, times[i-1])
	}
}
