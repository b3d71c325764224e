package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// withWindow sets tombstone_window.
func withWindow(d time.Duration) envOption {
	return func(s *rules.ServiceOptions, _ *Options) { s.TombstoneWindow = &d }
}

func callerUse(secretID, ip string, first, last time.Time, requests, refused int64) store.CallerUse {
	return store.CallerUse{ClientID: "c", SecretID: secretID, Caller: store.Caller{IP: ip, FirstSeen: first, LastSeen: last, Requests: requests, Refused: refused}}
}

// testCallersStore: a (secret, IP) pair merges (first seen the earlier,
// last seen the later, counts added), unknown secrets and wrong clients
// take nothing, a secret keeps its newest callers (the unlisted row
// aside), reads filter by last seen, pruning deletes the old, the revision
// never moves, and deleting the client takes its callers along.
func testCallersStore(t *testing.T, k storeKit) {
	ctx := context.Background()
	st, t0 := k.openUsageFixture(t)
	_, rev, _ := st.Revision(ctx)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	apply := func(uses ...store.CallerUse) {
		t.Helper()
		if err := st.ApplyCallers(ctx, uses, 3); err != nil {
			t.Fatal(err)
		}
	}
	apply(callerUse("sec_a", "192.0.2.1", at(10), at(20), 5, 0),
		callerUse("sec_a", "2001:db8::1", at(11), at(11), 1, 1))
	apply(callerUse("sec_a", "192.0.2.1", at(5), at(15), 2, 1), // earlier first, older last
		store.CallerUse{ClientID: "other", SecretID: "sec_a", Caller: store.Caller{IP: "192.0.2.66", FirstSeen: at(1), LastSeen: at(1), Requests: 1}},
		callerUse("sec_nope", "192.0.2.67", at(1), at(1), 1, 0))
	got, err := st.Callers(ctx, []string{"sec_a"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Caller{
		{IP: "192.0.2.1", FirstSeen: at(5), LastSeen: at(20), Requests: 7, Refused: 1},
		{IP: "2001:db8::1", FirstSeen: at(11), LastSeen: at(11), Requests: 1, Refused: 1},
	}
	if !slices.Equal(got["sec_a"], want) || len(got) != 1 {
		t.Fatalf("callers %+v, want %+v", got, want)
	}

	// Bounded: three callers kept, the newest by last seen; the row of
	// unlisted requests does not count and stays.
	apply(callerUse("sec_a", "", at(1), at(1), 900, 0),
		callerUse("sec_a", "192.0.2.2", at(30), at(30), 1, 0),
		callerUse("sec_a", "192.0.2.3", at(31), at(31), 1, 0))
	got, _ = st.Callers(ctx, []string{"sec_a"}, t0)
	var ips []string
	for _, c := range got["sec_a"] {
		ips = append(ips, c.IP)
	}
	if !slices.Equal(ips, []string{"192.0.2.3", "192.0.2.2", "192.0.2.1", ""}) {
		t.Fatalf("after the bound: callers %q", ips)
	}

	if got, _ := st.Callers(ctx, []string{"sec_a", "sec_nope"}, at(25)); len(got["sec_a"]) != 2 {
		t.Fatalf("callers seen since %v: %+v", at(25), got)
	}
	if n, err := st.PruneCallers(ctx, at(25)); err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	if got, _ := st.Callers(ctx, []string{"sec_a"}, t0); len(got["sec_a"]) != 2 {
		t.Fatalf("after pruning: %+v", got)
	}
	if _, r, _ := st.Revision(ctx); r != rev {
		t.Fatalf("callers moved the revision from %d to %d", rev, r)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.DeleteClient(ctx, "c") }); err != nil {
		t.Fatalf("deleting a client with callers: %v", err)
	}
	if got, _ := st.Callers(ctx, []string{"sec_a"}, t0); len(got["sec_a"]) != 0 {
		t.Fatalf("a deleted client's callers remain: %+v", got)
	}
}

// testCallersFromTwoInstances: edges report to any replica at once; every
// request is counted once.
func testCallersFromTwoInstances(t *testing.T, k storeKit) {
	ctx := context.Background()
	st1, st2 := k.openTwo(t)
	t0 := usageFixture(t, st1)
	inTurn(20, st1, st2, func(i int, st store.Store) {
		uses := []store.CallerUse{
			callerUse("sec_a", "192.0.2.1", t0.Add(time.Duration(i)*time.Second), t0.Add(time.Duration(i)*time.Second), 3, 1),
			callerUse("sec_a", fmt.Sprintf("198.51.100.%d", i%4), t0, t0, 1, 0),
		}
		if err := st.ApplyCallers(ctx, uses, rules.MaxCallersPerSecret); err != nil {
			t.Errorf("callers: %v", err)
		}
	})
	got, err := st2.Callers(ctx, []string{"sec_a"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, c := range got["sec_a"] {
		total += c.Requests
		if c.IP == "192.0.2.1" && (c.Requests != 60 || c.Refused != 20 || !c.FirstSeen.Equal(t0) || !c.LastSeen.Equal(t0.Add(19*time.Second))) {
			t.Fatalf("192.0.2.1: %+v", c)
		}
	}
	if len(got["sec_a"]) != 5 || total != 80 {
		t.Fatalf("%d callers, %d requests; want 5 and 80", len(got["sec_a"]), total)
	}
}

// testNetworksInSnapshot: a client's networks and mode are stored, read
// back, carried in the snapshot (with a new revision) and audited; an
// owner may set them on their client, a stranger learns nothing.
func testNetworksInSnapshot(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	e.MustClient("open")
	e.MustGenerate("c")
	e.MustGenerate("open")
	rev := e.Revision()
	c, err := e.Svc.SetNetworks(ctx, cptest.Who, "c", []string{"2001:db8::/32", "10.0.0.0/8", "10.1.0.0/16"}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "2001:db8::/32"}
	if !slices.Equal(c.AllowedCIDRs, want) || !c.NetworksReportOnly || e.Revision() != rev+1 {
		t.Fatalf("set networks: %+v, revision %d (was %d)", c, e.Revision(), rev)
	}
	if got, _, _ := e.Svc.GetClient(ctx, cptest.Who, "c"); !slices.Equal(got.AllowedCIDRs, want) || !got.NetworksReportOnly {
		t.Fatalf("read back: %+v", got)
	}
	snap, err := e.Svc.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range snap.Clients {
		switch sc.ClientID {
		case "c":
			if !slices.Equal(sc.AllowedCIDRs, want) || !sc.NetworksReportOnly {
				t.Fatalf("snapshot of c: %+v", sc)
			}
		case "open":
			if sc.AllowedCIDRs != nil || sc.NetworksReportOnly {
				t.Fatalf("snapshot of a client without networks: %+v", sc)
			}
		}
	}
	// An edge following changes gets the client's networks too.
	d, ok, err := e.Svc.Changes(ctx, rev)
	if err != nil || !ok || len(d.Changed) != 1 || d.Changed[0].ClientID != "c" || !slices.Equal(d.Changed[0].AllowedCIDRs, want) || !d.Changed[0].NetworksReportOnly {
		t.Fatalf("changes since %d: %+v ok=%v (%v)", rev, d, ok, err)
	}
	// The same again writes nothing; clearing allows anywhere.
	if _, err := e.Svc.SetNetworks(ctx, cptest.Who, "c", want, true); err != nil || e.Revision() != rev+1 {
		t.Fatalf("an unchanged set moved the revision to %d (%v)", e.Revision(), err)
	}
	if c, err := e.Svc.SetNetworks(ctx, cptest.Who, "c", nil, false); err != nil || len(c.AllowedCIDRs) != 0 || c.NetworksReportOnly {
		t.Fatalf("clear: %+v %v", c, err)
	}
	if _, err := e.Svc.SetNetworks(ctx, cptest.Who, "c", []string{"10.0.0.1/8"}, false); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("host bits set: %v", err)
	}
	if _, err := e.Svc.SetNetworks(ctx, cptest.Who, "nobody", nil, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown client: %v", err)
	}
	// Owners may set their client's networks; others get not found.
	if _, err := e.Svc.EditOwners(ctx, cptest.Who, "c", rules.OwnersEdit{Add: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	alice, bob := rules.Actor{TokenID: "user:alice", User: "alice"}, rules.Actor{TokenID: "user:bob", User: "bob"}
	if _, err := e.Svc.SetNetworks(ctx, alice, "c", []string{"192.0.2.0/24"}, false); err != nil {
		t.Fatalf("owner: %v", err)
	}
	if _, err := e.Svc.SetNetworks(ctx, bob, "c", nil, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stranger: %v", err)
	}
	entries, err := e.Store.Audit(ctx, "c", 10)
	if err != nil || len(entries) == 0 || entries[0].Action != "client.networks" || entries[0].Who != "user:alice" || entries[0].Detail != "allowed: 192.0.2.0/24" {
		t.Fatalf("audit trail: %+v (%v)", entries, err)
	}
}

// testCallersThroughService is the usage ingest end to end below HTTP: a
// batch's callers are recorded one write per pair, future times clamped,
// a batch from an older edge (stamps only) records each stamp's caller,
// the listing tells per caller whether it moved to the newest secret,
// and the suggestion covers exactly the callers of active secrets.
func testCallersThroughService(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	old := e.MustGenerate("c").Secret.ID
	now := e.Clock.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d).Truncate(time.Millisecond) }
	apply := func(u wire.Usage) {
		t.Helper()
		if _, err := e.Svc.ApplyUsage(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	// A new edge: callers beside the stamp, with other IPs counted.
	apply(wire.Usage{Edge: "new", Stamps: []wire.Stamp{{ClientID: "c", SecretID: old, LastUsedAt: ago(time.Minute), From: "192.0.2.1"}},
		Callers: []wire.SecretCallers{{ClientID: "c", SecretID: old, OtherRequests: 40, OtherRefused: 2, IPs: []wire.Caller{
			{IP: "192.0.2.1", FirstAt: ago(time.Hour), LastAt: ago(time.Minute), Requests: 10},
			{IP: "::ffff:192.0.2.2", FirstAt: ago(time.Hour), LastAt: now.Add(time.Hour), Requests: 4},
			{IP: "not an ip", FirstAt: ago(time.Hour), LastAt: ago(time.Hour), Requests: 4},
		}}}})
	// An older edge: stamps only.
	apply(wire.Usage{Edge: "old", Stamps: []wire.Stamp{{ClientID: "c", SecretID: old, LastUsedAt: ago(2 * time.Minute), From: "192.0.2.3"}}})

	e.Clock.Add(time.Second)
	// Rotate: 192.0.2.1 moves to the new secret; 192.0.2.2 uses both
	// (it used the old one after its first use of the new); 192.0.2.3
	// stays.
	rotated, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newID := rotated.Secret.ID
	now = e.Clock.Now()
	apply(wire.Usage{Edge: "new", Callers: []wire.SecretCallers{{ClientID: "c", SecretID: newID, IPs: []wire.Caller{
		{IP: "192.0.2.1", FirstAt: now, LastAt: now, Requests: 1},
		{IP: "192.0.2.2", FirstAt: ago(30 * time.Minute), LastAt: now, Requests: 1},
	}}}})

	list, err := e.Svc.ListCallers(ctx, cptest.Who, "c", old)
	if err != nil {
		t.Fatal(err)
	}
	if list.Newest != newID || list.Unlisted == nil || list.Unlisted.Requests != 40 || list.Unlisted.Refused != 2 {
		t.Fatalf("listing: newest %q, unlisted %+v", list.Newest, list.Unlisted)
	}
	type row struct {
		ip               string
		requests         int64
		onNewest, moved  bool
		lastSeenIsNowish bool
	}
	var rows []row
	for _, c := range list.Callers {
		rows = append(rows, row{c.IP, c.Requests, c.OnNewest, c.Moved, !c.LastSeen.After(now)})
	}
	wantRows := []row{
		{"192.0.2.2", 4, true, false, true}, // its future last seen was clamped to the time of the batch
		{"192.0.2.1", 10, true, true, true},
		{"192.0.2.3", 1, false, false, true},
	}
	if !slices.Equal(rows, wantRows) {
		t.Fatalf("callers of the old secret:\n%+v\nwant\n%+v", rows, wantRows)
	}
	if l, err := e.Svc.ListCallers(ctx, cptest.Who, "c", newID); err != nil || len(l.Callers) != 2 || l.Callers[0].OnNewest || l.Callers[0].Moved {
		t.Fatalf("callers of the newest secret: %+v (%v)", l, err)
	}

	sug, err := e.Svc.SuggestNetworks(ctx, cptest.Who, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sug.CIDRs, []string{"192.0.2.1/32", "192.0.2.2/31"}) || sug.Callers != 3 || sug.Unlisted != 40 {
		t.Fatalf("suggestion %+v", sug)
	}
	// Within 90s, only the callers seen since (not 192.0.2.3).
	if sug, _ := e.Svc.SuggestNetworks(ctx, cptest.Who, "c", 90*time.Second); !slices.Equal(sug.CIDRs, []string{"192.0.2.1/32", "192.0.2.2/32"}) {
		t.Fatalf("suggestion within 90s: %+v", sug)
	}
	// Revoked secrets' callers are no ground for a suggestion.
	if _, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", 0); err != nil {
		t.Fatal(err)
	}
	if sug, _ := e.Svc.SuggestNetworks(ctx, cptest.Who, "c", 0); len(sug.CIDRs) != 0 {
		t.Fatalf("suggestion from revoked secrets only: %+v", sug)
	}

	for _, bad := range []string{"sec_x", "", "nope"} {
		if _, err := e.Svc.ListCallers(ctx, cptest.Who, "c", bad); !errors.Is(err, rules.ErrInvalid) {
			t.Fatalf("secret id %q: %v", bad, err)
		}
	}
	if _, err := e.Svc.ListCallers(ctx, cptest.Who, "c", "sec_00000000000000000000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown secret: %v", err)
	}
	if _, err := e.Svc.ListCallers(ctx, rules.Actor{TokenID: "user:bob", User: "bob"}, "c", old); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a stranger's listing: %v", err)
	}
}

// testCallersWindow: callers past tombstone_window are no longer listed,
// and are pruned; a window of 0 keeps none at all.
func testCallersWindow(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t, withWindow(time.Hour))
	sec := e.MustGenerate("c").Secret.ID
	now := e.Clock.Now()
	batch := func(ip string, at time.Time) wire.Usage {
		return wire.Usage{Callers: []wire.SecretCallers{{ClientID: "c", SecretID: sec, IPs: []wire.Caller{{IP: ip, FirstAt: at, LastAt: at, Requests: 1}}}}}
	}
	for _, u := range []wire.Usage{batch("192.0.2.1", now.Add(-2*time.Hour)), batch("192.0.2.2", now)} {
		if _, err := e.Svc.ApplyUsage(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	list, err := e.Svc.ListCallers(ctx, cptest.Who, "c", sec)
	if err != nil || len(list.Callers) != 1 || list.Callers[0].IP != "192.0.2.2" {
		t.Fatalf("within an hour: %+v (%v)", list.Callers, err)
	}
	e.Clock.Add(2 * time.Hour)
	if _, err := e.Svc.ApplyUsage(ctx, batch("192.0.2.3", e.Clock.Now())); err != nil { // the next batch prunes
		t.Fatal(err)
	}
	if got, _ := e.Store.Callers(ctx, []string{sec}, time.Time{}); len(got[sec]) != 1 || got[sec][0].IP != "192.0.2.3" {
		t.Fatalf("after pruning the store holds %+v", got[sec])
	}

	off := k.newEnv(t, withWindow(0))
	off.MustClient("c")
	sec = off.MustGenerate("c").Secret.ID
	if _, err := off.Svc.ApplyUsage(ctx, batch("192.0.2.1", off.Clock.Now())); err != nil {
		t.Fatal(err)
	}
	if got, _ := off.Store.Callers(ctx, []string{sec}, time.Time{}); len(got[sec]) != 0 {
		t.Fatalf("tombstone_window 0 kept %+v", got[sec])
	}
}

// benchmarkCallersIngest applies, per iteration, one edge flush: 40
// secrets (20 clients × 2) used from 50 caller IPs each, as the usage
// ingest would, and reports the writes it cost: one stamp per secret,
// one upsert per (secret, IP) pair, and one trim per secret — O(distinct
// pairs), whatever the number of requests behind them.
func benchmarkCallersIngest(b *testing.B, st store.Store) {
	const clients, perClient, ips = 20, 2, 50
	ctx := context.Background()
	counted := &countingWrites{Store: st}
	svc, err := rules.NewService(ctx, counted, rules.ServiceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	admin := rules.Actor{TokenID: "bench", Admin: true}
	type sec struct{ client, id string }
	var secrets []sec
	for i := range clients {
		id := fmt.Sprintf("bench-%02d", i)
		if _, err := svc.CreateClient(ctx, admin, id, "", nil); err != nil {
			b.Fatal(err)
		}
		for range perClient {
			ns, err := svc.GenerateSecret(ctx, admin, id, rules.GenerateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			secrets = append(secrets, sec{id, ns.Secret.ID})
		}
	}
	batch := func(at time.Time) wire.Usage {
		u := wire.Usage{Edge: "bench"}
		for _, s := range secrets {
			u.Stamps = append(u.Stamps, wire.Stamp{ClientID: s.client, SecretID: s.id, LastUsedAt: at, From: "10.0.0.1"})
			sc := wire.SecretCallers{ClientID: s.client, SecretID: s.id}
			for j := range ips {
				sc.IPs = append(sc.IPs, wire.Caller{IP: fmt.Sprintf("10.0.%d.%d", j/250, j%250+1), FirstAt: at.Add(-time.Second), LastAt: at, Requests: 30})
			}
			u.Callers = append(u.Callers, sc)
		}
		return u
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	counted.reset()
	b.ResetTimer()
	for b.Loop() {
		at = at.Add(time.Second)
		if _, err := svc.ApplyUsage(ctx, batch(at)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	flushes := float64(counted.flushes.Load())
	b.ReportMetric(float64(counted.pairs.Load())/flushes, "pairs/flush")
	b.ReportMetric(float64(counted.stamps.Load())/flushes, "stamps/flush")
	b.ReportMetric(float64(counted.pairs.Load()+counted.stamps.Load()+counted.trims.Load())/flushes, "statements/flush")
	b.ReportMetric(float64(len(secrets)*ips*30), "requests/flush")
	got, err := st.Callers(ctx, []string{secrets[0].id}, time.Time{})
	if err != nil || len(got[secrets[0].id]) != ips {
		b.Fatalf("%d callers kept for a secret (%v), want %d", len(got[secrets[0].id]), err, ips)
	}
}

// countingWrites counts what the usage ingest hands the store.
type countingWrites struct {
	store.Store
	flushes, stamps, pairs, trims atomic.Int64
}

func (c *countingWrites) reset() {
	c.flushes.Store(0)
	c.stamps.Store(0)
	c.pairs.Store(0)
	c.trims.Store(0)
}

func (c *countingWrites) ApplyUsage(ctx context.Context, stamps []wire.Stamp) (int, error) {
	c.flushes.Add(1)
	c.stamps.Add(int64(len(stamps)))
	return c.Store.ApplyUsage(ctx, stamps)
}

func (c *countingWrites) ApplyCallers(ctx context.Context, uses []store.CallerUse, keep int) error {
	c.pairs.Add(int64(len(uses)))
	trimmed := map[string]bool{} // one trim per secret of the batch
	for _, u := range uses {
		trimmed[u.SecretID] = true
	}
	c.trims.Add(int64(len(trimmed)))
	return c.Store.ApplyCallers(ctx, uses, keep)
}

func BenchmarkCallersIngestSQLite(b *testing.B) {
	st, _ := storetest.SQLite(b)
	benchmarkCallersIngest(b, st)
}

func BenchmarkCallersIngestPostgres(b *testing.B) {
	benchmarkCallersIngest(b, storetest.PostgresStore(b))
}

// TestCallersPerBatchBounded: a batch listing more IPs for one secret
// than the store keeps writes at most MaxCallersPerSecret pairs for it;
// the rest are counted as unlisted requests.
func TestCallersPerBatchBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.MustClient("c")
	sec := e.MustGenerate("c").Secret.ID
	counted := &countingWrites{Store: e.Store}
	svc, err := rules.NewService(ctx, counted, rules.ServiceOptions{Now: e.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	now := e.Clock.Now()
	sc := wire.SecretCallers{ClientID: "c", SecretID: sec, OtherRequests: 3}
	for i := range rules.MaxCallersPerSecret + 100 {
		sc.IPs = append(sc.IPs, wire.Caller{IP: fmt.Sprintf("10.0.%d.%d", i/256, i%256), FirstAt: now, LastAt: now, Requests: 2})
	}
	if _, err := svc.ApplyUsage(ctx, wire.Usage{Callers: []wire.SecretCallers{sc}}); err != nil {
		t.Fatal(err)
	}
	if n := counted.pairs.Load(); n != rules.MaxCallersPerSecret+1 {
		t.Fatalf("%d pairs written, want %d and the unlisted row", n, rules.MaxCallersPerSecret)
	}
	list, err := svc.ListCallers(ctx, cptest.Who, "c", sec)
	if err != nil || len(list.Callers) != rules.MaxCallersPerSecret || list.Unlisted == nil || list.Unlisted.Requests != 203 {
		t.Fatalf("listed %d, unlisted %+v (%v)", len(list.Callers), list.Unlisted, err)
	}
}
