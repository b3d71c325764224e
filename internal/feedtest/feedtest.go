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
	// history holds earlier snapshots by revision while changes are
	// served (ServeChanges); answers records "full" or "change" per 200.
	history map[int64][]byte
	answers []string
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
	var change *wire.Delta
	if fs.history != nil {
		change = fs.changeSince(r.URL.Query().Get(wire.SinceParam))
	}
	tag = wire.ETag(snap.Epoch, snap.Revision)
	if r.Header.Get("If-None-Match") == tag {
		fs.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if change != nil {
		fs.answers = append(fs.answers, "change")
	} else {
		fs.answers = append(fs.answers, "full")
	}
	fs.mu.Unlock()
	w.Header().Set("ETag", tag)
	w.Header().Set("Content-Type", "application/json")
	if change != nil {
		_ = json.NewEncoder(w).Encode(change)
		return
	}
	_ = json.NewEncoder(w).Encode(snap)
}

// ServeChanges makes the server answer since=<epoch>.<revision> with the
// changes since that revision while it still has it (from now on), as the
// control plane does; without it the server is one that predates changes
// and answers full snapshots.
func (fs *Server) ServeChanges() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.history = map[int64][]byte{}
	fs.keepLocked()
}

// ForgetChanges drops the history: the next since is answered in full.
func (fs *Server) ForgetChanges() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.history != nil {
		fs.history = map[int64][]byte{}
	}
}

// Answers returns "full" or "change" for every 200 served so far.
func (fs *Server) Answers() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.answers...)
}

func (fs *Server) keepLocked() {
	raw, _ := json.Marshal(fs.snap)
	fs.history[fs.snap.Revision] = raw
}

// changeSince diffs the snapshot against the one kept at since, or
// returns nil.
func (fs *Server) changeSince(since string) *wire.Delta {
	epoch, rev, ok := wire.ParseETag(`"` + since + `"`)
	raw, kept := fs.history[rev]
	if !ok || epoch != fs.snap.Epoch || !kept || rev > fs.snap.Revision {
		return nil
	}
	var old wire.Snapshot
	_ = json.Unmarshal(raw, &old)
	before := map[string][]byte{}
	for _, c := range old.Clients {
		before[c.ClientID], _ = json.Marshal(c)
	}
	d := &wire.Delta{Epoch: fs.snap.Epoch, Revision: fs.snap.Revision, Since: rev, GeneratedAt: time.Now(), Changed: []wire.Client{}, Removed: []string{}}
	for _, c := range fs.snap.Clients {
		now, _ := json.Marshal(c)
		if string(before[c.ClientID]) != string(now) {
			d.Changed = append(d.Changed, c)
		}
		delete(before, c.ClientID)
	}
	for id := range before {
		d.Removed = append(d.Removed, id)
	}
	return d
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
	if fs.history != nil {
		fs.keepLocked()
	}
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
