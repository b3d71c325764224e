package controlplane

import (
	"context"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
)

// testCutoverStore: a client enters the rotations in progress when a
// secret is added beside an active one, and only then; Rotations reads its
// policy, active secrets and callers; a policy round-trips with "not set"
// kept apart from "off"; the deadline notice is recorded once; a client
// leaves the set by EndRotation or by being deleted; none of it moves the
// revision except the policy.
func testCutoverStore(t *testing.T, k storeKit) {
	ctx := context.Background()
	st := k.openStore(t)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	usageFixture(t, st, t0) // client c with sec_a
	insert := func(s store.Secret) {
		t.Helper()
		if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.InsertSecret(ctx, s) }); err != nil {
			t.Fatal(err)
		}
	}
	rotations := func(now time.Time) []store.Rotation {
		t.Helper()
		rs, err := st.Rotations(ctx, now, t0)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if rs := rotations(t0); len(rs) != 0 {
		t.Fatalf("one secret, yet rotations %+v", rs)
	}
	// A second client whose first secret expired: adding one is no rotation.
	expired := t0.Add(time.Minute)
	_, err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertClient(ctx, store.Client{ID: "d", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.InsertSecret(ctx, store.Secret{ID: "sec_d1", ClientID: "d", Hash: "h", Hint: "x", CreatedAt: t0, ExpiresAt: &expired})
	})
	if err != nil {
		t.Fatal(err)
	}
	insert(store.Secret{ID: "sec_d2", ClientID: "d", Hash: "h", Hint: "x", CreatedAt: t0.Add(2 * time.Minute)})
	insert(store.Secret{ID: "sec_b", ClientID: "c", Hash: "h", Hint: "y", CreatedAt: t0.Add(time.Minute)})
	if err := st.ApplyCallers(ctx, []store.CallerUse{callerUse("sec_a", "192.0.2.1", t0, t0.Add(time.Second), 2, 0),
		callerUse("sec_b", "192.0.2.1", t0.Add(2*time.Second), t0.Add(3*time.Second), 1, 0)}, 10); err != nil {
		t.Fatal(err)
	}
	rs := rotations(t0.Add(3 * time.Minute))
	if len(rs) != 1 || rs[0].ClientID != "c" || len(rs[0].Secrets) != 2 || rs[0].Secrets[0].ID != "sec_a" || rs[0].Secrets[1].ID != "sec_b" {
		t.Fatalf("rotations %+v, want client c with sec_a, sec_b", rs)
	}
	if p := rs[0].Policy; p.Auto != nil || p.Quiet != nil || p.Lookback != nil || p.Deadline != nil || p.OnDeadline != "" {
		t.Fatalf("a client that set nothing has policy %+v", p)
	}
	if c := rs[0].Callers; len(c["sec_a"]) != 1 || len(c["sec_b"]) != 1 || c["sec_b"][0].FirstSeen != t0.Add(2*time.Second) {
		t.Fatalf("callers %+v", c)
	}

	_, rev, _ := st.Revision(ctx)
	off, quiet := false, 90*time.Second
	set := store.CutoverPolicy{Auto: &off, Quiet: &quiet, OnDeadline: "revoke"}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.SetCutoverPolicy(ctx, "c", set) }); err != nil {
		t.Fatal(err)
	}
	got, err := st.CutoverPolicy(ctx, "c")
	if err != nil || got.Auto == nil || *got.Auto || got.Quiet == nil || *got.Quiet != quiet || got.Lookback != nil || got.OnDeadline != "revoke" {
		t.Fatalf("policy read back %+v (%v), want auto off, quiet %s, on_deadline revoke, the rest unset", got, err, quiet)
	}
	if rs := rotations(t0.Add(3 * time.Minute)); rs[0].Policy.Auto == nil || *rs[0].Policy.Auto {
		t.Fatalf("Rotations reads policy %+v", rs[0].Policy)
	}
	if _, err := st.CutoverPolicy(ctx, "nope"); err != store.ErrNotFound {
		t.Fatalf("policy of an unknown client: %v", err)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.SetCutoverPolicy(ctx, "nope", set) }); err != store.ErrNotFound {
		t.Fatalf("setting the policy of an unknown client: %v", err)
	}
	_, rev, _ = st.Revision(ctx)

	for i, want := range []bool{true, false} {
		var first bool
		if _, err := st.Update(ctx, func(tx store.Tx) (err error) {
			first, err = tx.MarkStalled(ctx, "sec_a", t0.Add(time.Hour))
			return err
		}); err != nil || first != want {
			t.Fatalf("MarkStalled #%d: %v (%v), want %v", i+1, first, err, want)
		}
	}
	secrets, _ := st.Secrets(ctx, "c")
	if s := secrets[0]; s.CutoverStalledAt == nil || !s.CutoverStalledAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("stalled at %v", s.CutoverStalledAt)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.EndRotation(ctx, "c") }); err != nil {
		t.Fatal(err)
	}
	if rs := rotations(t0); len(rs) != 0 {
		t.Fatalf("after EndRotation: %+v", rs)
	}
	if _, r, _ := st.Revision(ctx); r != rev {
		t.Fatalf("notices and the set moved the revision from %d to %d", rev, r)
	}
	insert(store.Secret{ID: "sec_c", ClientID: "c", Hash: "h", Hint: "z", CreatedAt: t0.Add(2 * time.Minute)})
	if rs := rotations(t0); len(rs) != 1 || len(rs[0].Secrets) != 3 {
		t.Fatalf("a third secret puts c back: %+v", rs)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.DeleteClient(ctx, "c") }); err != nil {
		t.Fatalf("deleting a client in rotation: %v", err)
	}
	if rs := rotations(t0); len(rs) != 0 {
		t.Fatalf("a deleted client stays in rotation: %+v", rs)
	}
}
