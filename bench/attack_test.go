package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestAttack runs the attacker against a server that refuses the first
// requests with 401, lets 5 through (200), then answers 429 and closes the
// connection, as an edge over its failure budget may: the attacker must
// come from 127.0.0.2, never repeat a secret, dial again after each close
// and count the answers by status.
func TestAttack(t *testing.T) {
	const want = 60
	var (
		mu      sync.Mutex
		seen    = map[string]bool{}
		remotes = map[string]bool{}
		n       int
		enough  = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth := r.Header.Get("Authorization")
		if seen[auth] {
			t.Errorf("secret sent twice: %s", auth)
		}
		seen[auth] = true
		remotes[r.RemoteAddr] = true
		n++
		i := n
		if n == want {
			close(enough)
		}
		mu.Unlock()
		if i <= 20 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if i <= 25 {
			return // 200
		}
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()

	a, err := startAttack(context.Background(), srv.URL+"/", "victim", 2)
	if err != nil {
		t.Fatal(err)
	}
	<-enough
	tally := a.stop()

	if tally.Unauthorized < 18 || tally.Unauthorized > 20 || tally.Other < 4 || tally.Other > 5 || tally.Accepted != tally.Other || tally.TooMany < want-25-2 {
		t.Fatalf("tally %s (%d accepted), want 20 401s, 5 other (accepted) and about %d 429s", tally, tally.Accepted, want-25)
	}
	mu.Lock()
	defer mu.Unlock()
	for addr := range remotes {
		host, _, _ := net.SplitHostPort(addr)
		if host != "127.0.0.2" {
			t.Errorf("request from %s, want 127.0.0.2", addr)
		}
	}
	// Keep-alive while answered 401 (two connections), then a new
	// connection after every 429 that closed one.
	if len(remotes) < 10 {
		t.Errorf("%d connections for %d answers that closed theirs: the attacker did not dial again", len(remotes), tally.TooMany)
	}
	if code, err := probeAttack(context.Background(), "http://example.com/", "x"); err == nil || code != 0 {
		t.Errorf("probe of a non-loopback URL: %d %v, want refused", code, err)
	}
}
