// Package mailbox is an unbounded queue into an event loop. Push never
// blocks, so callbacks (pion's, which may run while the loop is inside a
// pion call, or a sync goroutine) can never deadlock against the loop or be
// dropped because it is busy.
package mailbox

import "sync"

// Box is a mailbox of T. The zero value is not usable; call New.
type Box[T any] struct {
	mu     sync.Mutex
	items  []T
	notify chan struct{}
}

// New returns an empty mailbox.
func New[T any]() *Box[T] { return &Box[T]{notify: make(chan struct{}, 1)} }

// Push queues an item and wakes the reader.
func (b *Box[T]) Push(item T) {
	b.mu.Lock()
	b.items = append(b.items, item)
	b.mu.Unlock()
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// Notify is readable after a Push; then Take.
func (b *Box[T]) Notify() <-chan struct{} { return b.notify }

// Take returns everything queued, oldest first.
func (b *Box[T]) Take() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := b.items
	b.items = nil
	return items
}
