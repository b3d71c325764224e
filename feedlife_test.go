package rotagate

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/internal/feedtest"
)

// The feed across reloads, restarts and a control plane in the same
// process (issue 18 defects 2 and 4, issue 19 point 9).

// TestTighterRefitConfirmsAtOnce (issue 18 defect 2): a handler whose
// shorter wait re-fits a feed in the middle of a poll held for the longer
// one cuts that poll, and is provisioned only once a poll sent since has
// confirmed the snapshot — so the tighter max_stale that comes with it
// finds a fresh confirmation instead of one a whole old wait old.
func TestTighterRefitConfirmsAtOnce(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	ctx := testContext(t)
	cfg := testFeedConfig(fs.URL)
	cfg.wait = time.Hour // the old config's poll is held for an hour
	old := new(Handler)
	f := mustAcquireFeed(t, ctx, old, cfg, Forever)
	defer f.release(old)
	waitFor(t, 5*time.Second, "the held poll", func() bool {
		f.pollMu.Lock()
		defer f.pollMu.Unlock()
		return f.cutPoll != nil
	})

	tight := cfg
	tight.wait = 2 * time.Second
	before := time.Now()
	next := new(Handler)
	mustAcquireFeed(t, ctx, next, tight, Staleness(4*time.Second))
	defer f.release(next)
	if _, confirmed := f.snapshots.current(); confirmed.Before(before) {
		t.Fatalf("provisioned with a confirmation from %v before the re-fit; the held poll was not cut", before.Sub(confirmed))
	}
	if f.config.Load().wait != 2*time.Second {
		t.Fatalf("the feed polls with %v", f.config.Load().wait)
	}
}

// TestRefitWithoutTighteningKeepsThePoll: a holder that does not shorten
// the wait neither cuts the held poll nor waits for one.
func TestRefitWithoutTighteningKeepsThePoll(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	cfg := *f.config.Load()
	if f.hold(new(Handler), cfg) {
		t.Fatal("the first holder cut the poll")
	}
	longer := cfg
	longer.wait *= 2
	if f.hold(new(Handler), longer) {
		t.Fatal("a longer wait cut the poll")
	}
	shorter := cfg
	shorter.wait /= 2
	if !f.hold(new(Handler), shorter) {
		t.Fatal("a shorter wait did not cut the poll")
	}
}

// TestSavedSnapshotServesAtOnce (issue 18 defect 4): a feed started from
// a saved snapshot confirmed within max_stale is handed out while its
// control plane still holds the first poll: the handler serves from disk
// at once and the fetch goes on in the background.
func TestSavedSnapshotServesAtOnce(t *testing.T) {
	var hold atomic.Bool
	released := make(chan struct{})
	body, err := json.Marshal(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold.Load() {
			select { // the control plane is unreachable for now
			case <-released:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	defer close(released)
	ctx := testContext(t)
	cfg := testFeedConfig(srv.URL)
	cfg.wait = time.Hour

	// A first run saves the snapshot, then stops.
	h := new(Handler)
	f := mustAcquireFeed(t, ctx, h, cfg, Forever)
	if snap, _ := f.snapshots.current(); snap == nil {
		t.Fatal("no first snapshot")
	}
	if err := f.release(h); err != nil {
		t.Fatal(err)
	}

	hold.Store(true)
	again := mustAcquireFeed(t, ctx, h, cfg, Staleness(time.Hour))
	defer again.release(h)
	if again == f {
		t.Fatal("the stopped feed was handed out again")
	}
	if !again.servable(Staleness(time.Hour), time.Now()) {
		t.Fatal("the saved snapshot is not served")
	}
	if last, _ := again.polls.outcome(); !last.started.IsZero() {
		t.Fatal("a poll ended before the feed was handed out; want it handed out while the control plane holds the first")
	}
}

// TestFirstFetchWaitEndsOnRefusal (issue 19 point 9): a feed with nothing
// to serve waits for its first poll, but not past a refused connection —
// the control plane may be in this very process, which cannot listen
// before provisioning is over.
func TestFirstFetchWaitEndsOnRefusal(t *testing.T) {
	cfg := testFeedConfig(closedPortURL(t))
	cfg.wait = time.Hour // the wait is bounded by firstAnswerWait only
	f := newFeed(cfg, zap.NewNop(), nil)
	mark := time.Now()
	startTestFeed(t, f)
	if !f.awaitPoll(mark) {
		t.Fatal("the wait ran out instead of ending with the refused poll")
	}
	if last, _ := f.polls.outcome(); !refusedEverywhere(last.err) {
		t.Fatalf("the poll ended with %v, want a refused connection", last.err)
	}
}

// TestStartupRetriesRefusalsQuietly (issue 19 point 9): while the edge
// starts, a control plane that refuses connections is tried again often,
// with one info line instead of a warning per try, and the snapshot
// arrives as soon as it listens.
func TestStartupRetriesRefusalsQuietly(t *testing.T) {
	addr := closedPortURL(t)
	core, logs := observer.New(zap.InfoLevel)
	f := newFeed(testFeedConfig(addr), zap.New(core), nil)
	refused := edgeMetrics.syncErrors.WithLabelValues(f.client.label)
	startTestFeed(t, f)
	// Exponential backoff would take over 20s for ten tries.
	waitFor(t, 10*time.Second, "ten refused polls", func() bool { return testutil.ToFloat64(refused) >= 10 })

	fs := feedtest.New(t, *testSnapshot(t))
	fs.Close() // reopened on the address the feed polls
	ln, err := net.Listen("tcp", addr[len("http://"):])
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: fs.Config.Handler}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	waitFor(t, 10*time.Second, "the snapshot once the control plane listens", func() bool {
		snap, _ := f.snapshots.current()
		return snap != nil
	})
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 0 {
		t.Fatalf("%d warnings while the control plane was starting: %v", n, logs.FilterLevelExact(zap.WarnLevel).All()[0].Message)
	}
	if n := logs.FilterMessageSnippet("does not accept connections yet").Len(); n != 1 {
		t.Fatalf("the refusals were logged %d times, want once", n)
	}
}

// TestNudgeEndsThePause: Caddy's "started" event ends the sync loop's
// pause after a failure, so a control plane in the same process is polled
// as soon as it listens.
func TestNudgeEndsThePause(t *testing.T) {
	ctx := testContext(t)
	f := testFeed(t, "http://127.0.0.1:9")
	h := &Handler{feed: f}
	woke := make(chan bool)
	go func() { woke <- f.pause(context.Background(), time.Hour) }()
	e, err := caddy.NewEvent(ctx, "started", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := (lifecycleEvents{h}).Handle(ctx, e); err != nil {
		t.Fatal(err)
	}
	if !<-woke {
		t.Fatal("the pause ended as if the feed stopped")
	}
}

// TestStoppingFlushesWhenEveryHolderStops (issue 19 point 9): when every
// config holding the feed stops, the pending stamps are sent at once,
// while the servers (a control plane among them) still run; a config
// stopping while a newer one holds the feed (a reload) sends nothing.
func TestStoppingFlushesWhenEveryHolderStops(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL) // no loops: only stopping flushes
	f.ctx, f.cancel = context.WithCancel(context.Background())
	defer f.cancel()
	old, next := new(Handler), new(Handler)
	f.hold(old, *f.config.Load())
	f.hold(next, *f.config.Load())
	f.usage.record("app", "sec_app1", "192.0.2.9", time.Unix(1_800_000_000, 0), useAccepted)

	f.stopping(old) // a reload: next holds the feed on
	if len(fs.Stamps()) != 0 || f.usage.pendingCount() != 1 {
		t.Fatal("a reload flushed the stamps")
	}
	if err := f.release(old); err != nil {
		t.Fatal(err)
	}
	f.stopping(next) // the process exits
	if stamps := fs.Stamps(); len(stamps) != 1 || stamps[0].From != "192.0.2.9" {
		t.Fatalf("stamps sent when the last holder stops: %+v", stamps)
	}
}

// TestFailedPollsWhileStoppingAreNoWarning: once every config holding the
// feed is being stopped, a control plane in the same process stops
// listening before the feed is released; the polls that fail then are
// logged at info level, not as warnings.
func TestFailedPollsWhileStoppingAreNoWarning(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	core, logs := observer.New(zap.InfoLevel)
	f := newFeed(testFeedConfig(fs.URL), zap.New(core), nil)
	h := new(Handler)
	f.hold(h, *f.config.Load())
	failed := edgeMetrics.syncErrors.WithLabelValues(f.client.label)
	startTestFeed(t, f)
	waitFor(t, 10*time.Second, "the first snapshot", func() bool {
		snap, _ := f.snapshots.current()
		return snap != nil
	})
	before := testutil.ToFloat64(failed)

	f.stopping(h) // the process exits: Caddy stops the servers first
	fs.Close()
	f.nudge()
	waitFor(t, 10*time.Second, "a failed poll", func() bool { return testutil.ToFloat64(failed) > before })
	if warned := logs.FilterLevelExact(zap.WarnLevel); warned.Len() != 0 {
		t.Fatalf("warned while stopping: %v", warned.All()[0].Message)
	}
	if logs.FilterMessageSnippet("while Caddy stops").Len() == 0 {
		t.Fatal("the failed poll was not logged")
	}
}

// closedPortURL is the URL of a loopback port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// TestRefusedEverywhere: only refusals from every URL count as a control
// plane that does not listen yet.
func TestRefusedEverywhere(t *testing.T) {
	refusal := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	other := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ETIMEDOUT}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{refusal, true},
		{errors.Join(refusal, refusal), true},
		{errors.Join(refusal, other), false},
		{other, false},
	} {
		if got := refusedEverywhere(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
}

// TestPollWaitFollowsMaxStale: a 304 confirms the snapshot as of when its
// poll went out, a whole wait earlier, so the wait is a third of max_stale
// when that is shorter than revocation_delay; "forever" leaves it to the
// delay.
func TestPollWaitFollowsMaxStale(t *testing.T) {
	for _, c := range []struct {
		delay    time.Duration
		maxStale Staleness
		want     time.Duration
	}{
		{30 * time.Second, Staleness(30 * time.Second), 10 * time.Second},
		{30 * time.Second, Staleness(4 * time.Second), 1333 * time.Millisecond},
		{3 * time.Second, Staleness(time.Minute), time.Second},
		{30 * time.Second, Forever, 10 * time.Second},
	} {
		h := &Handler{RevocationDelay: caddy.Duration(c.delay), MaxStale: c.maxStale}
		if got := h.pollWait(); got != c.want {
			t.Errorf("revocation_delay %v, max_stale %v: wait %v, want %v", c.delay, time.Duration(c.maxStale), got, c.want)
		}
	}
}
