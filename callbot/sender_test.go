package callbot

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/mailbox"
)

type fakeSender struct {
	lock    sync.Mutex
	calls   []map[id.UserID]map[id.DeviceID]json.RawMessage
	types   []string
	block   chan struct{}
	entered chan struct{}
}

func (fs *fakeSender) SendToDevice(_ context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, _ bool) error {
	if fs.entered != nil {
		fs.entered <- struct{}{}
	}
	if fs.block != nil {
		<-fs.block
	}
	fs.lock.Lock()
	defer fs.lock.Unlock()
	fs.calls = append(fs.calls, msgs)
	fs.types = append(fs.types, evtType.Type)
	return nil
}

func TestSendLoopBatchesByTypeInOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := &fakeSender{block: make(chan struct{}), entered: make(chan struct{}, 10)}
	queue := mailbox.New[outgoing]()
	done := make(chan struct{})
	go func() { defer close(done); sendLoop(ctx, fs, queue) }()

	hangup := event.Type{Type: "m.call.hangup", Class: event.ToDeviceEventType}
	cands := event.Type{Type: "m.call.candidates", Class: event.ToDeviceEventType}
	// The first message is in flight (blocked); the rest queue up behind it.
	queue.Push(outgoing{evtType: cands, user: "@a:x", device: "A", content: json.RawMessage(`{"n":0}`)})
	select {
	case <-fs.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("first message not sent")
	}
	queue.Push(outgoing{evtType: hangup, user: "@a:x", device: "A", content: json.RawMessage(`{"n":1}`)})
	queue.Push(outgoing{evtType: hangup, user: "@b:x", device: "B", content: json.RawMessage(`{"n":2}`)})
	queue.Push(outgoing{evtType: hangup, user: "@b:x", device: "B2", content: json.RawMessage(`{"n":3}`)})
	queue.Push(outgoing{evtType: cands, user: "@a:x", device: "A", content: json.RawMessage(`{"n":4}`)})
	// Same device twice cannot share one request: the second starts a new batch.
	queue.Push(outgoing{evtType: cands, user: "@a:x", device: "A", content: json.RawMessage(`{"n":5}`)})
	flushed := make(chan struct{})
	queue.Push(outgoing{flushed: flushed})
	close(fs.block)
	select {
	case <-flushed:
	case <-time.After(5 * time.Second):
		t.Fatal("flush marker not reached")
	}
	fs.lock.Lock()
	defer fs.lock.Unlock()
	require.Equal(t, []string{"m.call.candidates", "m.call.hangup", "m.call.candidates", "m.call.candidates"}, fs.types)
	require.Len(t, fs.calls[1], 2, "hangups to two users go in one request")
	require.Len(t, fs.calls[1]["@b:x"], 2)
	require.JSONEq(t, `{"n":4}`, string(fs.calls[2]["@a:x"]["A"]))
	require.JSONEq(t, `{"n":5}`, string(fs.calls[3]["@a:x"]["A"]))
	cancel()
	<-done
}

type countingTrack struct {
	fail           bool
	writes, closes int
}

func (ct *countingTrack) WriteRTP(*rtp.Packet, time.Time) error {
	ct.writes++
	if ct.fail {
		return errCallEnded
	}
	return nil
}
func (ct *countingTrack) SenderReport(uint64, uint32, time.Time) {}
func (ct *countingTrack) Close()                                 { ct.closes++ }

type trackSinkFunc func() TrackSink

func (f trackSinkFunc) CallJoined(context.Context, CallInfo)                 {}
func (f trackSinkFunc) CallLeft(context.Context, CallInfo, time.Time)        {}
func (f trackSinkFunc) TrackStarted(context.Context, *RemoteTrack) TrackSink { return f() }
func (f trackSinkFunc) StreamChanged(context.Context, StreamChange)          {}
func (f trackSinkFunc) ParticipantLeft(context.Context, PeerInfo, time.Time) {}

func TestTeeDropsOnlyTheFailingSink(t *testing.T) {
	bad, good := &countingTrack{fail: true}, &countingTrack{}
	tee := Tee{trackSinkFunc(func() TrackSink { return bad }), trackSinkFunc(func() TrackSink { return good })}
	ts := tee.TrackStarted(context.Background(), &RemoteTrack{})
	require.NoError(t, ts.WriteRTP(&rtp.Packet{}, time.Now()))
	require.NoError(t, ts.WriteRTP(&rtp.Packet{}, time.Now()))
	require.Equal(t, 1, bad.writes, "a failed sink gets no more packets")
	require.Equal(t, 1, bad.closes)
	require.Equal(t, 2, good.writes)
	ts.Close()
	require.Equal(t, 1, good.closes)
	require.Equal(t, 1, bad.closes, "closed once")
}

// TestSendLoopBatchesAcrossDevices: the answers and candidates of many
// peers, interleaved as the call loop makes them, go out as one request
// per type; each device still gets its answer before its candidates, and
// a device's second message of a type waits for the next request.
func TestSendLoopBatchesAcrossDevices(t *testing.T) {
	answer := event.Type{Type: "m.call.answer", Class: event.ToDeviceEventType}
	cands := event.Type{Type: "m.call.candidates", Class: event.ToDeviceEventType}
	msg := func(evtType event.Type, dev string, n int) outgoing {
		return outgoing{evtType: evtType, user: id.UserID("@" + dev + ":x"), device: id.DeviceID(dev), content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
	}
	items := []outgoing{
		msg(answer, "A", 0), msg(cands, "A", 1),
		msg(answer, "B", 2), msg(cands, "B", 3),
		msg(answer, "C", 4), msg(cands, "C", 5),
		msg(cands, "A", 6), // A's second candidates: after its first
		msg(answer, "D", 7), msg(cands, "D", 8),
	}
	items[8].olm = true // D's candidates encrypted: a request of their own
	got := batches(items)
	type req struct {
		typ  string
		olm  bool
		devs map[string]int
	}
	var reqs []req
	for _, b := range got {
		r := req{typ: b.evtType.Type, olm: b.olm, devs: map[string]int{}}
		for _, devs := range b.msgs {
			for d, c := range devs {
				var v struct{ N int }
				require.NoError(t, json.Unmarshal(c, &v))
				r.devs[string(d)] = v.N
			}
		}
		require.Equal(t, len(r.devs), b.n)
		reqs = append(reqs, r)
	}
	require.Equal(t, []req{
		{"m.call.answer", false, map[string]int{"A": 0, "B": 2, "C": 4, "D": 7}},
		{"m.call.candidates", false, map[string]int{"A": 1, "B": 3, "C": 5}},
		{"m.call.candidates", false, map[string]int{"A": 6}},
		{"m.call.candidates", true, map[string]int{"D": 8}},
	}, reqs)
}
