package recording

import (
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// TestKeyframeRequests checks the PLI policy: at track start, repeated
// (throttled) while waiting, none while video is muted, one at unmute, and
// the safety net after 4 s without a keyframe.
func TestKeyframeRequests(t *testing.T) {
	t.Parallel()
	var plis int
	w, err := NewStreamWriter(testutil.Ctx(t), StreamConfig{
		Dir: t.TempDir(), BaseName: "pli",
		Audio:           &TrackParams{MimeType: MimeTypeOpus, SSRC: 1},
		Video:           &TrackParams{MimeType: MimeTypeVP8, SSRC: 2},
		RequestKeyframe: func() { plis++ },
	})
	require.NoError(t, err)
	require.Equal(t, 1, plis, "PLI at track start")
	audio := loadOpus(t)
	seq := uint16(0)
	at := t0
	step := func(d time.Duration) { // audio only, 20 ms packets, drives the policy
		for end := at.Add(d); at.Before(end); at = at.Add(20 * time.Millisecond) {
			seq++
			p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 1}, Payload: audio[int(seq)%len(audio)]}
			require.NoError(t, w.WriteRTP(KindAudio, p, at))
		}
	}
	step(time.Second)
	require.Equal(t, 1+4, plis, "repeated every 300 ms while waiting for the first keyframe")
	w.SetMuted(KindVideo, true, at)
	step(2 * time.Second)
	require.Equal(t, 5, plis, "no requests while video is muted")
	w.SetMuted(KindVideo, false, at)
	require.Equal(t, 6, plis, "one request at unmute")

	// safety net: after a keyframe, nothing for 4 s, then one request
	vt := w.tracks[trackVideo]
	vt.needKey = false
	vt.lastKey = at
	vt.lastPLI = at
	before := plis
	step(3900 * time.Millisecond)
	require.Equal(t, before, plis)
	step(200 * time.Millisecond)
	require.Equal(t, before+1, plis, "safety-net request after 4 s without keyframe")
	step(400 * time.Millisecond)
	require.Equal(t, before+1, plis, "throttled to one per 500 ms")
	step(200 * time.Millisecond)
	require.Equal(t, before+2, plis)
	_, err = w.Close(testutil.Ctx(t))
	require.NoError(t, err)
}

func TestJitterBuffer(t *testing.T) {
	t.Parallel()
	pk := func(seq uint16) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: uint32(seq)}, Payload: []byte{byte(seq)}}
	}
	cases := []struct {
		name string
		seqs []uint16
		at   []time.Duration // arrival of each push
		want []uint16        // released in order
		lost uint64
	}{
		{name: "in order", seqs: []uint16{1, 2, 3}, want: []uint16{1, 2, 3}},
		{name: "reorder", seqs: []uint16{1, 3, 2, 4}, want: []uint16{1, 2, 3, 4}},
		{name: "duplicate", seqs: []uint16{1, 2, 2, 3, 1}, want: []uint16{1, 2, 3}},
		{name: "wrap", seqs: []uint16{65534, 0, 65535, 1}, want: []uint16{65534, 65535, 0, 1}},
		{
			name: "loss given up after delay", seqs: []uint16{1, 3, 4, 5},
			at:   []time.Duration{0, 10, 20, 500},
			want: []uint16{1, 3, 4, 5}, lost: 1,
		},
		{
			name: "late packet after give-up dropped", seqs: []uint16{1, 3, 4, 2},
			at:   []time.Duration{0, 10, 500, 510},
			want: []uint16{1, 3, 4}, lost: 1,
		},
		{name: "restart far back", seqs: []uint16{30000, 30001, 5, 6}, want: []uint16{30000, 30001, 5, 6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := newJitterBuffer(64, 50, 400*time.Millisecond)
			var got []uint16
			var lost uint64
			for i, s := range tc.seqs {
				at := t0.Add(time.Duration(i) * time.Millisecond)
				if tc.at != nil {
					at = t0.Add(tc.at[i] * time.Millisecond)
				}
				j.push(pk(s), at)
				for {
					p, ok := j.pop(at, false)
					if !ok {
						break
					}
					got = append(got, uint16(p.ts)) //nolint:gosec // test
					lost += p.lost
				}
			}
			for {
				p, ok := j.pop(t0, true)
				if !ok {
					break
				}
				got = append(got, uint16(p.ts)) //nolint:gosec // test
				lost += p.lost
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.lost, lost)
		})
	}
}
