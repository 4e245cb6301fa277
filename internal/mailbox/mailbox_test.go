package mailbox

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPushNeverBlocksAndKeepsOrder(t *testing.T) {
	b := New[int]()
	for i := 0; i < 10000; i++ { // far more than any channel buffer, with no reader
		b.Push(i)
	}
	<-b.Notify()
	items := b.Take()
	require.Len(t, items, 10000)
	for i, v := range items {
		require.Equal(t, i, v)
	}
	require.Empty(t, b.Take())
	select {
	case <-b.Notify():
		t.Fatal("notified without a push")
	default:
	}
}
