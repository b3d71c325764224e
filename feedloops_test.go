package rotagate

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// testFeed is a feed on urls with the test token and no disk copy, not
// started.
func testFeed(t *testing.T, urls ...string) *feed {
	t.Helper()
	return newFeed(testFeedConfig(urls...), zap.NewNop(), nil)
}

func testFeedConfig(urls ...string) feedConfig {
	return feedConfig{urls: urls, token: feedtest.Token, wait: 200 * time.Millisecond, maxBytes: 1 << 20, flush: time.Hour}
}

// testFeedOnDisk is testFeed with its disk copy in dir.
func testFeedOnDisk(t *testing.T, dir string, urls ...string) *feed {
	t.Helper()
	cfg := testFeedConfig(urls...)
	return newFeed(cfg, zap.NewNop(), &savedSnapshot{dir: dir, key: cfg.key()})
}

func TestPollAppliesAndConfirms(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	ctx := context.Background()
	before := time.Now()
	if err := f.poll(ctx, false); err != nil {
		t.Fatal(err)
	}
	snap, confirmed := f.snapshots.current()
	if snap == nil || snap.revision != 7 || snap.clients != 6 || confirmed.Before(before) {
		t.Fatalf("after first poll: %+v confirmed %v", snap, confirmed)
	}
	// The confirmation carries a monotonic reading, so the staleness check
	// (now.Sub(confirmed)) cannot be stretched by a wall-clock step.
	if !strings.Contains(confirmed.String(), " m=") {
		t.Fatalf("confirmation time %v has no monotonic reading", confirmed)
	}
	// Unchanged: a long-poll ends in 304, which confirms again, keeping the
	// snapshot.
	if err := f.poll(ctx, true); err != nil {
		t.Fatal(err)
	}
	snap2, confirmed2 := f.snapshots.current()
	if snap2 != snap || !confirmed2.After(confirmed) {
		t.Fatalf("304 changed the snapshot or did not confirm: %v %v", confirmed, confirmed2)
	}
}

func TestPollRejectsBadAnswers(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	dir := t.TempDir()
	f := testFeedOnDisk(t, dir, fs.URL)
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	good, confirmed := f.snapshots.current()
	saved, err := os.ReadFile(f.snapshots.disk.snapshotPath())
	if err != nil {
		t.Fatal(err)
	}
	for name, answer := range map[string]func(w http.ResponseWriter){
		"garbage":   func(w http.ResponseWriter) { w.Write([]byte("<html>oops")) },
		"truncated": func(w http.ResponseWriter) { w.Write([]byte(`{"epoch":"e1","revision":9,"clients":[{"client_id":"a"`)) },
		"no epoch":  func(w http.ResponseWriter) { w.Write([]byte(`{"revision":9,"clients":[]}`)) },
		"bad hash": func(w http.ResponseWriter) {
			w.Write([]byte(`{"epoch":"e1","revision":9,"clients":[{"client_id":"a","secrets":[{"id":"s","hash":"md5:x"}]}]}`))
		},
		"dup client": func(w http.ResponseWriter) {
			w.Write([]byte(`{"epoch":"e1","revision":9,"clients":[{"client_id":"a"},{"client_id":"a"}]}`))
		},
		"rollback": func(w http.ResponseWriter) { w.Write([]byte(`{"epoch":"e1","revision":6,"clients":[]}`)) },
		"too large": func(w http.ResponseWriter) {
			w.Write([]byte(`{"epoch":"e1","revision":9,"clients":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`))
		},
		"server 500": func(w http.ResponseWriter) { w.WriteHeader(500) },
		"trailing": func(w http.ResponseWriter) {
			w.Write([]byte(`{"epoch":"e1","revision":9,"clients":[]} {"epoch":"e1"}`))
		},
		"unexpected ": func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) },
	} {
		fs.Override(answer)
		if err := f.poll(context.Background(), false); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if snap, c := f.snapshots.current(); snap != good || !c.Equal(confirmed) {
			t.Errorf("%s: the snapshot or its confirmation changed", name)
		}
		if now, err := os.ReadFile(f.snapshots.disk.snapshotPath()); err != nil || string(now) != string(saved) {
			t.Errorf("%s: the saved snapshot changed", name)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) > 0 {
			t.Errorf("%s: spool files left behind: %v", name, left)
		}
	}
	// A new epoch replaces everything, whatever its revision.
	fs.Override(nil)
	fs.Update(func(s *wire.Snapshot) { s.Epoch, s.Revision, s.Clients = "e2", 1, s.Clients[:1] })
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if snap, _ := f.snapshots.current(); snap.epoch != "e2" || snap.revision != 1 || snap.clients != 1 {
		t.Fatalf("new epoch not applied: %+v", snap)
	}
}

// TestPollAsksForGzip: the edge asks for a compressed snapshot and reads
// one; max_snapshot_bytes counts the decompressed bytes.
func TestPollAsksForGzip(t *testing.T) {
	body, err := json.Marshal(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			http.Error(w, "gzip expected", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = zw.Write(body)
		_ = zw.Close()
	}))
	defer srv.Close()
	f := testFeed(t, srv.URL)
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if snap, _ := f.snapshots.current(); snap == nil || snap.clients != 6 {
		t.Fatal("the gzipped snapshot was not applied")
	}
	cfg := testFeedConfig(srv.URL)
	cfg.maxBytes = int64(len(body) - 1)
	small := newFeed(cfg, zap.NewNop(), nil)
	if err := small.poll(context.Background(), false); err == nil {
		t.Fatal("a snapshot over max_snapshot_bytes once decompressed was accepted")
	}
}

// TestPollRefusesUnknownEncoding: an answer in an encoding the edge did
// not ask for, or a gzip one that is not gzip, is refused and leaves the
// edge without a snapshot.
func TestPollRefusesUnknownEncoding(t *testing.T) {
	body, err := json.Marshal(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{"br", "gzip"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", enc)
			_, _ = w.Write(body) // not compressed at all
		}))
		f := testFeed(t, srv.URL)
		if err := f.poll(context.Background(), false); err == nil || !strings.Contains(err.Error(), "snapshot rejected") {
			t.Errorf("Content-Encoding %s over a plain body: %v", enc, err)
		}
		if snap, _ := f.snapshots.current(); snap != nil {
			t.Errorf("Content-Encoding %s over a plain body: a snapshot was taken", enc)
		}
		srv.Close()
	}
}

// startTestFeed starts f's loops (after its first fetch) and stops them
// when the test ends.
func startTestFeed(t *testing.T, f *feed) {
	t.Helper()
	f.start(context.Background())
	t.Cleanup(func() { f.Destruct() })
}

// TestSyncLoopKeepsRefreshing runs the real loop and checks that a second
// and a third change arrive: a poller that stops after its first fetch
// fails here.
func TestSyncLoopKeepsRefreshing(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, "http://127.0.0.1:1", fs.URL) // the first replica is down
	startTestFeed(t, f)
	base := testSnapshot(t).Clients
	for change := 1; change <= 3; change++ {
		rev := int64(7 + change)
		fs.Update(func(s *wire.Snapshot) {
			id := fmt.Sprintf("new%d", change)
			s.Revision = rev
			s.Clients = append(slices.Clone(base), wire.Client{ClientID: id, Secrets: []wire.Secret{{ID: "sec_" + id, Hash: secrethash.NewSHA256(id)}}})
		})
		waitFor(t, 5*time.Second, fmt.Sprintf("change %d (revision %d)", change, rev), func() bool {
			snap, _ := f.snapshots.current()
			return snap != nil && snap.revision == rev
		})
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// notModifiedServer is a control plane that answers a poll for changes
// (If-None-Match) 304 at once, and a blind poll with the test snapshot.
// Each request first goes through seen, told whether it is blind.
func notModifiedServer(t *testing.T, seen func(blind bool)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		blind := r.Header.Get("If-None-Match") == ""
		seen(blind)
		if !blind {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_ = json.NewEncoder(w).Encode(testSnapshot(t))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSyncLoopDoesNotSpin: against a control plane that answers 304 at
// once instead of holding the poll, the loop keeps to its minimum gap.
func TestSyncLoopDoesNotSpin(t *testing.T) {
	var polls atomic.Int64
	srv := notModifiedServer(t, func(bool) { polls.Add(1) })
	f := testFeed(t, srv.URL)
	f.start(context.Background())
	time.Sleep(500 * time.Millisecond) // a window to count polls in, not a synchronisation
	f.Destruct()
	if n := polls.Load(); n > 8 {
		t.Fatalf("%d polls in 0.5s against an answer-at-once control plane; the gap is %v", n, minPollGap)
	}
}

// TestPanickingLoopRestarts: a background loop that panics is logged with
// its stack and run again, not lost; one that returns is not run again.
func TestPanickingLoopRestarts(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	f := newFeed(testFeedConfig("http://127.0.0.1:9"), zap.New(core), nil)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	defer f.cancel()
	f.restartPause = time.Millisecond
	runs := 0
	f.run("test", func(ctx context.Context) {
		runs++
		if runs < 3 {
			panic("boom")
		}
	})
	f.done.Wait()
	if runs != 3 || logs.FilterMessage("background loop panicked").Len() != 2 {
		t.Fatalf("runs %d, panic logs %d", runs, logs.Len())
	}
	if _, ok := logs.All()[0].ContextMap()["stack"]; !ok {
		t.Fatal("the panic was logged without its stack")
	}
}

// TestPanickingLoopStopsWithTheFeed: a loop that panics on every run is
// not restarted once the feed is stopped.
func TestPanickingLoopStopsWithTheFeed(t *testing.T) {
	f := newFeed(testFeedConfig("http://127.0.0.1:9"), zap.NewNop(), nil)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.restartPause = time.Hour
	ran := make(chan struct{}, 1)
	f.run("test", func(ctx context.Context) {
		ran <- struct{}{}
		panic("boom")
	})
	<-ran
	f.cancel() // during the pause before the restart
	f.done.Wait()
}

// TestUsageLoopFlushes: the usage loop flushes once at once, then at
// each interval.
func TestUsageLoopFlushes(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	cfg := testFeedConfig(fs.URL)
	cfg.flush = 20 * time.Millisecond
	f := newFeed(cfg, zap.NewNop(), nil)
	at := time.Unix(1_800_000_000, 0)
	f.usage.record("app", "sec_app1", "192.0.2.1", at, useAccepted)
	startTestFeed(t, f)
	waitFor(t, 5*time.Second, "the stamp recorded before the start", func() bool { return len(fs.Stamps()) == 1 })
	f.usage.record("app", "sec_app2", "192.0.2.1", at, useAccepted)
	waitFor(t, 5*time.Second, "the stamp recorded after the start", func() bool { return len(fs.Stamps()) == 2 })
}

// TestFinalUsageFlush: with an hour between flushes, a stamp whose first
// flush failed reaches the control plane only because stopping the feed
// flushes it.
func TestFinalUsageFlush(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL) // flush: 1h
	f.usage.record("app", "sec_app1", "192.0.2.7", time.Unix(1_800_000_000, 0), useAccepted)
	fs.FailUsage(true)
	f.start(context.Background())
	failed := edgeMetrics.stampsFailed.WithLabelValues(f.client.label)
	waitFor(t, 5*time.Second, "the loop's first flush fails", func() bool { return testutil.ToFloat64(failed) == 1 })
	fs.FailUsage(false)
	if err := f.Destruct(); err != nil {
		t.Fatal(err)
	}
	if stamps := fs.Stamps(); len(stamps) != 1 || stamps[0].From != "192.0.2.7" || f.usage.pendingCount() != 0 {
		t.Fatalf("after the stop: %+v, %d pending", stamps, f.usage.pendingCount())
	}
}

// TestSlowFirstFetchIsNotCutOff: a first snapshot that takes longer than
// provisioning waits (a big one) arrives from that very request, not from
// a new one started from scratch.
func TestSlowFirstFetchIsNotCutOff(t *testing.T) {
	var requests, blind atomic.Int64 // all, and those of an edge holding nothing
	release := make(chan struct{})
	srv := notModifiedServer(t, func(blindPoll bool) {
		if requests.Add(1) == 1 {
			<-release // a transfer still under way when start returns
		}
		if blindPoll {
			blind.Add(1)
		}
	})
	f := testFeed(t, srv.URL)
	f.start(context.Background())
	defer f.Destruct()
	waitFor(t, 5*time.Second, "the first request", func() bool { return requests.Load() == 1 })
	if snap, _ := f.snapshots.current(); snap != nil {
		t.Fatal("a snapshot before the first answer")
	}
	close(release)
	waitFor(t, 5*time.Second, "the first snapshot", func() bool {
		snap, _ := f.snapshots.current()
		return snap != nil
	})
	if n := blind.Load(); n != 1 {
		t.Fatalf("%d requests for a first snapshot, want the one", n)
	}
}
