package mediacheck

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// toneWindow is the window ToneLevel measures in (Goertzel), in samples.
const toneWindow = AudioRate / 20

// ToneLevel is the strongest amplitude (0..1 of full scale) of a sine at
// freq Hz in any 50 ms window of pcm[from:to] (seconds at AudioRate), by
// the Goertzel algorithm: which participant's tone sounds where.
func ToneLevel(pcm []int16, freq, from, to float64) float64 {
	a, b := max(int(from*AudioRate), 0), min(int(to*AudioRate), len(pcm))
	coeff := 2 * math.Cos(2*math.Pi*freq/AudioRate)
	best := 0.0
	for start := a; start+toneWindow <= b; start += toneWindow / 2 {
		var s1, s2 float64
		for _, v := range pcm[start : start+toneWindow] {
			s := float64(v)/32768 + coeff*s1 - s2
			s2, s1 = s1, s
		}
		power := s1*s1 + s2*s2 - coeff*s1*s2
		best = max(best, 2*math.Sqrt(max(power, 0))/toneWindow)
	}
	return best
}

// Stream is one stream ffprobe reports.
type Stream struct {
	CodecType string `json:"codec_type"`
	CodecName string `json:"codec_name"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

// Streams lists a file's streams by ffprobe.
func Streams(t testing.TB, path string) []Stream {
	t.Helper()
	out, errOut, err := Run(t, "ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height", "-of", "json", path)
	require.NoError(t, err, errOut)
	var res struct {
		Streams []Stream `json:"streams"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	return res.Streams
}
