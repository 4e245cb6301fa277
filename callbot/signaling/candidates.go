package signaling

import (
	"encoding/json"
	"fmt"
	"time"
)

// Candidate timing (§6): the caller's event loop owns the timers.
const (
	// GatherWait is how long js-sdk/hydrogen wait after setLocalDescription
	// before sending the offer/answer with the candidates gathered so far.
	GatherWait = 200 * time.Millisecond
	// CandidateFlushOutbound is the batching delay after sending an invite.
	CandidateFlushOutbound = 2000 * time.Millisecond
	// CandidateFlushInbound is the batching delay after sending an answer.
	CandidateFlushInbound = 500 * time.Millisecond
)

// Candidate is one trickled ICE candidate in the shape of the browser's
// RTCIceCandidate.toJSON(). The pointer fields map 1:1 onto pion's
// webrtc.ICECandidateInit. Candidate == "" is the end-of-candidates marker.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// EndOfCandidates returns the end-of-candidates marker {"candidate": ""}.
func EndOfCandidates() Candidate { return Candidate{} }

// IsEndOfCandidates reports whether c is the end marker (any entry with an
// empty candidate string, including mautrix's {"candidate":"","sdpMid":"",
// "sdpMLineIndex":0}).
func (c Candidate) IsEndOfCandidates() bool { return c.Candidate == "" }

func (c Candidate) validate(path string) error {
	if c.IsEndOfCandidates() {
		return nil
	}
	if c.SDPMid == nil && c.SDPMLineIndex == nil {
		return &FieldError{Field: path + ".sdpMid", Err: ErrMissingField, Detail: "sdpMid or sdpMLineIndex is required"}
	}
	return nil
}

func parseCandidates(raw json.RawMessage) ([]Candidate, error) {
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, invalid("candidates", "expected an array")
	}
	out := make([]Candidate, 0, len(entries))
	for i, v := range entries {
		path := fmt.Sprintf("candidates[%d]", i)
		o, err := decodeObject(v)
		if err != nil {
			return nil, invalid(path, "expected an object")
		}
		var c Candidate
		candRaw, ok := o.take("candidate")
		if !ok {
			return nil, missing(path + ".candidate")
		}
		if err := json.Unmarshal(candRaw, &c.Candidate); err != nil {
			return nil, invalid(path+".candidate", "expected a string")
		}
		if mid, ok := o.take("sdpMid"); ok {
			var s string
			if err := json.Unmarshal(mid, &s); err != nil {
				return nil, invalid(path+".sdpMid", "expected a string")
			}
			c.SDPMid = &s
		}
		idx, ok, err := o.intField("sdpMLineIndex", path+".sdpMLineIndex", 0)
		if err != nil {
			return nil, err
		}
		if ok {
			if idx > 0xffff {
				return nil, invalid(path+".sdpMLineIndex", "out of range")
			}
			u := uint16(idx)
			c.SDPMLineIndex = &u
		}
		if ufrag, ok := o.take("usernameFragment"); ok {
			var s string
			if err := json.Unmarshal(ufrag, &s); err != nil {
				return nil, invalid(path+".usernameFragment", "expected a string")
			}
			c.UsernameFragment = &s
		}
		out = append(out, c)
	}
	return out, nil
}

// CandidateQueue collects local candidates between flushes (§6: batch, and
// always send the end marker once gathering completes). It is a plain value
// owned by the peer call's event loop; the zero value is ready to use.
type CandidateQueue struct {
	pending []Candidate
	ended   bool
}

// Add queues a gathered candidate. An end marker is treated like End.
func (q *CandidateQueue) Add(c Candidate) {
	if c.IsEndOfCandidates() {
		q.End()
		return
	}
	q.pending = append(q.pending, c)
}

// End marks gathering complete: the end marker is appended once, so it goes
// out with the next batch (js-sdk style).
func (q *CandidateQueue) End() {
	if q.ended {
		return
	}
	q.ended = true
	q.pending = append(q.pending, EndOfCandidates())
}

// Restart forgets that gathering ended (ICE restart): new candidates and a
// new end marker will follow.
func (q *CandidateQueue) Restart() { q.ended = false }

// Ended reports whether End was called since the last Restart.
func (q *CandidateQueue) Ended() bool { return q.ended }

// Len is the number of queued entries (including a pending end marker).
func (q *CandidateQueue) Len() int { return len(q.pending) }

// Take returns the queued batch and empties the queue; nil if empty.
func (q *CandidateQueue) Take() []Candidate {
	if len(q.pending) == 0 {
		return nil
	}
	out := q.pending
	q.pending = nil
	return out
}

// Discard drops queued candidates but keeps a pending end marker. js-sdk and
// hydrogen do this after sending the offer/answer SDP, which already
// contains the candidates gathered so far.
func (q *CandidateQueue) Discard() {
	var kept []Candidate
	for _, c := range q.pending {
		if c.IsEndOfCandidates() {
			kept = append(kept, c)
		}
	}
	q.pending = kept
}
