package archive

import (
	"sync"
	"time"

	"github.com/pion/rtp"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/recording"
)

// queueSize bounds a stream's write queue: about two seconds of a
// 2.5 Mbit/s camera with its microphone. A writer that falls further
// behind (a stalled disk) loses what does not fit, counted, instead of
// stalling its tracks' readers: pion's buffers behind a stalled reader
// overflow too, silently, and the RTCP reader of the track waits on the
// same sink.
const queueSize = 1024

// packetQueue is one stream's bounded queue between its tracks' readers
// (several producers) and the stream's writer goroutine (one consumer).
// Payload buffers are reused through a small free list: a slot holds one
// only while its packet waits, so a stream keeps about as many buffers as
// packets are usually queued (a handful), not one per slot (1024 MTU-sized
// buffers, ~1.2 MiB per stream, once the ring has gone round); no
// allocation per packet in steady state.
type packetQueue struct {
	lock  sync.Mutex
	wake  chan struct{} // 1-buffered: a push or the close happened
	slots []queuedPacket
	size  int // the most slots the ring grows to
	head  int // the oldest packet; the consumer's while it writes it
	n     int // packets queued, the one being written included
	// closed: the last track ended; the consumer writes what is left.
	closed bool
	// err is the writer's first error: pushes return it from then on.
	err error
	// high is the most packets queued at once; dropped those refused.
	high    int
	dropped uint64
	// mutes are stream mute changes for the writer (they carry their
	// own times, so they need no place among the packets); they come
	// from the call's loop, which must not wait for the disk either.
	mutes []callbot.StreamChange
	// free holds payload buffers of written packets (at most maxFreeBufs).
	free [][]byte
}

// maxFreeBufs bounds a queue's free payload buffers: after a burst (a
// stalled disk) the rest go back to the garbage collector.
const maxFreeBufs = 64

// maxPendingMutes bounds the mute changes waiting for a stalled writer.
const maxPendingMutes = 256

// queuedPacket is an RTP packet of one of the stream's tracks, or (sr) an
// RTCP sender report: reports take the queue too, as they need the
// writer's lock, which a stalled write holds.
type queuedPacket struct {
	kind    recording.Kind
	pkt     rtp.Packet
	buf     []byte // pkt.Payload's storage
	arrival time.Time

	sr      bool
	ssrc    uint32
	ntp     uint64
	rtpTime uint32
}

// queueStartSlots is a queue's ring when it starts: a writer keeping up
// holds a few packets (the load tool's deepest queue was 12 at N=10 and
// some hundreds on a saturated machine), and each slot is ~200 bytes; the
// ring doubles when full, up to its size.
const queueStartSlots = 64

func newPacketQueue(size int) *packetQueue {
	return &packetQueue{wake: make(chan struct{}, 1), slots: make([]queuedPacket, min(size, queueStartSlots)), size: size}
}

// push copies a packet in without waiting for the writer. It reports
// whether the packet was dropped because the queue is full and, once the
// writer failed, its error (the packet is then not queued), plus the depth
// now and whether it is a new high for this queue.
func (q *packetQueue) push(kind recording.Kind, pkt *rtp.Packet, arrival time.Time) (dropped bool, depth int, high bool, err error) {
	q.lock.Lock()
	s, dropped, err := q.reserve()
	if s != nil {
		s.sr, s.kind, s.arrival = false, kind, arrival
		s.buf = append(q.getBuf(), pkt.Payload...)
		// What the writer reads of a packet; no header extensions (they
		// would alias the reader's buffer).
		s.pkt = rtp.Packet{Header: rtp.Header{Version: pkt.Version, Padding: pkt.Padding, Marker: pkt.Marker,
			PayloadType: pkt.PayloadType, SequenceNumber: pkt.SequenceNumber, Timestamp: pkt.Timestamp, SSRC: pkt.SSRC},
			Payload: s.buf, PaddingSize: pkt.PaddingSize}
	}
	depth, high = q.commit(s)
	return dropped, depth, high, err
}

// getBuf returns an empty payload buffer. Called with the lock held.
func (q *packetQueue) getBuf() []byte {
	if n := len(q.free); n > 0 {
		b := q.free[n-1]
		q.free = q.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, 1500)
}

// pushReport queues a sender report, like push.
func (q *packetQueue) pushReport(ssrc uint32, ntp uint64, rtpTime uint32) (dropped bool, depth int, high bool) {
	q.lock.Lock()
	s, dropped, err := q.reserve()
	if s != nil {
		s.sr, s.ssrc, s.ntp, s.rtpTime = true, ssrc, ntp, rtpTime
	}
	depth, high = q.commit(s)
	return dropped && err == nil, depth, high
}

// reserve returns the next free slot, or why there is none: the queue is
// full (counted) or the writer failed. Called with the lock held.
func (q *packetQueue) reserve() (s *queuedPacket, dropped bool, err error) {
	switch {
	case q.err != nil:
		return nil, false, q.err
	case q.n == len(q.slots) && len(q.slots) >= q.size:
		q.dropped++
		return nil, true, nil
	case q.n == len(q.slots):
		q.grow()
	}
	return &q.slots[(q.head+q.n)%len(q.slots)], false, nil
}

// grow doubles the ring (up to size), the queued packets first in order.
// The writer may be reading the oldest packet in the old ring meanwhile:
// the old ring is only read from then on, and the packet's payload buffer
// moves with it. Called with the lock held.
func (q *packetQueue) grow() {
	slots := make([]queuedPacket, min(2*len(q.slots), q.size))
	for i := range q.n {
		slots[i] = q.slots[(q.head+i)%len(q.slots)]
	}
	q.slots, q.head = slots, 0
}

// commit counts a filled slot (none if s is nil), unlocks and wakes the
// writer.
func (q *packetQueue) commit(s *queuedPacket) (depth int, high bool) {
	if s != nil {
		q.n++
		if q.n > q.high {
			q.high, high = q.n, true
		}
	}
	depth = q.n
	q.lock.Unlock()
	if s != nil {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return depth, high
}

// pushMute queues a mute change; false if too many wait already (it is
// dropped, counted).
func (q *packetQueue) pushMute(m callbot.StreamChange) bool {
	q.lock.Lock()
	ok := len(q.mutes) < maxPendingMutes
	if ok {
		q.mutes = append(q.mutes, m)
	} else {
		q.dropped++
	}
	q.lock.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return ok
}

// next waits for work: the pending mute changes (taken), else the oldest
// packet, which stays in its slot (and counted) until done. false once
// the queue is closed and empty.
func (q *packetQueue) next() (*queuedPacket, []callbot.StreamChange, bool) {
	for {
		q.lock.Lock()
		if len(q.mutes) > 0 {
			mutes := q.mutes
			q.mutes = nil
			q.lock.Unlock()
			return nil, mutes, true
		}
		if q.n > 0 {
			p := &q.slots[q.head]
			q.lock.Unlock()
			return p, nil, true
		}
		closed := q.closed
		q.lock.Unlock()
		if closed {
			return nil, nil, false
		}
		<-q.wake
	}
}

// done frees the oldest packet's slot after the writer took it; a writer
// error is kept for the producers.
func (q *packetQueue) done(err error) {
	q.lock.Lock()
	if s := &q.slots[q.head]; s.buf != nil {
		if len(q.free) < maxFreeBufs {
			q.free = append(q.free, s.buf)
		}
		s.buf, s.pkt.Payload = nil, nil
	}
	q.head = (q.head + 1) % len(q.slots)
	q.n--
	q.lock.Unlock()
	if err != nil {
		q.fail(err)
	}
}

// fail keeps the writer's error for the producers.
func (q *packetQueue) fail(err error) {
	q.lock.Lock()
	defer q.lock.Unlock()
	if q.err == nil {
		q.err = err
	}
}

// close ends the queue once the writer has written what is in it.
func (q *packetQueue) close() {
	q.lock.Lock()
	q.closed = true
	q.lock.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// len is the number of packets queued, the one being written included.
func (q *packetQueue) len() int {
	q.lock.Lock()
	defer q.lock.Unlock()
	return q.n
}

// stats returns the high-water mark and the packets dropped.
func (q *packetQueue) stats() (high int, dropped uint64) {
	q.lock.Lock()
	defer q.lock.Unlock()
	return q.high, q.dropped
}
