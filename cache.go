package rotagate

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// snapshot is the edge's immutable view of the active secrets: built whole
// from a feed answer, swapped in whole behind an atomic pointer, never
// changed in place.
type snapshot struct {
	epoch    string
	revision int64
	clients  map[string]*client
}

// client holds one client's active secrets, fast (sha256) ones first.
type client struct {
	id      string
	secrets []secret
	fast    int // secrets[:fast] are sha256
}

type secret struct {
	id      string
	hash    secrethash.Hash
	expires time.Time // zero: no scheduled expiry
}

// usable reports whether the secret may still authenticate at now. Expiry
// is enforced locally, to the second, whatever the feed last said.
func (s *secret) usable(now time.Time) bool {
	return s.expires.IsZero() || now.Before(s.expires)
}

// newSnapshot validates a feed answer and builds a snapshot from it. Any
// fault rejects the whole answer.
func newSnapshot(w *wire.Snapshot) (*snapshot, error) {
	if w.Epoch == "" {
		return nil, errors.New("snapshot has no epoch")
	}
	if w.Revision < 0 {
		return nil, errors.New("snapshot has a negative revision")
	}
	s := &snapshot{epoch: w.Epoch, revision: w.Revision, clients: make(map[string]*client, len(w.Clients))}
	secretIDs := make(map[string]struct{})
	for i := range w.Clients {
		wc := &w.Clients[i]
		if wc.ClientID == "" {
			return nil, fmt.Errorf("snapshot client %d has no client_id", i)
		}
		if _, dup := s.clients[wc.ClientID]; dup {
			return nil, fmt.Errorf("snapshot lists client %q twice", wc.ClientID)
		}
		c := &client{id: wc.ClientID, secrets: make([]secret, 0, len(wc.Secrets))}
		var slow []secret
		for _, ws := range wc.Secrets {
			if ws.ID == "" {
				return nil, fmt.Errorf("snapshot client %q has a secret without id", wc.ClientID)
			}
			if _, dup := secretIDs[ws.ID]; dup {
				return nil, fmt.Errorf("snapshot lists secret %q twice", ws.ID)
			}
			secretIDs[ws.ID] = struct{}{}
			h, err := secrethash.Parse(ws.Hash)
			if err != nil {
				return nil, fmt.Errorf("snapshot secret %q: %v", ws.ID, err)
			}
			if h.Scheme == secrethash.SHA256 {
				h.Encoded = "" // the digest is all a sha256 check needs; 200k secrets spare ~12 MB
			}
			sec := secret{id: ws.ID, hash: h}
			if ws.ExpiresAt != nil {
				sec.expires = *ws.ExpiresAt
			}
			if h.Scheme == secrethash.SHA256 {
				c.secrets = append(c.secrets, sec)
			} else {
				slow = append(slow, sec)
			}
		}
		c.fast = len(c.secrets)
		c.secrets = append(c.secrets, slow...)
		s.clients[wc.ClientID] = c
	}
	return s, nil
}

// verifiedCache remembers secrets that passed a slow (bcrypt, argon2id)
// check. Its key is a SHA-256 over the client id, the presented secret and
// the stored hash, never the plaintext; the value is the secret id. A
// revoked secret's stored hash leaves the snapshot, so its entries are never
// looked up again; the TTL, at most the revocation delay, bounds the rest.
type verifiedCache struct {
	c   *ristretto.Cache[string, string]
	ttl time.Duration

	// A request of the old config may still be verifying when Cleanup
	// closes the cache; ristretto's Set after Close can panic, so the two
	// are kept apart.
	mu     sync.RWMutex
	closed bool
}

func newVerifiedCache(ttl time.Duration) (*verifiedCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, string]{
		NumCounters:        100_000,
		MaxCost:            10_000, // entries: costs are counts
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("verification cache: %v", err)
	}
	return &verifiedCache{c: c, ttl: ttl}, nil
}

func (v *verifiedCache) get(key string) (string, bool) { return v.c.Get(key) }

func (v *verifiedCache) set(key, secretID string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.closed {
		v.c.SetWithTTL(key, secretID, 1, v.ttl)
	}
}

func (v *verifiedCache) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.closed = true
		v.c.Close()
	}
}
