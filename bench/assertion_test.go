package main

import (
	"bufio"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/credkey"
)

// TestAssertionBodies: the bodies case (k) sends are what the edge
// accepts — each a form POST whose assertion the edge's verifier takes for
// its client, with the client's public key as registered — every jti
// used once, and none expiring beyond what the edge allows.
func TestAssertionBodies(t *testing.T) {
	const clients, n = 3, 7
	s, err := newAssertionSigner(clients, benchAudience)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]clientassertion.Key{}
	for _, c := range s.clients {
		jwk, err := jose.JSONWebKey{Key: &c.key.PublicKey}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		pk, err := credkey.ParseJWK(jwk)
		if err != nil {
			t.Fatal(err)
		}
		keys[c.id] = []clientassertion.Key{{CredentialID: "cred-" + c.id, Key: pk}}
	}
	path := filepath.Join(t.TempDir(), "bodies")
	if err := s.writeBodies(path, n, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	v, err := clientassertion.New(clientassertion.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now, seen := time.Now(), map[string]int{}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		form, err := url.ParseQuery(sc.Text())
		if err != nil || form.Get("client_assertion_type") != clientassertion.AssertionType || form.Get("grant_type") != "client_credentials" {
			t.Fatalf("body %d: %q (%v)", lines, sc.Text(), err)
		}
		a, err := v.Parse(form.Get("client_assertion"), "", []string{benchAudience}, now)
		if err != nil {
			t.Fatalf("body %d: parse: %v", lines, err)
		}
		got, err := v.Verify(a, keys[a.ClientID()], now)
		if err != nil {
			t.Fatalf("body %d: verify: %v", lines, err)
		}
		seen[got.ClientID]++
	}
	if lines != n || len(seen) != clients {
		t.Fatalf("%d bodies for %d clients (%v), want %d for %d", lines, len(seen), seen, n, clients)
	}
	// The same assertions again: each jti was accepted once.
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	sc = bufio.NewScanner(f)
	for sc.Scan() {
		form, _ := url.ParseQuery(sc.Text())
		a, err := v.Parse(form.Get("client_assertion"), "", []string{benchAudience}, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(a, keys[a.ClientID()], now); err == nil {
			t.Fatal("an assertion was accepted twice: its jti repeats")
		}
	}
	if err := s.writeBodies(path, 1, maxAssertionAhead); err == nil {
		t.Fatal("a run whose assertions would expire more than 5 min ahead was signed")
	}
	if got := assertionsFor(2*time.Second, 16); got != 2*assertionRate+16 {
		t.Fatalf("assertionsFor(2s, 16) = %d", got)
	}
}
