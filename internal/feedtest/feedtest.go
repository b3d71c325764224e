// Package feedtest is a stand-in control plane for the edge's tests: it
// speaks the control plane's side of the feed protocol (docs/design.md §4) (snapshot with ETag and
// long-poll, usage ingest) over a real httptest server, and lets a test
// change the snapshot or break the answers. The real control plane is tested
// against the same protocol in the controlplane and integration packages.
package feedtest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// Token is the edge token the server expects.
const Token = "edge-token"

// Server is the stand-in control plane.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	snap     wire.Snapshot
	changed  chan struct{}
	usage    []wire.Stamp
	revoked  []wire.RevokedUse
	override func(w http.ResponseWriter)
	failPost bool
}

// New starts a server that serves snap; it stops when the test ends.
func New(t testing.TB, snap wire.Snapshot) *Server {
	fs := &Server{snap: snap, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.SnapshotPath, fs.serveSnapshot)
	mux.HandleFunc("POST "+wire.UsagePath, fs.serveUsage)
	fs.Server = httptest.NewServer(mux)
	t.Cleanup(fs.Close)
	return fs
}

func (fs *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+Token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	fs.mu.Lock()
	if fs.override != nil {
		fs.override(w)
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

func (fs *Server) serveUsage(w http.ResponseWriter, r *http.Request) {
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
	fs.revoked = append(fs.revoked, u.RevokedUses...)
	w.WriteHeader(http.StatusNoContent)
}

// Update changes the snapshot and wakes the long-polls.
func (fs *Server) Update(change func(*wire.Snapshot)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	change(&fs.snap)
	close(fs.changed)
	fs.changed = make(chan struct{})
}

// Override makes every snapshot request answer with answer instead; nil
// restores normal service.
func (fs *Server) Override(answer func(w http.ResponseWriter)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.override = answer
}

// FailUsage makes the usage ingest answer 503 while fail is set.
func (fs *Server) FailUsage(fail bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.failPost = fail
}

// RevokedUses returns the presented-after-revoke reports received so far.
func (fs *Server) RevokedUses() []wire.RevokedUse {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]wire.RevokedUse(nil), fs.revoked...)
}

// Stamps returns the usage stamps received so far.
func (fs *Server) Stamps() []wire.Stamp {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]wire.Stamp(nil), fs.usage...)
}
