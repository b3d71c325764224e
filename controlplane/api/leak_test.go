package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// Store suite: the leak loop's part of the store contract.

// The feed carries, per client, the generated secrets that died within
// the window; imported ones, older ones and live ones are no tombstones.
func testSnapshotTombstones(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	t0 := time.Date(2030, 1, 10, 0, 0, 0, 0, time.UTC)
	window := 24 * time.Hour
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	_, err := st.Update(ctx, func(tx store.Tx) error {
		for _, c := range []string{"a", "dead", "old"} {
			if err := tx.InsertClient(ctx, store.Client{ID: c, CreatedAt: t0.Add(-100 * time.Hour)}); err != nil {
				return err
			}
		}
		for _, s := range []store.Secret{
			{ID: "sec_live", ClientID: "a", Hash: "sha256:live"},
			{ID: "sec_revoked", ClientID: "a", Hash: "sha256:revoked"},
			{ID: "sec_expired", ClientID: "a", Hash: "sha256:expired", ExpiresAt: at(-time.Hour)},
			{ID: "sec_future", ClientID: "a", Hash: "sha256:future", ExpiresAt: at(time.Hour)},
			{ID: "sec_bcrypt", ClientID: "a", Hash: "$2b$04$imported"},
			{ID: "sec_only", ClientID: "dead", Hash: "sha256:only"},
			{ID: "sec_long_ago", ClientID: "old", Hash: "sha256:longago", ExpiresAt: at(-48 * time.Hour)},
			{ID: "sec_revoked_old", ClientID: "old", Hash: "sha256:revokedold"},
		} {
			s.Hint, s.CreatedAt = "x", t0.Add(-100*time.Hour)
			if err := tx.InsertSecret(ctx, s); err != nil {
				return err
			}
		}
		for id, when := range map[string]time.Time{
			"sec_revoked": t0.Add(-time.Minute), "sec_bcrypt": t0.Add(-time.Minute),
			"sec_only": t0.Add(-23 * time.Hour), "sec_revoked_old": t0.Add(-25 * time.Hour),
		} {
			if err := tx.Revoke(ctx, id, when); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	describe := func(snap wire.Snapshot) string {
		var out []string
		for _, c := range snap.Clients {
			var live, dead []string
			for _, s := range c.Secrets {
				live = append(live, s.ID)
			}
			for _, tb := range c.Tombstones {
				dead = append(dead, tb.ID+"="+tb.Hash)
			}
			out = append(out, c.ClientID+":"+strings.Join(live, ",")+"|"+strings.Join(dead, ","))
		}
		return strings.Join(out, " ")
	}
	snap, err := storeSnapshot(ctx, st, t0, window)
	if err != nil {
		t.Fatal(err)
	}
	want := "a:sec_future,sec_live|sec_expired=sha256:expired,sec_revoked=sha256:revoked dead:|sec_only=sha256:only"
	if got := describe(snap); got != want {
		t.Fatalf("snapshot with tombstones:\n got %s\nwant %s", got, want)
	}
	if snap.Clients[1].Secrets == nil {
		t.Fatal("a client with tombstones only has secrets null, want []")
	}
	// Off: the active secrets only, as before tombstones.
	snap, err = storeSnapshot(ctx, st, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(snap); got != "a:sec_future,sec_live|" {
		t.Fatalf("snapshot without tombstones: %s", got)
	}
	// An hour on, sec_future has expired: it is a tombstone now.
	snap, _ = storeSnapshot(ctx, st, t0.Add(2*time.Hour), window)
	if got := describe(snap); !strings.Contains(got, "sec_future=sha256:future") || strings.Contains(got, "a:sec_future") {
		t.Fatalf("after sec_future expired: %s", got)
	}
}

// Presented-after-revoke reports add up per secret; the last time and
// caller follow the newest; live secrets, unknown ones and other clients'
// are refused; the revision does not move.
func testRevokedUses(t *testing.T, k storeKit) {
	ctx := context.Background()
	st, t0 := k.openUsageFixture(t) // client c, secret sec_a (live)
	later := t0.Add(2 * time.Hour)
	_, err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertSecret(ctx, store.Secret{ID: "sec_exp", ClientID: "c", Hash: "h2", Hint: "y", CreatedAt: t0, ExpiresAt: &later}); err != nil {
			return err
		}
		return tx.Revoke(ctx, "sec_a", t0.Add(time.Hour))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, rev, _ := st.Revision(ctx)
	record := func(u wire.RevokedUse) (store.RecordedRevokedUse, error) {
		var r store.RecordedRevokedUse
		_, err := st.Update(ctx, func(tx store.Tx) error {
			var err error
			r, err = tx.RecordRevokedUse(ctx, u)
			return err
		})
		return r, err
	}
	r, err := record(wire.RevokedUse{ClientID: "c", SecretID: "sec_a", LastAt: t0.Add(3 * time.Hour), From: "192.0.2.1", Count: 3})
	if err != nil || r.Total != 3 || r.Hint != "x" {
		t.Fatalf("first report: %+v (%v)", r, err)
	}
	// Older report: counted, but the last time and caller stay.
	if r, err = record(wire.RevokedUse{ClientID: "c", SecretID: "sec_a", LastAt: t0.Add(2 * time.Hour), From: "192.0.2.2", Count: 2}); err != nil || r.Total != 5 {
		t.Fatalf("second report: %+v (%v)", r, err)
	}
	if _, err = record(wire.RevokedUse{ClientID: "c", SecretID: "sec_a", LastAt: t0.Add(4 * time.Hour), From: "192.0.2.4", Count: 1}); err != nil {
		t.Fatal(err)
	}
	for name, u := range map[string]wire.RevokedUse{
		"other client":          {ClientID: "other", SecretID: "sec_a", LastAt: t0.Add(5 * time.Hour), Count: 1},
		"unknown secret":        {ClientID: "c", SecretID: "sec_none", LastAt: t0.Add(5 * time.Hour), Count: 1},
		"not yet expired then":  {ClientID: "c", SecretID: "sec_exp", LastAt: t0.Add(time.Hour), Count: 1},
		"expired at the report": {ClientID: "c", SecretID: "sec_exp", LastAt: later, From: "192.0.2.9", Count: 7},
	} {
		_, err := record(u)
		if name == "expired at the report" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: %v, want ErrNotFound", name, err)
		}
	}
	secrets, err := st.Secrets(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	a, exp := secrets[0], secrets[1]
	if a.ID != "sec_a" || a.PresentedAfterRevoke != 6 || a.LastPresentedAfterRevokeAt == nil ||
		!a.LastPresentedAfterRevokeAt.Equal(t0.Add(4*time.Hour)) || a.LastPresentedAfterRevokeFrom != "192.0.2.4" {
		t.Fatalf("sec_a: %d, last %v from %q", a.PresentedAfterRevoke, a.LastPresentedAfterRevokeAt, a.LastPresentedAfterRevokeFrom)
	}
	if exp.PresentedAfterRevoke != 7 || exp.LastPresentedAfterRevokeFrom != "192.0.2.9" {
		t.Fatalf("sec_exp: %d from %q", exp.PresentedAfterRevoke, exp.LastPresentedAfterRevokeFrom)
	}
	if _, r, _ := st.Revision(ctx); r != rev {
		t.Fatalf("reports moved the revision from %d to %d", rev, r)
	}
}

// A secret is found by its stored hash; another hash finds nothing.
func testSecretByHash(t *testing.T, k storeKit) {
	e := k.newClientEnv(t)
	ns := e.MustGenerate("c")
	sec, err := e.Store.SecretByHash(context.Background(), secrethash.NewSHA256(ns.Plaintext))
	if err != nil || sec.ID != ns.Secret.ID || sec.ClientID != "c" {
		t.Fatalf("lookup: %+v (%v)", sec, err)
	}
	if _, err := e.Store.SecretByHash(context.Background(), "sha256:nothing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v, want ErrNotFound", err)
	}
}

// A leak report revokes an active secret in one transaction, audited
// with the URL; reported again, it is a true positive with nothing to
// do; a look-alike with a bad checksum is a false positive decided
// without any store lookup.
func testLeakReportRevokes(t *testing.T, k storeKit) {
	ctx := context.Background()
	counting := &countingStore{Store: k.openStore(t)}
	e := newEnvOn(t, counting, "")
	e.MustClient("c")
	leaked, kept := e.MustGenerate("c"), e.MustGenerate("c")
	who := rules.Actor{TokenID: "leak-token", Leak: true, RemoteIP: "192.0.2.7"}
	rev := e.Revision()
	url := "https://github.com/octo/app/blob/0123/config.yml"

	res, err := e.Svc.ReportLeak(ctx, who, rules.LeakReport{Token: leaked.Plaintext, URL: url})
	sum := sha256.Sum256([]byte(leaked.Plaintext))
	if err != nil || res != (rules.LeakResult{TokenHash: hex.EncodeToString(sum[:]), Label: rules.LabelTruePositive, Action: rules.LeakActionRevoked}) {
		t.Fatalf("report: %+v (%v)", res, err)
	}
	if e.Revision() != rev+1 {
		t.Fatalf("revision %d after the revocation, want %d", e.Revision(), rev+1)
	}
	secrets, _ := e.Store.Secrets(ctx, "c")
	i := cptest.IndexOfSecret(secrets, leaked.Secret.ID)
	if secrets[i].RevokedAt == nil || secrets[i].LeakReportedAt == nil || !secrets[cptest.IndexOfSecret(secrets, kept.Secret.ID)].Active(e.Clock.Now()) {
		t.Fatalf("after the report: %+v", secrets)
	}
	trail, err := e.Store.Audit(ctx, "c", 1)
	if err != nil || len(trail) != 1 || trail[0].Action != "secret.revoke" || trail[0].SecretID != leaked.Secret.ID ||
		trail[0].Who != "leak-token" || trail[0].Detail != "reason: leak_report; url: "+url {
		t.Fatalf("audit: %+v (%v)", trail, err)
	}

	// The events, committed with the revocation. (The counting wrapper
	// hides the store's outbox: read it underneath.)
	newest := func() []store.EventRecord {
		evs, err := counting.Store.(store.OutboxStore).Events(ctx, rules.MaxPageSize)
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(evs)
		return evs
	}
	evs := newest()
	types := eventTypes(evs)
	if len(types) < 2 || types[len(types)-2] != store.EventSecretLeakReported || types[len(types)-1] != store.EventSecretRevoked {
		t.Fatalf("events %v, want … secret.leak_reported, secret.revoked", types)
	}
	reported := storetest.EventData(t, e.Store, evs[len(evs)-2].ID)
	if reported["url"] != url || reported["action"] != rules.LeakActionRevoked || reported["secret_id"] != leaked.Secret.ID || reported["reported_by"] != "leak-token" {
		t.Fatalf("secret.leak_reported data %v", reported)
	}
	if revoked := storetest.EventData(t, e.Store, evs[len(evs)-1].ID); revoked["reason"] != "leak_report" {
		t.Fatalf("secret.revoked data %v", revoked)
	}

	// Again: true positive, nothing to do, nothing written.
	res, err = e.Svc.ReportLeak(ctx, who, rules.LeakReport{Token: leaked.Plaintext, URL: url})
	if err != nil || res.Label != rules.LabelTruePositive || res.Action != rules.LeakActionNone || e.Revision() != rev+1 || len(newest()) != len(evs) {
		t.Fatalf("second report: %+v (%v), revision %d, %d events", res, err, e.Revision(), len(newest()))
	}

	// A bad checksum: false positive, and the store is not asked.
	lookups := counting.lookups.Load()
	bad := []byte(kept.Plaintext)
	bad[10] ^= 1 // another base62 digit: the checksum no longer matches
	for _, tok := range []string{string(bad), "rgs_short", "", strings.Repeat("x", 60)} {
		res, err = e.Svc.ReportLeak(ctx, who, rules.LeakReport{Token: tok})
		if err != nil || res.Label != rules.LabelFalsePositive || res.Action != rules.LeakActionNone {
			t.Fatalf("look-alike: %+v (%v)", res, err)
		}
	}
	if n := counting.lookups.Load() - lookups; n != 0 {
		t.Fatalf("%d store lookups for tokens with bad checksums", n)
	}
	// A well-formed token that is no secret of ours: looked up, unknown.
	other, _ := rules.NewSecret("rgs_")
	if res, _ = e.Svc.ReportLeak(ctx, who, rules.LeakReport{Token: other}); res.Label != rules.LabelFalsePositive || counting.lookups.Load() != lookups+1 {
		t.Fatalf("unknown well-formed token: %+v, %d lookups", res, counting.lookups.Load()-lookups)
	}
}

// With leak_action flag the secret keeps working: the report is audited
// and the secret marked.
func testLeakReportFlags(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := newEnvOn(t, k.openStore(t), "", func(so *rules.ServiceOptions, _ *Options) { so.LeakAction = rules.LeakFlag })
	e.MustClient("c")
	ns := e.MustGenerate("c")
	rev := e.Revision()
	res, err := e.Svc.ReportLeak(ctx, rules.Actor{TokenID: "admin-token", Admin: true}, rules.LeakReport{Token: ns.Plaintext, URL: "https://example.com/paste"})
	if err != nil || res.Label != rules.LabelTruePositive || res.Action != rules.LeakActionFlagged {
		t.Fatalf("report: %+v (%v)", res, err)
	}
	secrets, _ := e.Store.Secrets(ctx, "c")
	if !secrets[0].Active(e.Clock.Now()) || secrets[0].LeakReportedAt == nil || e.Revision() != rev {
		t.Fatalf("flagged secret: %+v, revision %d → %d", secrets[0], rev, e.Revision())
	}
	trail, _ := e.Store.Audit(ctx, "c", 1)
	if len(trail) != 1 || trail[0].Action != "secret.leak_flag" || !strings.Contains(trail[0].Detail, "https://example.com/paste") {
		t.Fatalf("audit: %+v", trail)
	}
}

func init() {
	storeSuite = append(storeSuite, []struct {
		name string
		test func(*testing.T, storeKit)
	}{
		{"SnapshotTombstones", testSnapshotTombstones},
		{"RevokedUses", testRevokedUses},
		{"SecretByHash", testSecretByHash},
		{"LeakReportRevokes", testLeakReportRevokes},
		{"LeakReportFlags", testLeakReportFlags},
	}...)
}

// Usage batches with presented_after_revoke reports: merged per secret,
// one warn line each (ids, count, caller IP; never a secret), the
// metric, and the listing's fields.
func TestUsageRecordsPresentedAfterRevoke(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	dead, live := e.MustGenerate("c"), e.MustGenerate("c")
	ctx := context.Background()
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Root, "c", dead.Secret.ID); err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	before := testutil.ToFloat64(rules.Metrics.PresentedAfterRevoke)
	now := e.Clock.Now()
	r := e.edge("POST", wire.UsagePath, wire.Usage{Edge: "e1", RevokedUses: []wire.RevokedUse{
		{ClientID: "c", SecretID: dead.Secret.ID, LastAt: now.Add(-time.Minute), From: "::ffff:203.0.113.9", Count: 2},
		{ClientID: "c", SecretID: dead.Secret.ID, LastAt: now.Add(-2 * time.Minute), From: "203.0.113.8", Count: 3},
		{ClientID: "c", SecretID: live.Secret.ID, LastAt: now, From: "203.0.113.7", Count: 1}, // live: refused
	}})
	cptest.MustStatus(t, r, 204)
	if got := testutil.ToFloat64(rules.Metrics.PresentedAfterRevoke) - before; got != 5 {
		t.Fatalf("metric grew by %v, want 5", got)
	}
	warns := e.Audit.FilterMessage("a revoked or expired secret was presented at an edge").All()
	if len(warns) != 1 {
		t.Fatalf("%d warn lines, want 1 (one per secret per batch)", len(warns))
	}
	f := warns[0].ContextMap()
	if f["secret_id"] != dead.Secret.ID || f["count"] != int64(5) || f["from"] != "203.0.113.9" || f["edge"] != "e1" {
		t.Fatalf("warn line: %v", f)
	}
	if e.Revision() != rev {
		t.Fatal("the reports moved the revision")
	}
	// One event for the secret, in the same transaction as the count.
	var dead1 []store.EventRecord
	for _, ev := range e.events() {
		if ev.Type == store.EventSecretPresentedAfterRevoke {
			dead1 = append(dead1, ev)
		}
	}
	if len(dead1) != 1 || dead1[0].SecretID != dead.Secret.ID {
		t.Fatalf("presented_after_revoke events: %+v, want one for %s", dead1, dead.Secret.ID)
	}
	if d := storetest.EventData(t, e.Store, dead1[0].ID); d["count"] != float64(5) || d["from"] != "203.0.113.9" || d["edge"] != "e1" || d["hint"] != dead.Secret.Hint {
		t.Fatalf("event data %v", d)
	}
	var list struct {
		Secrets []Secret `json:"secrets"`
	}
	e.Admin("GET", "/v1/clients/c/secrets", nil).Decode(t, &list)
	got := list.Secrets[slices.IndexFunc(list.Secrets, func(s Secret) bool { return s.ID == dead.Secret.ID })]
	if got.PresentedAfterRevoke != 5 || got.LastPresentedAfterRevokeFrom == nil || *got.LastPresentedAfterRevokeFrom != "203.0.113.9" ||
		!got.LastPresentedAfterRevokeAt.Equal(now.Add(-time.Minute)) {
		t.Fatalf("listing: %+v", got)
	}
	if other := list.Secrets[slices.IndexFunc(list.Secrets, func(s Secret) bool { return s.ID == live.Secret.ID })]; other.PresentedAfterRevoke != 0 {
		t.Fatalf("a live secret was counted: %+v", other)
	}
	for _, entry := range e.Audit.All() {
		for _, v := range entry.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, dead.Plaintext) || strings.Contains(s, live.Plaintext)) {
				t.Fatal("a log line holds a secret")
			}
		}
	}
}
