package rotagate

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

const revokedSecret = "rgs_thisOneWasRevokedYesterday0000000000000000000000"

// tombstoneHandler serves a snapshot in which "app" has a tombstone for
// revokedSecret, with a budget of 3 failures a minute.
func tombstoneHandler(t *testing.T) *Handler {
	t.Helper()
	h := newTestHandler(t, nil, func(h *Handler) {
		h.FailureBudget = &FailureBudget{Failures: 3, Per: 60_000_000_000}
	})
	w := testSnapshot(t)
	w.Clients[0].Tombstones = []wire.Tombstone{{ID: "sec_app_old", Hash: secrethash.NewSHA256(revokedSecret)}}
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
	return h
}

// TestTombstonedSecretPresented: a revoked secret gets the same 401 as a
// wrong one, is reported to the control plane with a count and the
// caller, and spends no failure budget.
func TestTombstonedSecretPresented(t *testing.T) {
	h := tombstoneHandler(t)
	counted := testutil.ToFloat64(edgeMetrics.presentedAfterRevoke)
	wrong, _ := serve(t, h, from("127.0.0.9", basicRequest("app", "wrong")))
	for i := range 10 {
		w, up := serve(t, h, from("127.0.0.2", basicRequest("app", revokedSecret)))
		if w.Code != 401 || up.called || w.Body.String() != wrong.Body.String() {
			t.Fatalf("presentation %d: status %d body %s", i+1, w.Code, w.Body)
		}
	}
	// Under another client's id it is only a wrong secret.
	serve(t, h, from("127.0.0.3", basicRequest("expiry", revokedSecret)))
	if got := testutil.ToFloat64(edgeMetrics.presentedAfterRevoke) - counted; got != 10 {
		t.Fatalf("presented_after_revoke counted %v, want 10", got)
	}
	uses := h.feed.usage.revoked.take()
	if len(uses) != 1 || uses[0] != (wire.RevokedUse{ClientID: "app", SecretID: "sec_app_old", LastAt: testNow, From: "127.0.0.2", Count: 10}) {
		t.Fatalf("revoked uses %+v", uses)
	}
	// The same caller's budget is whole: a dead secret is no guess.
	for range 3 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
			t.Fatalf("a wrong secret after ten dead ones: %d", w.Code)
		}
	}
}

// TestLocallyExpiredSecretPresented: a secret that expired here before the
// control plane dropped it is reported like a tombstone.
func TestLocallyExpiredSecretPresented(t *testing.T) {
	h := tombstoneHandler(t)
	if w, _ := serve(t, h, basicRequest("expiry", expiredSecret)); w.Code != 401 {
		t.Fatalf("status %d", w.Code)
	}
	if uses := h.feed.usage.revoked.take(); len(uses) != 1 || uses[0].SecretID != "sec_expired" || uses[0].Count != 1 {
		t.Fatalf("revoked uses %+v", uses)
	}
}

// TestTombstonesCostTheSame: a wrong secret, an unknown client and a dead
// secret make the same digests, comparisons and tombstone lookups.
func TestTombstonesCostTheSame(t *testing.T) {
	h := tombstoneHandler(t)
	h.FailureBudget, h.budget = &FailureBudget{Off: true}, nil
	count := func(r *http.Request) [3]int {
		work := countWork(h)
		if w, _ := serve(t, h, r); w.Code != 401 {
			t.Fatalf("status %d", w.Code)
		}
		return [3]int{work.of(workDigest), work.of(workCompare), work.of(workLookup)}
	}
	wrong := count(basicRequest("app", "wrong"))
	unknown := count(basicRequest("nobody", revokedSecret))
	dead := count(basicRequest("app", revokedSecret))
	if wrong != unknown || wrong != dead || wrong != [3]int{1, 2, 1} {
		t.Fatalf("work (digests, comparisons, lookups): wrong secret %v, unknown client %v, dead secret %v", wrong, unknown, dead)
	}
}

func TestMalformedTombstoneRejectsSnapshot(t *testing.T) {
	for _, ts := range []wire.Tombstone{
		{ID: "", Hash: secrethash.NewSHA256("x")},
		{ID: "sec_x", Hash: "$2a$04$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi"},
		{ID: "sec_x", Hash: "sha256:nope"},
	} {
		w := testSnapshot(t)
		w.Clients[0].Tombstones = []wire.Tombstone{ts}
		if _, err := newSnapshot(w); err == nil {
			t.Errorf("tombstone %+v accepted", ts)
		}
	}
}

// TestRevokedUsesFlushed: dead-secret reports ride with the stamps, come
// back with their counts when the POST fails, and go alone when no
// secret was used.
func TestRevokedUsesFlushed(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	t0 := time.Unix(1_800_000_000, 0).UTC()
	u.recordRevoked("app", "sec_old", "192.0.2.1", t0)
	u.recordRevoked("app", "sec_old", "192.0.2.2", t0.Add(time.Second))
	fs.FailUsage(true)
	if err := u.flush(context.Background()); err == nil {
		t.Fatal("flush against a failing ingest succeeded")
	}
	u.recordRevoked("app", "sec_old", "192.0.2.3", t0.Add(-time.Second))
	fs.FailUsage(false)
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := fs.RevokedUses()
	want := wire.RevokedUse{ClientID: "app", SecretID: "sec_old", LastAt: t0.Add(time.Second), From: "192.0.2.2", Count: 3}
	if len(got) != 1 || got[0] != want || len(fs.Stamps()) != 0 {
		t.Fatalf("sent %+v and %d stamps, want %+v alone", got, len(fs.Stamps()), want)
	}
}
