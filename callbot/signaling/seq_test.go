package signaling

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

var t0 = time.UnixMilli(1700000000000)

type msgOpt func(b *Base)

func withSeq(seq uint64) msgOpt       { return func(b *Base) { b.SetSeq(seq) } }
func withCall(c CallID) msgOpt        { return func(b *Base) { b.CallID = c } }
func withDevice(d id.DeviceID) msgOpt { return func(b *Base) { b.DeviceID = d } }
func withConf(c ConfID) msgOpt        { return func(b *Base) { b.ConfID = c } }
func withDest(s SessionID) msgOpt     { return func(b *Base) { b.DestSessionID = s } }
func baseFor(opts ...msgOpt) Base {
	b := Base{CallID: "call1", PartyID: "DEV", ConfID: "conf1", DeviceID: "DEV", SenderSessionID: "peer", DestSessionID: "botSession"}
	for _, o := range opts {
		o(&b)
	}
	return b
}

func inviteEnv(opts ...msgOpt) Envelope {
	return Envelope{Sender: "@peer:example.org", Message: &Invite{Base: baseFor(opts...), Offer: event.CallData{Type: "offer", SDP: "v=0"}}}
}

func answerEnv(opts ...msgOpt) Envelope {
	return Envelope{Sender: "@peer:example.org", Message: &Answer{Base: baseFor(opts...), Answer: event.CallData{Type: "answer", SDP: "v=0"}}}
}

func candEnv(opts ...msgOpt) Envelope {
	return Envelope{Sender: "@peer:example.org", Message: &Candidates{Base: baseFor(opts...), Candidates: []Candidate{EndOfCandidates()}}}
}

func hangupEnv(opts ...msgOpt) Envelope {
	return Envelope{Sender: "@peer:example.org", Message: &Hangup{Base: baseFor(opts...)}}
}

// seqs lists "type:seq" (or "type:-" without seq) of delivered envelopes.
func seqs(envs []Envelope) []string {
	out := []string{}
	for _, e := range envs {
		s := "-"
		if v, ok := e.Message.Common().SeqValue(); ok {
			s = string(rune('0' + v))
		}
		short := map[string]string{EventInvite.Type: "inv", EventAnswer.Type: "ans", EventCandidates.Type: "cand", EventHangup.Type: "hup"}[e.Message.Type().Type]
		out = append(out, short+":"+s)
	}
	return out
}

func TestSeqCounter(t *testing.T) {
	var c SeqCounter
	require.Equal(t, uint64(0), c.Next("a"))
	require.Equal(t, uint64(1), c.Next("a"))
	require.Equal(t, uint64(0), c.Next("b"), "per call_id")
	require.Equal(t, uint64(2), c.Next("a"))
	c.Forget("a")
	require.Equal(t, uint64(0), c.Next("a"))
}

func TestReorder(t *testing.T) {
	hold := time.Second
	type step struct {
		push    *Envelope     // nil: call Expire
		at      time.Duration // offset from t0
		want    []string
		dup     bool
		holding int
	}
	e := func(env Envelope) *Envelope { return &env }
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(candEnv(withSeq(1))), want: []string{"cand:1"}},
			{push: e(hangupEnv(withSeq(2))), want: []string{"hup:2"}},
		}},
		{"candidates before invite are held and released in order", []step{
			{push: e(candEnv(withSeq(2))), want: []string{}, holding: 1},
			{push: e(candEnv(withSeq(1))), want: []string{}, holding: 2},
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0", "cand:1", "cand:2"}},
		}},
		{"gap filled before timeout", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(candEnv(withSeq(2))), want: []string{}, holding: 1},
			{push: e(hangupEnv(withSeq(3))), at: 100 * time.Millisecond, want: []string{}, holding: 2},
			{push: e(candEnv(withSeq(1))), at: 200 * time.Millisecond, want: []string{"cand:1", "cand:2", "hup:3"}},
		}},
		{"gap timeout delivers what it has", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(candEnv(withSeq(2))), want: []string{}, holding: 1},
			{push: e(hangupEnv(withSeq(5))), at: 500 * time.Millisecond, want: []string{}, holding: 2},
			{at: 999 * time.Millisecond, want: []string{}, holding: 2},
			// seq 2 expires; seq 5 is not contiguous and not expired yet.
			{at: time.Second, want: []string{"cand:2"}, holding: 1},
			{at: 1500 * time.Millisecond, want: []string{"hup:5"}},
			// A message from a given-up gap is delivered late, once.
			{push: e(candEnv(withSeq(1))), at: 1600 * time.Millisecond, want: []string{"cand:1"}},
			{push: e(candEnv(withSeq(1))), at: 1600 * time.Millisecond, dup: true},
			{push: e(candEnv(withSeq(4))), at: 1600 * time.Millisecond, want: []string{"cand:4"}},
			{push: e(candEnv(withSeq(6))), at: 1700 * time.Millisecond, want: []string{"cand:6"}},
			{push: e(candEnv(withSeq(2))), at: 1800 * time.Millisecond, dup: true},
		}},
		{"duplicate seq dropped", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(inviteEnv(withSeq(0))), dup: true},
			{push: e(candEnv(withSeq(2))), want: []string{}, holding: 1},
			{push: e(candEnv(withSeq(2))), dup: true, holding: 1},
		}},
		{"no seq delivered immediately", []step{
			{push: e(candEnv()), want: []string{"cand:-"}},
			{push: e(inviteEnv()), want: []string{"inv:-"}},
			{push: e(hangupEnv()), want: []string{"hup:-"}},
		}},
		{"hydrogen retry invite starting above 0 fixes the base", []step{
			{push: e(candEnv(withSeq(5))), want: []string{}, holding: 1},
			{push: e(inviteEnv(withSeq(4))), want: []string{"inv:4", "cand:5"}},
			{push: e(candEnv(withSeq(3))), dup: true},
		}},
		{"late invite after the gap timeout is still delivered", []step{
			{push: e(candEnv(withSeq(1))), want: []string{}, holding: 1},
			{at: time.Second, want: []string{"cand:1"}},
			{push: e(inviteEnv(withSeq(0))), at: 2 * time.Second, want: []string{"inv:0"}},
			{push: e(inviteEnv(withSeq(0))), at: 2 * time.Second, dup: true},
			{push: e(candEnv(withSeq(2))), at: 2 * time.Second, want: []string{"cand:2"}},
		}},
		{"hydrogen answer above 0 fixes the base", []step{
			{push: e(answerEnv(withSeq(7))), want: []string{"ans:7"}},
			{push: e(candEnv(withSeq(8))), want: []string{"cand:8"}},
		}},
		{"streams are per call and per device", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(inviteEnv(withSeq(0), withCall("call2"))), want: []string{"inv:0"}},
			{push: e(inviteEnv(withSeq(0), withDevice("OTHER"))), want: []string{"inv:0"}},
			{push: e(candEnv(withSeq(1), withCall("call2"))), want: []string{"cand:1"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReorder(hold)
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				var got []Envelope
				if st.push == nil {
					got = r.Expire(now)
				} else {
					var err error
					got, err = r.Push(*st.push, now)
					if st.dup {
						require.ErrorIs(t, err, ErrDuplicateSeq, "step %d", i)
						require.Empty(t, got)
						require.Equal(t, st.holding, r.Held(), "step %d", i)
						continue
					}
					require.NoError(t, err, "step %d", i)
				}
				require.Equal(t, st.want, seqs(got), "step %d", i)
				require.Equal(t, st.holding, r.Held(), "step %d", i)
				_, has := r.NextDeadline()
				require.Equal(t, st.holding > 0, has, "step %d", i)
			}
		})
	}
}

func TestReorderDeadline(t *testing.T) {
	r := NewReorder(0)
	_, ok := r.NextDeadline()
	require.False(t, ok)
	_, err := r.Push(candEnv(withSeq(3)), t0)
	require.NoError(t, err)
	d, ok := r.NextDeadline()
	require.True(t, ok)
	require.Equal(t, t0.Add(DefaultReorderHold), d)
	r.ForgetCall("call1")
	require.Equal(t, 0, r.Held())
}
