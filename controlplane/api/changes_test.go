package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// applyChanges applies a change to a full snapshot's clients, as an edge
// does: each changed client replaced whole, each removed one dropped.
func applyChanges(clients map[string]string, d wire.Delta) {
	for _, c := range d.Changed {
		raw, _ := json.Marshal(c)
		clients[c.ClientID] = string(raw)
	}
	for _, id := range d.Removed {
		delete(clients, id)
	}
}

// snapshotClients reads the full snapshot as client id → JSON.
func snapshotClients(t *testing.T, e *env) (map[string]string, int64) {
	t.Helper()
	snap, err := e.Svc.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range snap.Clients {
		raw, _ := json.Marshal(c)
		out[c.ClientID] = string(raw)
	}
	return out, snap.Revision
}

// randomChange makes one random change through the rules: create or
// delete a client, generate, rotate (with and without grace), revoke, or
// let time pass so that secrets expire.
func randomChange(t *testing.T, e *env, rng *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	admin := cptest.Root
	id := fmt.Sprintf("client-%02d", rng.IntN(12))
	var err error
	switch rng.IntN(7) {
	case 0:
		_, err = e.Svc.CreateClient(ctx, admin, id, "", nil)
	case 1:
		err = e.Svc.DeleteClient(ctx, admin, id)
	case 2, 3:
		_, err = e.Svc.GenerateSecret(ctx, admin, id, rules.GenerateOptions{})
	case 4:
		_, err = e.Svc.RotateSecret(ctx, admin, id, time.Duration(rng.IntN(3))*time.Minute)
	case 5:
		var secrets []store.Secret
		if secrets, err = e.Store.Secrets(ctx, id); err == nil && len(secrets) > 0 {
			_, err = e.Svc.RevokeSecret(ctx, admin, id, secrets[rng.IntN(len(secrets))].ID)
		}
	default:
		e.Clock.Add(time.Duration(rng.IntN(90)) * time.Second)
	}
	if err != nil && !strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "exists") &&
		!strings.Contains(err.Error(), "too many") && !strings.Contains(err.Error(), "revoked") {
		t.Logf("change: %v", err) // refused by the rules: no change, as in production
	}
}

// dropExpired removes secrets past their expiry from a client's JSON, and
// the client when none is left: what a full snapshot built now would
// list. An edge enforces expiry itself, so a change answer may still list
// secrets that expired since the client last changed.
func dropExpired(t *testing.T, clients map[string]string, now time.Time) map[string]string {
	out := map[string]string{}
	for id, raw := range clients {
		var c wire.Client
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			t.Fatal(err)
		}
		c.Secrets = slices.DeleteFunc(c.Secrets, func(s wire.Secret) bool { return s.ExpiresAt != nil && !s.ExpiresAt.After(now) })
		if len(c.Secrets) > 0 {
			b, _ := json.Marshal(c)
			out[id] = string(b)
		}
	}
	return out
}

// testChangesEqualSnapshots is a property test over random changes made
// through the rules: the changes since any earlier revision, applied to
// the full snapshot of that revision, give the full snapshot of now.
func testChangesEqualSnapshots(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	rng := rand.New(rand.NewPCG(7, 7))
	type kept struct {
		rev     int64
		clients map[string]string
	}
	var history []kept
	for round := range 80 {
		randomChange(t, e, rng)
		if round%3 != 0 {
			continue
		}
		clients, rev := snapshotClients(t, e)
		history = append(history, kept{rev, clients})
		for _, h := range []kept{history[0], history[len(history)/2], history[len(history)-1]} {
			d, ok, err := e.Svc.Changes(context.Background(), h.rev)
			if err != nil || !ok {
				t.Fatalf("changes since %d: ok %v, %v", h.rev, ok, err)
			}
			if d.Since != h.rev || d.Revision != rev {
				t.Fatalf("changes since %d answered as %d→%d, want →%d", h.rev, d.Since, d.Revision, rev)
			}
			got := map[string]string{}
			for id, c := range h.clients {
				got[id] = c
			}
			applyChanges(got, d)
			got = dropExpired(t, got, e.Clock.Now())
			want := dropExpired(t, clients, e.Clock.Now())
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("round %d: since %d + changes\n%v\nfull snapshot at %d\n%v", round, h.rev, got, rev, want)
			}
		}
	}
}

// testChangesOnlyWhileLogged: a revision ahead of the store, or one the
// log was pruned past, is no base for changes; a revocation is one
// client's change, whatever the number of clients.
func testChangesOnlyWhileLogged(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	ctx := context.Background()
	for i := range 5 {
		e.MustClient(fmt.Sprintf("c%d", i))
		e.MustGenerate(fmt.Sprintf("c%d", i))
	}
	rev := e.Revision()
	sec := e.MustGenerate("c3")
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Root, "c3", sec.Secret.ID); err != nil {
		t.Fatal(err)
	}
	d, ok, err := e.Svc.Changes(ctx, rev)
	if err != nil || !ok || len(d.Changed) != 1 || d.Changed[0].ClientID != "c3" || len(d.Changed[0].Secrets) != 1 || len(d.Removed) != 0 {
		t.Fatalf("changes after a generate and a revoke: %+v ok %v %v", d, ok, err)
	}
	if _, ok, _ := e.Svc.Changes(ctx, e.Revision()+1); ok {
		t.Fatal("changes since a revision ahead of the store")
	}
	if d, ok, _ := e.Svc.Changes(ctx, e.Revision()); !ok || len(d.Changed)+len(d.Removed) != 0 {
		t.Fatalf("changes since now: %+v", d)
	}
	// A revision written without its log (an older control plane on the
	// same database) is a gap.
	gapFrom := e.Revision()
	e.MustClient("logged")
	_, err = e.Store.Update(ctx, func(tx store.Tx) error {
		_, err := tx.(store.RawTx).Exec(ctx, `UPDATE meta SET revision = revision + 1`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e.MustClient("after-the-gap")
	if _, ok, _ := e.Svc.Changes(ctx, gapFrom); ok {
		t.Fatal("changes answered across a revision missing from the log")
	}
	if d, ok, _ := e.Svc.Changes(ctx, e.Revision()-1); !ok || len(d.Removed) != 1 {
		t.Fatalf("changes after the gap: %+v %v", d, ok)
	}
	// Prune by revisions: pretend the log is full.
	_, err = e.Store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.(store.RawTx).Exec(ctx, `UPDATE meta SET revision = revision + $1`, store.ChangeLogRevisions+store.ChangePruneEvery); err != nil {
			return err
		}
		return tx.InsertClient(ctx, store.Client{ID: "pusher", CreatedAt: e.Clock.Now(), Owners: []string{}})
	})
	if err != nil {
		t.Fatal(err)
	}
	for e.Revision()%store.ChangePruneEvery != 0 {
		e.MustClient(fmt.Sprintf("p%d", e.Revision()))
	}
	if _, ok, _ := e.Svc.Changes(ctx, rev); ok {
		t.Fatal("changes answered from a pruned log")
	}
	if _, ok, _ := e.Svc.Changes(ctx, e.Revision()-1); !ok {
		t.Fatal("the newest revisions were pruned")
	}
}

// testChangesFeed: the feed answers since=<epoch>.<revision> with the
// changes, long-polled and tagged as a full answer would be, and in full
// for another epoch, a malformed since, or none.
func testChangesFeed(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	e.MustClient("a")
	e.MustGenerate("a")
	e.MustClient("b")
	sec := e.MustGenerate("b")
	epoch, rev, _ := e.Svc.Notifier().Current()
	get := func(query string, header ...string) (cptest.Response, map[string]any) {
		r := e.Do("GET", wire.SnapshotPath+query, cptest.EdgeToken, nil, header...)
		var m map[string]any
		if r.Status == 200 {
			r.Decode(t, &m)
		}
		return r, m
	}
	since := "?since=" + wire.FormatSince(epoch, rev)
	if r, _ := get(since, "If-None-Match", wire.ETag(epoch, rev)); r.Status != http.StatusNotModified {
		t.Fatalf("unchanged with since: %d", r.Status)
	}
	waiting := make(chan struct{}, 1)
	e.api.onWait = func() { waiting <- struct{}{} }
	done := make(chan cptest.Response, 1)
	go func() { r, _ := get(since+"&wait=10s", "If-None-Match", wire.ETag(epoch, rev)); done <- r }()
	<-waiting
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Root, "b", sec.Secret.ID); err != nil {
		t.Fatal(err)
	}
	r := <-done
	var d wire.Delta
	r.Decode(t, &d)
	// b keeps no active secret: it is changed to its tombstone alone (it
	// would be removed with tombstones off).
	if r.Status != 200 || r.Header.Get("ETag") != wire.ETag(epoch, rev+1) || d.Since != rev || d.Revision != rev+1 ||
		len(d.Removed) != 0 || len(d.Changed) != 1 || d.Changed[0].ClientID != "b" || len(d.Changed[0].Secrets) != 0 ||
		!slices.Equal(d.Changed[0].Tombstones, []wire.Tombstone{{ID: sec.Secret.ID, Hash: sec.Secret.Hash}}) {
		t.Fatalf("the long-poll with since: %d %s %s", r.Status, r.Header.Get("ETag"), r.Body)
	}
	for _, q := range []string{"", "?since=other." + fmt.Sprint(rev), "?since=garbage", "?since=" + wire.FormatSince(epoch, rev+5)} {
		if r, m := get(q); r.Status != 200 || m["clients"] == nil || m["since"] != nil {
			t.Fatalf("%q answered %d %s, want a full snapshot", q, r.Status, r.Body)
		}
	}
}

// TestPostgresReplicasServeTheSameChanges: changes made through one
// PostgreSQL handle are served, the same, by another on the same schema.
func TestPostgresReplicasServeTheSameChanges(t *testing.T) {
	storetest.Postgres(t)
	st, another := postgresKit.open(t)
	a, b := newEnvOn(t, st, ""), newEnvOn(t, another(t), "")
	rev := a.Revision()
	a.MustClient("x")
	a.MustGenerate("x")
	b.MustClient("y")
	b.MustGenerate("y")
	da, okA, errA := a.Svc.Changes(context.Background(), rev)
	db, okB, errB := b.Svc.Changes(context.Background(), rev)
	da.GeneratedAt, db.GeneratedAt = time.Time{}, time.Time{}
	ja, _ := json.Marshal(da)
	jb, _ := json.Marshal(db)
	if !okA || !okB || errA != nil || errB != nil || string(ja) != string(jb) || len(da.Changed) != 2 {
		t.Fatalf("replica a: %s %v %v\nreplica b: %s %v %v", ja, okA, errA, jb, okB, errB)
	}
}
