package rotagate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/wire"
)

func testRecorder(urls ...string) *usageRecorder {
	return newUsageRecorder(newControlPlaneClient(urls, feedtest.Token, zap.NewNop()), zap.NewNop())
}

func TestUsageFlush(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 1000 { // many requests, two secrets
		u.record("app", "sec_app1", "192.0.2.1", t0.Add(time.Duration(i)*time.Millisecond))
		u.record("app", "sec_app2", "192.0.2.2", t0)
	}
	u.record("app", "sec_app1", "192.0.2.9", t0) // older: ignored
	fs.FailUsage(true)
	failed := edgeMetrics.stampsFailed.WithLabelValues(u.client.label)
	if err := u.flush(context.Background()); err == nil {
		t.Fatal("flush against a failing ingest succeeded")
	}
	if got := testutil.ToFloat64(failed); got != 2 || u.pendingCount() != 2 {
		t.Fatalf("after a failed flush: %v counted failed, %d pending; want 2 and 2", got, u.pendingCount())
	}
	u.record("app", "sec_app2", "192.0.2.3", t0.Add(time.Second)) // newer than the failed batch's
	fs.FailUsage(false)
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	stamps := fs.Stamps()
	if len(stamps) != 2 {
		t.Fatalf("%d stamps sent, want 2 (one per secret): %+v", len(stamps), stamps)
	}
	got := map[string]wire.Stamp{}
	for _, s := range stamps {
		got[s.SecretID] = s
	}
	if s := got["sec_app1"]; !s.LastUsedAt.Equal(t0.Add(999*time.Millisecond)) || s.From != "192.0.2.1" {
		t.Fatalf("sec_app1 stamp %+v", s)
	}
	if s := got["sec_app2"]; !s.LastUsedAt.Equal(t0.Add(time.Second)) || s.From != "192.0.2.3" {
		t.Fatalf("sec_app2 stamp %+v", s)
	}
}

// TestUsageFlushInChunks: a backlog larger than one POST may carry goes
// out in several, none lost.
func TestUsageFlushInChunks(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	n := 2*maxStampsPerPost + 5
	at := time.Unix(1_800_000_000, 0)
	for i := range n {
		u.record("app", fmt.Sprintf("sec_%d", i), "192.0.2.1", at)
	}
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range fs.Stamps() {
		got[s.SecretID] = true
	}
	if len(got) != n || u.pendingCount() != 0 {
		t.Fatalf("%d distinct stamps arrived of %d, %d pending", len(got), n, u.pendingCount())
	}
}

// TestRefusedStampsAreDropped: a batch the control plane refuses as
// malformed (400) is dropped and counted as dropped, not retried, and not
// sent to the next replica, which would refuse it too.
func TestRefusedStampsAreDropped(t *testing.T) {
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad batch", http.StatusBadRequest)
	}))
	defer refuser.Close()
	var second atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		second.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer other.Close()
	u := testRecorder(refuser.URL, other.URL)
	dropped := edgeMetrics.stampsDropped.WithLabelValues(u.client.label)
	failed := edgeMetrics.stampsFailed.WithLabelValues(u.client.label)
	u.record("app", "sec_app1", "192.0.2.1", time.Unix(1_800_000_000, 0))
	if err := u.flush(context.Background()); err != nil {
		t.Fatalf("a refused batch is dropped, not an error to retry: %v", err)
	}
	if u.pendingCount() != 0 || testutil.ToFloat64(dropped) != 1 || testutil.ToFloat64(failed) != 0 || second.Load() != 0 {
		t.Fatalf("pending %d, dropped %v, failed %v, second replica asked %d times",
			u.pendingCount(), testutil.ToFloat64(dropped), testutil.ToFloat64(failed), second.Load())
	}
}
