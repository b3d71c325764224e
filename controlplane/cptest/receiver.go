package cptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/sink/sinktest"
	"github.com/rotagate/rotagate/internal/testkeys"
)

// Event is one event a test Receiver took, verified and decrypted.
type Event struct {
	ID, SecretID, Stage string
	// Plaintext is the decrypted secret of a pending event.
	Plaintext string
}

// Receiver is a webhook sink on 127.0.0.1:0 with its own P-256 key: it
// verifies each event's Standard Webhooks signature and decrypts the
// secret's JWE, as docs/sinks.md tells receivers to.
type Receiver struct {
	t *testing.T
	// Key is the receiver's private key.
	Key *ecdsa.PrivateKey
	// URL is the receiver's address.
	URL string

	// Set by the ReceiverOptions, before the server starts.
	wallClock, once bool

	mu         sync.Mutex
	signer     *standardwebhooks.Webhook
	events     []Event
	seen       map[string]bool
	deliveries int
	failing    bool
}

// ReceiverOption is a way a Receiver takes events that the control
// plane's own tests, on a fake clock, do without.
type ReceiverOption func(*Receiver)

// WallClock has the Receiver check each signature's timestamp against
// the wall clock too, for a control plane that runs on it.
func WallClock(rc *Receiver) { rc.wallClock = true }

// OncePerID has the Receiver take each webhook-id once: a repeated
// delivery is answered and not recorded, as docs/sinks.md tells
// receivers to.
func OncePerID(rc *Receiver) { rc.once = true }

// NewReceiver starts a receiver; it stops with the test.
func NewReceiver(t *testing.T, opts ...ReceiverOption) *Receiver {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rc := &Receiver{t: t, Key: key, seen: map[string]bool{}}
	for _, o := range opts {
		o(rc)
	}
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL
	return rc
}

// PublicJWK is the Receiver's public key as a sink config takes it.
func (rc *Receiver) PublicJWK() json.RawMessage {
	return testkeys.JWK(rc.t, jose.JSONWebKey{Key: &rc.Key.PublicKey, KeyID: "receiver-1", Use: "enc"})
}

// Config is a webhook sink to the receiver.
func (rc *Receiver) Config(rotateEvery string) sink.Config {
	return sink.Config{Kind: sink.KindWebhook, URL: rc.URL + "/rotagate", PublicKey: rc.PublicJWK(), RotateEvery: rotateEvery}
}

// SetSigningSecret sets the secret events are signed with.
func (rc *Receiver) SetSigningSecret(secret string) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		rc.t.Fatalf("signing secret: %v", err)
	}
	rc.mu.Lock()
	rc.signer = wh
	rc.mu.Unlock()
}

// SetFailing makes the receiver answer 503, or stop doing so.
func (rc *Receiver) SetFailing(f bool) {
	rc.mu.Lock()
	rc.failing = f
	rc.mu.Unlock()
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failing {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if rc.signer == nil || rc.verify(body, r.Header) != nil {
		rc.t.Errorf("sink event with a bad signature")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev struct {
		Type string     `json:"type"`
		Data sink.Event `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type != sink.EventDelivered {
		rc.t.Errorf("sink event %s: type %q, %v", body, ev.Type, err)
		return
	}
	rc.deliveries++
	id := r.Header.Get("webhook-id")
	if rc.once && rc.seen[id] {
		return
	}
	rc.seen[id] = true
	got := Event{ID: id, SecretID: ev.Data.SecretID, Stage: string(ev.Data.Stage)}
	if ev.Data.Stage == sink.StagePending {
		plain, err := sinktest.OpenSecret(rc.Key, ev.Data.SecretJWE)
		if err != nil {
			rc.t.Errorf("the secret's JWE: %v", err)
			return
		}
		got.Plaintext = plain
	} else if ev.Data.SecretJWE != "" {
		rc.t.Errorf("a %s event carries a secret", ev.Data.Stage)
	}
	rc.events = append(rc.events, got)
}

// verify checks a delivery's signature; on the tests' fake clock, which
// is not the wall clock, its timestamp's tolerance is not checked.
func (rc *Receiver) verify(body []byte, h http.Header) error {
	if rc.wallClock {
		return rc.signer.Verify(body, h)
	}
	return rc.signer.VerifyIgnoringTimestamp(body, h)
}

// Deliveries is how many verified events the receiver took, repeats
// included.
func (rc *Receiver) Deliveries() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.deliveries
}

// Took returns the events received so far.
func (rc *Receiver) Took() []Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Event(nil), rc.events...)
}

// Stages returns the Stages received for a secret, in order.
func (rc *Receiver) Stages(secretID string) []string {
	var out []string
	for _, ev := range rc.Took() {
		if ev.SecretID == secretID {
			out = append(out, ev.Stage)
		}
	}
	return out
}

// Delivered returns the secret delivered for secretID, or "" while none
// has been.
func (rc *Receiver) Delivered(secretID string) string {
	for _, ev := range rc.Took() {
		if ev.SecretID == secretID && ev.Plaintext != "" {
			return ev.Plaintext
		}
	}
	return ""
}

// PlaintextOf returns the secret delivered for secretID.
func (rc *Receiver) PlaintextOf(secretID string) string {
	plain := rc.Delivered(secretID)
	if plain == "" {
		rc.t.Fatalf("no secret delivered for %s", secretID)
	}
	return plain
}
