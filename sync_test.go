package rotagate

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/internal/feedtest"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

func testFeed(t *testing.T, urls ...string) *feed {
	t.Helper()
	return newFeed(feedConfig{urls: urls, token: feedtest.Token, wait: 200 * time.Millisecond, maxBytes: 1 << 20, flush: time.Hour}, zap.NewNop())
}

func TestPollAppliesAndConfirms(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	ctx := context.Background()
	before := time.Now()
	if err := f.poll(ctx, false); err != nil {
		t.Fatal(err)
	}
	snap, confirmed := f.current()
	if snap == nil || snap.revision != 7 || len(snap.clients) != 6 || confirmed.Before(before) {
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
	snap2, confirmed2 := f.current()
	if snap2 != snap || !confirmed2.After(confirmed) {
		t.Fatalf("304 changed the snapshot or did not confirm: %v %v", confirmed, confirmed2)
	}
}

func TestPollRejectsBadAnswers(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	dir := t.TempDir()
	f.disk = &diskCache{dir: dir, key: f.key}
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	good, confirmed := f.current()
	saved, err := os.ReadFile(f.disk.snapshotPath())
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
		if snap, c := f.current(); snap != good || !c.Equal(confirmed) {
			t.Errorf("%s: the snapshot or its confirmation changed", name)
		}
		if now, err := os.ReadFile(f.disk.snapshotPath()); err != nil || string(now) != string(saved) {
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
	if snap, _ := f.current(); snap.epoch != "e2" || snap.revision != 1 || len(snap.clients) != 1 {
		t.Fatalf("new epoch not applied: %+v", snap)
	}
}

// TestSyncLoopKeepsRefreshing runs the real loop and checks that a second
// and a third change arrive: a poller that stops after its first fetch
// fails here.
func TestSyncLoopKeepsRefreshing(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, "http://127.0.0.1:1", fs.URL) // the first replica is down
	f.start(context.Background())
	defer f.Destruct()
	base := testSnapshot(t).Clients
	for change := 1; change <= 3; change++ {
		rev := int64(7 + change)
		fs.Update(func(s *wire.Snapshot) {
			id := fmt.Sprintf("new%d", change)
			s.Revision = rev
			s.Clients = append(slices.Clone(base), wire.Client{ClientID: id, Secrets: []wire.Secret{{ID: "sec_" + id, Hash: secrethash.NewSHA256(id)}}})
		})
		deadline := time.Now().Add(5 * time.Second)
		for {
			if snap, _ := f.current(); snap != nil && snap.revision == rev {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("change %d (revision %d) never arrived", change, rev)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestUsageFlush(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	u := f.usage
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 1000 { // many requests, two secrets
		u.record("app", "sec_app1", "192.0.2.1", t0.Add(time.Duration(i)*time.Millisecond))
		u.record("app", "sec_app2", "192.0.2.2", t0)
	}
	u.record("app", "sec_app1", "192.0.2.9", t0) // older: ignored
	fs.FailUsage(true)
	if err := u.flush(context.Background()); err == nil {
		t.Fatal("flush against a failing ingest succeeded")
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

// TestSavedSnapshotSurvivesRestart: a feed that synced once, then a new
// feed (a restarted edge) with the control plane down, serves from disk
// with the saved confirmation time.
func TestSavedSnapshotSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	f.disk = &diskCache{dir: dir, key: f.key}
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := f.poll(context.Background(), true); err != nil { // a 304 moves the confirmation
		t.Fatal(err)
	}
	_, confirmed := f.current()
	fs.Close()

	restarted := testFeed(t, fs.URL)
	restarted.disk = &diskCache{dir: dir, key: restarted.key}
	restarted.loadSaved()
	snap, c := restarted.current()
	if snap == nil || snap.revision != 7 || len(snap.clients) != 6 || !c.Round(0).Equal(confirmed.Round(0)) {
		t.Fatalf("restarted with %+v confirmed %v, want revision 7 confirmed %v", snap, c, confirmed)
	}
	raw, err := os.ReadFile(restarted.disk.snapshotPath())
	if err != nil || strings.Contains(string(raw), appSecret) {
		t.Fatalf("saved file: %v", err)
	}
	// A damaged file is ignored, not trusted.
	if err := os.WriteFile(restarted.disk.snapshotPath(), raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	broken := testFeed(t, fs.URL)
	broken.disk = &diskCache{dir: dir, key: broken.key}
	broken.loadSaved()
	if snap, _ := broken.current(); snap != nil {
		t.Fatal("a truncated saved snapshot was loaded")
	}
}

// TestPanickingLoopRestarts: a background loop that panics is logged with
// its stack and run again, not lost.
func TestPanickingLoopRestarts(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	f := newFeed(feedConfig{urls: []string{"http://127.0.0.1:9"}, token: "t", wait: time.Second, maxBytes: 1, flush: time.Hour}, zap.New(core))
	f.restartPause = time.Millisecond
	runs := 0
	f.goSafe("test", func() {
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
	if snap, _ := f.current(); snap == nil || len(snap.clients) != 6 {
		t.Fatal("the gzipped snapshot was not applied")
	}
	small := testFeed(t, srv.URL)
	small.maxBytes.Store(int64(len(body) - 1))
	if err := small.poll(context.Background(), false); err == nil {
		t.Fatal("a snapshot over max_snapshot_bytes once decompressed was accepted")
	}
}

// TestSavedSnapshotWithoutConfirmation: a saved snapshot whose
// confirmation file is missing is loaded but counts as unconfirmed.
func TestSavedSnapshotWithoutConfirmation(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	f.disk = &diskCache{dir: dir, key: f.key}
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.disk.confirmedPath()); err != nil {
		t.Fatal(err)
	}
	restarted := testFeed(t, fs.URL)
	restarted.disk = &diskCache{dir: dir, key: restarted.key}
	restarted.loadSaved()
	snap, confirmed := restarted.current()
	if snap == nil || time.Since(confirmed) < 100*365*24*time.Hour {
		t.Fatalf("snapshot %v, confirmed %v (want: never confirmed)", snap != nil, confirmed)
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("no space left on device")
}

// TestDiskTroubleDoesNotRejectSnapshots: a failing disk copy neither fails
// the decode (a full disk must not stop the edge) nor leaves an older
// saved body to be paired with a newer confirmation time.
func TestDiskTroubleDoesNotRejectSnapshots(t *testing.T) {
	fw := &failingWriter{}
	copied := bestEffortWriter{w: fw}
	body, _ := json.Marshal(testSnapshot(t))
	counted := &io.LimitedReader{R: bytes.NewReader(body), N: int64(len(body)) + 1}
	snap, err := decodeSnapshot(io.TeeReader(counted, &copied), counted, int64(len(body)))
	if err != nil || snap == nil || copied.err == nil || fw.n != 1 {
		t.Fatalf("decode with a failing copy: %v, copy error %v, writes tried %d", err, copied.err, fw.n)
	}

	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	f.disk = &diskCache{dir: t.TempDir(), key: f.key}
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.persist(nil) // a newer snapshot was applied but could not be saved
	if _, err := os.Stat(f.disk.snapshotPath()); !os.IsNotExist(err) {
		t.Fatalf("the outdated saved snapshot is still there: %v", err)
	}
	if err := f.poll(context.Background(), true); err != nil { // a 304
		t.Fatal(err)
	}
	if _, err := os.Stat(f.disk.confirmedPath()); !os.IsNotExist(err) {
		t.Fatal("a confirmation time was saved with no current snapshot beside it")
	}
}

// TestUsageFlushInChunks: a backlog larger than one POST may carry goes
// out in several, none lost.
func TestUsageFlushInChunks(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeed(t, fs.URL)
	n := 2*maxStampsPerPost + 5
	at := time.Unix(1_800_000_000, 0)
	for i := range n {
		f.usage.record("app", fmt.Sprintf("sec_%d", i), "192.0.2.1", at)
	}
	if err := f.usage.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range fs.Stamps() {
		got[s.SecretID] = true
	}
	if len(got) != n || f.usage.pendingCount() != 0 {
		t.Fatalf("%d distinct stamps arrived of %d, %d pending", len(got), n, f.usage.pendingCount())
	}
}

// TestSyncLoopDoesNotSpin: against a control plane that answers 304 at
// once instead of holding the poll, the loop keeps to its minimum gap.
func TestSyncLoopDoesNotSpin(t *testing.T) {
	var polls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_ = json.NewEncoder(w).Encode(testSnapshot(t))
	}))
	defer srv.Close()
	f := testFeed(t, srv.URL)
	f.start(context.Background())
	time.Sleep(500 * time.Millisecond) // a window to count polls in, not a synchronisation
	f.Destruct()
	if n := polls.Load(); n > 8 {
		t.Fatalf("%d polls in 0.5s against an answer-at-once control plane; the gap is %v", n, minPollGap)
	}
}
