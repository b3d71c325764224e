// Package webhooktest helps test webhooks: fresh secrets, and a
// receiver that verifies every delivery with the Standard Webhooks
// library.
package webhooktest

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Secret returns a fresh Standard Webhooks secret.
func Secret(t testing.TB) string {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// Receiver is an httptest webhook receiver that verifies every delivery
// with the Standard Webhooks library and records what it accepted.
type Receiver struct {
	*httptest.Server
	verifier *standardwebhooks.Webhook

	// IgnoreTime skips the timestamp check, for senders on a fake clock.
	IgnoreTime bool

	mu     sync.Mutex
	status int // answer; 0 = 204
	got    []Event
	seen   map[string]bool
	raw    int // accepted deliveries, duplicates included
	bad    int // deliveries whose signature did not verify
}

// Event is one delivery the receiver accepted.
type Event struct {
	ID, Body string
}

// NewReceiver starts a receiver of the webhook secret, closed when the
// test ends.
func NewReceiver(t testing.TB, secret string) *Receiver {
	t.Helper()
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{verifier: v, seen: map[string]bool{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	verify := r.verifier.Verify
	if r.IgnoreTime {
		verify = r.verifier.VerifyIgnoringTimestamp
	}
	if err := verify(body, req.Header); err != nil {
		r.bad++
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	if r.status != 0 {
		w.WriteHeader(r.status)
		return
	}
	r.raw++
	id := req.Header.Get("webhook-id")
	if !r.seen[id] { // dedupe by webhook-id, as the spec tells receivers
		r.seen[id] = true
		r.got = append(r.got, Event{ID: id, Body: string(body)})
	}
	w.WriteHeader(http.StatusNoContent)
}

// RawCount is how many deliveries were accepted, duplicates included.
func (r *Receiver) RawCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.raw
}

// Forged is how many deliveries had a signature that did not verify.
func (r *Receiver) Forged() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// SetStatus makes the receiver answer code (0: 204).
func (r *Receiver) SetStatus(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = code
}

// Events are the deliveries accepted, one per webhook-id, in order.
func (r *Receiver) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.got...)
}
