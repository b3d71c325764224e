package rotagate

import (
	"sync"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// revokedUses counts, per dead (revoked or expired) secret presented at
// the edge, how often since the last flush, when last and from where. It
// holds at most one entry per tombstone in the snapshot, so an attacker
// cannot grow it.
type revokedUses struct {
	mu      sync.Mutex
	pending map[string]wire.RevokedUse // by secret id
}

func (r *revokedUses) record(clientID, secretID, from string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = make(map[string]wire.RevokedUse)
	}
	u := r.pending[secretID]
	u.ClientID, u.SecretID, u.Count = clientID, secretID, u.Count+1
	if at.After(u.LastAt) {
		u.LastAt, u.From = at, from
	}
	r.pending[secretID] = u
}

// take removes and returns everything pending, times in UTC.
func (r *revokedUses) take() []wire.RevokedUse {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	out := make([]wire.RevokedUse, 0, len(r.pending))
	for _, u := range r.pending {
		u.LastAt = u.LastAt.UTC()
		out = append(out, u)
	}
	clear(r.pending)
	return out
}

// putBack returns uses that could not be sent, adding their counts to
// what was recorded since.
func (r *revokedUses) putBack(uses []wire.RevokedUse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = make(map[string]wire.RevokedUse)
	}
	for _, u := range uses {
		cur, ok := r.pending[u.SecretID]
		if ok {
			u.Count += cur.Count
			if cur.LastAt.After(u.LastAt) {
				u.LastAt, u.From = cur.LastAt, cur.From
			}
		}
		r.pending[u.SecretID] = u
	}
}
