package callbot

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// scriptedTrack returns its reads in order, then io.EOF.
type scriptedTrack struct {
	reads []func(b []byte) (int, error)
}

func (s *scriptedTrack) Read(b []byte) (int, interceptor.Attributes, error) {
	if len(s.reads) == 0 {
		return 0, nil, io.EOF
	}
	r := s.reads[0]
	s.reads = s.reads[1:]
	n, err := r(b)
	return n, nil, err
}

func rtpRead(seq uint16) func(b []byte) (int, error) {
	return func(b []byte) (int, error) {
		p := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, PayloadType: 96}, Payload: []byte{1, 2, 3}}
		raw, err := p.Marshal()
		if err != nil {
			return 0, err
		}
		return copy(b, raw), nil
	}
}

type recordingSink struct {
	mu     sync.Mutex
	seqs   []uint16
	closed int
	panic  uint16 // panics on this sequence number (0: never)
}

func (r *recordingSink) WriteRTP(p *rtp.Packet, _ time.Time) error {
	if r.panic != 0 && p.SequenceNumber == r.panic {
		panic("codec parser bug")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, p.SequenceNumber)
	return nil
}
func (r *recordingSink) SenderReport(uint64, uint32, time.Time) {}
func (r *recordingSink) Close()                                 { r.mu.Lock(); r.closed++; r.mu.Unlock() }

// TestOversizedPacketDoesNotEndTheTrack: a packet larger than the read
// buffer is skipped; the track goes on.
func TestOversizedPacketDoesNotEndTheTrack(t *testing.T) {
	sink := &recordingSink{}
	track := &scriptedTrack{reads: []func([]byte) (int, error){
		rtpRead(1), func([]byte) (int, error) { return 0, io.ErrShortBuffer }, rtpRead(2),
	}}
	readRTP(track, sink, func() {}, func(any) {})
	require.Equal(t, []uint16{1, 2}, sink.seqs)
	require.Equal(t, 1, sink.closed)
}

// TestPanicInSinkIsContained: a panic while writing one track (a parser
// bug) ends that track's recording, is reported, and neither kills the
// process nor stops the reader draining the track.
func TestPanicInSinkIsContained(t *testing.T) {
	sink := &recordingSink{panic: 2}
	track := &scriptedTrack{reads: []func([]byte) (int, error){rtpRead(1), rtpRead(2), rtpRead(3)}}
	var panics []any
	readRTP(track, sink, func() {}, func(v any) { panics = append(panics, v) })
	require.Equal(t, []uint16{1}, sink.seqs, "nothing is written after the panic")
	require.Len(t, panics, 1)
	require.Equal(t, 1, sink.closed)
	require.Empty(t, track.reads, "the track is drained to its end")
}
