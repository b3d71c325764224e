package rotagate

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/wire"
)

// TestNoRedirects (issue 9, defect 2): a control plane that answers 302 to
// another server does not send the edge there — neither the snapshot poll
// nor the usage POST, so the edge token never reaches it. The poll fails
// (and the sync loop counts it), the stamps are kept, and the redirect is
// logged once for the URL, not at every retry.
func TestNoRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the edge token reached the redirect target: %s %s", r.Method, r.URL.Path)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer redirector.Close()

	core, logs := observer.New(zap.InfoLevel)
	cfg := testFeedConfig(redirector.URL)
	f := newFeed(cfg, zap.New(core), nil)
	for range 3 {
		err := f.poll(context.Background(), false)
		if err == nil || !strings.Contains(err.Error(), "302") {
			t.Fatalf("a poll answered with a redirect: %v", err)
		}
	}
	if snap, _ := f.snapshots.current(); snap != nil {
		t.Fatal("a snapshot was taken from a redirect")
	}
	f.usage.record("app", "sec_app1", "192.0.2.1", time.Unix(1_800_000_000, 0))
	for range 2 {
		if err := f.usage.flush(context.Background()); err == nil {
			t.Fatal("a usage POST answered with a redirect succeeded")
		}
	}
	if f.usage.pendingCount() != 1 {
		t.Fatal("the stamps of a redirected POST were not kept")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target received %d requests", n)
	}
	warned := logs.FilterMessageSnippet("redirect")
	if warned.Len() != 1 {
		t.Fatalf("the redirect was logged %d times over 5 requests, want once", warned.Len())
	}
	if to := warned.All()[0].ContextMap()["redirects_to"]; to != target.URL {
		t.Fatalf("the warning names %v as the target, want %s", to, target.URL)
	}

	// The sync loop counts the redirect as a failed poll.
	syncErrors := edgeMetrics.syncErrors.WithLabelValues(f.client.label)
	startTestFeed(t, f)
	waitFor(t, 5*time.Second, "the sync loop counts a failed poll", func() bool { return testutil.ToFloat64(syncErrors) > 0 })
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target received %d requests", n)
	}
}

// TestRedirectLoggedAgainAfterRecovery: once the URL answers normally, a
// later redirect is a new fault and is logged again.
func TestRedirectLoggedAgainAfterRecovery(t *testing.T) {
	var redirect atomic.Bool
	redirect.Store(true)
	fs := feedtest.New(t, *testSnapshot(t))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirect.Load() {
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
			return
		}
		fs.Config.Handler.ServeHTTP(w, r)
	}))
	defer front.Close()
	core, logs := observer.New(zap.WarnLevel)
	c := newControlPlaneClient([]string{front.URL}, feedtest.Token, zap.New(core))
	get := func() error {
		return c.do(context.Background(), cpRequest{method: http.MethodGet, path: wire.SnapshotPath, timeout: 5 * time.Second},
			func(resp *http.Response, _ time.Time) error { return nil })
	}
	_, _ = get(), get()
	redirect.Store(false)
	if err := get(); err != nil {
		t.Fatal(err)
	}
	redirect.Store(true)
	_ = get()
	if n := logs.FilterMessageSnippet("redirect").Len(); n != 2 {
		t.Fatalf("logged %d times, want 2 (once per episode)", n)
	}
}

// TestClientFailover: a request goes to the next URL when one is down or
// fails, with the token; an answer the next replica would repeat (a
// finalAnswer) ends it; errors name each URL once (stripURLError) and never the token.
func TestClientFailover(t *testing.T) {
	var auth atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	const down = "http://127.0.0.1:1"
	c := newControlPlaneClient([]string{down, failing.URL, up.URL}, feedtest.Token, zap.NewNop())
	var tried []int
	err := c.do(context.Background(), cpRequest{method: http.MethodGet, path: "/x", timeout: 5 * time.Second},
		func(resp *http.Response, _ time.Time) error {
			tried = append(tried, resp.StatusCode)
			if resp.StatusCode != http.StatusNoContent {
				return errors.New("not taken")
			}
			return nil
		})
	if err != nil || len(tried) != 2 || auth.Load() != "Bearer "+feedtest.Token {
		t.Fatalf("failover: %v, answers seen %v, token %v", err, tried, auth.Load())
	}

	c = newControlPlaneClient([]string{down, failing.URL}, feedtest.Token, zap.NewNop())
	err = c.do(context.Background(), cpRequest{method: http.MethodGet, path: "/x", timeout: 5 * time.Second},
		func(resp *http.Response, _ time.Time) error { return errors.New("not taken") })
	if err == nil || !strings.Contains(err.Error(), down+": ") || !strings.Contains(err.Error(), failing.URL+": not taken") ||
		strings.Contains(err.Error(), feedtest.Token) || strings.Contains(err.Error(), `Get "`) {
		t.Fatalf("every URL's error, each named once: %v", err)
	}

	c = newControlPlaneClient([]string{failing.URL, up.URL}, feedtest.Token, zap.NewNop())
	auth.Store("")
	err = c.do(context.Background(), cpRequest{method: http.MethodPost, path: "/x", timeout: 5 * time.Second},
		func(resp *http.Response, _ time.Time) error { return errRefusedStamps{status: resp.StatusCode} })
	var refused errRefusedStamps
	if !errors.As(err, &refused) || auth.Load() != "" {
		t.Fatalf("a final answer went on to the next URL: %v", err)
	}
}
