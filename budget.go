package rotagate

import (
	"context"
	"sync/atomic"
	"time"
)

// failureBudget throttles callers that keep failing: failed attempts are
// counted per (client id, caller IP), and per caller IP alone for client
// ids the snapshot does not know, so that spraying made-up ids from one
// address is throttled too. A caller over budget is answered 429 before
// any hash is computed. A success spends nothing.
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
	// holds bounds the throttled answers being held at once; past it they
	// are answered at once (and the connection still closed).
	holds chan struct{}
	// hold is how long a throttled answer is held before it is sent.
	hold time.Duration
}

// failureBucket holds tat in Unix nanoseconds.
type failureBucket struct{ tat atomic.Int64 }

const (
	// budgetBuckets bounds the buckets kept at once (see the README for
	// the memory this takes).
	budgetBuckets = 100_000
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
		holds:    make(chan struct{}, maxHeld),
		hold:     throttleHold,
	}, nil
}

// failureKey names the bucket of a caller: the client id and the caller IP
// for a known client, the IP alone for an unknown one. Client ids are
// printable ASCII, so NUL cannot occur in one.
func failureKey(clientID, ip string, known bool) string {
	if !known {
		return "\x00" + ip
	}
	return clientID + "\x00" + ip
}

// over reports whether the bucket is out of budget at now, and if so how
// long until it may try again.
func (b *failureBudget) over(key string, now time.Time) (time.Duration, bool) {
	bucket, ok := b.buckets.get(key)
	if !ok {
		return 0, false
	}
	ahead := time.Duration(bucket.tat.Load()-now.UnixNano()) - b.slack
	return ahead, ahead > 0
}

// spend records a failure at now.
func (b *failureBudget) spend(key string, now time.Time) {
	bucket, ok := b.buckets.get(key)
	if !ok {
		bucket = new(failureBucket)
	}
	n := now.UnixNano()
	for {
		old := bucket.tat.Load()
		if bucket.tat.CompareAndSwap(old, max(old, n)+int64(b.interval)) {
			break
		}
	}
	// An idle bucket is full again after per: let it go then. Setting an
	// existing entry refreshes its expiry at once; a new one is applied in
	// the background, so wait for it: the next failure must find it.
	b.buckets.set(key, bucket, b.per)
	if !ok {
		b.buckets.wait()
	}
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
