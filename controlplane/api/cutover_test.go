package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
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
	st, t0 := k.openUsageFixture(t) // client c with sec_a
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

func durationPtr(d time.Duration) *time.Duration { return &d }
func boolPtr(b bool) *bool                       { return &b }

// testCutoverThroughService walks a rotation with an injected clock:
// nothing while the newest is unused, the callers not moved named, nothing
// before quiet, then one revocation with its audit entry and events, and
// nothing more after.
func testCutoverThroughService(t *testing.T, sk storeKit) {
	e := sk.newEnv(t)
	k := cptest.Rotation{Env: e.Env, Ctx: context.Background()}
	old, newest := k.StartRotation("c1", "10.1.2.7", "10.1.9.44")
	k.SetPolicy("c1", store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(5 * time.Minute)})
	quietAt := k.Clock.Now().Add(4 * time.Minute) // last used a minute before the rotation

	if p := k.Pass(); p.Rotations != 1 || len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("newest unused: pass %+v", p)
	}
	k.Clock.Add(time.Second)
	k.Use("c1", newest, "10.1.2.7")
	st := k.State("c1")
	if st.Newest != newest || len(st.Secrets) != 1 || st.Secrets[0].SecretID != old || st.Secrets[0].State != cutover.Waiting ||
		!slices.Equal(st.Secrets[0].NotMoved, []string{"10.1.9.44"}) {
		t.Fatalf("after .7 moved: state %+v", st)
	}
	k.Clock.Add(time.Second)
	k.Use("c1", newest, "10.1.9.44")
	if p := k.Pass(); len(p.Revoked) != 0 || !p.Next.Equal(quietAt) {
		t.Fatalf("every caller moved but not quiet yet: pass %+v, want next at %v", p, quietAt)
	}
	k.Clock.Add(4 * time.Minute)
	if p := k.Pass(); !slices.Equal(p.Revoked, []string{old}) {
		t.Fatalf("finished: pass %+v, want %s revoked", p, old)
	}
	secrets, _ := e.Store.Secrets(k.Ctx, "c1")
	if i := cptest.IndexOfSecret(secrets, old); secrets[i].RevokedAt == nil {
		t.Fatal("the old secret is not revoked")
	}
	if i := cptest.IndexOfSecret(secrets, newest); secrets[i].RevokedAt != nil {
		t.Fatal("the newest secret was revoked")
	}
	audit, _ := e.Store.Audit(k.Ctx, "c1", 1)
	if a := audit[0]; a.Action != "secret.revoke" || a.Who != "cutover" || a.SecretID != old || a.Detail != "reason: cutover" {
		t.Fatalf("audit %+v", a)
	}
	done := k.Events(store.EventSecretCutoverCompleted)
	if len(done) != 1 || done[0]["secret_id"] != old || done[0]["newest_secret_id"] != newest ||
		fmt.Sprint(done[0]["callers"]) != "[10.1.2.7 10.1.9.44]" {
		t.Fatalf("cutover_completed events %v", done)
	}
	if rev := k.Events(store.EventSecretRevoked); len(rev) != 1 || rev[0]["reason"] != "cutover" {
		t.Fatalf("revoked events %v", rev)
	}
	if p := k.Pass(); len(p.Revoked) != 0 {
		t.Fatalf("second pass: %+v", p)
	}
	if p := k.Pass(); p.Rotations != 0 {
		t.Fatalf("the rotation did not end: %+v", p)
	}
}

// testCutoverOffAndStalled: auto off does nothing even when finished; a
// stalled rotation is reported once, kept, and revoked once on_deadline
// says revoke.
func testCutoverOffAndStalled(t *testing.T, sk storeKit) {
	e := sk.newEnv(t)
	k := cptest.Rotation{Env: e.Env, Ctx: context.Background()}
	old, newest := k.StartRotation("c2", "10.0.0.3")
	k.Use("c2", newest, "10.0.0.4") // another caller; .3 never moves
	k.Clock.Add(2 * time.Hour)
	st := k.State("c2")
	if st.Policy.Auto || st.Policy.Deadline != cutover.Default.Deadline || len(st.Secrets) != 1 || st.Secrets[0].State != cutover.Waiting {
		t.Fatalf("default policy state %+v", st)
	}
	k.SetPolicy("c2", store.CutoverPolicy{Deadline: durationPtr(time.Hour)}) // before the old one's expiry, a day after the rotation
	if st := k.State("c2"); st.Secrets[0].State != cutover.Stalled {
		t.Fatalf("past the default deadline: %+v", st.Secrets[0])
	}
	if p := k.Pass(); len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("auto off acted: %+v", p)
	}
	k.SetPolicy("c2", store.CutoverPolicy{Auto: boolPtr(true)})
	for i := range 2 {
		p := k.Pass()
		if len(p.Revoked) != 0 || (i == 0) != slices.Equal(p.Stalled, []string{old}) {
			t.Fatalf("pass %d: %+v", i+1, p)
		}
	}
	stalled := k.Events(store.EventSecretCutoverStalled)
	if len(stalled) != 1 || fmt.Sprint(stalled[0]["not_moved"]) != "[10.0.0.3]" || stalled[0]["newest_secret_id"] != newest || stalled[0]["last_used_at"] == nil {
		t.Fatalf("stalled events %v", stalled)
	}
	k.SetPolicy("c2", store.CutoverPolicy{OnDeadline: "revoke"})
	if p := k.Pass(); !slices.Equal(p.Revoked, []string{old}) || len(p.Stalled) != 0 {
		t.Fatalf("on_deadline revoke: %+v", p)
	}
	if rev := k.Events(store.EventSecretRevoked); len(rev) != 1 || rev[0]["reason"] != "cutover_deadline" {
		t.Fatalf("revoked events %v", rev)
	}
	if n := len(k.Events(store.EventSecretCutoverStalled)); n != 1 {
		t.Fatalf("%d stalled events, want 1", n)
	}
}

// testCutoverOnceAcrossReplicas: two control planes on one database run
// their passes at the same time, again and again; each finished secret is
// revoked once, and each event is written once.
func testCutoverOnceAcrossReplicas(t *testing.T, sk storeKit) {
	st, reopen := sk.open(t)
	e1 := newEnvOn(t, st, "")
	e2 := newEnvOn(t, reopen(t), "")
	k := cptest.Rotation{Env: e1.Env, Ctx: context.Background()}
	const clients = 8
	var olds []string
	for i := range clients {
		id := fmt.Sprintf("r%d", i)
		old, newest := k.StartRotation(id, "10.0.0.1")
		k.SetPolicy(id, store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(time.Minute), Deadline: durationPtr(time.Hour)})
		if i%2 == 0 { // half finish, half stall at the deadline and are revoked
			k.Use(id, newest, "10.0.0.1")
		} else {
			k.SetPolicy(id, store.CutoverPolicy{OnDeadline: "revoke"})
		}
		olds = append(olds, old)
	}
	k.Clock.Add(2 * time.Hour)
	e2.Clock.Add(e1.Clock.Now().Sub(e2.Clock.Now()))
	var wg sync.WaitGroup
	passes := make(chan rules.CutoverPass, 6)
	for _, e := range []*env{e1, e2, e1, e2, e1, e2} {
		wg.Go(func() {
			p, err := e.Svc.RunCutover(k.Ctx)
			if err != nil {
				t.Error(err)
			}
			passes <- p
		})
	}
	wg.Wait()
	close(passes)
	var revoked, stalled []string
	for p := range passes {
		revoked, stalled = append(revoked, p.Revoked...), append(stalled, p.Stalled...)
	}
	slices.Sort(revoked)
	if want := slices.Sorted(slices.Values(olds)); !slices.Equal(revoked, want) {
		t.Fatalf("revoked %v, want each of %v once", revoked, want)
	}
	if len(stalled) != clients/2 {
		t.Fatalf("stalled %v, want %d", stalled, clients/2)
	}
	for typ, want := range map[string]int{store.EventSecretRevoked: clients, store.EventSecretCutoverCompleted: clients / 2, store.EventSecretCutoverStalled: clients / 2} {
		if n := len(k.Events(typ)); n != want {
			t.Errorf("%d %s events, want %d", n, typ, want)
		}
	}
}

// TestCutoverAPI: GET answers the policy in force and the state of each
// older secret; PUT changes the fields it has, each bad value is 400
// invalid_request naming its field; owners may read and set it, others
// see no such client; a change is audited as client.cutover.
func TestCutoverAPI(t *testing.T) {
	e := newEnv(t, withAdmins("ada"))
	k := cptest.Rotation{Env: e.Env, Ctx: context.Background()}
	if _, err := e.Svc.CreateClient(k.Ctx, cptest.Root, "app", "", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	old := k.MustGenerate("app").Secret.ID
	k.Use("app", old, "10.1.2.7")
	k.Use("app", old, "10.1.9.44")
	r := e.Admin("GET", "/v1/clients/app/cutover", nil)
	cptest.MustStatus(t, r, 200)
	var got Cutover
	r.Decode(t, &got)
	if got.Auto || got.Quiet != "1h" || got.Lookback != "14d" || got.Deadline != "7d" || got.OnDeadline != "keep" || len(got.Secrets) != 0 || *got.NewestSecretID != old {
		t.Fatalf("defaults: %s", r.Body)
	}

	k.Clock.Add(time.Minute)
	ns, err := e.Svc.RotateSecret(k.Ctx, cptest.Root, "app", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k.Use("app", ns.Secret.ID, "10.1.2.7")
	r = e.DoAs("olive", "PUT", "/v1/clients/app/cutover", "", map[string]any{"auto": true, "quiet": "2s", "lookback": "1d12h"})
	cptest.MustStatus(t, r, 200)
	r.Decode(t, &got)
	if !got.Auto || got.Quiet != "2s" || got.Lookback != "36h" || got.Deadline != "7d" || len(got.Secrets) != 1 {
		t.Fatalf("after PUT: %s", r.Body)
	}
	s := got.Secrets[0]
	if s.SecretID != old || s.State != "waiting" || !slices.Equal(s.NotMoved, []string{"10.1.9.44"}) || !slices.Equal(s.Moved, []string{"10.1.2.7"}) ||
		!s.NewestUsed || s.LastUsedAt == nil || s.QuietUntil == nil || !s.QuietUntil.Equal(s.LastUsedAt.Add(2*time.Second)) ||
		s.DeadlineAt == nil || !s.DeadlineAt.Equal(ns.Secret.CreatedAt.Add(7*24*time.Hour)) {
		t.Fatalf("state: %s", r.Body)
	}
	r = e.DoAs("olive", "PUT", "/v1/clients/app/cutover", "", map[string]any{"on_deadline": "revoke"})
	cptest.MustStatus(t, r, 200)
	r.Decode(t, &got)
	if !got.Auto || got.Quiet != "2s" || got.OnDeadline != "revoke" {
		t.Fatalf("a PUT of one field changed others: %s", r.Body)
	}
	audit, _ := e.Store.Audit(k.Ctx, "app", 1)
	if a := audit[0]; a.Action != "client.cutover" || a.Who != "user:olive" || !strings.Contains(a.Detail, "auto on; quiet 2s; lookback 36h; deadline 7d; on_deadline revoke") {
		t.Fatalf("audit %+v", a)
	}

	for body, field := range map[string]string{
		`{"quiet": "soon"}`:          "quiet",
		`{"lookback": "-1h"}`:        "lookback",
		`{"deadline": 5}`:            "deadline",
		`{"on_deadline": "delete"}`:  "on_deadline",
		`{"auto": "yes"}`:            "auto",
		`{"grace": "1h"}`:            "grace",
		`{"quiet": "1h", "x": true}`: "x",
	} {
		r := e.Admin("PUT", "/v1/clients/app/cutover", body)
		cptest.MustStatus(t, r, 400)
		if m := r.JSON(t); m["error"] != "invalid_request" || !strings.Contains(fmt.Sprint(m["error_description"]), field) {
			t.Errorf("%s: %s, want invalid_request naming %s", body, r.Body, field)
		}
	}
	cptest.MustStatus(t, e.DoAs("mallory", "GET", "/v1/clients/app/cutover", "", nil), 404)
	cptest.MustStatus(t, e.DoAs("mallory", "PUT", "/v1/clients/app/cutover", "", `{"auto": false}`), 404)
	cptest.MustStatus(t, e.Admin("GET", "/v1/clients/nope/cutover", nil), 404)
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/app/cutover", nil), 405)
}

// TestCutoverNeedsCallers: with tombstone_window 0 no callers are kept, so
// nothing tells who moved: a pass revokes nothing, even with the newest
// secret used and the old one quiet.
func TestCutoverNeedsCallers(t *testing.T) {
	e := newEnv(t, func(o *rules.ServiceOptions, _ *Options) { o.TombstoneWindow = durationPtr(0) })
	k := cptest.Rotation{Env: e.Env, Ctx: context.Background()}
	old, newest := k.StartRotation("c", "10.0.0.1")
	k.SetPolicy("c", store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(time.Minute)})
	k.Use("c", newest, "10.0.0.2")
	k.Clock.Add(time.Hour)
	if p := k.Pass(); len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("pass without callers: %+v", p)
	}
	if secrets, _ := e.Store.Secrets(k.Ctx, "c"); secrets[cptest.IndexOfSecret(secrets, old)].RevokedAt != nil {
		t.Fatal("the old secret was revoked with no callers known")
	}
}
