package rotagate

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/rotagate/rotagate/internal/secrethash"
)

// minCompares is how many digest comparisons every sha256 check makes at
// least, padding with a dummy digest. A client with one or two secrets and
// an unknown client (the dummy record, two secrets) then cost the same.
const minCompares = 2

// verifier checks a presented secret against a client's stored hashes.
// sha256 hashes cost one digest of the presented secret and a constant-time
// comparison per hash; bcrypt and argon2id checks go through a cache of
// verified pairs, singleflight, and a semaphore that bounds their
// concurrency.
type verifier struct {
	cache  *verifiedCache
	flight singleflight.Group
	slots  chan struct{}
	dummy  *client // the record an unknown client id is checked against
	pad    [sha256.Size]byte

	// sum, match and lookup are the digest, comparison and tombstone
	// primitives; tests wrap them to count the work done.
	sum    func([]byte) *[sha256.Size]byte
	match  func(a, b *[sha256.Size]byte) bool
	lookup func(*shard, *[sha256.Size]byte) (tombstone, bool)
}

func newVerifier(concurrency int, ttl time.Duration) (*verifier, error) {
	cache, err := newVerifiedCache(ttl)
	if err != nil {
		return nil, err
	}
	v := &verifier{
		cache:  cache,
		slots:  make(chan struct{}, concurrency),
		dummy:  &client{digests: make([]digestSecret, minCompares)},
		sum:    secrethash.Sum,
		match:  secrethash.MatchDigest,
		lookup: lookupTombstone,
	}
	_, _ = rand.Read(v.pad[:])
	for i := range v.dummy.digests {
		_, _ = rand.Read(v.dummy.digests[i].digest[:])
	}
	return v, nil
}

// verdict is what a check found: the usable secret that matched, with
// its client's record, or when none did, the client's dead (revoked or
// expired) secret that did.
type verdict struct {
	secretID string
	client   *client // set with secretID
	revoked  string
}

// verify checks a presented secret against the snapshot's record of
// clientID. err is set only for a technical fault (the request gave up
// while waiting for a slow-hash slot). An unknown client id is checked
// against the dummy record, and every check that finds no usable secret
// makes one tombstone lookup, so an unknown client, a wrong secret and a
// dead secret cost the same.
func (v *verifier) verify(ctx context.Context, snap *snapshot, clientID string, presented []byte, now time.Time) (verdict, error) {
	sh := snap.shard(clientID)
	c, known := sh.clients[clientID]
	if !known {
		c = v.dummy
	}
	digest := v.sum(presented)
	matched, expired := -1, -1
	for i := range max(len(c.digests), minCompares) {
		stored := &v.pad
		if i < len(c.digests) {
			stored = &c.digests[i].digest
		}
		if v.match(stored, digest) && i < len(c.digests) {
			if c.digests[i].usable(now) {
				matched = i
			} else {
				expired = i
			}
		}
	}
	if matched >= 0 && known {
		return verdict{secretID: c.digests[matched].id, client: c}, nil
	}
	for i := range c.slow {
		s := &c.slow[i]
		if !s.usable(now) {
			continue
		}
		ok, err := v.verifySlow(ctx, c.id, s, presented)
		if err != nil {
			return verdict{}, err
		}
		if ok {
			return verdict{secretID: s.id, client: c}, nil
		}
	}
	t, buried := v.lookup(sh, digest)
	switch {
	case !known:
	case expired >= 0: // expired here before the control plane said so
		return verdict{revoked: c.digests[expired].id}, nil
	case buried && t.clientID == c.id:
		return verdict{revoked: t.secretID}, nil
	}
	return verdict{}, nil
}

// lookupTombstone finds a dead secret by its digest, in the shard of the
// client id presented (a client's tombstones live in its shard).
func lookupTombstone(sh *shard, digest *[sha256.Size]byte) (tombstone, bool) {
	t, ok := sh.tombstones[*digest]
	return t, ok
}

// verifySlow checks one imported legacy hash, through the cache of
// verified pairs. Concurrent checks of the same pair share one computation;
// distinct ones queue for a slot.
func (v *verifier) verifySlow(ctx context.Context, clientID string, s *slowSecret, presented []byte) (bool, error) {
	key := cacheKey(clientID, presented, s.hash.Encoded)
	if id, hit := v.cache.get(key); hit && id == s.id {
		return true, nil
	}
	// The shared check belongs to no single caller: one that gives up does
	// not fail the others, and each waits on its own context. The wait for
	// a slot is bounded, so a flood cannot pile up checks without end.
	results := v.flight.DoChan(key, func() (any, error) {
		timer := time.NewTimer(slotWait)
		defer timer.Stop()
		select {
		case v.slots <- struct{}{}:
		case <-timer.C:
			return false, errNoSlot
		}
		defer func() { <-v.slots }()
		ok := s.hash.Verify(presented)
		if ok {
			v.cache.set(key, s.id, v.cache.ttl)
		}
		return ok, nil
	})
	select {
	case res := <-results:
		if res.Err != nil {
			return false, res.Err
		}
		return res.Val.(bool), nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// slotWait bounds how long a slow check waits for a free slot.
const slotWait = 10 * time.Second

var errNoSlot = errors.New("no slow-hash slot became free")

// cacheKey digests (client id, presented secret, stored hash), each part
// length-prefixed so no two different triples share a key. The parts are
// gathered in a stack buffer: only the returned key is allocated.
func cacheKey(clientID string, presented []byte, stored string) string {
	var buf [512]byte
	b := binary.LittleEndian.AppendUint64(buf[:0], uint64(len(clientID)))
	b = append(b, clientID...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(presented)))
	b = append(b, presented...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(stored)))
	b = append(b, stored...)
	sum := sha256.Sum256(b)
	clear(buf[:]) // the buffer held the presented secret
	return string(sum[:])
}

func (v *verifier) close() { v.cache.close() }

// verifiedCache remembers secrets that passed a slow check. Its key is a
// SHA-256 over the client id, the presented secret and the stored hash,
// never the plaintext; the value is the secret id. A revoked secret's
// stored hash leaves the snapshot, so its entries are never looked up
// again; the TTL, at most the revocation delay, bounds the rest.
type verifiedCache struct {
	*boundedCache[string]
	ttl time.Duration
}

// verifiedEntries bounds the cache of verified pairs.
const verifiedEntries = 10_000

func newVerifiedCache(ttl time.Duration) (*verifiedCache, error) {
	c, err := newBoundedCache[string]("verification", verifiedEntries)
	if err != nil {
		return nil, err
	}
	return &verifiedCache{boundedCache: c, ttl: ttl}, nil
}
