package store

import (
	"sync"
	"time"
)

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

	// A store that other processes also write (PostgreSQL) has a watcher
	// that vouches for the revision every poll interval; while it cannot,
	// the revision here may be stale and must not be confirmed to edges.
	watchedEvery time.Duration
	vouched      time.Time
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

// Watch says that a watcher will call Vouch about every interval.
func (n *Notifier) Watch(interval time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watchedEvery = interval
	n.vouched = time.Now()
}

// Vouch publishes (epoch, rev) as just read from the store.
func (n *Notifier) Vouch(epoch string, rev int64) {
	n.Publish(epoch, rev)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.vouched = time.Now()
}

// Trusted reports whether the published revision can be confirmed as
// current: always for an unwatched store (this process makes every
// change), else while the watcher vouched within three of its intervals.
func (n *Notifier) Trusted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.watchedEvery == 0 || time.Since(n.vouched) <= 3*n.watchedEvery
}

// Current returns the last published (epoch, rev) and a channel that is
// closed when a later one is published.
func (n *Notifier) Current() (epoch string, rev int64, changed <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch, n.rev, n.changed
}
