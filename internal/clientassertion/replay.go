package clientassertion

import (
	"container/heap"
	"hash/maphash"
	"sync"
	"time"
)

// replayCache remembers the jti of every accepted assertion until its exp
// + Leeway, per client, in bounded memory.
//
// When a bound is reached it refuses new assertions rather than forget
// live entries: forgetting lets a captured assertion be replayed, refusing
// only delays the clients that flood it. Entries are added only for
// assertions with a valid signature, so only holders of a registered
// private key can flood; the per-client bound keeps one such client (a
// runaway loop, or a stolen key) from refusing everyone else, and the
// total bound keeps memory fixed even then.
//
// Entries are keyed by 128 bits of maphash over (client id, jti) under
// per-process random seeds: fixed-size entries however long the jti, and
// no collision anyone can aim at.
type replayCache struct {
	mu        sync.Mutex
	seen      map[replayKey]struct{}
	expiries  expiryHeap
	perClient map[uint64]int
	maxClient int
	maxTotal  int
	seeds     [3]maphash.Seed
}

type replayKey [2]uint64

type replayEntry struct {
	expires int64 // unix nanoseconds
	key     replayKey
	client  uint64
}

func newReplayCache(maxClient, maxTotal int) *replayCache {
	return &replayCache{
		seen:      make(map[replayKey]struct{}),
		perClient: make(map[uint64]int),
		maxClient: maxClient,
		maxTotal:  maxTotal,
		seeds:     [3]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed(), maphash.MakeSeed()},
	}
}

// add records jti for clientID until expires, first dropping every entry
// expired at now. It answers reasonNone when the jti was new and is now
// recorded, ReasonReplay when it is held already, ReasonReplayFull when a
// bound keeps it from being recorded.
func (c *replayCache) add(clientID, jti string, expires, now time.Time) Reason {
	client := maphash.String(c.seeds[2], clientID)
	key := replayKey{c.hash(0, clientID, jti), c.hash(1, clientID, jti)}
	nowNano := now.UnixNano()

	c.mu.Lock()
	defer c.mu.Unlock()
	// An entry lives through its expiry instant: Parse still accepts an
	// assertion at exactly exp + Leeway.
	for len(c.expiries) > 0 && c.expiries[0].expires < nowNano {
		e := heap.Pop(&c.expiries).(replayEntry)
		delete(c.seen, e.key)
		if c.perClient[e.client]--; c.perClient[e.client] == 0 {
			delete(c.perClient, e.client)
		}
	}
	if _, ok := c.seen[key]; ok {
		return ReasonReplay
	}
	if c.perClient[client] >= c.maxClient || len(c.seen) >= c.maxTotal {
		return ReasonReplayFull
	}
	c.seen[key] = struct{}{}
	c.perClient[client]++
	heap.Push(&c.expiries, replayEntry{expires: expires.UnixNano(), key: key, client: client})
	return reasonNone
}

func (c *replayCache) hash(seed int, clientID, jti string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seeds[seed])
	h.WriteString(clientID)
	h.WriteByte(0)
	h.WriteString(jti)
	return h.Sum64()
}

// entries is the number of jti values held.
func (c *replayCache) entries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// expiryHeap is a min-heap of entries by expiry.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
