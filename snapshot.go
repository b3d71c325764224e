package rotagate

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// snapshotShards is how many shards a snapshot is split into. A change
// copies the shards it touches (copy-on-write) and the array of shard
// pointers, so at a million clients one change copies about a thousand
// map entries and 8 KiB of pointers, not the world.
const snapshotShards = 1024

// shardSeed spreads client ids over the shards. It is fixed for the
// process: snapshots read from disk are rebuilt, never reused across
// processes.
var shardSeed = maphash.MakeSeed()

// snapshot is the edge's immutable view of the active secrets, swapped in
// whole behind an atomic pointer and never changed in place. It is split
// into shards by a hash of the client id; a client's tombstones live in
// its shard, so one change touches one shard per client, and a request
// (which loads the pointer once) always sees one consistent revision.
type snapshot struct {
	epoch    string
	revision int64
	clients  int // how many, for the log
	shards   *[snapshotShards]*shard
}

// shard holds the clients whose id hashes to it, and their tombstones.
// Shards are shared between snapshots until a change copies them.
type shard struct {
	clients map[string]*client
	// tombstones maps the digest of every tombstoned secret of the
	// shard's clients to whose it was: one lookup per failed check,
	// however many a client has.
	tombstones map[[sha256.Size]byte]tombstone
}

// emptyShard is every shard of a snapshot that has no client there.
var emptyShard = &shard{}

// tombstone is a revoked or expired generated secret.
type tombstone struct{ clientID, secretID string }

// client holds one client's active secrets by the kind of check they
// need: generated secrets are sha256 digests, compared in constant time
// for microseconds; imported legacy hashes (bcrypt, argon2id, PBKDF2) cost
// real CPU and go through the verifier's cache and slots. A client is
// immutable once built: snapshots share it.
type client struct {
	id      string
	digests []digestSecret
	slow    []slowSecret
	buried  []buriedSecret // its tombstones, as the feed listed them
}

// secretMeta is what every secret carries besides its hash.
type secretMeta struct {
	id      string
	expires int64 // unix nanoseconds; 0: no scheduled expiry
}

// usable reports whether the secret may still authenticate at now. Expiry
// is enforced locally, to the nanosecond, whatever the feed last said.
func (s *secretMeta) usable(now time.Time) bool {
	return s.expires == 0 || now.UnixNano() < s.expires
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

// buriedSecret is one of a client's tombstones.
type buriedSecret struct {
	id     string
	digest [sha256.Size]byte
}

// shardIndex is the shard of a client id.
func shardIndex(id string) int {
	return int(maphash.String(shardSeed, id) % snapshotShards)
}

// shard returns the shard that holds clientID, whether or not it exists:
// a known and an unknown id cost the same hash and lookups.
func (s *snapshot) shard(clientID string) *shard { return s.shards[shardIndex(clientID)] }

// client returns the record of clientID, or nil.
func (s *snapshot) client(clientID string) *client { return s.shard(clientID).clients[clientID] }

// each calls fn for every client, shard by shard.
func (s *snapshot) each(fn func(*client)) {
	for _, sh := range s.shards {
		for _, c := range sh.clients {
			fn(c)
		}
	}
}

// newSnapshot validates a feed answer and builds a snapshot from it. Any
// fault rejects the whole answer.
func newSnapshot(w *wire.Snapshot) (*snapshot, error) {
	b := newSnapshotBuilder(nil)
	for i := range w.Clients {
		if err := b.add(&w.Clients[i]); err != nil {
			return nil, err
		}
	}
	return b.finish(w.Epoch, w.Revision)
}

// snapshotBuilder builds a full snapshot one client at a time, as the
// streaming decoder reads them, straight into its shards. A client equal
// to its record in prev (the snapshot held) is taken from prev, so a full
// answer that changes little costs little more memory than the snapshot
// held: the decoded copy becomes garbage at once.
type snapshotBuilder struct {
	prev   *snapshot
	shards [snapshotShards]*shard
	n      int
	// secretIDs are hashes of every secret id seen, checked for
	// duplicates at the end: 8 bytes a secret, not a map of strings.
	secretIDs []uint64
}

func newSnapshotBuilder(prev *snapshot) *snapshotBuilder {
	return &snapshotBuilder{prev: prev}
}

// add validates one client of a full snapshot and adds it. A client equal
// to its record in prev is that record: it was validated when it came,
// and nothing is built for it.
func (b *snapshotBuilder) add(wc *wire.Client) error {
	var c *client
	if b.prev != nil {
		if old := b.prev.client(wc.ClientID); old != nil && old.sameAs(wc) {
			c = old
		}
	}
	if c == nil {
		var err error
		if c, err = newClient(wc, b.n); err != nil {
			return err
		}
	}
	i := shardIndex(c.id)
	sh := b.shards[i]
	if sh == nil {
		sh = &shard{clients: make(map[string]*client)}
		b.shards[i] = sh
	}
	if _, dup := sh.clients[c.id]; dup {
		return fmt.Errorf("snapshot lists client %q twice", c.id)
	}
	for j := range c.digests {
		b.secretIDs = append(b.secretIDs, maphash.String(shardSeed, c.digests[j].id))
	}
	for j := range c.slow {
		b.secretIDs = append(b.secretIDs, maphash.String(shardSeed, c.slow[j].id))
	}
	sh.put(c)
	b.n++
	return nil
}

// finish checks what can only be checked once every client is in and
// returns the snapshot.
func (b *snapshotBuilder) finish(epoch string, revision int64) (*snapshot, error) {
	if epoch == "" {
		return nil, errors.New("snapshot has no epoch")
	}
	if revision < 0 {
		return nil, errors.New("snapshot has a negative revision")
	}
	if err := b.checkSecretIDs(); err != nil {
		return nil, err
	}
	s := &snapshot{epoch: epoch, revision: revision, clients: b.n, shards: new([snapshotShards]*shard)}
	for i, sh := range b.shards {
		if sh == nil {
			sh = emptyShard
		}
		s.shards[i] = sh
	}
	b.prev = nil // the snapshot must not keep the one before alive
	return s, nil
}

// checkSecretIDs rejects a snapshot that lists a secret id twice. Equal
// hashes are rare; only then are the ids themselves compared.
func (b *snapshotBuilder) checkSecretIDs() error {
	slices.Sort(b.secretIDs)
	var clash map[uint64]bool
	for i := 1; i < len(b.secretIDs); i++ {
		if b.secretIDs[i] == b.secretIDs[i-1] {
			if clash == nil {
				clash = make(map[uint64]bool)
			}
			clash[b.secretIDs[i]] = true
		}
	}
	b.secretIDs = nil
	if clash == nil {
		return nil
	}
	seen := make(map[string]bool)
	var err error
	check := func(id string) {
		if err == nil && clash[maphash.String(shardSeed, id)] {
			if seen[id] {
				err = fmt.Errorf("snapshot lists secret %q twice", id)
			}
			seen[id] = true
		}
	}
	for _, sh := range b.shards {
		if sh == nil {
			continue
		}
		for _, c := range sh.clients {
			for j := range c.digests {
				check(c.digests[j].id)
			}
			for j := range c.slow {
				check(c.slow[j].id)
			}
		}
	}
	return err
}

// put adds c to a shard being built (or copied), with its tombstones.
func (sh *shard) put(c *client) {
	sh.clients[c.id] = c
	for _, t := range c.buried {
		if sh.tombstones == nil {
			sh.tombstones = make(map[[sha256.Size]byte]tombstone)
		}
		sh.tombstones[t.digest] = tombstone{clientID: c.id, secretID: t.id}
	}
}

// remove takes c's record and tombstones out of a copied shard.
func (sh *shard) remove(c *client) {
	delete(sh.clients, c.id)
	for _, t := range c.buried {
		if cur, ok := sh.tombstones[t.digest]; ok && cur.clientID == c.id {
			delete(sh.tombstones, t.digest)
		}
	}
}

// clone copies a shard for a change.
func (sh *shard) clone() *shard {
	out := &shard{clients: make(map[string]*client, len(sh.clients)+1)}
	for id, c := range sh.clients {
		out.clients[id] = c
	}
	if len(sh.tombstones) > 0 {
		out.tombstones = make(map[[sha256.Size]byte]tombstone, len(sh.tombstones))
		for d, t := range sh.tombstones {
			out.tombstones[d] = t
		}
	}
	return out
}

// newClient validates one client of a feed answer (the i-th) and builds
// its record. Secret ids are checked for duplicates by the caller, across
// every client of the answer.
func newClient(wc *wire.Client, i int) (*client, error) {
	if wc.ClientID == "" {
		return nil, fmt.Errorf("snapshot client %d has no client_id", i)
	}
	c := &client{id: wc.ClientID}
	for _, ws := range wc.Secrets {
		if ws.ID == "" {
			return nil, fmt.Errorf("snapshot client %q has a secret without id", wc.ClientID)
		}
		h, err := secrethash.Parse(ws.Hash)
		if err != nil {
			return nil, fmt.Errorf("snapshot secret %q: %v", ws.ID, err)
		}
		meta := secretMeta{id: ws.ID}
		if ws.ExpiresAt != nil {
			meta.expires = ws.ExpiresAt.UnixNano()
			if meta.expires == 0 { // the epoch itself: long past, still an expiry
				meta.expires = -1
			}
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
		c.buried = append(c.buried, buriedSecret{id: wt.ID, digest: h.Digest})
	}
	return c, nil
}

// sameAs reports whether the record holds exactly what wc lists, in the
// same order, without building anything: a full answer mostly repeats the
// snapshot held, and its clients then cost no memory beyond the decode.
// Anything it cannot tell (a hash spelled another way) is "no": the
// client is then built and validated afresh.
func (c *client) sameAs(wc *wire.Client) bool {
	if wc.ClientID != c.id || len(wc.Secrets) != len(c.digests)+len(c.slow) || len(wc.Tombstones) != len(c.buried) {
		return false
	}
	d, sl := 0, 0
	for k := range wc.Secrets {
		ws := &wc.Secrets[k]
		var meta *secretMeta
		if digest, ok := parseDigest(ws.Hash); ok {
			if d >= len(c.digests) || c.digests[d].digest != digest {
				return false
			}
			meta = &c.digests[d].secretMeta
			d++
		} else {
			if sl >= len(c.slow) || c.slow[sl].hash.Encoded != ws.Hash {
				return false
			}
			meta = &c.slow[sl].secretMeta
			sl++
		}
		var expires int64
		if ws.ExpiresAt != nil {
			if expires = ws.ExpiresAt.UnixNano(); expires == 0 {
				expires = -1
			}
		}
		if meta.id != ws.ID || meta.expires != expires {
			return false
		}
	}
	for k, wt := range wc.Tombstones {
		digest, ok := parseDigest(wt.Hash)
		if !ok || c.buried[k].id != wt.ID || c.buried[k].digest != digest {
			return false
		}
	}
	return true
}

// parseDigest reads a `sha256:…` hash without allocating.
func parseDigest(hash string) (digest [sha256.Size]byte, ok bool) {
	const prefix = "sha256:"
	if len(hash) != len(prefix)+base64.RawURLEncoding.EncodedLen(sha256.Size) || hash[:len(prefix)] != prefix {
		return digest, false
	}
	var src [43]byte // base64 of 32 bytes, copied so that nothing escapes
	copy(src[:], hash[len(prefix):])
	var raw [sha256.Size + 2]byte
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], src[:])
	if err != nil || n != sha256.Size {
		return digest, false
	}
	copy(digest[:], raw[:n])
	return digest, true
}

// wire returns the client as the feed lists it, for the disk copy.
func (c *client) wire() wire.Client {
	wc := wire.Client{ClientID: c.id, Secrets: make([]wire.Secret, 0, len(c.digests)+len(c.slow))}
	meta := func(m secretMeta, hash string) wire.Secret {
		s := wire.Secret{ID: m.id, Hash: hash}
		if m.expires != 0 {
			t := time.Unix(0, max(m.expires, 0)).UTC()
			s.ExpiresAt = &t
		}
		return s
	}
	for _, d := range c.digests {
		wc.Secrets = append(wc.Secrets, meta(d.secretMeta, secrethash.FormatSHA256(d.digest)))
	}
	for _, s := range c.slow {
		wc.Secrets = append(wc.Secrets, meta(s.secretMeta, s.hash.Encoded))
	}
	for _, t := range c.buried {
		wc.Tombstones = append(wc.Tombstones, wire.Tombstone{ID: t.id, Hash: secrethash.FormatSHA256(t.digest)})
	}
	return wc
}

// delta is a change since a revision, decoded from the feed: the clients
// upserted whole (their active secrets and tombstones) and the ids of the
// clients removed.
type delta struct {
	epoch    string
	since    int64
	revision int64
	changed  []*client
	removed  []string
}

// newDelta validates a change answer.
func newDelta(w *wire.Delta) (*delta, error) {
	if w.Epoch == "" {
		return nil, errors.New("change has no epoch")
	}
	if w.Since < 0 || w.Revision < w.Since {
		return nil, fmt.Errorf("change from revision %d to %d", w.Since, w.Revision)
	}
	d := &delta{epoch: w.Epoch, since: w.Since, revision: w.Revision, removed: w.Removed}
	seen := make(map[string]bool, len(w.Changed)+len(w.Removed))
	secretIDs := make(map[string]bool)
	for i := range w.Changed {
		c, err := newClient(&w.Changed[i], i)
		if err != nil {
			return nil, err
		}
		if seen[c.id] {
			return nil, fmt.Errorf("change lists client %q twice", c.id)
		}
		seen[c.id] = true
		for _, id := range c.secretIDs() {
			if secretIDs[id] {
				return nil, fmt.Errorf("change lists secret %q twice", id)
			}
			secretIDs[id] = true
		}
		d.changed = append(d.changed, c)
	}
	for _, id := range w.Removed {
		if id == "" || seen[id] {
			return nil, fmt.Errorf("change removes client %q, empty or also changed", id)
		}
		seen[id] = true
	}
	return d, nil
}

func (c *client) secretIDs() []string {
	ids := make([]string, 0, len(c.digests)+len(c.slow))
	for _, d := range c.digests {
		ids = append(ids, d.id)
	}
	for _, s := range c.slow {
		ids = append(ids, s.id)
	}
	return ids
}

// apply returns the snapshot with d applied, copying only the shards d
// touches. d must follow s: same epoch, since = s's revision.
func (s *snapshot) apply(d *delta) (*snapshot, error) {
	if d.epoch != s.epoch || d.since != s.revision {
		return nil, fmt.Errorf("change %s.%d→%d does not follow the snapshot held (%s.%d)", d.epoch, d.since, d.revision, s.epoch, s.revision)
	}
	next := &snapshot{epoch: s.epoch, revision: d.revision, clients: s.clients, shards: new([snapshotShards]*shard)}
	*next.shards = *s.shards
	copied := make(map[int]bool)
	touch := func(id string) *shard {
		i := shardIndex(id)
		if !copied[i] {
			next.shards[i] = next.shards[i].clone()
			copied[i] = true
		}
		return next.shards[i]
	}
	for _, id := range d.removed {
		sh := touch(id)
		if old := sh.clients[id]; old != nil {
			sh.remove(old)
			next.clients--
		}
	}
	for _, c := range d.changed {
		sh := touch(c.id)
		if old := sh.clients[c.id]; old != nil {
			sh.remove(old)
		} else {
			next.clients++
		}
		sh.put(c)
	}
	return next, nil
}
