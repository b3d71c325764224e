package controlplane

import "sync"

// Notifier broadcasts the store's revision to waiting feed requests. Each
// change closes the current channel and replaces it, so any number of
// waiters block on one channel read and none polls the store. Publish is
// monotonic: a revision at or below the known one is ignored, so commits
// that race to publish cannot move it backwards. One Notifier belongs to
// one store and is shared by every handler using that store.
type Notifier struct {
	mu      sync.Mutex
	epoch   string
	rev     int64
	changed chan struct{}
}

// NewNotifier returns a Notifier that knows no revision yet.
func NewNotifier() *Notifier {
	return &Notifier{rev: -1, changed: make(chan struct{})}
}

// Publish announces that the store is at (epoch, rev).
func (n *Notifier) Publish(epoch string, rev int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch == n.epoch && rev <= n.rev {
		return
	}
	n.epoch, n.rev = epoch, rev
	close(n.changed)
	n.changed = make(chan struct{})
}

// Current returns the last published (epoch, rev) and a channel that is
// closed when a later one is published.
func (n *Notifier) Current() (epoch string, rev int64, changed <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch, n.rev, n.changed
}
