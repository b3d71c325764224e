package rotagate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// canonical describes a snapshot as sorted text: two snapshots with the
// same canonical form authenticate and bury the same secrets.
func canonical(t *testing.T, s *snapshot) string {
	t.Helper()
	var lines []string
	count, secrets := 0, 0
	for i, sh := range s.shards {
		for id, c := range sh.clients {
			count++
			secrets += len(c.digests) + len(c.slow)
			if id != c.id || shardIndex(id) != i {
				t.Fatalf("client %q filed under %q in shard %d", c.id, id, i)
			}
			raw, _ := json.Marshal(c.wire())
			lines = append(lines, string(raw))
			for _, b := range c.buried {
				if tb, ok := sh.tombstones[b.digest]; !ok || tb.clientID != c.id || tb.secretID != b.id {
					t.Fatalf("tombstone %s of %q missing from its shard", b.id, c.id)
				}
			}
		}
		for d, tb := range sh.tombstones {
			c := sh.clients[tb.clientID]
			if c == nil || !slices.Contains(c.buried, buriedSecret{id: tb.secretID, digest: d}) {
				t.Fatalf("stray tombstone %s of %q", tb.secretID, tb.clientID)
			}
		}
	}
	if count != s.clients || secrets != s.secrets {
		t.Fatalf("snapshot counts %d clients and %d secrets, holds %d and %d", s.clients, s.secrets, count, secrets)
	}
	slices.Sort(lines)
	return fmt.Sprintf("%s.%d\n%s", s.epoch, s.revision, strings.Join(lines, "\n"))
}

func decodeFull(t *testing.T, w any, prev *snapshot) *snapshot {
	t.Helper()
	body, _ := json.Marshal(w)
	ans, err := decodeAnswer(bytes.NewReader(body), 1<<30, prev)
	if err != nil || ans.full == nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return ans.full
}

// TestStreamingDecoderRejects: the token-by-token decoder keeps every
// check of a whole-answer decode, and rejects the answer whole.
func TestStreamingDecoderRejects(t *testing.T) {
	h := secrethash.NewSHA256("x")
	for name, body := range map[string]string{
		"not an object":              `[]`,
		"truncated":                  `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[]}`,
		"data after":                 `{"epoch":"e","revision":1,"clients":[]} {}`,
		"no epoch":                   `{"revision":1,"clients":[]}`,
		"negative revision":          `{"epoch":"e","revision":-1,"clients":[]}`,
		"client twice":               `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[]},{"client_id":"a","secrets":[]}]}`,
		"no client id":               `{"epoch":"e","revision":1,"clients":[{"secrets":[]}]}`,
		"secret twice, 2 owners":     `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[{"id":"s","hash":"` + h + `"}]},{"client_id":"b","secrets":[{"id":"s","hash":"` + h + `"}]}]}`,
		"secret twice, 1 owner":      `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[{"id":"s","hash":"` + h + `"},{"id":"s","hash":"` + h + `"}]}]}`,
		"secret without id":          `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[{"hash":"` + h + `"}]}]}`,
		"bad hash":                   `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[{"id":"s","hash":"sha256:nope"}]}]}`,
		"bad tombstone":              `{"epoch":"e","revision":1,"clients":[{"client_id":"a","secrets":[],"tombstones":[{"id":"","hash":"` + h + `"}]}]}`,
		"clients twice":              `{"epoch":"e","revision":1,"clients":[],"clients":[]}`,
		"clients not an array":       `{"epoch":"e","revision":1,"clients":{}}`,
		"full and change":            `{"epoch":"e","revision":2,"since":1,"clients":[],"changed":[]}`,
		"change without since":       `{"epoch":"e","revision":2,"changed":[]}`,
		"change going back":          `{"epoch":"e","revision":1,"since":2,"changed":[],"removed":[]}`,
		"change removes and upserts": `{"epoch":"e","revision":2,"since":1,"changed":[{"client_id":"a","secrets":[]}],"removed":["a"]}`,
		"change secret twice":        `{"epoch":"e","revision":2,"since":1,"changed":[{"client_id":"a","secrets":[{"id":"s","hash":"` + h + `"}]},{"client_id":"b","secrets":[{"id":"s","hash":"` + h + `"}]}],"removed":[]}`,
	} {
		if _, err := decodeAnswer(strings.NewReader(body), 1<<20, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Unknown fields and key order do not matter.
	ans, err := decodeAnswer(strings.NewReader(`{"clients":[{"client_id":"a","extra":[1,{"x":2}],"secrets":[{"id":"s","hash":"`+h+`"}]}],"future":{"a":1},"revision":3,"epoch":"e"}`), 1<<20, nil)
	if err != nil || ans.full == nil || ans.full.revision != 3 || ans.full.client("a") == nil {
		t.Fatalf("a snapshot with its keys reordered: %+v, %v", ans, err)
	}
}

// TestFullSwapSharesUnchangedClients: a full answer that changes one
// client shares the records of the others with the snapshot held.
func TestFullSwapSharesUnchangedClients(t *testing.T) {
	w := testSnapshot(t)
	held := decodeFull(t, w, nil)
	w.Revision++
	w.Clients[0].Secrets = w.Clients[0].Secrets[:1]
	next := decodeFull(t, w, held)
	if next.client("app") == held.client("app") || len(next.client("app").digests) != 1 {
		t.Fatal("the changed client was shared")
	}
	if next.client("mixed") != held.client("mixed") || next.client("expiry") != held.client("expiry") {
		t.Fatal("an unchanged client was copied")
	}
	if canonical(t, next) != canonical(t, decodeFull(t, w, nil)) {
		t.Fatal("a snapshot built on another differs from one built alone")
	}
	// Any difference — an expiry moved, a tombstone, another hash, another
	// id, a legacy hash — is a new record.
	later := testNow.Add(2 * time.Hour)
	for name, change := range map[string]func(*wire.Snapshot){
		"expiry":    func(w *wire.Snapshot) { w.Clients[4].Secrets[1].ExpiresAt = &later },
		"no expiry": func(w *wire.Snapshot) { w.Clients[4].Secrets[1].ExpiresAt = nil },
		"tombstone": func(w *wire.Snapshot) {
			w.Clients[4].Tombstones = []wire.Tombstone{{ID: "t", Hash: secrethash.NewSHA256("t")}}
		},
		"hash":        func(w *wire.Snapshot) { w.Clients[4].Secrets[0].Hash = secrethash.NewSHA256("other") },
		"secret id":   func(w *wire.Snapshot) { w.Clients[4].Secrets[0].ID = "sec_renamed" },
		"legacy hash": func(w *wire.Snapshot) { w.Clients[4].Secrets[0].Hash = w.Clients[1].Secrets[0].Hash },
	} {
		w := testSnapshot(t)
		w.Clients[1] = decodedAgain(t, held, "legacy-bcrypt")
		w.Clients[3] = decodedAgain(t, held, "mixed")
		change(w)
		next := decodeFull(t, w, held)
		if next.client("expiry") == held.client("expiry") {
			t.Errorf("%s: the changed client was shared", name)
		}
		if next.client("mixed") != held.client("mixed") {
			t.Errorf("%s: an unchanged client with a legacy hash was copied", name)
		}
		if canonical(t, next) != canonical(t, decodeFull(t, w, nil)) {
			t.Errorf("%s: a snapshot built on another differs from one built alone", name)
		}
	}
}

// decodedAgain is the wire form of a client held (testSnapshot makes new
// bcrypt salts each call).
func decodedAgain(t *testing.T, s *snapshot, id string) wire.Client {
	t.Helper()
	c := s.client(id)
	if c == nil {
		t.Fatalf("no client %q", id)
	}
	return c.wire()
}

// randomModel is a control plane's state in a property test: clients
// with their active secrets and tombstones, changed at random.
type randomModel struct {
	rng     *rand.Rand
	rev     int64
	clients map[string]*wire.Client
	next    int
}

func (m *randomModel) secret() wire.Secret {
	m.next++
	s := wire.Secret{ID: fmt.Sprintf("sec_%d", m.next), Hash: secrethash.NewSHA256(fmt.Sprintf("secret %d", m.next))}
	if m.rng.IntN(4) == 0 {
		at := testNow.Add(time.Duration(m.rng.IntN(7200)-3600) * time.Second)
		s.ExpiresAt = &at
	}
	return s
}

// step makes one random change (create, delete, generate, rotate,
// revoke, expire) and returns the ids of the clients it touched.
func (m *randomModel) step() []string {
	m.rev++
	ids := make([]string, 0, len(m.clients))
	for id := range m.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) == 0 || m.rng.IntN(5) == 0 {
		id := fmt.Sprintf("client-%d", m.rng.IntN(40))
		m.clients[id] = &wire.Client{ClientID: id, Secrets: []wire.Secret{m.secret()}}
		return []string{id}
	}
	id := ids[m.rng.IntN(len(ids))]
	c := m.clients[id]
	bury := func(i int) {
		c.Tombstones = append(c.Tombstones, wire.Tombstone{ID: c.Secrets[i].ID, Hash: c.Secrets[i].Hash})
		c.Secrets = slices.Delete(c.Secrets, i, i+1)
	}
	switch op := m.rng.IntN(5); {
	case op == 0:
		delete(m.clients, id)
	case op == 1 || len(c.Secrets) == 0: // generate
		c.Secrets = append(c.Secrets, m.secret())
	case op == 2: // rotate with no grace
		for len(c.Secrets) > 0 {
			bury(0)
		}
		c.Secrets = append(c.Secrets, m.secret())
	case op == 3: // revoke
		bury(m.rng.IntN(len(c.Secrets)))
	default: // an expiry the control plane now reports
		at := testNow.Add(-time.Minute)
		c.Secrets[0].ExpiresAt = &at
	}
	return []string{id}
}

func (m *randomModel) full(epoch string) *wire.Snapshot {
	w := &wire.Snapshot{Epoch: epoch, Revision: m.rev}
	for _, c := range m.clients {
		w.Clients = append(w.Clients, *c)
	}
	return w
}

func (m *randomModel) change(epoch string, since int64, touched []string) *wire.Delta {
	d := &wire.Delta{Epoch: epoch, Since: since, Revision: m.rev}
	slices.Sort(touched)
	for _, id := range slices.Compact(touched) {
		if c, ok := m.clients[id]; ok {
			d.Changed = append(d.Changed, *c)
		} else {
			d.Removed = append(d.Removed, id)
		}
	}
	return d
}

// TestChangesEqualFullSnapshots is a property test: random sequences of
// changes, applied as changes (through the decoder, one revision or a few
// at a time), give the same snapshot as a full answer at the same
// revision, and leave the snapshots they were built on untouched.
func TestChangesEqualFullSnapshots(t *testing.T) {
	for seed := range uint64(20) {
		m := &randomModel{rng: rand.New(rand.NewPCG(seed, 1)), clients: map[string]*wire.Client{}}
		m.step()
		held := decodeFull(t, m.full("e"), nil)
		for range 60 {
			before := canonical(t, held)
			var touched []string
			for range 1 + m.rng.IntN(3) {
				touched = append(touched, m.step()...)
			}
			body, _ := json.Marshal(m.change("e", held.revision, touched))
			ans, err := decodeAnswer(bytes.NewReader(body), 1<<20, held)
			if err != nil || ans.delta == nil {
				t.Fatalf("seed %d: decoding %s: %v", seed, body, err)
			}
			next, err := held.apply(ans.delta)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := canonical(t, next), canonical(t, decodeFull(t, m.full("e"), nil)); got != want {
				t.Fatalf("seed %d revision %d: changes applied\n%s\nfull snapshot\n%s", seed, m.rev, got, want)
			}
			if canonical(t, held) != before {
				t.Fatalf("seed %d: applying a change altered the snapshot it was built on", seed)
			}
			held = next
		}
	}
}

// TestChangeMustFollow: a change from another epoch, or whose base is
// not the revision held, is refused.
func TestChangeMustFollow(t *testing.T) {
	held := decodeFull(t, testSnapshot(t), nil)
	for _, d := range []*delta{
		{epoch: "e2", since: 7, revision: 8},
		{epoch: "e1", since: 6, revision: 8},
		{epoch: "e1", since: 8, revision: 9},
	} {
		if _, err := held.apply(d); err == nil {
			t.Errorf("change %+v applied on e1.7", d)
		}
	}
}

// changingServer is a stand-in control plane that serves changes, and
// its model.
func changingServer(t *testing.T, seed uint64) (*feedtest.Server, *randomModel) {
	m := &randomModel{rng: rand.New(rand.NewPCG(seed, 2)), clients: map[string]*wire.Client{}}
	for range 10 {
		m.step()
	}
	fs := feedtest.New(t, *m.full("e"))
	fs.ServeChanges()
	return fs, m
}

func (m *randomModel) publish(fs *feedtest.Server, steps int) {
	for range steps {
		m.step()
	}
	fs.Update(func(w *wire.Snapshot) { *w = *m.full(w.Epoch) })
}

// TestFeedFollowsChanges: holding a snapshot, the edge asks for changes
// and applies them; a gap (the control plane forgot the revision), an
// epoch change and a rollback each end in a full snapshot, and a change
// that does not follow is answered by asking for a full one at once.
func TestFeedFollowsChanges(t *testing.T) {
	fs, m := changingServer(t, 1)
	f := testFeed(t, fs.URL)
	ctx := context.Background()
	poll := func() {
		t.Helper()
		if err := f.poll(ctx, false); err != nil {
			t.Fatal(err)
		}
		snap, _ := f.snapshots.current()
		if got, want := canonical(t, snap), canonical(t, decodeFull(t, m.full(snap.epoch), nil)); got != want {
			t.Fatalf("edge holds\n%s\nwant\n%s", got, want)
		}
	}
	poll()
	for range 5 {
		m.publish(fs, 3)
		poll()
	}
	fs.ForgetChanges() // a gap: the control plane no longer has the revision
	m.publish(fs, 1)
	poll()
	fs.Update(func(w *wire.Snapshot) { w.Epoch = "e2" }) // a new store
	poll()
	m.publish(fs, 1)
	fs.Update(func(w *wire.Snapshot) { w.Epoch = "e2" })
	poll()
	want := []string{"full", "change", "change", "change", "change", "change", "full", "full", "change"}
	if got := fs.Answers(); !slices.Equal(got, want) {
		t.Fatalf("answers %v, want %v", got, want)
	}

	// A change that does not follow (the control plane sends one from
	// another base): the edge asks for a full snapshot at once.
	held, _ := f.snapshots.current()
	bad, _ := json.Marshal(&wire.Delta{Epoch: held.epoch, Since: held.revision - 1, Revision: held.revision + 1})
	served := 0
	fs.Override(func(w http.ResponseWriter) {
		served++
		if served == 1 {
			w.Write(bad)
			return
		}
		json.NewEncoder(w).Encode(m.full("e2"))
	})
	if err := f.poll(ctx, false); err != nil || served != 2 {
		t.Fatalf("poll after an unusable change: %v, %d requests", err, served)
	}
	if snap, _ := f.snapshots.current(); snap.revision != m.rev || f.fullNext.Load() {
		t.Fatalf("after the fallback: revision %d, full next %v", snap.revision, f.fullNext.Load())
	}
	fs.Override(nil)

	// A rollback sent as a full snapshot is refused, as before.
	fs.Update(func(w *wire.Snapshot) { w.Revision = held.revision - 5 })
	if err := f.poll(ctx, false); err == nil || !strings.Contains(err.Error(), "rollback") {
		t.Fatalf("a rollback: %v", err)
	}
}

// TestOldControlPlaneAnswersFull: a control plane that ignores since
// answers full snapshots, which the edge takes.
func TestOldControlPlaneAnswersFull(t *testing.T) {
	m := &randomModel{rng: rand.New(rand.NewPCG(3, 3)), clients: map[string]*wire.Client{}}
	m.step()
	fs := feedtest.New(t, *m.full("e"))
	f := testFeed(t, fs.URL)
	for range 4 {
		if err := f.poll(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		m.publish(fs, 2)
	}
	if got := fs.Answers(); len(got) != 4 || slices.Contains(got, "change") {
		t.Fatalf("answers %v", got)
	}
}

// TestChangesSurviveRestart: changes are appended to the disk copy, a
// restarted edge replays them, trusts the confirmation of the newest, and
// then asks for the changes since it; the log is compacted into a full
// copy, and a torn last line costs the confirmation, never a wrong one.
func TestChangesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	fs, m := changingServer(t, 4)
	f := testFeedOnDisk(t, dir, fs.URL)
	ctx := context.Background()
	for range 4 {
		if err := f.poll(ctx, false); err != nil {
			t.Fatal(err)
		}
		m.publish(fs, 1)
	}
	if err := f.poll(ctx, false); err != nil {
		t.Fatal(err)
	}
	held, confirmed := f.snapshots.current()
	if f.snapshots.changes != 4 {
		t.Fatalf("%d changes logged, want 4", f.snapshots.changes)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 3 {
		t.Fatalf("files on disk after changes: %v, want the body, the change log and the confirmation", files)
	}

	restarted := restartedOnDisk(t, dir, fs.URL)
	snap, c := restarted.snapshots.current()
	if snap == nil || canonical(t, snap) != canonical(t, held) || !c.Round(0).Equal(confirmed.Round(0)) {
		t.Fatalf("restarted at %v confirmed %v, want revision %d confirmed %v", snap, c, held.revision, confirmed)
	}
	m.publish(fs, 2)
	if err := restarted.poll(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := fs.Answers(); got[len(got)-1] != "change" {
		t.Fatalf("after the restart the edge got a %s answer", got[len(got)-1])
	}

	// A torn last line: the replay stops before it, and the confirmation
	// (which names the newest snapshot) is not trusted.
	log := restarted.snapshots.disk.changesPath()
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(log, raw[:len(raw)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	torn := restartedOnDisk(t, dir, fs.URL)
	snap, c = torn.snapshots.current()
	if snap == nil || snap.revision != held.revision || c.After(time.Now().Add(-time.Hour)) {
		t.Fatalf("after a torn log: %v confirmed %v", snap, c)
	}
	if torn.snapshots.changes < compactChanges {
		t.Fatal("a damaged log would be appended to")
	}

	// Compaction: past compactChanges the log is written out whole.
	restarted.snapshots.diskMu.Lock()
	restarted.snapshots.changes = compactChanges
	restarted.snapshots.diskMu.Unlock()
	m.publish(fs, 1)
	if err := restarted.poll(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(log); !os.IsNotExist(err) {
		t.Fatalf("the change log outlived its compaction: %v", err)
	}
	held, _ = restarted.snapshots.current()
	again := restartedOnDisk(t, dir, fs.URL)
	if snap, c := again.snapshots.current(); snap == nil || canonical(t, snap) != canonical(t, held) || c.IsZero() {
		t.Fatalf("after compaction the restart holds %v confirmed %v", snap, c)
	}
}

// radixSort sorts as slices.Sort does, above and below its cut-over to
// a comparison sort, duplicates and extremes included.
func TestRadixSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 100, 1 << 12, 50_000} {
		xs := make([]uint64, n)
		for i := range xs {
			switch i % 7 {
			case 0:
				xs[i] = 0
			case 1:
				xs[i] = math.MaxUint64
			case 2:
				xs[i] = uint64(i % 13) // duplicates
			default:
				xs[i] = rng.Uint64()
			}
		}
		want := slices.Clone(xs)
		slices.Sort(want)
		radixSort(xs)
		if !slices.Equal(xs, want) {
			t.Fatalf("%d hashes: not sorted as slices.Sort sorts them", n)
		}
	}
}

// idHashes gives back every hash it gathered, sorted, whether they fit
// in its first chunk or span many, and starts over empty.
func TestIDHashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, minHashChunk, minHashChunk + 1, 3*maxHashChunk + 5} {
		var h idHashes
		want := make([]uint64, n)
		for i := range want {
			want[i] = rng.Uint64() % uint64(2*n+1) // duplicates among them
			h.add(want[i])
		}
		if h.n != n {
			t.Fatalf("%d hashes: counted %d", n, h.n)
		}
		slices.Sort(want)
		if got := h.sorted(); !slices.Equal(got, want) {
			t.Fatalf("%d hashes: not every one back, sorted", n)
		}
		if h.n != 0 || h.cur != nil || h.full != nil {
			t.Fatalf("%d hashes: not emptied", n)
		}
	}
}

// A secret listed twice is found however far apart the two are, when
// the builder's hashes span several chunks.
func TestDuplicateSecretAcrossChunks(t *testing.T) {
	const clients = maxHashChunk
	w := wire.Snapshot{Epoch: "e", Revision: 1}
	for i := range clients {
		w.Clients = append(w.Clients, wire.Client{ClientID: fmt.Sprintf("c%d", i), Secrets: []wire.Secret{
			{ID: fmt.Sprintf("s%d-a", i), Hash: secrethash.NewSHA256("a")},
			{ID: fmt.Sprintf("s%d-b", i), Hash: secrethash.NewSHA256("b")},
		}})
	}
	if _, err := newSnapshot(&w); err != nil {
		t.Fatalf("no duplicate: %v", err)
	}
	w.Clients[clients-1].Secrets[1].ID = w.Clients[0].Secrets[0].ID
	if _, err := newSnapshot(&w); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("a secret id of the first client given again to the last: %v", err)
	}
}
