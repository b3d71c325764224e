package rotagate

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

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
	// tombstones maps the digest of every tombstoned secret to whose it
	// was: one lookup per failed check, however many a client has.
	tombstones map[[sha256.Size]byte]tombstone
}

// tombstone is a revoked or expired generated secret.
type tombstone struct{ clientID, secretID string }

// client holds one client's active secrets by the kind of check they
// need: generated secrets are sha256 digests, compared in constant time
// for microseconds; imported legacy hashes (bcrypt, argon2id, PBKDF2) cost
// real CPU and go through the verifier's cache and slots.
type client struct {
	id      string
	digests []digestSecret
	slow    []slowSecret
}

// secretMeta is what every secret carries besides its hash.
type secretMeta struct {
	id      string
	expires time.Time // zero: no scheduled expiry
}

// usable reports whether the secret may still authenticate at now. Expiry
// is enforced locally, to the second, whatever the feed last said.
func (s *secretMeta) usable(now time.Time) bool {
	return s.expires.IsZero() || now.Before(s.expires)
}

// digestSecret is a generated secret: the sha256 digest is all a check
// needs (200k secrets spare ~12 MB by not keeping the encoded form).
type digestSecret struct {
	secretMeta
	digest [sha256.Size]byte
}

// slowSecret is an imported legacy secret, checked by its scheme.
type slowSecret struct {
	secretMeta
	hash secrethash.Hash
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
		c := &client{id: wc.ClientID}
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
			meta := secretMeta{id: ws.ID}
			if ws.ExpiresAt != nil {
				meta.expires = *ws.ExpiresAt
			}
			if h.Scheme == secrethash.SHA256 {
				c.digests = append(c.digests, digestSecret{secretMeta: meta, digest: h.Digest})
			} else {
				c.slow = append(c.slow, slowSecret{secretMeta: meta, hash: h})
			}
		}
		for _, wt := range wc.Tombstones {
			h, err := secrethash.Parse(wt.Hash)
			if wt.ID == "" || err != nil || h.Scheme != secrethash.SHA256 {
				return nil, fmt.Errorf("snapshot client %q has a malformed tombstone", wc.ClientID)
			}
			if s.tombstones == nil {
				s.tombstones = make(map[[sha256.Size]byte]tombstone)
			}
			s.tombstones[h.Digest] = tombstone{clientID: c.id, secretID: wt.ID}
		}
		s.clients[wc.ClientID] = c
	}
	return s, nil
}
