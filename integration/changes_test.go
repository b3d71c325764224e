package integration

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/internal/loopback"
	"github.com/rotagate/rotagate/internal/wire"
)

// feedRecord is one feed answer the edge got: what it asked, the status,
// the bytes on the wire, and whether the body was a change or in full.
type feedRecord struct {
	since  string
	status int
	bytes  int
	kind   string // "change", "full" or ""
	// gone: the edge went away before the answer (a poll it cut).
	gone bool
}

// feedRecorder sits in front of the outside control plane's handler and
// notes every feed answer, decompressing a copy to tell a change from a
// full snapshot.
type feedRecorder struct {
	next http.Handler
	mu   sync.Mutex
	recs []feedRecord
}

func (f *feedRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != wire.SnapshotPath {
		f.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	f.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	fr := feedRecord{since: r.URL.Query().Get(wire.SinceParam), status: rec.Code, bytes: len(body), gone: r.Context().Err() != nil}
	if rec.Code == http.StatusOK && !fr.gone {
		plain := body
		if rec.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err == nil {
				plain, _ = io.ReadAll(zr)
			}
		}
		fr.kind = "full"
		if bytes.Contains(plain, []byte(`"since":`)) && !bytes.Contains(plain, []byte(`"clients":`)) {
			fr.kind = "change"
		}
	}
	f.mu.Lock()
	f.recs = append(f.recs, fr)
	f.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}

func (f *feedRecorder) records() []feedRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]feedRecord(nil), f.recs...)
}

// TestEdgeFollowsChanges runs an edge in real Caddy against the real
// control plane (SQLite): after its first full snapshot it asks for and
// applies changes — a revocation costs a few hundred bytes, not the
// snapshot — and a restarted edge resumes from its disk copy, then asks
// for the changes since it.
func TestEdgeFollowsChanges(t *testing.T) {
	rec := &feedRecorder{}
	cp := startOutsideCP(t, freeAddr(t), filepath.Join(t.TempDir(), "rotagate.db"), func(h http.Handler) http.Handler {
		rec.next = h
		return rec
	})
	api := adminAPI{t: t, base: cp.url()}
	for _, id := range []string{"bulk1", "bulk2", "bulk3"} {
		api.createClient(id)
		api.generate(id)
	}
	api.createClient("delta")
	first := api.generate("delta")
	port := loopback.FreePort(t)
	edgeURL := localURL(port)
	startCaddy(t, edgeOnly(port, cp.url(), "30s"))
	cptest.WaitFor(t, 5*time.Second, "the edge accepts the secret", func() bool {
		code, _ := status(t, edgeURL, "delta", first.Secret)
		return code == 200
	})

	second := api.generate("delta")
	api.revoke("delta", first.ID)
	cptest.WaitFor(t, 3*time.Second, "the revoked secret is refused", func() bool {
		code, _ := status(t, edgeURL, "delta", first.Secret)
		return code == 401
	})
	if code, _ := status(t, edgeURL, "delta", second.Secret); code != 200 {
		t.Fatalf("the new secret: %d", code)
	}
	var changes int
	for _, r := range rec.records() {
		if r.kind == "change" {
			changes++
			if r.since == "" || r.bytes > 4096 {
				t.Errorf("a change answer of %d bytes to since=%q", r.bytes, r.since)
			}
		}
	}
	recs := rec.records()
	if recs[0].kind != "full" || changes == 0 {
		t.Fatalf("feed answers %+v: want a full snapshot, then changes", recs)
	}

	// Restart the edge: it loads its disk copy (full body + change log),
	// then asks for the changes since it.
	startCaddy(t, noEdge(port))
	before := len(rec.records())
	startCaddy(t, edgeOnly(port, cp.url(), "30s"))
	if code, _ := status(t, edgeURL, "delta", second.Secret); code != 200 {
		t.Fatalf("the restarted edge refuses the current secret: %d", code)
	}
	if code, _ := status(t, edgeURL, "delta", first.Secret); code != 401 {
		t.Fatalf("the restarted edge accepts the revoked secret: %d", code)
	}
	// The old edge's held poll, cut when it stopped, may be noted after
	// before was read: the restarted edge's first poll is the first one
	// still answered.
	var firstPoll *feedRecord
	cptest.WaitFor(t, 3*time.Second, "the restarted edge polls", func() bool {
		for _, r := range rec.records()[before:] {
			if !r.gone {
				firstPoll = &r
				return true
			}
		}
		return false
	})
	if r := *firstPoll; r.since == "" || r.kind == "full" {
		t.Fatalf("the restarted edge's first poll: %+v, want since= and no full snapshot", r)
	}
	api.revoke("delta", second.ID)
	cptest.WaitFor(t, 3*time.Second, "a revocation after the restart is refused", func() bool {
		code, _ := status(t, edgeURL, "delta", second.Secret)
		return code == 401
	})
	for _, r := range rec.records()[before:] {
		if r.kind == "full" {
			t.Fatalf("the restarted edge took a full snapshot: %+v", rec.records()[before:])
		}
	}
}
