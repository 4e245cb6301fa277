package appservice

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestIdleRoomQueuesAreReaped: each room's event goroutine ends once the
// room has been quiet for a while, and a later event starts a new one; no
// event is lost at the hand-over.
func TestIdleRoomQueuesAreReaped(t *testing.T) {
	s := newTestService(t, &memTxns{done: map[string]bool{}})
	evtType := event.Type{Type: "org.example.test", Class: event.MessageEventType}
	handled := make(chan id.RoomID, 1000)
	s.On(evtType, func(_ context.Context, evt *event.Event) { handled <- evt.RoomID })
	send := func(rooms int) {
		for i := range rooms {
			s.AS.Events <- &event.Event{Type: evtType, RoomID: id.RoomID("!r" + string(rune('a'+i)) + ":localhost"), ID: "$x", Sender: "@a:localhost",
				Content: event.Content{Raw: map[string]any{}}}
		}
		for range rooms {
			select {
			case <-handled:
			case <-time.After(5 * time.Second):
				t.Fatal("an event was not handled")
			}
		}
	}
	queues := func() int {
		s.queuesLock.Lock()
		defer s.queuesLock.Unlock()
		return len(s.queues)
	}
	send(20)
	require.Eventually(t, func() bool { return queues() == 0 }, 5*time.Second, 5*time.Millisecond, "idle room goroutines are never reaped")
	send(20) // the rooms get new goroutines
	require.Eventually(t, func() bool { return queues() == 0 }, 5*time.Second, 5*time.Millisecond)
}
