package webhooks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/storage"
)

// memOutbox is an in-memory Outbox.
type memOutbox struct {
	lock  sync.Mutex
	items map[string]*storage.OutboxItem
}

func (mo *memOutbox) Add(_ context.Context, items ...*storage.OutboxItem) error {
	mo.lock.Lock()
	defer mo.lock.Unlock()
	for _, it := range items {
		if _, ok := mo.items[it.ID]; !ok {
			c := *it
			mo.items[it.ID] = &c
		}
	}
	return nil
}

func (mo *memOutbox) Due(_ context.Context, now time.Time, limit int) ([]*storage.OutboxItem, error) {
	mo.lock.Lock()
	defer mo.lock.Unlock()
	var out []*storage.OutboxItem
	for _, it := range mo.items {
		if it.DeliveredAt.IsZero() && !it.NextAttemptAt.After(now) && len(out) < limit {
			c := *it
			out = append(out, &c)
		}
	}
	return out, nil
}

func (mo *memOutbox) NextAttempt(context.Context) (time.Time, error) {
	mo.lock.Lock()
	defer mo.lock.Unlock()
	var next time.Time
	for _, it := range mo.items {
		if it.DeliveredAt.IsZero() && (next.IsZero() || it.NextAttemptAt.Before(next)) {
			next = it.NextAttemptAt
		}
	}
	return next, nil
}

func (mo *memOutbox) update(id string, f func(*storage.OutboxItem)) error {
	mo.lock.Lock()
	defer mo.lock.Unlock()
	f(mo.items[id])
	return nil
}

func (mo *memOutbox) Delivered(_ context.Context, id string, at time.Time) error {
	return mo.update(id, func(it *storage.OutboxItem) { it.DeliveredAt, it.Attempts = at, it.Attempts+1 })
}

func (mo *memOutbox) Retry(_ context.Context, id string, next time.Time, reason string) error {
	return mo.update(id, func(it *storage.OutboxItem) {
		it.NextAttemptAt, it.LastError, it.Attempts = next, reason, it.Attempts+1
	})
}

func (mo *memOutbox) GiveUp(_ context.Context, id string, reason string) error {
	return mo.update(id, func(it *storage.OutboxItem) {
		it.DeliveredAt, it.LastError, it.Attempts = time.Unix(1, 0), reason, it.Attempts+1
	})
}

func (mo *memOutbox) Prune(context.Context, time.Time) error { return nil }

func (mo *memOutbox) get(id string) storage.OutboxItem {
	mo.lock.Lock()
	defer mo.lock.Unlock()
	return *mo.items[id]
}

// TestSenderRetriesThenGivesUp: a receiver that always fails gets
// MaxAttempts tries, then the delivery is given up with the last reason; an
// event for an endpoint no longer configured is given up at once; the same
// event published twice is delivered once.
func TestSenderRetriesThenGivesUp(t *testing.T) {
	var lock sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lock.Lock()
		hits[r.URL.Path]++
		lock.Unlock()
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ob := &memOutbox{items: map[string]*storage.OutboxItem{}}
	ob.items["gone"] = &storage.OutboxItem{ID: "gone", URL: "http://127.0.0.1:1/removed", Event: "recording.started", Body: []byte(`{}`)}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Outbox: ob, Registerer: reg, Endpoints: []Endpoint{{URL: srv.URL + "/down", Secret: "s-0123456789abcdef"}, {URL: srv.URL + "/up", Secret: "t-0123456789abcdef"}},
		Backoff: func(int) time.Duration { return time.Millisecond }})
	require.NoError(t, err)
	ctx := context.Background()
	s.Start(ctx)
	defer s.Stop()
	ev := Event{ID: "e1", Type: RecordingStarted}
	require.NoError(t, s.Publish(ctx, ev))
	require.NoError(t, s.Publish(ctx, ev))

	require.Eventually(t, func() bool {
		lock.Lock()
		defer lock.Unlock()
		return hits["/down"] == MaxAttempts
	}, 10*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool {
		lock.Lock()
		defer lock.Unlock()
		return hits["/down"] > MaxAttempts
	}, 100*time.Millisecond, 5*time.Millisecond, "no attempt after giving up")
	lock.Lock()
	require.Equal(t, MaxAttempts, hits["/down"], "no attempt after giving up")
	require.Equal(t, 1, hits["/up"], "published twice, delivered once")
	lock.Unlock()
	var down storage.OutboxItem
	for id, it := range ob.items {
		if it.URL == srv.URL+"/down" {
			down = ob.get(id)
		}
	}
	require.Equal(t, MaxAttempts, down.Attempts)
	require.Contains(t, down.LastError, "502")
	require.Contains(t, ob.get("gone").LastError, "no longer configured")
	require.InDelta(t, MaxAttempts-1, counterValue(t, reg, "failed"), 0)
	require.InDelta(t, 1, counterValue(t, reg, "given_up"), 0)
	require.InDelta(t, 1, counterValue(t, reg, "delivered"), 0)
}

func counterValue(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
