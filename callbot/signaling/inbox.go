package signaling

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"
)

// Defaults for Inbox.
const (
	// DefaultUnknownCallTTL is how long messages for a call_id without
	// invite are held (candidates may be delivered before their invite).
	DefaultUnknownCallTTL = 30 * time.Second
	// DefaultMaxUnknown bounds the messages held for unknown call ids.
	DefaultMaxUnknown = 512
	// MaxUnknownPerSender bounds one sender's share of them, so nobody can
	// crowd out the early candidates of others.
	MaxUnknownPerSender = 64
	// streamIdle is how long a reorder stream of a call that is not
	// known (junk, or long ended) is kept without messages.
	streamIdle = 2 * time.Minute
)

// Filter applies the stateless drop rules of §2.2: the message must name a
// conference we are in and be addressed to our session.
type Filter struct {
	// SessionID is our own session id; dest_session_id must equal it.
	SessionID SessionID
	// Confs are the conference ids we take part in.
	Confs map[ConfID]struct{}
}

// Check returns nil if msg passes, else an error wrapping ErrUnknownConf or
// ErrDestSessionMismatch.
func (f *Filter) Check(msg Message) error {
	b := msg.Common()
	if _, ok := f.Confs[b.ConfID]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownConf, b.ConfID)
	}
	if b.DestSessionID != f.SessionID {
		return fmt.Errorf("%w: got %q, our session is %q", ErrDestSessionMismatch, b.DestSessionID, f.SessionID)
	}
	return nil
}

// Drop is a message the Inbox discarded. Err wraps one of ErrUnknownConf,
// ErrDestSessionMismatch, ErrDuplicateSeq, ErrUnknownCall, ErrStashFull.
type Drop struct {
	Envelope Envelope
	Err      error
}

// Output is what one Inbox step yields: messages to process, in order, and
// messages dropped (for logging).
type Output struct {
	Deliver []Envelope
	Drops   []Drop
}

func (o *Output) add(other Output) {
	o.Deliver = append(o.Deliver, other.Deliver...)
	o.Drops = append(o.Drops, other.Drops...)
}

// InboxConfig configures an Inbox.
type InboxConfig struct {
	SessionID SessionID
	Confs     []ConfID
	// ReorderHold defaults to DefaultReorderHold.
	ReorderHold time.Duration
	// UnknownCallTTL defaults to DefaultUnknownCallTTL.
	UnknownCallTTL time.Duration
	// MaxUnknown defaults to DefaultMaxUnknown.
	MaxUnknown int
}

type stashed struct {
	env      Envelope
	received time.Time
}

// Inbox is the receive pipeline for signalling messages: Filter, then
// Reorder, then the unknown-call buffer. A message for a call_id that is
// neither an invite nor for a call made known (by an earlier invite or by
// KnowCall for calls we placed) is held; when the invite arrives it is
// delivered right after it, or it is dropped with ErrUnknownCall after the
// TTL. Every drop is returned with its reason.
//
// The Inbox does not check that a message's sender is the peer of the call
// it names, nor sender_session_id against member state: that is the call
// layer's job. It has no goroutine; call Expire when NextDeadline passes.
// Not safe for concurrent use.
type Inbox struct {
	filter     Filter
	reorder    *Reorder
	known      map[CallID]struct{}
	stash      map[CallID][]stashed
	stashCount int
	bySender   map[id.UserID]int // stashed messages per sender
	ttl        time.Duration
	max        int
}

// NewInbox returns an Inbox.
func NewInbox(cfg InboxConfig) *Inbox {
	in := &Inbox{
		filter:   Filter{SessionID: cfg.SessionID, Confs: make(map[ConfID]struct{})},
		reorder:  NewReorder(cfg.ReorderHold),
		known:    make(map[CallID]struct{}),
		stash:    make(map[CallID][]stashed),
		bySender: make(map[id.UserID]int),
		ttl:      cfg.UnknownCallTTL,
		max:      cfg.MaxUnknown,
	}
	if in.ttl <= 0 {
		in.ttl = DefaultUnknownCallTTL
	}
	if in.max <= 0 {
		in.max = DefaultMaxUnknown
	}
	for _, c := range cfg.Confs {
		in.filter.Confs[c] = struct{}{}
	}
	return in
}

// AddConf starts accepting messages for confID.
func (in *Inbox) AddConf(confID ConfID) { in.filter.Confs[confID] = struct{}{} }

// RemoveConf stops accepting messages for confID.
func (in *Inbox) RemoveConf(confID ConfID) { delete(in.filter.Confs, confID) }

// KnowCall marks callID as known (call it when placing an outgoing invite)
// and returns any messages already held for it.
func (in *Inbox) KnowCall(callID CallID) Output {
	in.known[callID] = struct{}{}
	return Output{Deliver: in.release(callID)}
}

// ForgetCall drops all state for an ended call. Late messages for it are
// then held as unknown and dropped after the TTL.
func (in *Inbox) ForgetCall(callID CallID) {
	delete(in.known, callID)
	in.release(callID)
	in.reorder.ForgetCall(callID)
}

// unstash accounts for one stashed message leaving the stash.
func (in *Inbox) unstash(s stashed) {
	in.stashCount--
	if in.bySender[s.env.Sender]--; in.bySender[s.env.Sender] <= 0 {
		delete(in.bySender, s.env.Sender)
	}
}

// Push processes one received message.
func (in *Inbox) Push(env Envelope, now time.Time) Output {
	if err := in.filter.Check(env.Message); err != nil {
		return Output{Drops: []Drop{{Envelope: env, Err: err}}}
	}
	ready, err := in.reorder.Push(env, now)
	if err != nil {
		return Output{Drops: []Drop{{Envelope: env, Err: err}}}
	}
	var out Output
	for _, e := range ready {
		out.add(in.route(e, now))
	}
	return out
}

// Expire delivers reorder-held messages whose hold time passed and drops
// unknown-call messages whose TTL passed.
func (in *Inbox) Expire(now time.Time) Output {
	var out Output
	for _, e := range in.reorder.Expire(now) {
		out.add(in.route(e, now))
	}
	for _, callID := range slices.Sorted(maps.Keys(in.stash)) {
		list := in.stash[callID]
		kept := list[:0]
		for _, s := range list {
			if !now.Before(s.received.Add(in.ttl)) {
				out.Drops = append(out.Drops, Drop{Envelope: s.env, Err: fmt.Errorf("%w: no invite for %q within %s", ErrUnknownCall, callID, in.ttl)})
				in.unstash(s)
			} else {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			delete(in.stash, callID)
		} else {
			in.stash[callID] = kept
		}
	}
	in.reorder.PruneIdle(now, streamIdle, func(callID CallID) bool {
		_, known := in.known[callID]
		return known || len(in.stash[callID]) > 0
	})
	return out
}

// NextDeadline is when Expire next has something to do.
func (in *Inbox) NextDeadline() (time.Time, bool) {
	next, ok := in.reorder.NextDeadline()
	for _, list := range in.stash {
		for _, s := range list {
			if d := s.received.Add(in.ttl); !ok || d.Before(next) {
				next, ok = d, true
			}
		}
	}
	return next, ok
}

func (in *Inbox) route(env Envelope, now time.Time) Output {
	callID := env.Message.Common().CallID
	if _, ok := in.known[callID]; ok {
		return Output{Deliver: []Envelope{env}}
	}
	if _, ok := env.Message.(*Invite); ok {
		in.known[callID] = struct{}{}
		return Output{Deliver: append([]Envelope{env}, in.release(callID)...)}
	}
	if in.stashCount >= in.max || in.bySender[env.Sender] >= min(in.max, MaxUnknownPerSender) {
		return Output{Drops: []Drop{{Envelope: env, Err: fmt.Errorf("%w: %d messages held, %d from %s", ErrStashFull, in.stashCount,
			in.bySender[env.Sender], env.Sender)}}}
	}
	in.stash[callID] = append(in.stash[callID], stashed{env: env, received: now})
	in.stashCount++
	in.bySender[env.Sender]++
	return Output{}
}

func (in *Inbox) release(callID CallID) []Envelope {
	list := in.stash[callID]
	if len(list) == 0 {
		return nil
	}
	delete(in.stash, callID)
	out := make([]Envelope, len(list))
	for i, s := range list {
		out[i] = s.env
		in.unstash(s)
	}
	return out
}
