package archive

import (
	"errors"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/recording"
)

// TestPacketQueue: packets come out in order across the ring's wrap, as
// copies (the reader reuses its buffer), a full queue drops and counts,
// reports and mute changes pass, steady state allocates nothing, the
// writer's error reaches the producers, and a closed queue ends once
// empty.
func TestPacketQueue(t *testing.T) {
	q := newPacketQueue(4)
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7}, Payload: make([]byte, 3)}
	push := func(seq uint16) bool {
		pkt.SequenceNumber, pkt.Payload[0] = seq, byte(seq)
		dropped, _, _, err := q.push(recording.KindAudio, pkt, time.Time{})
		require.NoError(t, err)
		return dropped
	}
	pop := func() *queuedPacket {
		p, mutes, ok := q.next()
		require.True(t, ok)
		require.Empty(t, mutes)
		return p
	}
	for round := range 3 { // the ring wraps
		for i := range 6 {
			require.Equal(t, i >= 4, push(uint16(10*round+i)), "packet %d", i)
		}
		pkt.Payload[0] = 99 // the queue holds copies
		for i := range 4 {
			p := pop()
			require.Equal(t, uint16(10*round+i), p.pkt.SequenceNumber)
			require.Equal(t, byte(10*round+i), p.pkt.Payload[0])
			require.Equal(t, uint32(7), p.pkt.SSRC)
			q.done(nil)
		}
	}
	high, dropped := q.stats()
	require.Equal(t, 4, high)
	require.Equal(t, uint64(6), dropped)

	_, _, _ = q.pushReport(7, 1, 2)
	require.True(t, q.pushMute(callbot.StreamChange{AudioMuted: true}))
	p, mutes, ok := q.next()
	require.True(t, ok)
	require.Nil(t, p, "mute changes first: they carry their own time")
	require.Len(t, mutes, 1)
	p = pop()
	require.True(t, p.sr)
	require.Equal(t, uint64(1), p.ntp)
	q.done(nil)

	allocs := testing.AllocsPerRun(100, func() {
		_, _, _, _ = q.push(recording.KindAudio, pkt, time.Time{})
		_, _, _ = q.next()
		q.done(nil)
	})
	require.Zero(t, allocs, "a packet through the queue allocates")

	failure := errors.New("disk gone")
	push(1)
	pop()
	q.done(failure)
	_, _, _, err := q.push(recording.KindAudio, pkt, time.Time{})
	require.ErrorIs(t, err, failure)

	q.close()
	_, _, ok = q.next()
	require.False(t, ok)
}

// TestPacketQueueKeepsFewBuffers: packets written as they come leave no
// payload buffer in the ring's slots, and one or two on the free list,
// not one per slot once the ring has gone round.
func TestPacketQueueKeepsFewBuffers(t *testing.T) {
	q := newPacketQueue(queueSize)
	payload := make([]byte, 1200)
	for i := range 3 * queueSize {
		_, _, _, err := q.push(recording.KindVideo, &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i)}, Payload: payload}, time.Now()) //nolint:gosec // test
		require.NoError(t, err)
		p, _, ok := q.next()
		require.True(t, ok)
		require.Len(t, p.pkt.Payload, 1200)
		q.done(nil)
	}
	held := 0
	for _, s := range q.slots {
		if s.buf != nil {
			held++
		}
	}
	require.Zero(t, held)
	require.LessOrEqual(t, len(q.free), 2)
}

// TestPacketQueueGrows: a queue starts with a small ring and a writer
// that keeps up never makes it bigger; one that falls behind makes it
// double, up to its size, with the packets in order across the growth,
// also while the writer holds the oldest one.
func TestPacketQueueGrows(t *testing.T) {
	q := newPacketQueue(queueSize)
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 2)}
	push := func(seq uint16) bool {
		pkt.SequenceNumber = seq
		pkt.Payload[0], pkt.Payload[1] = byte(seq>>8), byte(seq)
		dropped, _, _, err := q.push(recording.KindVideo, pkt, time.Time{})
		require.NoError(t, err)
		return dropped
	}
	for i := range 1000 {
		require.False(t, push(uint16(i))) //nolint:gosec // test
		_, _, ok := q.next()
		require.True(t, ok)
		q.done(nil)
	}
	require.Len(t, q.slots, queueStartSlots, "a writer that keeps up leaves the ring as it started")

	// The writer takes the oldest packet and stalls; the ring wraps
	// (head in the middle) and then has to grow.
	for i := range 10 {
		require.False(t, push(uint16(i))) //nolint:gosec // test
	}
	for range 10 {
		_, _, _ = q.next()
		q.done(nil)
	}
	require.False(t, push(0))
	held, _, ok := q.next()
	require.True(t, ok)
	for i := 1; i < queueSize; i++ {
		require.False(t, push(uint16(i)), "packet %d fits", i) //nolint:gosec // test
	}
	require.True(t, push(queueSize), "the ring stops at its size")
	require.Len(t, q.slots, queueSize)
	require.Equal(t, []byte{0, 0}, held.pkt.Payload, "the packet being written is unchanged by the growth")
	q.done(nil)
	for i := 1; i < queueSize; i++ {
		p, _, ok := q.next()
		require.True(t, ok)
		require.Equal(t, uint16(i), p.pkt.SequenceNumber) //nolint:gosec // test
		require.Equal(t, []byte{byte(i >> 8), byte(i)}, p.pkt.Payload)
		q.done(nil)
	}
}
