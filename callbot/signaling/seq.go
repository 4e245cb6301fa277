package signaling

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// DefaultReorderHold is how long an out-of-order message is held waiting
// for the gap before it is delivered anyway (§2.5 suggests 1–2 s).
const DefaultReorderHold = 1500 * time.Millisecond

// SeqCounter is the sender side of §2.5: one counter per call_id starting
// at 0 (js-sdk's scope, which hydrogen also accepts). The zero value is
// ready to use; it is not safe for concurrent use.
type SeqCounter struct {
	next map[CallID]uint64
}

// Next returns the seq for the next message of callID.
func (c *SeqCounter) Next(callID CallID) uint64 {
	if c.next == nil {
		c.next = make(map[CallID]uint64)
	}
	n := c.next[callID]
	c.next[callID] = n + 1
	return n
}

// Forget drops the counter of an ended call.
func (c *SeqCounter) Forget(callID CallID) { delete(c.next, callID) }

// Outbox stamps outgoing messages with the bot's common fields (§2.2):
// party_id = device id, version "1", device_id, sender_session_id and the
// next seq of the call. It does not send anything.
type Outbox struct {
	DeviceID  id.DeviceID
	SessionID SessionID
	seq       SeqCounter
}

// NewOutbox returns an Outbox for the bot's device and session.
func NewOutbox(deviceID id.DeviceID, sessionID SessionID) *Outbox {
	return &Outbox{DeviceID: deviceID, SessionID: sessionID}
}

// Stamp fills msg's common fields for the peer call callID in conference
// confID towards a device whose session is dest, and assigns the next seq.
// Extra is left as it is.
func (o *Outbox) Stamp(msg Message, confID ConfID, callID CallID, dest SessionID) {
	b := msg.Common()
	b.CallID = callID
	b.PartyID = PartyID(o.DeviceID)
	b.Version = Version1
	b.NumericVersion = false
	b.ConfID = confID
	b.DeviceID = o.DeviceID
	b.SenderSessionID = o.SessionID
	b.DestSessionID = dest
	b.SetSeq(o.seq.Next(callID))
}

// Forget drops the seq counter of an ended call.
func (o *Outbox) Forget(callID CallID) { o.seq.Forget(callID) }

// Envelope is a received message with its sender (the to-device event's
// sender; for Olm-decrypted events the caller has already checked that the
// Olm sender device equals the content's device_id).
type Envelope struct {
	Sender  id.UserID
	Message Message
}

// MarshalZerologObject lets the caller log an envelope with Object().
func (e Envelope) MarshalZerologObject(evt *zerolog.Event) {
	evt.Stringer("sender", e.Sender)
	if e.Message == nil {
		return
	}
	b := e.Message.Common()
	evt.Str("type", e.Message.Type().Type).
		Stringer("device_id", b.DeviceID).
		Str("call_id", string(b.CallID)).
		Str("conf_id", string(b.ConfID))
	if seq, ok := b.SeqValue(); ok {
		evt.Uint64("seq", seq)
	}
}

// streamKey is the reorder scope: (sender, device_id, call_id).
type streamKey struct {
	sender id.UserID
	device id.DeviceID
	call   CallID
}

func keyOf(env Envelope) streamKey {
	b := env.Message.Common()
	return streamKey{sender: env.Sender, device: b.DeviceID, call: b.CallID}
}

type held struct {
	env      Envelope
	seq      uint64
	received time.Time
}

type stream struct {
	last    time.Time // when a message last arrived
	based   bool      // base fixed: next is meaningful
	next    uint64    // next seq to deliver
	pending []held    // sorted by seq, no duplicates
	// skipped are the seqs below next that were given up by a hold timeout
	// and never delivered; if one still arrives it is delivered late rather
	// than dropped as a duplicate.
	skipped []seqRange
}

// seqRange is an inclusive range of seqs.
type seqRange struct{ lo, hi uint64 }

// maxSkippedRanges bounds the given-up gaps remembered per stream.
const maxSkippedRanges = 32

func (s *stream) skip(lo, hi uint64) {
	if lo > hi {
		return
	}
	s.skipped = append(s.skipped, seqRange{lo, hi})
	if len(s.skipped) > maxSkippedRanges {
		s.skipped = s.skipped[len(s.skipped)-maxSkippedRanges:]
	}
}

// takeSkipped removes seq from the skipped ranges; false if it was not there.
func (s *stream) takeSkipped(seq uint64) bool {
	for i, r := range s.skipped {
		if seq < r.lo || seq > r.hi {
			continue
		}
		var repl []seqRange
		if seq > r.lo {
			repl = append(repl, seqRange{r.lo, seq - 1})
		}
		if seq < r.hi {
			repl = append(repl, seqRange{seq + 1, r.hi})
		}
		s.skipped = slices.Replace(s.skipped, i, i+1, repl...)
		return true
	}
	return false
}

// Reorder is the tolerant receive-side seq buffer of §2.5, keyed by
// (sender, device_id, call_id):
//   - messages without seq are delivered at once;
//   - seq 0, or the first invite or answer of a call (hydrogen counts per
//     device connection, so its retry invite or its answer to our retried
//     invite may start above 0), fixes the base;
//   - later seqs are delivered in order; a message after a gap is held until
//     the gap fills or it has been held for the hold time, then everything
//     up to it is delivered in seq order (the gap is given up);
//   - a seq below the next expected one, or one already held, is a duplicate
//     and dropped with ErrDuplicateSeq; except a seq from a gap that was
//     given up, which is delivered late when it finally arrives (so a
//     delayed invite is never lost).
//
// Reorder has no goroutine: call Expire when NextDeadline passes. Not safe
// for concurrent use.
type Reorder struct {
	hold      time.Duration
	streams   map[streamKey]*stream
	perSender map[id.UserID]int // streams per sender
}

// Bounds on what any sender can make the Reorder hold: to-device messages
// come from anyone, with any call_id. Beyond them messages are dropped
// with ErrStashFull.
const (
	MaxStreamsPerSender = 64
	MaxStreams          = 4096
	MaxHeldPerStream    = 256
)

// NewReorder returns a Reorder; hold <= 0 means DefaultReorderHold.
func NewReorder(hold time.Duration) *Reorder {
	if hold <= 0 {
		hold = DefaultReorderHold
	}
	return &Reorder{hold: hold, streams: make(map[streamKey]*stream), perSender: make(map[id.UserID]int)}
}

// Push adds a received message and returns the messages now deliverable,
// in order. A non-nil error (wrapping ErrDuplicateSeq) means env was dropped.
func (r *Reorder) Push(env Envelope, now time.Time) ([]Envelope, error) {
	seq, ok := env.Message.Common().SeqValue()
	if !ok {
		return []Envelope{env}, nil
	}
	key := keyOf(env)
	s := r.streams[key]
	if s == nil {
		if r.perSender[key.sender] >= MaxStreamsPerSender || len(r.streams) >= MaxStreams {
			return nil, fmt.Errorf("%w: %d signalling streams from %s (%d in all)", ErrStashFull, r.perSender[key.sender], key.sender, len(r.streams))
		}
		s = &stream{}
		r.streams[key] = s
		r.perSender[key.sender]++
	}
	s.last = now
	if s.based && seq < s.next {
		if s.takeSkipped(seq) {
			return []Envelope{env}, nil // late message from a given-up gap
		}
		return nil, fmt.Errorf("%w: seq %d already delivered (next %d) for call %s", ErrDuplicateSeq, seq, s.next, key.call)
	}
	i, found := slices.BinarySearchFunc(s.pending, seq, func(h held, seq uint64) int {
		switch {
		case h.seq < seq:
			return -1
		case h.seq > seq:
			return 1
		}
		return 0
	})
	if found {
		return nil, fmt.Errorf("%w: seq %d already held for call %s", ErrDuplicateSeq, seq, key.call)
	}
	if !s.based && (seq == 0 || startsCall(env.Message)) {
		// The base message goes first; anything held before it (lower seqs
		// that somehow preceded the invite) follows it, then the stream
		// continues from seq+1.
		s.based = true
		s.next = seq + 1
		out := []Envelope{env}
		var rest []held
		for _, h := range s.pending {
			if h.seq < seq {
				out = append(out, h.env)
			} else {
				rest = append(rest, h)
			}
		}
		s.pending = rest
		return append(out, r.drain(s)...), nil
	}
	if s.based && seq == s.next {
		s.next++
		return append([]Envelope{env}, r.drain(s)...), nil
	}
	if len(s.pending) >= MaxHeldPerStream {
		return nil, fmt.Errorf("%w: %d messages held for call %s", ErrStashFull, len(s.pending), key.call)
	}
	s.pending = slices.Insert(s.pending, i, held{env: env, seq: seq, received: now})
	return nil, nil
}

// PruneIdle forgets streams that hold nothing and saw no message for idle,
// unless keep says their call is still going: junk call ids from anyone
// must not accumulate.
func (r *Reorder) PruneIdle(now time.Time, idle time.Duration, keep func(CallID) bool) {
	for k, s := range r.streams {
		if len(s.pending) == 0 && now.Sub(s.last) >= idle && !keep(k.call) {
			r.remove(k)
		}
	}
}

func (r *Reorder) remove(k streamKey) {
	delete(r.streams, k)
	if r.perSender[k.sender]--; r.perSender[k.sender] <= 0 {
		delete(r.perSender, k.sender)
	}
}

// startsCall reports the first message the remote side sends in a peer
// call: its invite (it calls) or its answer (we called).
func startsCall(m Message) bool {
	switch m.(type) {
	case *Invite, *Answer:
		return true
	}
	return false
}

// drain delivers pending messages contiguous with next.
func (r *Reorder) drain(s *stream) []Envelope {
	var out []Envelope
	for len(s.pending) > 0 && s.pending[0].seq == s.next {
		out = append(out, s.pending[0].env)
		s.next++
		s.pending = s.pending[1:]
	}
	if len(s.pending) == 0 {
		s.pending = nil
	}
	return out
}

// Expire delivers, in seq order, every held message whose hold time has
// passed, together with everything held before it, and then whatever is
// contiguous after it.
func (r *Reorder) Expire(now time.Time) []Envelope {
	var out []Envelope
	keys := make([]streamKey, 0, len(r.streams))
	for k, s := range r.streams {
		if len(s.pending) > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.sender, b.sender), cmp.Compare(a.device, b.device), cmp.Compare(a.call, b.call))
	})
	for _, k := range keys {
		s := r.streams[k]
		last := -1
		for i, h := range s.pending {
			if !now.Before(h.received.Add(r.hold)) {
				last = i
			}
		}
		if last < 0 {
			continue
		}
		start := uint64(0)
		if s.based {
			start = s.next
		}
		for _, h := range s.pending[:last+1] {
			s.skip(start, h.seq-1)
			start = h.seq + 1
			out = append(out, h.env)
		}
		s.based = true
		s.next = s.pending[last].seq + 1
		s.pending = s.pending[last+1:]
		out = append(out, r.drain(s)...)
	}
	return out
}

// NextDeadline is when Expire next has something to do.
func (r *Reorder) NextDeadline() (time.Time, bool) {
	var next time.Time
	for _, s := range r.streams {
		for _, h := range s.pending {
			if d := h.received.Add(r.hold); next.IsZero() || d.Before(next) {
				next = d
			}
		}
	}
	return next, !next.IsZero()
}

// Held is the number of messages currently held.
func (r *Reorder) Held() int {
	n := 0
	for _, s := range r.streams {
		n += len(s.pending)
	}
	return n
}

// ForgetCall drops all state (and held messages) for callID.
func (r *Reorder) ForgetCall(callID CallID) {
	for k := range r.streams {
		if k.call == callID {
			r.remove(k)
		}
	}
}
