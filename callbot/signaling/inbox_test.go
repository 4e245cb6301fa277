package signaling

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"
)

func TestFilter(t *testing.T) {
	f := Filter{SessionID: "botSession", Confs: map[ConfID]struct{}{"conf1": {}}}
	tests := []struct {
		name string
		env  Envelope
		want error
	}{
		{"ok", inviteEnv(), nil},
		{"unknown conf_id", inviteEnv(withConf("conf2")), ErrUnknownConf},
		{"wrong dest_session_id", inviteEnv(withDest("oldBotSession")), ErrDestSessionMismatch},
		{"missing dest_session_id", inviteEnv(withDest("")), ErrDestSessionMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Check(tt.env.Message)
			if tt.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestInbox(t *testing.T) {
	type step struct {
		push      *Envelope // nil: Expire
		knowCall  CallID
		at        time.Duration
		want      []string
		wantDrops []error
	}
	e := func(env Envelope) *Envelope { return &env }
	tests := []struct {
		name  string
		steps []step
	}{
		{"dest_session mismatch dropped with reason", []step{
			{push: e(inviteEnv(withSeq(0), withDest("someoneElse"))), want: []string{}, wantDrops: []error{ErrDestSessionMismatch}},
		}},
		{"unknown conf_id dropped with reason", []step{
			{push: e(inviteEnv(withSeq(0), withConf("nope"))), want: []string{}, wantDrops: []error{ErrUnknownConf}},
		}},
		{"candidates without seq before invite are buffered then replayed", []step{
			{push: e(candEnv()), want: []string{}},
			{push: e(candEnv()), at: 10 * time.Millisecond, want: []string{}},
			{push: e(inviteEnv()), at: 20 * time.Millisecond, want: []string{"inv:-", "cand:-", "cand:-"}},
			{push: e(hangupEnv()), at: 30 * time.Millisecond, want: []string{"hup:-"}},
		}},
		{"candidates with seq before invite come out after it", []step{
			{push: e(candEnv(withSeq(1))), want: []string{}},
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0", "cand:1"}},
		}},
		{"reorder timeout then unknown-call buffer", []step{
			// seq 1 without invite: held by reorder, then by the unknown-call
			// buffer, then the invite (delayed beyond the gap hold) arrives.
			{push: e(candEnv(withSeq(1))), want: []string{}},
			{at: 2 * time.Second, want: []string{}},
			{push: e(inviteEnv(withSeq(0))), at: 3 * time.Second, want: []string{"inv:0", "cand:1"}},
			{push: e(inviteEnv(withSeq(0))), at: 3 * time.Second, want: []string{}, wantDrops: []error{ErrDuplicateSeq}},
		}},
		{"unknown call expires with reason", []step{
			{push: e(hangupEnv(withCall("ghost"))), want: []string{}},
			{at: 29 * time.Second, want: []string{}},
			{at: 30 * time.Second, want: []string{}, wantDrops: []error{ErrUnknownCall}},
		}},
		{"answer to our own invite after KnowCall", []step{
			{knowCall: "call1", want: []string{}},
			{push: e(answerEnv(withSeq(0))), want: []string{"ans:0"}},
			{push: e(candEnv(withSeq(1))), want: []string{"cand:1"}},
		}},
		{"candidates racing our own invite are released by KnowCall", []step{
			{push: e(candEnv()), want: []string{}},
			{knowCall: "call1", want: []string{"cand:-"}},
		}},
		{"duplicate seq dropped with reason", []step{
			{push: e(inviteEnv(withSeq(0))), want: []string{"inv:0"}},
			{push: e(candEnv(withSeq(1))), want: []string{"cand:1"}},
			{push: e(candEnv(withSeq(1))), want: []string{}, wantDrops: []error{ErrDuplicateSeq}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := NewInbox(InboxConfig{SessionID: "botSession", Confs: []ConfID{"conf1"}, ReorderHold: time.Second})
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				var out Output
				switch {
				case st.knowCall != "":
					out = in.KnowCall(st.knowCall)
				case st.push != nil:
					out = in.Push(*st.push, now)
				default:
					out = in.Expire(now)
				}
				require.Equal(t, st.want, seqs(out.Deliver), "step %d", i)
				require.Len(t, out.Drops, len(st.wantDrops), "step %d: %v", i, out.Drops)
				for j, want := range st.wantDrops {
					require.ErrorIs(t, out.Drops[j].Err, want, "step %d", i)
					require.NotNil(t, out.Drops[j].Envelope.Message)
				}
			}
		})
	}
}

func TestInboxLimitsAndDeadline(t *testing.T) {
	in := NewInbox(InboxConfig{SessionID: "botSession", MaxUnknown: 2, UnknownCallTTL: 10 * time.Second})
	out := in.Push(candEnv(), t0)
	require.ErrorIs(t, out.Drops[0].Err, ErrUnknownConf, "no conference added yet")

	in.AddConf("conf1")
	_, ok := in.NextDeadline()
	require.False(t, ok)
	require.Empty(t, in.Push(candEnv(withCall("x")), t0).Drops)
	require.Empty(t, in.Push(candEnv(withCall("y")), t0.Add(time.Second)).Drops)
	out = in.Push(candEnv(withCall("z")), t0)
	require.ErrorIs(t, out.Drops[0].Err, ErrStashFull)

	d, ok := in.NextDeadline()
	require.True(t, ok)
	require.Equal(t, t0.Add(10*time.Second), d)

	in.ForgetCall("x")
	d, _ = in.NextDeadline()
	require.Equal(t, t0.Add(11*time.Second), d)
	require.Empty(t, in.Push(candEnv(withCall("z")), t0).Drops, "room again after ForgetCall")

	in.RemoveConf("conf1")
	out = in.Push(inviteEnv(), t0)
	require.ErrorIs(t, out.Drops[0].Err, ErrUnknownConf)

	// Envelopes log as zerolog objects.
	logger := zerolog.Nop()
	evt := logger.Info()
	inviteEnv(withSeq(3)).MarshalZerologObject(evt)
}

// TestInboxBoundsHostileSenders: one sender making up call ids cannot
// grow the inbox without bound nor crowd out another sender's early
// candidates; idle junk streams are forgotten.
func TestInboxBoundsHostileSenders(t *testing.T) {
	in := NewInbox(InboxConfig{SessionID: "botSession", Confs: []ConfID{"conf1"}})
	t0 := time.Now()
	dropped := 0
	for i := range 100_000 {
		env := candEnv(withSeq(uint64(i%7+1)), withCall(CallID(fmt.Sprintf("junk%d", i))))
		env.Sender = "@evil:example.org"
		dropped += len(in.Push(env, t0).Drops)
	}
	require.Greater(t, dropped, 99_000)
	require.LessOrEqual(t, len(in.reorder.streams), MaxStreamsPerSender)
	require.LessOrEqual(t, in.reorder.Held(), MaxStreamsPerSender)
	// Another sender's candidates before its invite are still held and delivered.
	good := candEnv(withCall("goodcall"))
	good.Sender = "@alice:example.org"
	out := in.Push(good, t0)
	require.Empty(t, out.Drops)
	inv := inviteEnv(withCall("goodcall"))
	inv.Sender = "@alice:example.org"
	out = in.Push(inv, t0)
	require.Len(t, out.Deliver, 2)
	// Once held messages expired, the idle junk streams are forgotten.
	in.Expire(t0.Add(time.Hour))
	in.Expire(t0.Add(2 * time.Hour))
	for k := range in.reorder.streams {
		require.NotEqual(t, id.UserID("@evil:example.org"), k.sender, "junk stream kept: %+v", k)
	}
	require.Zero(t, in.stashCount)
}
