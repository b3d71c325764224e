package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// storeKit opens stores of one kind for the shared store suite.
type storeKit struct {
	name string
	// database makes a new, empty database and returns a function that
	// opens a handle on it: the first store, then a second process, a
	// replica, or the same store after a restart. Handles are closed when
	// the test ends; closing one earlier is allowed.
	database func(t *testing.T) func(t *testing.T) store.Store
}

// open returns a new, empty store and the function that opens another
// handle on its database.
func (k storeKit) open(t *testing.T) (store.Store, func(t *testing.T) store.Store) {
	t.Helper()
	reopen := k.database(t)
	return reopen(t), reopen
}

// openStore returns a new, empty store.
func (k storeKit) openStore(t *testing.T) store.Store {
	t.Helper()
	st, _ := k.open(t)
	return st
}

// openTwo returns two handles on one new store: what two replicas have.
func (k storeKit) openTwo(t *testing.T) (store.Store, store.Store) {
	t.Helper()
	st, reopen := k.open(t)
	return st, reopen(t)
}

// inTurn runs n goroutines at once, the even ones on handle a and the odd
// ones on handle b, and waits for them all.
func inTurn(n int, a, b store.Store, run func(i int, st store.Store)) {
	var wg sync.WaitGroup
	for i := range n {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() { run(i, st) })
	}
	wg.Wait()
}

// newEnv is a control plane on a new store of the kit's kind.
func (k storeKit) newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	return newEnvOn(t, k.openStore(t), "", opts...)
}

// newClientEnv is newEnv with client c created: the client most of the
// suite's rules tests work on.
func (k storeKit) newClientEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := k.newEnv(t, opts...)
	e.MustClient("c")
	return e
}

// storeSuite is every test a Store implementation must pass: the store
// contract itself and the rotation rules over it. Each store runs all of
// it (TestSQLiteStore, TestPostgresStore), so the two cannot drift.
var storeSuite = []struct {
	name string
	test func(*testing.T, storeKit)
}{
	// The store contract.
	{"EpochFixedAtCreation", testEpochFixedAtCreation},
	{"DataSurvivesReopen", testDataSurvivesReopen},
	{"RevisionMovesOnlyOnWrites", testRevisionMovesOnlyOnWrites},
	{"RevisionMonotonicUnderConcurrency", testRevisionMonotonicUnderConcurrency},
	{"UsageMaxSemantics", testUsageMaxSemantics},
	{"UsageFromTwoInstances", testUsageFromTwoInstances},
	{"SnapshotActiveOnly", testSnapshotActiveOnly},
	{"ClientsOrderedBytewise", testClientsOrderedBytewise},
	{"PingFailsAfterClose", testPingFailsAfterClose},
	{"ServicesShareTheStoreNotifier", testServicesShareTheStoreNotifier},
	{"ChangesEqualSnapshots", testChangesEqualSnapshots},
	{"ChangesOnlyWhileLogged", testChangesOnlyWhileLogged},
	{"ChangesFeed", testChangesFeed},
	{"FeedBodyIsMarshal", testFeedBodyIsMarshal},
	// The rules over it (service_test.go).
	{"GenerateUpToMax", testGenerateUpToMax},
	{"MaxActiveSecretsConfigurable", testMaxActiveSecretsConfigurable},
	{"StatusesOverTime", testStatusesOverTime},
	{"RotateWithGrace", testRotateWithGrace},
	{"RotateWithoutGraceRevokesOthers", testRotateWithoutGraceRevokesOthers},
	{"RotateIsAtomic", testRotateIsAtomic},
	{"Revoke", testRevoke},
	{"DeleteClient", testDeleteClient},
	{"ImportHash", testImportHash},
	{"ImportPlaintext", testImportPlaintext},
	{"ConcurrentGenerateNeverExceedsMax", testConcurrentGenerateNeverExceedsMax},
	{"ConcurrentGenerateAcrossInstances", testConcurrentGenerateAcrossInstances},
	{"ConcurrentRotateNeverExceedsMax", testConcurrentRotateNeverExceedsMax},
	{"EveryChangeIsPublished", testEveryChangeIsPublished},
	{"ApplyUsageMergesAndClamps", testApplyUsageMergesAndClamps},
	{"LabelSecret", testLabelSecret},
	// Owners and roles (roles_test.go).
	{"RolesAndActions", testRolesAndActions},
	// Callers and allowed networks (callers_test.go).
	{"CallersStore", testCallersStore},
	{"CallersFromTwoInstances", testCallersFromTwoInstances},
	{"NetworksInSnapshot", testNetworksInSnapshot},
	{"CallersThroughService", testCallersThroughService},
	{"CallersWindow", testCallersWindow},
	// The automatic cut-over (cutover_test.go).
	{"CutoverStore", testCutoverStore},
	{"CutoverThroughService", testCutoverThroughService},
	{"CutoverOffAndStalled", testCutoverOffAndStalled},
	{"CutoverOnceAcrossReplicas", testCutoverOnceAcrossReplicas},
	// The webhook outbox (outbox_test.go).
	{"EventsCommitWithTheChange", testEventsCommitWithTheChange},
	{"ClaimsAreExclusive", testClaimsAreExclusive},
	{"DeliveredOncePerFleet", testDeliveredOncePerFleet},
	{"ExpiryRemindersOnce", testExpiryRemindersOnce},
	// Delivery sinks (sink_test.go).
	{"SinkWebhook", testSinkWebhook},
	{"SinkScheduledRotation", testSinkScheduledRotation},
	{"SinkReplicasDeliverOnce", testSinkReplicasDeliverOnce},
	// Public keys and certificates (credentials_test.go).
	{"PublicKeyCredentials", testPublicKeyCredentials},
}

// runStoreSuite runs the shared suite against one kind of store. The tests
// run in parallel: each has a store of its own.
func runStoreSuite(t *testing.T, k storeKit) {
	for _, tc := range storeSuite {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, k)
		})
	}
}

func testEpochFixedAtCreation(t *testing.T, k storeKit) {
	ctx := context.Background()
	st, reopen := k.open(t)
	epoch, rev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(epoch) != 16 || strings.Contains(epoch, ".") || rev != 0 {
		t.Fatalf("new store: epoch %q rev %d", epoch, rev)
	}
	// Another handle, as after a restart or on a replica, keeps the epoch
	// and migrates nothing again.
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.InsertClient(ctx, store.Client{ID: "c", CreatedAt: time.Now()}) }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st2 := reopen(t)
	epoch2, rev2, err := st2.Revision(ctx)
	if err != nil || epoch2 != epoch || rev2 != 1 {
		t.Fatalf("reopened: %q/%d (%v), want %q/1", epoch2, rev2, err, epoch)
	}
	// Another database is another lifetime: another epoch.
	if e, _, _ := k.openStore(t).Revision(ctx); e == epoch {
		t.Fatal("two stores share an epoch")
	}
}

func testDataSurvivesReopen(t *testing.T, k storeKit) {
	ctx := context.Background()
	st, reopen := k.open(t)
	e := newEnvOn(t, st, "")
	e.MustClient("survivor")
	ns := e.MustGenerate("survivor")
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Stamps: []wire.Stamp{{ClientID: "survivor", SecretID: ns.Secret.ID, LastUsedAt: e.Clock.Now(), From: "192.0.2.1"}}}); err != nil {
		t.Fatal(err)
	}
	epoch, rev, _ := st.Revision(ctx)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := reopen(t)
	epoch2, rev2, err := st2.Revision(ctx)
	if err != nil || epoch2 != epoch || rev2 != rev {
		t.Fatalf("after reopen: %q/%d (%v), want %q/%d", epoch2, rev2, err, epoch, rev)
	}
	secrets, err := st2.Secrets(ctx, "survivor")
	if err != nil || len(secrets) != 1 {
		t.Fatalf("after reopen: %d secrets (%v)", len(secrets), err)
	}
	got := secrets[0]
	if got.ID != ns.Secret.ID || got.Hash != ns.Secret.Hash || got.Hint != ns.Secret.Hint ||
		!got.CreatedAt.Equal(ns.Secret.CreatedAt) || got.LastUsedAt == nil || !got.LastUsedAt.Equal(e.Clock.Now()) ||
		got.LastUsedFrom != "192.0.2.1" || got.ExpiresAt != nil || got.RevokedAt != nil {
		t.Fatalf("after reopen the secret record differs: id %s hint %s", got.ID, got.Hint)
	}
	c, err := st2.Client(ctx, "survivor")
	if err != nil || !c.CreatedAt.Equal(e.Clock.Now()) {
		t.Fatalf("after reopen: client %+v (%v)", c, err)
	}
}

func testRevisionMovesOnlyOnWrites(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	rev := func() int64 {
		_, r, err := st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	now := time.Now().UTC()
	r, err := st.Update(ctx, func(tx store.Tx) error { return tx.InsertClient(ctx, store.Client{ID: "a", CreatedAt: now}) })
	if err != nil || r != 1 || rev() != 1 {
		t.Fatalf("insert client: returned %d (%v), stored %d; want 1", r, err, rev())
	}
	// A transaction that reads only does not move it.
	r, err = st.Update(ctx, func(tx store.Tx) error { _, err := tx.LockClient(ctx, "a"); return err })
	if err != nil || r != 1 || rev() != 1 {
		t.Fatalf("read-only update: returned %d (%v), stored %d; want 1", r, err, rev())
	}
	// A failed transaction is rolled back whole, revision included.
	boom := errors.New("boom")
	_, err = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertClient(ctx, store.Client{ID: "b", CreatedAt: now}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || rev() != 1 {
		t.Fatalf("failed update: %v, revision %d", err, rev())
	}
	if _, err := st.Client(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rolled-back client exists: %v", err)
	}
	// Domain errors.
	_, err = st.Update(ctx, func(tx store.Tx) error { return tx.InsertClient(ctx, store.Client{ID: "a", CreatedAt: now}) })
	if !errors.Is(err, store.ErrClientExists) {
		t.Fatalf("duplicate client: %v", err)
	}
	for name, fn := range map[string]func(store.Tx) error{
		"lock":   func(tx store.Tx) error { _, err := tx.LockClient(ctx, "nope"); return err },
		"delete": func(tx store.Tx) error { return tx.DeleteClient(ctx, "nope") },
		"expire": func(tx store.Tx) error { return tx.SetExpiry(ctx, "sec_nope", now) },
		"revoke": func(tx store.Tx) error { return tx.Revoke(ctx, "sec_nope", now) },
	} {
		if _, err := st.Update(ctx, fn); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing row: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := st.Secrets(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Secrets of a missing client: %v", err)
	}
	if _, err := st.Client(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Client of a missing client: %v", err)
	}
	if rev() != 1 {
		t.Fatalf("failed writes moved the revision to %d", rev())
	}
}

// Writers on two handles get distinct, gapless revisions, and a reader
// never sees the revision go backwards.
func testRevisionMonotonicUnderConcurrency(t *testing.T, k storeKit) {
	ctx := context.Background()
	st1, st2 := k.openTwo(t)
	const writers = 20
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() {
		last := int64(-1)
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			_, r, err := st2.Revision(ctx)
			if err != nil {
				readerDone <- err
				return
			}
			if r < last {
				readerDone <- fmt.Errorf("revision went back from %d to %d", last, r)
				return
			}
			last = r
		}
	}()
	revs := make([]int64, writers)
	inTurn(writers, st1, st2, func(i int, st store.Store) {
		r, err := st.Update(ctx, func(tx store.Tx) error {
			return tx.InsertClient(ctx, store.Client{ID: fmt.Sprintf("c%02d", i), CreatedAt: time.Now()})
		})
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
		revs[i] = r
	})
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	seen := make(map[int64]bool)
	for _, r := range revs {
		if r < 1 || r > writers || seen[r] {
			t.Fatalf("revisions returned %v: want each of 1..%d once", revs, writers)
		}
		seen[r] = true
	}
	if _, r, _ := st1.Revision(ctx); r != writers {
		t.Fatalf("final revision %d, want %d", r, writers)
	}
}

// usageFixture stores client c with secret sec_a in st and returns the
// time they were created at.
func usageFixture(t *testing.T, st store.Store) time.Time {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertClient(ctx, store.Client{ID: "c", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.InsertSecret(ctx, store.Secret{ID: "sec_a", ClientID: "c", Hash: "h", Hint: "x", CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	return t0
}

// openUsageFixture returns a new store holding usageFixture's client c
// and secret sec_a, and the time they were created at.
func (k storeKit) openUsageFixture(t *testing.T) (store.Store, time.Time) {
	t.Helper()
	st := k.openStore(t)
	return st, usageFixture(t, st)
}

// checkLastUsed fails unless sec_a of client c was last used at from.
func checkLastUsed(t *testing.T, st store.Store, at time.Time, from string) {
	t.Helper()
	secrets, err := st.Secrets(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	s := secrets[0]
	if s.LastUsedAt == nil || !s.LastUsedAt.Equal(at) || s.LastUsedFrom != from {
		t.Fatalf("last used %v from %q, want %v from %q", s.LastUsedAt, s.LastUsedFrom, at, from)
	}
}

func testUsageMaxSemantics(t *testing.T, k storeKit) {
	ctx := context.Background()
	st, t0 := k.openUsageFixture(t)
	_, rev, _ := st.Revision(ctx)
	apply := func(at time.Time, from string) int {
		n, err := st.ApplyUsage(ctx, []wire.Stamp{{ClientID: "c", SecretID: "sec_a", LastUsedAt: at, From: from}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if apply(t0.Add(time.Hour), "192.0.2.1") != 1 {
		t.Fatal("first stamp not applied")
	}
	checkLastUsed(t, st, t0.Add(time.Hour), "192.0.2.1")
	if apply(t0.Add(time.Minute), "192.0.2.2") != 0 { // older: ignored
		t.Fatal("an older stamp was applied")
	}
	checkLastUsed(t, st, t0.Add(time.Hour), "192.0.2.1")
	if apply(t0.Add(time.Hour), "192.0.2.3") != 0 { // same: idempotent
		t.Fatal("a repeated stamp was applied")
	}
	checkLastUsed(t, st, t0.Add(time.Hour), "192.0.2.1")
	apply(t0.Add(2*time.Hour), "192.0.2.4")
	checkLastUsed(t, st, t0.Add(2*time.Hour), "192.0.2.4")
	// The first use stays the first stamp applied.
	if secrets, _ := st.Secrets(ctx, "c"); secrets[0].FirstUsedAt == nil || !secrets[0].FirstUsedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("first used %v, want %v", secrets[0].FirstUsedAt, t0.Add(time.Hour))
	}
	// Unknown secret, or the right secret under the wrong client: ignored.
	n, err := st.ApplyUsage(ctx, []wire.Stamp{
		{ClientID: "c", SecretID: "sec_unknown", LastUsedAt: t0.Add(3 * time.Hour)},
		{ClientID: "other", SecretID: "sec_a", LastUsedAt: t0.Add(3 * time.Hour)},
	})
	if err != nil || n != 0 {
		t.Fatalf("stamps for unknown secrets: %d updated (%v)", n, err)
	}
	checkLastUsed(t, st, t0.Add(2*time.Hour), "192.0.2.4")
	if n, err := st.ApplyUsage(ctx, nil); err != nil || n != 0 {
		t.Fatalf("empty batch: %d (%v)", n, err)
	}
	if _, r, _ := st.Revision(ctx); r != rev {
		t.Fatalf("usage moved the revision from %d to %d", rev, r)
	}
}

// Edges report to whichever replica they reach, in any order and again
// after a retry: the newest stamp wins wherever it lands.
func testUsageFromTwoInstances(t *testing.T, k storeKit) {
	ctx := context.Background()
	st1, st2 := k.openTwo(t)
	t0 := usageFixture(t, st1)
	newest := t0.Add(50 * time.Minute)
	inTurn(50, st1, st2, func(i int, st store.Store) {
		// Every stamp twice, as a retried batch would be.
		at := t0.Add(time.Duration(i+1) * time.Minute)
		from := fmt.Sprintf("192.0.2.%d", i+1)
		for range 2 {
			if _, err := st.ApplyUsage(ctx, []wire.Stamp{{ClientID: "c", SecretID: "sec_a", LastUsedAt: at, From: from}}); err != nil {
				t.Errorf("usage: %v", err)
			}
		}
	})
	checkLastUsed(t, st1, newest, "192.0.2.50")
	checkLastUsed(t, st2, newest, "192.0.2.50")
}

func testSnapshotActiveOnly(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	later, earlier := t0.Add(time.Hour), t0.Add(-time.Hour)
	_, err := st.Update(ctx, func(tx store.Tx) error {
		for _, c := range []string{"b", "a", "empty"} {
			if err := tx.InsertClient(ctx, store.Client{ID: c, CreatedAt: earlier}); err != nil {
				return err
			}
		}
		for _, s := range []store.Secret{
			{ID: "sec_2", ClientID: "b", Hash: "h2", CreatedAt: earlier},
			{ID: "sec_1", ClientID: "b", Hash: "h1", CreatedAt: earlier, ExpiresAt: &later},
			{ID: "sec_3", ClientID: "a", Hash: "h3", CreatedAt: earlier},
			{ID: "sec_4", ClientID: "a", Hash: "h4", CreatedAt: earlier, ExpiresAt: &earlier},
			{ID: "sec_5", ClientID: "a", Hash: "h5", CreatedAt: earlier},
			{ID: "sec_6", ClientID: "a", Hash: "h6", CreatedAt: earlier, ExpiresAt: &t0},
		} {
			if err := tx.InsertSecret(ctx, s); err != nil {
				return err
			}
		}
		return tx.Revoke(ctx, "sec_5", earlier)
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := storeSnapshot(ctx, st, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 1 || snap.Epoch == "" {
		t.Fatalf("snapshot at %q/%d", snap.Epoch, snap.Revision)
	}
	var got []string
	for _, c := range snap.Clients {
		for _, s := range c.Secrets {
			exp := ""
			if s.ExpiresAt != nil {
				exp = "+exp"
				if !s.ExpiresAt.Equal(later) {
					t.Fatalf("%s expires at %v, want %v", s.ID, s.ExpiresAt, later)
				}
			}
			got = append(got, c.ClientID+"/"+s.ID+"/"+s.Hash+exp)
		}
	}
	want := "a/sec_3/h3 b/sec_1/h1+exp b/sec_2/h2"
	if strings.Join(got, " ") != want {
		t.Fatalf("snapshot holds %v, want %s", got, want)
	}
	empty := k.openStore(t)
	snap, err = storeSnapshot(ctx, empty, t0, 0)
	if err != nil || snap.Clients == nil || len(snap.Clients) != 0 {
		t.Fatalf("empty store: snapshot clients %v (%v), want an empty list", snap.Clients, err)
	}
}

// Client ids sort bytewise on every store, whatever a database's locale
// would say, so that pages never overlap or skip.
func testClientsOrderedBytewise(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	ids := []string{"b", "B", "a", "A", "_x", "a-b", "ab", "Z", "~", "0"}
	_, err := st.Update(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			if err := tx.InsertClient(ctx, store.Client{ID: id, Name: "n " + id, CreatedAt: time.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for {
		page, err := st.Clients(ctx, "", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			if c.Name != "n "+c.ID {
				t.Fatalf("client %q has name %q", c.ID, c.Name)
			}
			got = append(got, c.ID)
		}
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].ID
	}
	want := "0 A B Z _x a a-b ab b ~"
	if strings.Join(got, " ") != want {
		t.Fatalf("clients in order %v, want %s", got, want)
	}
}

func testPingFailsAfterClose(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := st.Ping(ctx); err == nil {
		t.Fatal("a closed store answers Ping")
	}
}

// Every Service over one store publishes to, and waits on, the store's own
// notifier: a change through one wakes the others' feed requests.
func testServicesShareTheStoreNotifier(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	ns, ok := st.(store.NotifyingStore)
	if !ok {
		t.Fatalf("the %s store does not own a notifier", k.name)
	}
	one, err := rules.NewService(ctx, st, rules.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	two, err := rules.NewService(ctx, st, rules.ServiceOptions{MaxActiveSecrets: 3})
	if err != nil {
		t.Fatal(err)
	}
	if one.Notifier() != ns.Notifier() || two.Notifier() != ns.Notifier() {
		t.Fatal("a Service over the store has a notifier of its own")
	}
	_, _, changed := two.Notifier().Current()
	if _, err := one.CreateClient(ctx, cptest.Who, "c", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a change through one Service did not reach the other's waiters")
	}
}
