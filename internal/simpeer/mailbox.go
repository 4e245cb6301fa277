package simpeer

import "sync"

// mailbox is an unbounded queue into the event loop. push never blocks, so
// pion callbacks (which may run while the loop is inside a pion call such as
// PeerConnection.Close) can never deadlock against the loop.
type mailbox struct {
	mu     sync.Mutex
	items  []any
	notify chan struct{}
}

func newMailbox() *mailbox { return &mailbox{notify: make(chan struct{}, 1)} }

func (m *mailbox) push(item any) {
	m.mu.Lock()
	m.items = append(m.items, item)
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// take returns everything queued, oldest first.
func (m *mailbox) take() []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	items := m.items
	m.items = nil
	return items
}
