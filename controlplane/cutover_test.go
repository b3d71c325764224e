package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
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

// cutoverKit drives a client's rotation through the rules with the env's
// clock.
type cutoverKit struct {
	*env
	ctx context.Context
}

var ownerActor = rules.Actor{TokenID: "test", Admin: true}

// use reports, as an edge's usage batch would, that ip used secret now.
func (k cutoverKit) use(clientID, secretID, ip string) {
	k.t.Helper()
	u := wire.Usage{Edge: "e1", Stamps: []wire.Stamp{{ClientID: clientID, SecretID: secretID, LastUsedAt: k.clock.Now(), From: ip}}}
	if _, err := k.svc.ApplyUsage(k.ctx, u); err != nil {
		k.t.Fatal(err)
	}
}

func (k cutoverKit) pass() rules.CutoverPass {
	k.t.Helper()
	p, err := k.svc.RunCutover(k.ctx)
	if err != nil {
		k.t.Fatal(err)
	}
	return p
}

func (k cutoverKit) setPolicy(clientID string, p store.CutoverPolicy) {
	k.t.Helper()
	if _, err := k.svc.SetCutover(k.ctx, ownerActor, clientID, p); err != nil {
		k.t.Fatal(err)
	}
}

func (k cutoverKit) state(clientID string) rules.CutoverState {
	k.t.Helper()
	st, err := k.svc.GetCutover(k.ctx, ownerActor, clientID)
	if err != nil {
		k.t.Fatal(err)
	}
	return st
}

// events returns the data of the stored events of type typ, oldest first.
func (k cutoverKit) events(typ string) []map[string]any {
	k.t.Helper()
	evs, err := k.store.(store.OutboxStore).Events(k.ctx, 1000)
	if err != nil {
		k.t.Fatal(err)
	}
	var out []map[string]any
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			out = append(out, storetest.EventData(k.t, k.store, evs[i].ID))
		}
	}
	return out
}

func durationPtr(d time.Duration) *time.Duration { return &d }
func boolPtr(b bool) *bool                       { return &b }

// startRotation creates a client used from ips on its first secret, then
// rotates it with a day's grace, and returns the old and the new secret.
func (k cutoverKit) startRotation(clientID string, ips ...string) (old, newest string) {
	k.t.Helper()
	k.mustClient(clientID)
	old = k.mustGenerate(clientID).Secret.ID
	for _, ip := range ips {
		k.use(clientID, old, ip)
	}
	k.clock.Add(time.Minute)
	ns, err := k.svc.RotateSecret(k.ctx, ownerActor, clientID, 24*time.Hour)
	if err != nil {
		k.t.Fatal(err)
	}
	return old, ns.Secret.ID
}

// testCutoverThroughService walks a rotation with an injected clock:
// nothing while the newest is unused, the callers not moved named, nothing
// before quiet, then one revocation with its audit entry and events, and
// nothing more after.
func testCutoverThroughService(t *testing.T, sk storeKit) {
	e := sk.newEnv(t)
	k := cutoverKit{e, context.Background()}
	old, newest := k.startRotation("c1", "10.1.2.7", "10.1.9.44")
	k.setPolicy("c1", store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(5 * time.Minute)})
	quietAt := k.clock.Now().Add(4 * time.Minute) // last used a minute before the rotation

	if p := k.pass(); p.Rotations != 1 || len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("newest unused: pass %+v", p)
	}
	k.clock.Add(time.Second)
	k.use("c1", newest, "10.1.2.7")
	st := k.state("c1")
	if st.Newest != newest || len(st.Secrets) != 1 || st.Secrets[0].SecretID != old || st.Secrets[0].State != cutover.Waiting ||
		!slices.Equal(st.Secrets[0].NotMoved, []string{"10.1.9.44"}) {
		t.Fatalf("after .7 moved: state %+v", st)
	}
	k.clock.Add(time.Second)
	k.use("c1", newest, "10.1.9.44")
	if p := k.pass(); len(p.Revoked) != 0 || !p.Next.Equal(quietAt) {
		t.Fatalf("every caller moved but not quiet yet: pass %+v, want next at %v", p, quietAt)
	}
	k.clock.Add(4 * time.Minute)
	if p := k.pass(); !slices.Equal(p.Revoked, []string{old}) {
		t.Fatalf("finished: pass %+v, want %s revoked", p, old)
	}
	secrets, _ := e.store.Secrets(k.ctx, "c1")
	if i := indexOfSecret(secrets, old); secrets[i].RevokedAt == nil {
		t.Fatal("the old secret is not revoked")
	}
	if i := indexOfSecret(secrets, newest); secrets[i].RevokedAt != nil {
		t.Fatal("the newest secret was revoked")
	}
	audit, _ := e.store.Audit(k.ctx, "c1", 1)
	if a := audit[0]; a.Action != "secret.revoke" || a.Who != "cutover" || a.SecretID != old || a.Detail != "reason: cutover" {
		t.Fatalf("audit %+v", a)
	}
	done := k.events(store.EventSecretCutoverCompleted)
	if len(done) != 1 || done[0]["secret_id"] != old || done[0]["newest_secret_id"] != newest ||
		fmt.Sprint(done[0]["callers"]) != "[10.1.2.7 10.1.9.44]" {
		t.Fatalf("cutover_completed events %v", done)
	}
	if rev := k.events(store.EventSecretRevoked); len(rev) != 1 || rev[0]["reason"] != "cutover" {
		t.Fatalf("revoked events %v", rev)
	}
	if p := k.pass(); len(p.Revoked) != 0 {
		t.Fatalf("second pass: %+v", p)
	}
	if p := k.pass(); p.Rotations != 0 {
		t.Fatalf("the rotation did not end: %+v", p)
	}
}

// testCutoverOffAndStalled: auto off does nothing even when finished; a
// stalled rotation is reported once, kept, and revoked once on_deadline
// says revoke.
func testCutoverOffAndStalled(t *testing.T, sk storeKit) {
	e := sk.newEnv(t)
	k := cutoverKit{e, context.Background()}
	old, newest := k.startRotation("c2", "10.0.0.3")
	k.use("c2", newest, "10.0.0.4") // another caller; .3 never moves
	k.clock.Add(2 * time.Hour)
	st := k.state("c2")
	if st.Policy.Auto || st.Policy.Deadline != cutover.Default.Deadline || len(st.Secrets) != 1 || st.Secrets[0].State != cutover.Waiting {
		t.Fatalf("default policy state %+v", st)
	}
	k.setPolicy("c2", store.CutoverPolicy{Deadline: durationPtr(time.Hour)}) // before the old one's expiry, a day after the rotation
	if st := k.state("c2"); st.Secrets[0].State != cutover.Stalled {
		t.Fatalf("past the default deadline: %+v", st.Secrets[0])
	}
	if p := k.pass(); len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("auto off acted: %+v", p)
	}
	k.setPolicy("c2", store.CutoverPolicy{Auto: boolPtr(true)})
	for i := range 2 {
		p := k.pass()
		if len(p.Revoked) != 0 || (i == 0) != slices.Equal(p.Stalled, []string{old}) {
			t.Fatalf("pass %d: %+v", i+1, p)
		}
	}
	stalled := k.events(store.EventSecretCutoverStalled)
	if len(stalled) != 1 || fmt.Sprint(stalled[0]["not_moved"]) != "[10.0.0.3]" || stalled[0]["newest_secret_id"] != newest || stalled[0]["last_used_at"] == nil {
		t.Fatalf("stalled events %v", stalled)
	}
	k.setPolicy("c2", store.CutoverPolicy{OnDeadline: "revoke"})
	if p := k.pass(); !slices.Equal(p.Revoked, []string{old}) || len(p.Stalled) != 0 {
		t.Fatalf("on_deadline revoke: %+v", p)
	}
	if rev := k.events(store.EventSecretRevoked); len(rev) != 1 || rev[0]["reason"] != "cutover_deadline" {
		t.Fatalf("revoked events %v", rev)
	}
	if n := len(k.events(store.EventSecretCutoverStalled)); n != 1 {
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
	k := cutoverKit{e1, context.Background()}
	const clients = 8
	var olds []string
	for i := range clients {
		id := fmt.Sprintf("r%d", i)
		old, newest := k.startRotation(id, "10.0.0.1")
		k.setPolicy(id, store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(time.Minute), Deadline: durationPtr(time.Hour)})
		if i%2 == 0 { // half finish, half stall at the deadline and are revoked
			k.use(id, newest, "10.0.0.1")
		} else {
			k.setPolicy(id, store.CutoverPolicy{OnDeadline: "revoke"})
		}
		olds = append(olds, old)
	}
	k.clock.Add(2 * time.Hour)
	e2.clock.Add(e1.clock.Now().Sub(e2.clock.Now()))
	var wg sync.WaitGroup
	passes := make(chan rules.CutoverPass, 6)
	for _, e := range []*env{e1, e2, e1, e2, e1, e2} {
		wg.Go(func() {
			p, err := e.svc.RunCutover(k.ctx)
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
		if n := len(k.events(typ)); n != want {
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
	k := cutoverKit{e, context.Background()}
	if _, err := e.svc.CreateClient(k.ctx, ownerActor, "app", "", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	old := k.mustGenerate("app").Secret.ID
	k.use("app", old, "10.1.2.7")
	k.use("app", old, "10.1.9.44")
	r := e.admin("GET", "/v1/clients/app/cutover", nil)
	mustStatus(t, r, 200)
	var got cutoverJSON
	r.decode(t, &got)
	if got.Auto || got.Quiet != "1h" || got.Lookback != "14d" || got.Deadline != "7d" || got.OnDeadline != "keep" || len(got.Secrets) != 0 || *got.NewestSecretID != old {
		t.Fatalf("defaults: %s", r.body)
	}

	k.clock.Add(time.Minute)
	ns, err := e.svc.RotateSecret(k.ctx, ownerActor, "app", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k.use("app", ns.Secret.ID, "10.1.2.7")
	r = e.doAs("olive", "PUT", "/v1/clients/app/cutover", "", map[string]any{"auto": true, "quiet": "2s", "lookback": "1d12h"})
	mustStatus(t, r, 200)
	r.decode(t, &got)
	if !got.Auto || got.Quiet != "2s" || got.Lookback != "36h" || got.Deadline != "7d" || len(got.Secrets) != 1 {
		t.Fatalf("after PUT: %s", r.body)
	}
	s := got.Secrets[0]
	if s.SecretID != old || s.State != "waiting" || !slices.Equal(s.NotMoved, []string{"10.1.9.44"}) || !slices.Equal(s.Moved, []string{"10.1.2.7"}) ||
		!s.NewestUsed || s.LastUsedAt == nil || s.QuietUntil == nil || !s.QuietUntil.Equal(s.LastUsedAt.Add(2*time.Second)) ||
		s.DeadlineAt == nil || !s.DeadlineAt.Equal(ns.Secret.CreatedAt.Add(7*24*time.Hour)) {
		t.Fatalf("state: %s", r.body)
	}
	r = e.doAs("olive", "PUT", "/v1/clients/app/cutover", "", map[string]any{"on_deadline": "revoke"})
	mustStatus(t, r, 200)
	r.decode(t, &got)
	if !got.Auto || got.Quiet != "2s" || got.OnDeadline != "revoke" {
		t.Fatalf("a PUT of one field changed others: %s", r.body)
	}
	audit, _ := e.store.Audit(k.ctx, "app", 1)
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
		r := e.admin("PUT", "/v1/clients/app/cutover", body)
		mustStatus(t, r, 400)
		if m := r.json(t); m["error"] != "invalid_request" || !strings.Contains(fmt.Sprint(m["error_description"]), field) {
			t.Errorf("%s: %s, want invalid_request naming %s", body, r.body, field)
		}
	}
	mustStatus(t, e.doAs("mallory", "GET", "/v1/clients/app/cutover", "", nil), 404)
	mustStatus(t, e.doAs("mallory", "PUT", "/v1/clients/app/cutover", "", `{"auto": false}`), 404)
	mustStatus(t, e.admin("GET", "/v1/clients/nope/cutover", nil), 404)
	mustStatus(t, e.admin("DELETE", "/v1/clients/app/cutover", nil), 405)
}

// TestCutoverNeedsCallers: with tombstone_window 0 no callers are kept, so
// nothing tells who moved: a pass revokes nothing, even with the newest
// secret used and the old one quiet.
func TestCutoverNeedsCallers(t *testing.T) {
	e := newEnv(t, func(o *rules.ServiceOptions, _ *APIOptions) { o.TombstoneWindow = durationPtr(0) })
	k := cutoverKit{e, context.Background()}
	old, newest := k.startRotation("c", "10.0.0.1")
	k.setPolicy("c", store.CutoverPolicy{Auto: boolPtr(true), Quiet: durationPtr(time.Minute)})
	k.use("c", newest, "10.0.0.2")
	k.clock.Add(time.Hour)
	if p := k.pass(); len(p.Revoked)+len(p.Stalled) != 0 {
		t.Fatalf("pass without callers: %+v", p)
	}
	if secrets, _ := e.store.Secrets(k.ctx, "c"); secrets[indexOfSecret(secrets, old)].RevokedAt != nil {
		t.Fatal("the old secret was revoked with no callers known")
	}
}
