package recording

import (
	"time"

	"github.com/pion/rtp"
)

// jitterBuffer reorders the RTP packets of one track by sequence number.
// Payloads are copied into buffers from the track's free list: a slot holds
// a buffer only while its packet is queued, so memory follows the packets
// waiting (usually a few), not the window (1024 slots of a video track
// would otherwise keep 1024 MTU-sized buffers alive), and steady-state
// operation does not allocate. It drops duplicates and packets that arrive after their
// slot was given up, and reports how many packets were skipped (lost) before
// each released packet.
//
// A missing packet is waited for until either a later packet has waited
// maxDelay (by arrival time) or maxLate packets are queued behind the hole.
type jitterBuffer struct {
	slots    []jbSlot
	mask     uint64
	maxLate  uint64
	maxDelay time.Duration

	started bool
	next    uint64 // extended sequence number of the next packet to release
	highest uint64 // highest extended sequence number stored
	count   int    // packets stored
	skipped uint64 // packets given up by skipOne, reported with the next release

	duplicates uint64
	late       uint64

	free [][]byte // payload buffers not in a slot
	held []byte   // the last released packet's payload, free again at the next pop
}

// jbMaxFree bounds the free list: buffers beyond it (after a burst of
// queued packets) are left to the garbage collector.
const jbMaxFree = 64

type jbSlot struct {
	used    bool
	ext     uint64
	ts      uint32
	marker  bool
	arrival time.Time
	payload []byte
}

// jbPacket is a released packet. payload is the jitter buffer's and is
// valid until the next pop.
type jbPacket struct {
	ts      uint32
	marker  bool
	arrival time.Time
	payload []byte
	lost    uint64 // packets skipped right before this one
}

func newJitterBuffer(size int, maxLate uint64, maxDelay time.Duration) *jitterBuffer {
	n := 1
	for n < size {
		n <<= 1
	}
	if maxLate >= uint64(n) {
		maxLate = uint64(n) - 1
	}

	return &jitterBuffer{slots: make([]jbSlot, n), mask: uint64(n) - 1, maxLate: maxLate, maxDelay: maxDelay}
}

// push stores a packet. It returns false for a duplicate or too-late packet.
func (j *jitterBuffer) push(p *rtp.Packet, arrival time.Time) bool {
	var ext uint64
	if !j.started {
		j.started = true
		// Offset by 2^16 so that slightly older packets still have a
		// positive extended number.
		ext = 1<<16 | uint64(p.SequenceNumber)
		j.next = ext
		j.highest = ext
	} else {
		diff := int64(int16(p.SequenceNumber - uint16(j.highest))) //nolint:gosec // wrap intended
		ext = uint64(int64(j.highest) + diff)                      //nolint:gosec // positive
	}
	if ext < j.next {
		if j.next-ext < jbRestartDistance {
			j.late++

			return false
		}
		// A jump far backwards: the sender restarted its sequence numbers.
		// Give up everything queued and start over at this packet.
		j.reset()
		ext = 1<<16 | uint64(p.SequenceNumber)
		j.started, j.next, j.highest = true, ext, ext
	}
	// Too far ahead of the window: give up the oldest holes.
	for ext-j.next > j.mask {
		j.skipOne()
	}
	s := &j.slots[ext&j.mask]
	if s.used {
		j.duplicates++

		return false
	}
	s.used = true
	s.ext = ext
	s.ts = p.Timestamp
	s.marker = p.Marker
	s.arrival = arrival
	s.payload = append(j.getBuf(), p.Payload...)
	j.count++
	if ext > j.highest {
		j.highest = ext
	}

	return true
}

// jbRestartDistance is how far back (in packets) a sequence number must jump
// to be taken as a restart of the stream rather than a late packet.
const jbRestartDistance = 8192

func (j *jitterBuffer) reset() {
	for i := range j.slots {
		if j.slots[i].used {
			j.drop(&j.slots[i])
		}
	}
	j.count = 0
}

// getBuf returns an empty payload buffer.
func (j *jitterBuffer) getBuf() []byte {
	if n := len(j.free); n > 0 {
		b := j.free[n-1]
		j.free = j.free[:n-1]

		return b[:0]
	}

	return make([]byte, 0, 1500)
}

// putBuf returns a payload buffer to the free list.
func (j *jitterBuffer) putBuf(b []byte) {
	if b != nil && len(j.free) < jbMaxFree {
		j.free = append(j.free, b)
	}
}

// drop empties a used slot, keeping its buffer.
func (j *jitterBuffer) drop(s *jbSlot) {
	s.used = false
	j.putBuf(s.payload)
	s.payload = nil
}

// skipOne advances past the next slot (used or not) — only when the window
// must move; a used slot is then counted as lost too.
func (j *jitterBuffer) skipOne() {
	s := &j.slots[j.next&j.mask]
	if s.used && s.ext == j.next {
		j.drop(s)
		j.count--
	}
	j.next++
	j.skipped++
}

// pop releases the next packet in order if it is present, or if the hole
// before the next present packet has been waited for long enough (now is the
// arrival time of the latest packet). With flush set, holes are never waited
// for. ok is false when nothing can be released.
func (j *jitterBuffer) pop(now time.Time, flush bool) (jbPacket, bool) {
	j.putBuf(j.held) // the previous packet has been handled
	j.held = nil
	if j.count == 0 {
		return jbPacket{}, false
	}
	s := &j.slots[j.next&j.mask]
	if s.used && s.ext == j.next {
		return j.take(s, 0), true
	}
	// Find the first stored packet after the hole.
	for e := j.next + 1; e <= j.highest; e++ {
		t := &j.slots[e&j.mask]
		if !t.used || t.ext != e {
			continue
		}
		if flush || j.highest-j.next >= j.maxLate || now.Sub(t.arrival) >= j.maxDelay {
			lost := e - j.next
			j.next = e

			return j.take(t, lost), true
		}

		return jbPacket{}, false
	}

	return jbPacket{}, false
}

func (j *jitterBuffer) take(s *jbSlot, lost uint64) jbPacket {
	s.used = false
	j.count--
	j.next++
	lost += j.skipped
	j.skipped = 0
	j.held, s.payload = s.payload, nil

	return jbPacket{ts: s.ts, marker: s.marker, arrival: s.arrival, payload: j.held, lost: lost}
}
