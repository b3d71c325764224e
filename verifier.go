package rotagate

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"sync/atomic"
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
// comparison per hash; bcrypt, argon2id and PBKDF2 checks first look for
// the secret that last passed the check (verifiedSlot), then go through
// singleflight and a semaphore that bounds their concurrency.
type verifier struct {
	flight singleflight.Group
	slots  chan struct{}
	dummy  *client // the record an unknown client id is checked against
	pad    [sha256.Size]byte
	// ttl bounds how long a verified secret is taken without a new check:
	// at most the revocation delay.
	ttl time.Duration

	// work counts what checks cost, when set (tests set it; nil in
	// service).
	work *verifyWork
}

// verifyWork counts the work of checks by kind.
type verifyWork [workKinds]atomic.Int64

// The kinds of work a check does.
const (
	workDigest   = iota // SHA-256 digests of a presented secret
	workCompare         // constant-time digest comparisons
	workLookup          // tombstone lookups
	workSlowHash        // slow hashes computed (bcrypt, argon2id, PBKDF2)
	workKinds
)

// count adds one to a kind of work, when work is counted.
func (w *verifyWork) count(kind int) {
	if w != nil {
		w[kind].Add(1)
	}
}

func newVerifier(concurrency int, ttl time.Duration) *verifier {
	v := &verifier{
		slots: make(chan struct{}, concurrency),
		dummy: &client{digests: make([]digestSecret, minCompares)},
		ttl:   ttl,
	}
	_, _ = rand.Read(v.pad[:])
	for i := range v.dummy.digests {
		_, _ = rand.Read(v.dummy.digests[i].digest[:])
	}
	return v
}

// verdict is what a check found: the usable secret that matched, or when
// none did, the client's dead (revoked or expired) secret that did; with
// either, the client's record.
type verdict struct {
	secretID string
	revoked  string
	client   *client
}

// errOverBudget: a slow check would have gone past the caller's failure
// budget; the request's charge says how long to wait.
var errOverBudget = errors.New("over the failure budget")

// verify checks a presented secret against the snapshot's record of
// clientID. err is set when the check could not be made: a technical fault
// (the request gave up while waiting for a slow-hash slot), or
// errOverBudget when a slow hash would pass the failure budget that ch
// draws on. An unknown client id is checked against the dummy record, and
// every check that finds no usable secret makes one tombstone lookup, so
// an unknown client, a wrong secret and a dead secret cost the same.
// Nothing it is given outlives the call.
func (v *verifier) verify(ctx context.Context, snap *snapshot, clientID string, presented []byte, now time.Time, ch *charge) (verdict, error) {
	sh := snap.shard(clientID)
	c, known := sh.clients[clientID]
	if !known {
		c = v.dummy
	}
	// A client with imported legacy hashes only has no stored digest: a
	// cached pair of it is looked up before the digest is computed, so a
	// hit costs one SHA-256 (the name), like a sha256 check.
	var name pairName
	slowOnly := len(c.digests) == 0 && len(c.slow) > 0
	if slowOnly {
		name = namePresented(presented)
		if id := v.cachedSlow(c, &name, now); id != "" {
			return verdict{secretID: id, client: c}, nil
		}
	}
	digest := secrethash.Sum(presented)
	v.work.count(workDigest)
	matched, expired := -1, -1
	for i := range max(len(c.digests), minCompares) {
		stored := &v.pad
		if i < len(c.digests) {
			stored = &c.digests[i].digest
		}
		v.work.count(workCompare)
		if secrethash.MatchDigest(stored, digest) && i < len(c.digests) {
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
	if len(c.slow) > 0 {
		if !slowOnly {
			name = namePresented(presented)
			if id := v.cachedSlow(c, &name, now); id != "" {
				return verdict{secretID: id, client: c}, nil
			}
		}
		id, err := v.verifySlow(ctx, c, name, presented, now, ch)
		if err != nil {
			return verdict{}, err
		}
		if id != "" {
			return verdict{secretID: id, client: c}, nil
		}
	}
	v.work.count(workLookup)
	t, buried := sh.tombstones[*digest]
	switch {
	case !known:
	case expired >= 0: // expired here before the control plane said so
		return verdict{revoked: c.digests[expired].id, client: c}, nil
	case buried && t.clientID == c.id:
		return verdict{revoked: t.secretID, client: c}, nil
	}
	return verdict{}, nil
}

// cachedSlow returns the id of the client's usable legacy secret that
// the presented secret (by its name) passed the check of within the ttl,
// or "": an atomic load and a comparison per hash.
func (v *verifier) cachedSlow(c *client, name *pairName, now time.Time) string {
	for i := range c.slow {
		if s := &c.slow[i]; s.usable(now) && s.verified.holds(name, now, v.ttl) {
			return s.id
		}
	}
	return ""
}

// verifySlow checks a presented secret (named name) against a client's
// imported legacy hashes, and returns the id of the one it matched. Each
// usable hash is checked, the first after reserving a failure from the
// caller's budget. Concurrent checks of the same pair share one
// computation; distinct ones queue for a slot.
func (v *verifier) verifySlow(ctx context.Context, c *client, name pairName, presented []byte, now time.Time, ch *charge) (string, error) {
	for i := range c.slow {
		s := &c.slow[i]
		if !s.usable(now) {
			continue
		}
		if !ch.reserve() {
			return "", errOverBudget
		}
		ok, err := v.checkSlow(ctx, name, s, presented, now)
		if err != nil {
			return "", err
		}
		if ok {
			return s.id, nil
		}
	}
	return "", nil
}

// checkSlow computes one slow hash check, shared with concurrent checks of
// the same pair. The shared check belongs to no single caller: one that
// gives up does not fail the others, and each waits on its own context.
// The wait for a slot is bounded, so a flood cannot pile up checks without
// end.
func (v *verifier) checkSlow(ctx context.Context, name pairName, s *slowSecret, presented []byte, now time.Time) (bool, error) {
	secret := bytes.Clone(presented) // the check may outlive the request
	results := v.flight.DoChan(string(name[:])+s.id, func() (any, error) {
		defer clear(secret)
		timer := time.NewTimer(slotWait)
		defer timer.Stop()
		select {
		case v.slots <- struct{}{}:
		case <-timer.C:
			return false, errNoSlot
		}
		defer func() { <-v.slots }()
		v.work.count(workSlowHash)
		ok := s.hash.Verify(secret)
		if ok && s.verified != nil {
			s.verified.Store(&verifiedPair{name: name, at: now.UnixNano()})
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

// verifiedKeySize is the length of the key of presented secrets' names.
const verifiedKeySize = 16

// nameInline is the longest presented secret named from its bytes (the
// longest bcrypt tells apart); a longer one is named from its digest.
// With the key and a domain byte, a secret of up to 38 bytes is named in
// one SHA-256 block.
const nameInline = secrethash.MaxBcryptSecret

// nameKey keys the names of presented secrets. It is the process's, not a
// handler's: verifiers of several sites share the snapshot's records, and
// so the names kept in them.
var nameKey = func() (k [verifiedKeySize]byte) {
	_, _ = rand.Read(k[:])
	return k
}()

// pairName names a presented secret in a verifiedSlot: a SHA-256 over
// nameKey and the secret, so that the snapshot holds nothing computed
// without the key (whoever could read it could not test guesses against
// it with a plain SHA-256).
type pairName [sha256.Size]byte

// namePresented computes the name of a presented secret: SHA-256 of
// nameKey, 0 and the secret when it has at most nameInline bytes; of
// nameKey, 1 and the secret's SHA-256 otherwise (the domain byte keeps a
// short secret from being named like a long one whose digest it is). The
// buffer is cleared after.
func namePresented(secret []byte) pairName {
	var buf [verifiedKeySize + 1 + nameInline]byte
	in := append(buf[:0], nameKey[:]...)
	if len(secret) <= nameInline {
		in = append(append(in, 0), secret...)
	} else {
		digest := sha256.Sum256(secret)
		in = append(append(in, 1), digest[:]...)
		clear(digest[:])
	}
	name := pairName(sha256.Sum256(in))
	clear(buf[:])
	return name
}

// verifiedSlot remembers, for one legacy secret of the snapshot, the
// name of the presented secret that last passed its check and when: a
// cache of one entry that lives in the record, so a lookup costs an
// atomic load and a comparison, and a secret revoked or re-hashed leaves
// the snapshot with its entry. The ttl, at most the revocation delay,
// bounds the rest.
type verifiedSlot struct{ atomic.Pointer[verifiedPair] }

// verifiedPair is a presented secret that passed a slow check.
type verifiedPair struct {
	name pairName
	at   int64 // unix nanoseconds
}

// holds reports whether name passed the check less than ttl before now
// (and not after it: a clock stepped back does not stretch the ttl).
func (s *verifiedSlot) holds(name *pairName, now time.Time, ttl time.Duration) bool {
	if s == nil { // a record built without a slot remembers nothing
		return false
	}
	e := s.Load()
	if e == nil {
		return false
	}
	age := now.UnixNano() - e.at
	return age >= 0 && age < int64(ttl) && subtle.ConstantTimeCompare(e.name[:], name[:]) == 1
}
