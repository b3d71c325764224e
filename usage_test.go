package rotagate

import (
	"context"
	"encoding/json"
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
		u.record("app", "sec_app1", "192.0.2.1", t0.Add(time.Duration(i)*time.Millisecond), useAccepted)
		u.record("app", "sec_app2", "192.0.2.2", t0, useAccepted)
	}
	u.record("app", "sec_app1", "192.0.2.9", t0, useAccepted) // older: ignored
	fs.FailUsage(true)
	failed := edgeMetrics.stampsFailed.WithLabelValues(u.client.label)
	if err := u.flush(context.Background()); err == nil {
		t.Fatal("flush against a failing ingest succeeded")
	}
	if got := testutil.ToFloat64(failed); got != 2 || u.pendingCount() != 2 {
		t.Fatalf("after a failed flush: %v counted failed, %d pending; want 2 and 2", got, u.pendingCount())
	}
	u.record("app", "sec_app2", "192.0.2.3", t0.Add(time.Second), useAccepted) // newer than the failed batch's
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
// out in several, none lost, each secret's stamp with its callers.
func TestUsageFlushInChunks(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	n := maxEntriesPerPost + 5 // two entries each: a stamp and one caller
	at := time.Unix(1_800_000_000, 0)
	for i := range n {
		u.record("app", fmt.Sprintf("sec_%d", i), "192.0.2.1", at, useAccepted)
	}
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range fs.Stamps() {
		got[s.SecretID] = true
	}
	callers := map[string]bool{}
	for _, sc := range fs.Callers() {
		callers[sc.SecretID] = len(sc.IPs) == 1 && sc.IPs[0].Requests == 1
	}
	if len(got) != n || len(callers) != n || u.pendingCount() != 0 || fs.Posts() != 3 {
		t.Fatalf("%d distinct stamps and %d callers arrived of %d in %d POSTs (want 3), %d pending",
			len(got), len(callers), n, fs.Posts(), u.pendingCount())
	}
}

// TestUsageCallers: requests are coalesced per (secret, caller IP) with
// first and last seen and counts, refusals for the network counted apart;
// a secret only ever refused has callers but no last-used stamp; and all
// of it goes in one POST.
func TestUsageCallers(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 10 {
		at := t0.Add(time.Duration(i) * time.Second)
		u.record("app", "sec_app1", "192.0.2.1", at, useAccepted)
		u.record("app", "sec_app1", "2001:db8::7", at, useReportOnly)
		u.record("app", "sec_app2", "192.0.2.2", at, useRefused)
	}
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fs.Posts() != 1 {
		t.Fatalf("%d POSTs for one flush, want 1", fs.Posts())
	}
	stamps := fs.Stamps()
	if len(stamps) != 1 || stamps[0].SecretID != "sec_app1" || !stamps[0].LastUsedAt.Equal(t0.Add(9*time.Second)) {
		t.Fatalf("stamps %+v: want one, for sec_app1 (report-only passes are uses; refusals are not)", stamps)
	}
	got := map[string]wire.Caller{}
	for _, sc := range fs.Callers() {
		if sc.OtherRequests != 0 {
			t.Fatalf("%s: %d other requests", sc.SecretID, sc.OtherRequests)
		}
		for _, c := range sc.IPs {
			got[sc.SecretID+" "+c.IP] = c
		}
	}
	want := map[string]int64{"sec_app1 192.0.2.1": 0, "sec_app1 2001:db8::7": 10, "sec_app2 192.0.2.2": 10}
	if len(got) != len(want) {
		t.Fatalf("callers %+v", got)
	}
	for k, refused := range want {
		c := got[k]
		if c.Requests != 10 || c.Refused != refused || !c.FirstAt.Equal(t0) || !c.LastAt.Equal(t0.Add(9*time.Second)) {
			t.Fatalf("%s: %+v, want 10 requests, %d refused, seen %v to %v", k, c, refused, t0, t0.Add(9*time.Second))
		}
	}
}

// TestUsageCallersBounded: a secret lists at most MaxCallersPerSecret
// caller IPs per flush, the requests from the rest counted; the bound holds
// when a failed batch is merged with newer uses.
func TestUsageCallersBounded(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	u := testRecorder(fs.URL)
	at := time.Unix(1_800_000_000, 0)
	spray := func(from, n int, kind useKind) {
		for i := from; i < from+n; i++ {
			u.record("app", "sec_app1", fmt.Sprintf("10.0.%d.%d", i/256, i%256), at, kind)
		}
	}
	spray(0, 1000, useAccepted)
	if su := u.pending["sec_app1"]; len(su.callers) != wire.MaxCallersPerSecret || su.otherRequests != 1000-wire.MaxCallersPerSecret {
		t.Fatalf("%d callers listed, %d other requests", len(su.callers), su.otherRequests)
	}
	fs.FailUsage(true)
	if err := u.flush(context.Background()); err == nil {
		t.Fatal("flush against a failing ingest succeeded")
	}
	spray(5000, 500, useRefused) // new addresses while the batch waits
	fs.FailUsage(false)
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	sc := fs.Callers()
	if len(sc) != 1 || len(sc[0].IPs) != wire.MaxCallersPerSecret {
		t.Fatalf("callers sent: %d secrets, want 1 with %d IPs", len(sc), wire.MaxCallersPerSecret)
	}
	total := sc[0].OtherRequests
	for _, c := range sc[0].IPs {
		total += c.Requests
	}
	if total != 1500 || sc[0].OtherRefused != 500 {
		t.Fatalf("%d requests counted of 1500, %d other refused of 500", total, sc[0].OtherRefused)
	}
}

// TestOlderControlPlaneTakesTheBatch: a control plane that predates the
// callers reads the batch as it always did (it decodes into the old shape
// and ignores unknown fields), and gets one stamp per secret.
func TestOlderControlPlaneTakesTheBatch(t *testing.T) {
	type oldStamp struct {
		ClientID   string    `json:"client_id"`
		SecretID   string    `json:"secret_id"`
		LastUsedAt time.Time `json:"last_used_at"`
		From       string    `json:"from,omitempty"`
	}
	type oldUsage struct {
		Edge   string     `json:"edge"`
		Stamps []oldStamp `json:"stamps"`
	}
	var got oldUsage
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil { // json.Unmarshal's rules, as the old ingest
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer old.Close()
	u := testRecorder(old.URL)
	at := time.Unix(1_800_000_000, 0).UTC()
	u.record("app", "sec_app1", "192.0.2.1", at, useAccepted)
	u.record("app", "sec_app1", "192.0.2.2", at.Add(time.Second), useAccepted)
	u.record("app", "sec_app1", "192.0.2.3", at.Add(2*time.Second), useRefused)
	if err := u.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []oldStamp{{ClientID: "app", SecretID: "sec_app1", LastUsedAt: at.Add(time.Second), From: "192.0.2.2"}}
	if len(got.Stamps) != 1 || got.Stamps[0] != want[0] || got.Edge == "" {
		t.Fatalf("an older control plane read %+v, want stamps %+v", got, want)
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
	u.record("app", "sec_app1", "192.0.2.1", time.Unix(1_800_000_000, 0), useAccepted)
	if err := u.flush(context.Background()); err != nil {
		t.Fatalf("a refused batch is dropped, not an error to retry: %v", err)
	}
	if u.pendingCount() != 0 || testutil.ToFloat64(dropped) != 1 || testutil.ToFloat64(failed) != 0 || second.Load() != 0 {
		t.Fatalf("pending %d, dropped %v, failed %v, second replica asked %d times",
			u.pendingCount(), testutil.ToFloat64(dropped), testutil.ToFloat64(failed), second.Load())
	}
}
