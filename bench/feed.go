package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// staticFeed is a minimal control plane speaking the feed protocol (docs/feed-protocol.md
// "The feed protocol"): it serves pre-encoded snapshots, long-polls on
// If-None-Match, gzips when asked, and accepts usage POSTs. It lets the
// scale measurement time the edge alone, without a store behind the feed.
type staticFeed struct {
	token string
	srv   *http.Server
	url   string

	mu      sync.Mutex
	cur     *encodedSnap
	changed chan struct{}
	sent    []sentSnap // every 200 written: when it began and ended
}

type encodedSnap struct {
	etag       string
	plain, gz  []byte
	clients    int
	secrets    int
	generation time.Duration
}

type sentSnap struct {
	etag       string
	start, end time.Time
	gzip       bool
	bytes      int
}

func newStaticFeed(token string, first *encodedSnap) (*staticFeed, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &staticFeed{token: token, cur: first, changed: make(chan struct{}), url: "http://" + l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.SnapshotPath, f.snapshot)
	mux.HandleFunc("POST "+wire.UsagePath, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(l) }()
	return f, nil
}

func (f *staticFeed) close() { _ = f.srv.Close() }

func (f *staticFeed) set(s *encodedSnap) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = s
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *staticFeed) sends() []sentSnap {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentSnap(nil), f.sent...)
}

func (f *staticFeed) snapshot(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	f.mu.Lock()
	cur, changed := f.cur, f.changed
	f.mu.Unlock()
	if r.Header.Get("If-None-Match") == cur.etag {
		select {
		case <-changed:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
		cur = f.cur
		f.mu.Unlock()
		if r.Header.Get("If-None-Match") == cur.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	start := time.Now()
	body := cur.plain
	gz := strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
	if gz {
		body = cur.gz
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("ETag", cur.etag)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	_, _ = w.Write(body)
	f.mu.Lock()
	f.sent = append(f.sent, sentSnap{etag: cur.etag, start: start, end: time.Now(), gzip: gz, bytes: len(body)})
	f.mu.Unlock()
}

// scaleSecret is the secret j of client i in snapshot revision rev. Only
// the last client's second secret changes with the revision, so that the
// harness can tell when the edge has swapped a revision in.
func scaleSecret(i, j, clients int, rev int64) string {
	if i == clients-1 && j == 1 {
		return fmt.Sprintf("rgs_bench_%06d_%d_rev%d", i, j, rev)
	}
	return fmt.Sprintf("rgs_bench_%06d_%d", i, j)
}

func scaleClientID(i int) string { return fmt.Sprintf("client-%06d", i) }

// buildSnapshot encodes a full snapshot of n clients with two sha256
// secrets each (every tenth client's second secret expiring), plain and
// gzip.
func buildSnapshot(epoch string, rev int64, n int) (*encodedSnap, error) {
	start := time.Now()
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	snap := wire.Snapshot{Epoch: epoch, Revision: rev, GeneratedAt: time.Now().UTC(), Clients: make([]wire.Client, n)}
	for i := range n {
		c := wire.Client{ClientID: scaleClientID(i), Secrets: make([]wire.Secret, 2)}
		for j := range 2 {
			c.Secrets[j] = wire.Secret{
				ID:   fmt.Sprintf("sec_%020d", 2*i+j),
				Hash: secrethash.NewSHA256(scaleSecret(i, j, n, rev)),
			}
			if j == 1 && i%10 == 0 {
				c.Secrets[j].ExpiresAt = &exp
			}
		}
		snap.Clients[i] = c
	}
	plain, err := json.Marshal(&snap)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(plain); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &encodedSnap{etag: wire.ETag(epoch, rev), plain: plain, gz: buf.Bytes(), clients: n, secrets: 2 * n, generation: time.Since(start)}, nil
}
