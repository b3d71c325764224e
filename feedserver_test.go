package rotagate

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// feedServer speaks the control plane's side of SPEC §4 for the edge's
// tests: a snapshot behind ETag/If-None-Match with long-poll, and a usage
// ingest that keeps what it is sent. override, when set, answers instead.
type feedServer struct {
	*httptest.Server
	mu       sync.Mutex
	snap     wire.Snapshot
	changed  chan struct{}
	usage    []wire.Stamp
	polls    int
	override func(w http.ResponseWriter) bool
	failPost bool
}

func newFeedServer(t testing.TB, snap wire.Snapshot) *feedServer {
	fs := &feedServer{snap: snap, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.SnapshotPath, fs.serveSnapshot)
	mux.HandleFunc("POST "+wire.UsagePath, fs.serveUsage)
	fs.Server = httptest.NewServer(mux)
	t.Cleanup(fs.Close)
	return fs
}

func (fs *feedServer) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer edge-token" {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	fs.mu.Lock()
	fs.polls++
	if fs.override != nil && fs.override(w) {
		fs.mu.Unlock()
		return
	}
	changed := fs.changed
	tag := wire.ETag(fs.snap.Epoch, fs.snap.Revision)
	fs.mu.Unlock()
	if r.Header.Get("If-None-Match") == tag {
		select {
		case <-changed:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	fs.mu.Lock()
	snap := fs.snap
	fs.mu.Unlock()
	tag = wire.ETag(snap.Epoch, snap.Revision)
	if r.Header.Get("If-None-Match") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", tag)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(snap)
}

func (fs *feedServer) serveUsage(w http.ResponseWriter, r *http.Request) {
	var u wire.Usage
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.failPost {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	fs.usage = append(fs.usage, u.Stamps...)
	w.WriteHeader(http.StatusNoContent)
}

// update changes the snapshot and wakes the long-polls.
func (fs *feedServer) update(change func(*wire.Snapshot)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	change(&fs.snap)
	close(fs.changed)
	fs.changed = make(chan struct{})
}
