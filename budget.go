package rotagate

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// failureBudget throttles callers that keep failing: failed attempts are
// counted per (client id, caller IP), and per caller IP alone for client
// ids the snapshot does not know, so that spraying made-up ids from one
// address is throttled too. A caller over budget is answered 429 before
// any hash is computed. A success spends nothing.
//
// A sha256 check is over before a parallel request could look at the
// bucket, so it is counted when it failed. A slow check (bcrypt, argon2id,
// PBKDF2) is not: the request reserves its failure before the hash and
// gives it back when the secret verified, so that parallel wrong tries
// never have more slow hashes in flight or done than the budget allows.
//
// Each bucket is a GCRA (generic cell rate algorithm) token bucket held
// in one atomic word: tat, the "theoretical arrival time" of the next
// failure. Every failure advances tat by per/n from max(tat, now); a
// caller is over budget while tat runs more than per - per/n ahead of now,
// which allows a burst of n failures and then one per per/n.
//
// Buckets live in a bounded cache (budgetBuckets entries): an attacker
// spraying addresses evicts rarely used buckets, never grows the memory.
// An evicted bucket is a full one, so eviction only ever forgives.
type failureBudget struct {
	interval time.Duration // per / n: what one failure spends
	slack    time.Duration // per - interval: how far tat may run ahead
	per      time.Duration
	buckets  *boundedCache[*failureBucket]
	seed     maphash.Seed // of the bucket keys
	// bounds holds, for each slot of keys (key % budgetSlots), a bound
	// on the tat of every bucket whose key falls in it, raised before a
	// bucket's tat is. A caller whose slot's bound is within budget at
	// now is within budget without a lookup in the cache: one that never
	// failed, one whose few failures do not put it over, one whose
	// failure reserved before a slow hash was given back. Under a spray
	// of failures the slots run ahead and every lookup goes to the cache,
	// as it would without them.
	bounds [budgetSlots]atomic.Int64
	// creating serialises the creation of a bucket with its lookup, so that
	// parallel first failures from one caller share one bucket.
	creating [64]sync.Mutex
	// holds bounds the throttled answers being held at once; past it they
	// are answered at once (and the connection still closed).
	holds chan struct{}
	// hold is how long a throttled answer is held before it is sent.
	hold time.Duration
}

// failureBucket holds tat in Unix nanoseconds.
type failureBucket struct{ tat atomic.Int64 }

const (
	// budgetBuckets bounds the buckets kept at once (see docs/edge.md for
	// the memory this takes).
	budgetBuckets = 100_000
	// budgetSlots is the number of failureBudget.bounds (64 KiB).
	budgetSlots = 1 << 13
	// throttleHold is how long a throttled answer is held. Every refusal
	// costs Caddy's HTTP stack the same whatever is answered, so a
	// keep-alive attacker is slowed only by waiting for its answers and by
	// reconnecting: held for a second and then closed, each connection
	// gets one attempt a second.
	throttleHold = time.Second
	// maxHeld bounds the answers held at once.
	maxHeld = 4096
)

func newFailureBudget(failures int, per time.Duration) (*failureBudget, error) {
	buckets, err := newBoundedCache[*failureBucket]("failure budget", budgetBuckets)
	if err != nil {
		return nil, err
	}
	interval := per / time.Duration(failures)
	return &failureBudget{
		interval: interval,
		slack:    per - interval,
		per:      per,
		buckets:  buckets,
		seed:     maphash.MakeSeed(),
		holds:    make(chan struct{}, maxHeld),
		hold:     throttleHold,
	}, nil
}

// failureKey names the bucket of a caller: the client id and the caller IP
// for a known client, the IP alone for an unknown one. Client ids are
// printable ASCII, so NUL cannot occur in one. The name is a hash with a
// seed of the budget's own, so no caller can aim at another's bucket, and
// computing it allocates nothing.
func (b *failureBudget) failureKey(clientID, ip string, known bool) uint64 {
	var h maphash.Hash
	h.SetSeed(b.seed)
	if known {
		h.WriteString(clientID)
	}
	h.WriteByte(0)
	h.WriteString(ip)
	return h.Sum64()
}

// over reports whether the bucket is out of budget at now, and if so how
// long until it may try again.
func (b *failureBudget) over(key uint64, now time.Time) (time.Duration, bool) {
	if !b.mayBeOver(key, now) {
		return 0, false
	}
	bucket, ok := b.buckets.get(key)
	if !ok {
		return 0, false
	}
	return b.ahead(bucket.tat.Load(), now)
}

// mayBeOver reports whether key's slot bound lets its bucket be out of
// budget at now; when it does not, no bucket of the slot is.
func (b *failureBudget) mayBeOver(key uint64, now time.Time) bool {
	_, over := b.ahead(b.bounds[key%budgetSlots].Load(), now)
	return over
}

// raise makes key's slot bound at least tat.
func (b *failureBudget) raise(key uint64, tat int64) {
	bound := &b.bounds[key%budgetSlots]
	for {
		old := bound.Load()
		if old >= tat || bound.CompareAndSwap(old, tat) {
			return
		}
	}
}

// ahead is how far a bucket at tat is over budget at now, and whether it is.
func (b *failureBudget) ahead(tat int64, now time.Time) (time.Duration, bool) {
	ahead := time.Duration(tat-now.UnixNano()) - b.slack
	return ahead, ahead > 0
}

// spend records a failure at now.
func (b *failureBudget) spend(key uint64, now time.Time) {
	bucket, fresh := b.bucket(key)
	n := now.UnixNano()
	for !b.advance(key, bucket, bucket.tat.Load(), n) {
	}
	if !fresh {
		b.keep(key, bucket)
	}
}

// advance moves bucket's tat from old on by one failure at n (UnixNano),
// raising key's slot bound first; false when another request moved it
// since old was read.
func (b *failureBudget) advance(key uint64, bucket *failureBucket, old, n int64) bool {
	next := max(old, n) + int64(b.interval)
	b.raise(key, next)
	return bucket.tat.CompareAndSwap(old, next)
}

// reserve spends a failure at now ahead of a slow check, unless the bucket
// is out of budget: then it reports how long until the caller may try
// again. A reserved failure is given back with refund.
func (b *failureBudget) reserve(key uint64, now time.Time) (*failureBucket, time.Duration, bool) {
	bucket, fresh := b.bucket(key)
	n := now.UnixNano()
	for {
		old := bucket.tat.Load()
		if wait, over := b.ahead(old, now); over {
			return nil, wait, false
		}
		if b.advance(key, bucket, old, n) {
			break
		}
	}
	if !fresh {
		b.keep(key, bucket)
	}
	return bucket, 0, true
}

// refund gives back a failure reserved in bucket. The slot's bound stays
// where the reservation put it, one failure ahead: within any budget of
// two failures or more, so the caller stays off the cache lookup.
func (b *failureBudget) refund(bucket *failureBucket) { bucket.tat.Add(-int64(b.interval)) }

// bucket finds the bucket of key, or makes a full one (fresh) that
// expires after per. Lookup and creation are one step for each key:
// parallel first failures of one caller find the same bucket (unless the
// cache drops it, which only forgives).
func (b *failureBudget) bucket(key uint64) (bucket *failureBucket, fresh bool) {
	if bucket, ok := b.buckets.get(key); ok {
		return bucket, false
	}
	mu := &b.creating[key%uint64(len(b.creating))]
	mu.Lock()
	defer mu.Unlock()
	if bucket, ok := b.buckets.get(key); ok {
		return bucket, false
	}
	bucket = new(failureBucket)
	// A new entry is applied in the background: wait for it, so that the
	// next lookup finds it.
	b.buckets.set(key, bucket, b.per)
	b.buckets.wait()
	return bucket, true
}

// keep refreshes the expiry of a bucket that was spent from: an idle
// bucket is full again after per, so it goes then. Setting an existing
// entry refreshes its expiry at once.
func (b *failureBudget) keep(key uint64, bucket *failureBucket) {
	b.buckets.set(key, bucket, b.per)
}

// holdAnswer delays a throttled answer by b.hold, unless too many are
// held already or the request ends first.
func (b *failureBudget) holdAnswer(ctx context.Context) {
	if b.hold <= 0 {
		return
	}
	select {
	case b.holds <- struct{}{}:
	default:
		return
	}
	defer func() { <-b.holds }()
	t := time.NewTimer(b.hold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (b *failureBudget) close() { b.buckets.close() }

// charge is what one request draws on the failure budget of its caller:
// a failure is counted once, however the request fails, and a failure
// reserved before a slow hash is given back when the secret verified.
type charge struct {
	budget *failureBudget // nil: no budget
	key    uint64
	now    time.Time
	held   *failureBucket // the bucket a failure is reserved in
	wait   time.Duration  // when a reservation was refused: until the next try
}

// reserve holds a failure before a slow hash. It reports false when the
// caller is out of budget (wait says for how long); a request reserves at
// most once.
func (c *charge) reserve() bool {
	if c.budget == nil || c.held != nil {
		return true
	}
	bucket, wait, ok := c.budget.reserve(c.key, c.now)
	c.held, c.wait = bucket, wait
	return ok
}

// fail counts the request as a failure, unless a reserved one already
// does.
func (c *charge) fail() {
	if c.budget != nil && c.held == nil {
		c.budget.spend(c.key, c.now)
	}
}

// forgive gives back a reserved failure: the request did not fail, or
// failed in a way that spends no budget.
func (c *charge) forgive() {
	if c.held != nil {
		c.budget.refund(c.held)
		c.held = nil
	}
}
