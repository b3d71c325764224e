package rotagate

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	"go4.org/netipx"

	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/credkey"
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
	secrets  int // active secrets, how many: the next build's capacity
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
	// cidrs are the client's allowed networks as the feed listed them, and
	// networks the set they make (networks.go); nil: anywhere.
	cidrs    []string
	networks *netipx.IPSet
	// reportOnly lets requests from outside networks through, recorded as
	// refused.
	reportOnly bool
	// pub holds the client's public-key and certificate credentials; nil
	// for a client with secrets only, as most are: one pointer per client
	// rather than three slices (a million clients' snapshot).
	pub *publicCredentials
}

// publicCredentials are a client's credentials without a shared secret.
type publicCredentials struct {
	// keys are the client's public keys (private_key_jwt) and certs its
	// certificates' thumbprints (tls_client_auth), as the feed listed them.
	keys  []keyCredential
	certs []certCredential
	// assertionKeys are the keys as the assertion verifier takes them,
	// in the order of keys.
	assertionKeys []clientassertion.Key
}

// keyCreds are the client's public keys (none without pub).
func (c *client) keyCreds() []keyCredential {
	if c.pub == nil {
		return nil
	}
	return c.pub.keys
}

// certCreds are the client's certificates (none without pub).
func (c *client) certCreds() []certCredential {
	if c.pub == nil {
		return nil
	}
	return c.pub.certs
}

// keyCredential is a public key a client signs its assertions with.
type keyCredential struct {
	secretMeta
	key *credkey.PublicKey
}

// certCredential is a client certificate, known by its SHA-256
// thumbprint (RFC 8705 x5t#S256).
type certCredential struct {
	secretMeta
	thumbprint [sha256.Size]byte
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
	// verified remembers the secret that last passed the check
	// (verifier.go); it belongs to this record, so a secret revoked or
	// re-hashed takes it along when it leaves the snapshot.
	verified *verifiedSlot
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

// shardIndexBytes is shardIndex of an id not yet made a string.
func shardIndexBytes(id []byte) int {
	return int(maphash.Bytes(shardSeed, id) % snapshotShards)
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
	var rc rawClient
	for i := range w.Clients {
		rc.setWire(&w.Clients[i])
		if err := b.add(&rc); err != nil {
			return nil, err
		}
	}
	return b.finish(w.Epoch, w.Revision)
}

// snapshotBuilder builds a full snapshot one client at a time, as the
// streaming decoder (or the saved copy's reader) reads them. A client
// equal to its record in prev (the snapshot held) is taken from prev, so
// a full answer that changes little costs little more memory than the
// snapshot held.
//
// The records wait in a list per shard, and each shard's map is made at
// the end, at its size, in one go: a map filled as clients come in the
// feed's order grows and rehashes (a fifth of a cold million-client
// sync), and one made at a guessed size up front is filled in random
// order, a cache miss per client.
type snapshotBuilder struct {
	prev    *snapshot
	pending [snapshotShards][]*client
	n       int
	// secretIDs are hashes of every secret id seen, checked for
	// duplicates at the end: 8 bytes a secret, not a map of strings.
	secretIDs idHashes
	// perShard is how many clients a shard's list is made for, when prev
	// does not tell (expect).
	perShard int
}

// expect sizes what the builder makes for n clients, when the caller
// knows how many come (the saved copy says): the shards' lists are made
// at their size instead of growing as clients come.
func (b *snapshotBuilder) expect(n int) {
	b.perShard = n / snapshotShards
}

func newSnapshotBuilder(prev *snapshot) *snapshotBuilder {
	b := &snapshotBuilder{prev: prev}
	if prev != nil {
		b.secretIDs.cur = make([]uint64, 0, prev.secrets)
	}
	return b
}

// idHashes gathers hashes in chunks, so that millions of them come
// together without a growing slice's copies, which at a million clients
// were 40 MB of garbage in a build that otherwise allocates what it
// keeps.
type idHashes struct {
	full [][]uint64
	cur  []uint64
	n    int
}

// Chunks start small, for the many small snapshots, and double up to
// maxHashChunk (512 KiB).
const (
	minHashChunk = 64
	maxHashChunk = 1 << 16
)

func (h *idHashes) add(x uint64) {
	if len(h.cur) == cap(h.cur) {
		size := minHashChunk
		if h.cur != nil {
			h.full = append(h.full, h.cur)
			size = min(2*cap(h.cur), maxHashChunk)
		}
		h.cur = make([]uint64, 0, size)
	}
	h.cur = append(h.cur, x)
	h.n++
}

// sorted returns every hash, in order, and empties h.
func (h *idHashes) sorted() []uint64 {
	all := h.cur
	if len(h.full) > 0 {
		all = make([]uint64, 0, h.n)
		for _, c := range h.full {
			all = append(all, c...)
		}
		all = append(all, h.cur...)
	}
	*h = idHashes{}
	radixSort(all)
	return all
}

// add validates one client of a full snapshot and adds it. A client equal
// to its record in prev is that record: it was validated when it came,
// and nothing is built for it. rc may be reused once add returns.
func (b *snapshotBuilder) add(rc *rawClient) error {
	id := rc.bytes(rc.id)
	i := shardIndexBytes(id)
	var c *client
	if b.prev != nil {
		if old := b.prev.shards[i].clients[string(id)]; old != nil && old.sameAs(rc) {
			c = old
		}
	}
	if c == nil {
		var err error
		if c, err = buildClient(rc, b.n); err != nil {
			return err
		}
	}
	if b.pending[i] == nil {
		hint := b.perShard
		if b.prev != nil { // the shard will likely hold as many as before
			hint = len(b.prev.shards[i].clients)
		}
		b.pending[i] = make([]*client, 0, max(hint, 1))
	}
	b.pending[i] = append(b.pending[i], c)
	for j := range rc.secrets {
		b.secretIDs.add(maphash.Bytes(shardSeed, rc.bytes(rc.secrets[j].id)))
	}
	for j := range rc.keys {
		b.secretIDs.add(maphash.Bytes(shardSeed, rc.bytes(rc.keys[j].id)))
	}
	for j := range rc.certs {
		b.secretIDs.add(maphash.Bytes(shardSeed, rc.bytes(rc.certs[j].id)))
	}
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
	s := &snapshot{epoch: epoch, revision: revision, clients: b.n, secrets: b.secretIDs.n, shards: new([snapshotShards]*shard)}
	for i, list := range b.pending {
		if len(list) == 0 {
			s.shards[i] = emptyShard
			continue
		}
		sh := &shard{clients: make(map[string]*client, len(list))}
		for _, c := range list {
			if _, dup := sh.clients[c.id]; dup {
				return nil, fmt.Errorf("snapshot lists client %q twice", c.id)
			}
			sh.put(c)
		}
		s.shards[i] = sh
		b.pending[i] = nil
	}
	if err := b.checkSecretIDs(s); err != nil {
		return nil, err
	}
	b.prev = nil // the snapshot must not keep the one before alive
	return s, nil
}

// checkSecretIDs rejects a snapshot s, built, that lists a secret id
// twice. Equal hashes are rare; only then are the ids themselves
// compared.
func (b *snapshotBuilder) checkSecretIDs(s *snapshot) error {
	hashes := b.secretIDs.sorted()
	var clash map[uint64]bool
	for i := 1; i < len(hashes); i++ {
		if hashes[i] == hashes[i-1] {
			if clash == nil {
				clash = make(map[uint64]bool)
			}
			clash[hashes[i]] = true
		}
	}
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
	s.each(func(c *client) {
		for _, id := range c.secretIDs() {
			check(id)
		}
	})
	return err
}

// radixSort sorts hashes in four passes of 16 bits through one buffer
// as large: at a million clients, several times faster than a
// comparison sort of their two million secret ids.
func radixSort(xs []uint64) {
	if len(xs) < 1<<12 {
		slices.Sort(xs)
		return
	}
	buf := make([]uint64, len(xs))
	src, dst := xs, buf
	var counts [1 << 16]int
	for shift := 0; shift < 64; shift += 16 {
		clear(counts[:])
		for _, x := range src {
			counts[uint16(x>>shift)]++
		}
		at := 0
		for d, n := range counts {
			counts[d] = at
			at += n
		}
		for _, x := range src {
			d := uint16(x >> shift)
			dst[counts[d]] = x
			counts[d]++
		}
		src, dst = dst, src
	}
	// After an even number of passes the sorted hashes are back in xs.
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

// rawClient is one client as read from the feed or the saved copy,
// before it is validated: its ids back to back in one buffer, its other
// strings in another, sha256 hashes already decoded. The decoders reuse
// one rawClient for every client, so a client costs allocations only
// when a record is built for it.
type rawClient struct {
	id         span
	secrets    []rawSecret
	tombstones []rawSecret
	cidrs      []span
	reportOnly bool
	// keys are the public keys (their JWK in text); certs the
	// certificates (their thumbprint decoded into digest).
	keys  []rawKey
	certs []rawSecret
	// ids holds the client id and the secret and tombstone ids; a record
	// built from rc keeps them all in one string. text holds the hashes
	// that are not sha256 and the CIDRs.
	ids, text []byte
}

// span is where a string is in one of rawClient's buffers.
type span struct{ at, end int }

// rawKey is a public key of a rawClient.
type rawKey struct {
	id, jwk span
	expires int64 // as secretMeta.expires
}

// rawSecret is a secret, a tombstone or a certificate of a rawClient.
type rawSecret struct {
	id span
	// sha is set when the hash is a `sha256:…` one, decoded into digest;
	// otherwise hash is the stored hash string, in text.
	sha     bool
	digest  [sha256.Size]byte
	hash    span
	expires int64 // as secretMeta.expires
}

func (rc *rawClient) reset() {
	*rc = rawClient{secrets: rc.secrets[:0], tombstones: rc.tombstones[:0], cidrs: rc.cidrs[:0], ids: rc.ids[:0], text: rc.text[:0],
		keys: rc.keys[:0], certs: rc.certs[:0]}
}

// bytes returns the id (or secret id) at sp.
func (rc *rawClient) bytes(sp span) []byte { return rc.ids[sp.at:sp.end] }

// textAt returns the hash (or CIDR) at sp.
func (rc *rawClient) textAt(sp span) []byte { return rc.text[sp.at:sp.end] }

// parseHash decodes the hash just appended to text (at s.hash) into the
// digest when it is a sha256 one, and then takes it back out of text.
func (s *rawSecret) parseHash(text []byte) []byte {
	if digest, ok := parseDigest(text[s.hash.at:s.hash.end]); ok {
		s.sha, s.digest = true, digest
		text = text[:s.hash.at]
		s.hash = span{}
	}
	return text
}

// setWire fills rc with a client in its wire form (a change's, or a
// test's).
func (rc *rawClient) setWire(wc *wire.Client) {
	rc.reset()
	str := func(buf *[]byte, v string) span {
		at := len(*buf)
		*buf = append(*buf, v...)
		return span{at, len(*buf)}
	}
	rc.id = str(&rc.ids, wc.ClientID)
	for _, ws := range wc.Secrets {
		s := rawSecret{id: str(&rc.ids, ws.ID), hash: str(&rc.text, ws.Hash)}
		rc.text = s.parseHash(rc.text)
		if ws.ExpiresAt != nil {
			s.expires = expiresAt(*ws.ExpiresAt)
		}
		rc.secrets = append(rc.secrets, s)
	}
	for _, wt := range wc.Tombstones {
		s := rawSecret{id: str(&rc.ids, wt.ID), hash: str(&rc.text, wt.Hash)}
		rc.text = s.parseHash(rc.text)
		rc.tombstones = append(rc.tombstones, s)
	}
	for _, cidr := range wc.AllowedCIDRs {
		rc.cidrs = append(rc.cidrs, str(&rc.text, cidr))
	}
	rc.reportOnly = wc.NetworksReportOnly
	for _, wk := range wc.PublicKeys {
		k := rawKey{id: str(&rc.ids, wk.ID), jwk: str(&rc.text, string(wk.JWK))}
		if wk.ExpiresAt != nil {
			k.expires = expiresAt(*wk.ExpiresAt)
		}
		rc.keys = append(rc.keys, k)
	}
	for _, wc := range wc.Certificates {
		c := rawSecret{id: str(&rc.ids, wc.ID)}
		c.digest, c.sha = parseThumbprint(readOnlyBytes(wc.Thumbprint))
		if wc.ExpiresAt != nil {
			c.expires = expiresAt(*wc.ExpiresAt)
		}
		rc.certs = append(rc.certs, c)
	}
}

// expiresAt is an expiry as secretMeta.expires holds it.
func expiresAt(t time.Time) int64 {
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return -1 // the epoch itself: long past, still an expiry
}

// newClient validates one client of a change (the i-th) and builds its
// record.
func newClient(wc *wire.Client, i int) (*client, error) {
	var rc rawClient
	rc.setWire(wc)
	return buildClient(&rc, i)
}

// buildClient validates one client (the i-th of its answer) and builds
// its record. Its ids share one string. Secret ids are checked for
// duplicates by the caller, across every client of the answer.
func buildClient(rc *rawClient, i int) (*client, error) {
	if rc.id.at == rc.id.end {
		return nil, fmt.Errorf("snapshot client %d has no client_id", i)
	}
	ids := string(rc.ids)
	str := func(sp span) string { return ids[sp.at:sp.end] }
	sha := 0
	for k := range rc.secrets {
		if rc.secrets[k].sha {
			sha++
		}
	}
	c := newClientRecord(sha)
	c.id = str(rc.id)
	if len(rc.cidrs) > 0 {
		cidrs := make([]string, len(rc.cidrs))
		for k, sp := range rc.cidrs {
			cidrs[k] = string(rc.textAt(sp))
		}
		nets, err := parseNetworks(cidrs)
		if err != nil {
			return nil, fmt.Errorf("snapshot client %q: %v", c.id, err)
		}
		if c.networks = nets; nets != nil {
			c.cidrs, c.reportOnly = cidrs, rc.reportOnly
		}
	}
	for k := range rc.secrets {
		rs := &rc.secrets[k]
		meta := secretMeta{id: str(rs.id), expires: rs.expires}
		if meta.id == "" {
			return nil, fmt.Errorf("snapshot client %q has a secret without id", c.id)
		}
		if rs.sha {
			if c.digests == nil {
				c.digests = make([]digestSecret, 0, sha)
			}
			c.digests = append(c.digests, digestSecret{secretMeta: meta, digest: rs.digest})
			continue
		}
		h, err := secrethash.Parse(string(rc.textAt(rs.hash)))
		if err == nil && !h.Scheme.Slow() { // sha256 hashes are decoded as they are read
			err = errors.New("a sha256 hash where a legacy one belongs")
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot secret %q: %v", meta.id, err)
		}
		c.slow = append(c.slow, slowSecret{secretMeta: meta, hash: h, verified: new(verifiedSlot)})
	}
	for k := range rc.tombstones {
		rt := &rc.tombstones[k]
		if rt.id.at == rt.id.end || !rt.sha {
			return nil, fmt.Errorf("snapshot client %q has a malformed tombstone", c.id)
		}
		c.buried = append(c.buried, buriedSecret{id: str(rt.id), digest: rt.digest})
	}
	if len(rc.keys)+len(rc.certs) > 0 {
		pub, err := buildPublicCredentials(rc, ids, c.id)
		if err != nil {
			return nil, err
		}
		c.pub = pub
	}
	return c, nil
}

// newClientRecord returns an empty record with room for n sha256
// secrets: for the common one or two, in the record's own allocation (at
// a million clients, a million objects fewer to allocate and for the
// collector to mark, in the same bytes: 256 either way).
func newClientRecord(n int) *client {
	switch n {
	case 1:
		r := new(struct {
			c client
			d [1]digestSecret
		})
		r.c.digests = r.d[:0]
		return &r.c
	case 2:
		r := new(struct {
			c client
			d [2]digestSecret
		})
		r.c.digests = r.d[:0]
		return &r.c
	}
	return &client{}
}

// buildPublicCredentials validates a client's public keys and
// certificates and builds their record. Its own function, so that the
// record is allocated only for a client that has some: a million clients
// with secrets only make a million fewer objects.
func buildPublicCredentials(rc *rawClient, ids, clientID string) (*publicCredentials, error) {
	str := func(sp span) string { return ids[sp.at:sp.end] }
	pub := &publicCredentials{}
	for k := range rc.keys {
		rk := &rc.keys[k]
		if rk.id.at == rk.id.end {
			return nil, fmt.Errorf("snapshot client %q has a public key without id", clientID)
		}
		key, err := credkey.ParseJWK(rc.textAt(rk.jwk))
		if err != nil {
			return nil, fmt.Errorf("snapshot public key %q: %v", str(rk.id), err)
		}
		pub.keys = append(pub.keys, keyCredential{secretMeta: secretMeta{id: str(rk.id), expires: rk.expires}, key: key})
		pub.assertionKeys = append(pub.assertionKeys, clientassertion.Key{CredentialID: str(rk.id), Key: key})
	}
	for k := range rc.certs {
		rt := &rc.certs[k]
		if rt.id.at == rt.id.end || !rt.sha {
			return nil, fmt.Errorf("snapshot client %q has a malformed certificate", clientID)
		}
		pub.certs = append(pub.certs, certCredential{secretMeta: secretMeta{id: str(rt.id), expires: rt.expires}, thumbprint: rt.digest})
	}
	return pub, nil
}

// sameAs reports whether the record holds exactly what rc lists, in the
// same order, without building anything: a full answer mostly repeats the
// snapshot held, and its clients then cost nothing beyond the decode.
// Anything it cannot tell (a hash spelled another way) is "no": the
// client is then built and validated afresh.
func (c *client) sameAs(rc *rawClient) bool {
	if c.id != string(rc.bytes(rc.id)) || len(rc.secrets) != len(c.digests)+len(c.slow) || len(rc.tombstones) != len(c.buried) ||
		len(rc.cidrs) != len(c.cidrs) || (len(c.cidrs) > 0 && rc.reportOnly != c.reportOnly) ||
		len(rc.keys) != len(c.keyCreds()) || len(rc.certs) != len(c.certCreds()) {
		return false
	}
	for k := range rc.keys {
		rk, ck := &rc.keys[k], &c.keyCreds()[k]
		if ck.id != string(rc.bytes(rk.id)) || ck.expires != rk.expires || !bytes.Equal(ck.key.JSON(), rc.textAt(rk.jwk)) {
			return false
		}
	}
	for k := range rc.certs {
		rt, cc := &rc.certs[k], &c.certCreds()[k]
		if !rt.sha || cc.id != string(rc.bytes(rt.id)) || cc.expires != rt.expires || cc.thumbprint != rt.digest {
			return false
		}
	}
	for k, sp := range rc.cidrs {
		if c.cidrs[k] != string(rc.textAt(sp)) {
			return false
		}
	}
	d, sl := 0, 0
	for k := range rc.secrets {
		rs := &rc.secrets[k]
		var meta *secretMeta
		if rs.sha {
			if d >= len(c.digests) || c.digests[d].digest != rs.digest {
				return false
			}
			meta = &c.digests[d].secretMeta
			d++
		} else {
			if sl >= len(c.slow) || c.slow[sl].hash.Encoded != string(rc.textAt(rs.hash)) {
				return false
			}
			meta = &c.slow[sl].secretMeta
			sl++
		}
		if meta.id != string(rc.bytes(rs.id)) || meta.expires != rs.expires {
			return false
		}
	}
	for k := range rc.tombstones {
		rt := &rc.tombstones[k]
		if !rt.sha || c.buried[k].id != string(rc.bytes(rt.id)) || c.buried[k].digest != rt.digest {
			return false
		}
	}
	return true
}

// parseDigest reads a `sha256:…` hash without allocating.
func parseDigest(hash []byte) (digest [sha256.Size]byte, ok bool) {
	const prefix = "sha256:"
	if len(hash) != len(prefix)+base64.RawURLEncoding.EncodedLen(sha256.Size) || string(hash[:len(prefix)]) != prefix {
		return digest, false
	}
	return parseThumbprint(hash[len(prefix):])
}

// parseThumbprint reads the base64url (unpadded) form of a SHA-256
// digest, an x5t#S256 thumbprint, without allocating.
func parseThumbprint(b64 []byte) (digest [sha256.Size]byte, ok bool) {
	if len(b64) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return digest, false
	}
	var raw [sha256.Size + 2]byte
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], b64)
	if err != nil || n != sha256.Size {
		return digest, false
	}
	copy(digest[:], raw[:n])
	return digest, true
}

// wire returns the client as the feed lists it, for the disk copy.
func (c *client) wire() wire.Client {
	wc := wire.Client{ClientID: c.id, Secrets: make([]wire.Secret, 0, len(c.digests)+len(c.slow)),
		AllowedCIDRs: c.cidrs, NetworksReportOnly: c.reportOnly}
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
	expiry := func(m secretMeta) *time.Time { return meta(m, "").ExpiresAt }
	for _, k := range c.keyCreds() {
		wc.PublicKeys = append(wc.PublicKeys, wire.PublicKey{ID: k.id, JWK: k.key.JSON(), ExpiresAt: expiry(k.secretMeta)})
	}
	for _, t := range c.certCreds() {
		wc.Certificates = append(wc.Certificates, wire.Certificate{ID: t.id,
			Thumbprint: base64.RawURLEncoding.EncodeToString(t.thumbprint[:]), ExpiresAt: expiry(t.secretMeta)})
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

// secretIDs are the ids of the client's credentials of every kind.
func (c *client) secretIDs() []string {
	ids := make([]string, 0, len(c.digests)+len(c.slow)+len(c.keyCreds())+len(c.certCreds()))
	for _, d := range c.digests {
		ids = append(ids, d.id)
	}
	for _, s := range c.slow {
		ids = append(ids, s.id)
	}
	for _, k := range c.keyCreds() {
		ids = append(ids, k.id)
	}
	for _, t := range c.certCreds() {
		ids = append(ids, t.id)
	}
	return ids
}

// apply returns the snapshot with d applied, copying only the shards d
// touches. d must follow s: same epoch, since = s's revision.
func (s *snapshot) apply(d *delta) (*snapshot, error) {
	if d.epoch != s.epoch || d.since != s.revision {
		return nil, fmt.Errorf("change %s.%d→%d does not follow the snapshot held (%s.%d)", d.epoch, d.since, d.revision, s.epoch, s.revision)
	}
	next := &snapshot{epoch: s.epoch, revision: d.revision, clients: s.clients, secrets: s.secrets, shards: new([snapshotShards]*shard)}
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
			next.secrets -= len(old.digests) + len(old.slow)
		}
	}
	for _, c := range d.changed {
		sh := touch(c.id)
		if old := sh.clients[c.id]; old != nil {
			sh.remove(old)
			next.secrets -= len(old.digests) + len(old.slow)
		} else {
			next.clients++
		}
		sh.put(c)
		next.secrets += len(c.digests) + len(c.slow)
	}
	return next, nil
}
