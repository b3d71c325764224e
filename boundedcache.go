package rotagate

import (
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// boundedCache is a ristretto cache of at most a fixed number of entries
// (each costs 1), keyed by a 64-bit hash the owner computes, safe to use while its owner is being cleaned up: a
// request of the old config may still be running when Cleanup closes the
// cache, and ristretto's Set or Wait after Close can panic or block, so
// the two are kept apart. Sets are asynchronous and may be dropped
// (ristretto's admission policy): the cache is never a source of truth.
// Keys are integers because ristretto hashes other keys through a function
// value, which makes the compiler move every key to the heap: a lookup
// then costs an allocation.
type boundedCache[V any] struct {
	c *ristretto.Cache[uint64, V]

	mu     sync.RWMutex
	closed bool
}

func newBoundedCache[V any](name string, entries int64) (*boundedCache[V], error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, V]{
		NumCounters:        entries * 10, // ristretto's advice: ten counters per entry
		MaxCost:            entries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("%s cache: %v", name, err)
	}
	return &boundedCache[V]{c: c}, nil
}

func (b *boundedCache[V]) get(key uint64) (V, bool) { return b.c.Get(key) }

// set adds or replaces an entry that expires after ttl. An entry that
// exists is replaced at once; a new one is applied in the background.
func (b *boundedCache[V]) set(key uint64, v V, ttl time.Duration) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.closed {
		b.c.SetWithTTL(key, v, 1, ttl)
	}
}

// wait blocks until the sets made so far are applied (or dropped).
func (b *boundedCache[V]) wait() {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.closed {
		b.c.Wait()
	}
}

func (b *boundedCache[V]) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.c.Close()
	}
}
