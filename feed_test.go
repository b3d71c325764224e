package rotagate

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/feedtest"
)

// TestFeedRefits: the shared feed runs with the configs of the handlers
// holding it now — the shortest flush and wait, the largest size limit —
// and goes back when a holder lets go, instead of only ever tightening.
func TestFeedRefits(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	ctx := testContext(t)
	cfg := func(flush, wait time.Duration, maxBytes int64) feedConfig {
		return feedConfig{urls: []string{fs.URL}, token: feedtest.Token, wait: wait, maxBytes: maxBytes, flush: flush}
	}
	slow, fast, third := new(Handler), new(Handler), new(Handler)
	f := mustAcquireFeed(t, ctx, slow, cfg(10*time.Second, 200*time.Millisecond, 1<<20), Forever)
	defer f.release(slow)
	fitted := func() feedConfig { return *f.config.Load() }
	if c := fitted(); c.flush != 10*time.Second {
		t.Fatalf("one holder: flush %v", c.flush)
	}

	f2 := mustAcquireFeed(t, ctx, fast, cfg(time.Second, 100*time.Millisecond, 2<<20), Forever)
	if f2 != f {
		t.Fatal("a second handler on the same control plane started a second feed")
	}
	if c := fitted(); c.flush != time.Second || c.wait != 100*time.Millisecond || c.maxBytes != 2<<20 {
		t.Fatalf("two holders: %+v", c)
	}

	mustAcquireFeed(t, ctx, third, cfg(5*time.Second, 150*time.Millisecond, 1<<20), Forever)
	if err := f.release(fast); err != nil {
		t.Fatal(err)
	}
	if c := fitted(); c.flush != 5*time.Second || c.wait != 150*time.Millisecond || c.maxBytes != 1<<20 {
		t.Fatalf("after the 1s holder let go: %+v", c)
	}
	if err := f.release(third); err != nil {
		t.Fatal(err)
	}
	if c := fitted(); c.flush != 10*time.Second || c.wait != 200*time.Millisecond {
		t.Fatalf("back to the first holder alone: %+v", c)
	}
	if _, ok := feeds.References(f.key); !ok {
		t.Fatal("the feed stopped while a handler still holds it")
	}
}

// TestFeedStopsWithItsLastHolder: releasing the last holder stops the
// feed; the next acquire starts a new one.
func TestFeedStopsWithItsLastHolder(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	ctx := testContext(t)
	h := new(Handler)
	cfg := testFeedConfig(fs.URL)
	f := mustAcquireFeed(t, ctx, h, cfg, Forever)
	if snap, _ := f.snapshots.current(); snap == nil {
		t.Fatal("no first fetch")
	}
	if err := f.release(h); err != nil {
		t.Fatal(err)
	}
	if f.ctx.Err() == nil {
		t.Fatal("the feed runs on after its last holder let go")
	}
	again := mustAcquireFeed(t, ctx, h, cfg, Forever)
	defer again.release(h)
	if again == f {
		t.Fatal("a stopped feed was handed out again")
	}
}

// TestRefitReachesTheUsageLoop: a usage loop waiting out an hour-long
// interval (after a failed flush) flushes soon once a handler asking for a
// short interval takes hold of the feed.
func TestRefitReachesTheUsageLoop(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	cfg := testFeedConfig(fs.URL) // flush: 1h
	f := newFeed(cfg, zap.NewNop(), nil)
	f.hold(new(Handler), cfg)
	f.usage.record("app", "sec_app1", "192.0.2.1", time.Unix(1_800_000_000, 0), useAccepted)
	fs.FailUsage(true)
	startTestFeed(t, f)
	failed := edgeMetrics.stampsFailed.WithLabelValues(f.client.label)
	waitFor(t, 5*time.Second, "the first flush fails", func() bool { return testutil.ToFloat64(failed) == 1 })
	fs.FailUsage(false)

	cfg.flush = 20 * time.Millisecond
	f.hold(new(Handler), cfg)
	waitFor(t, 5*time.Second, "the stamp is flushed at the new interval", func() bool { return len(fs.Stamps()) == 1 })
}
