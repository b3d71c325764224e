package sink_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rotagate/rotagate/controlplane/sink"
)

// receiver handles a webhook sink's events: it checks the signature,
// decrypts a pending secret into dir/<secret_id>, and when that secret
// becomes current points dir/client_secret, the file the consumer reads,
// at it. Any answer but 2xx makes the control plane send the event again,
// so every step may run twice.
func receiver(signingSecret string, key *jose.JSONWebKey, dir string) (http.HandlerFunc, error) {
	wh, err := standardwebhooks.NewWebhook(signingSecret)
	if err != nil {
		return nil, err
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || wh.Verify(body, r.Header) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev struct {
			Type string `json:"type"`
			Data struct {
				SecretID  string `json:"secret_id"`
				Stage     string `json:"stage"`
				SecretJWE string `json:"secret_jwe"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &ev) != nil || filepath.Base(ev.Data.SecretID) != ev.Data.SecretID {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		pending := filepath.Join(dir, ev.Data.SecretID)
		switch {
		case ev.Type == "secret.delivered" && ev.Data.Stage == "pending":
			jwe, err := jose.ParseEncryptedCompact(ev.Data.SecretJWE,
				[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				http.Error(w, "bad JWE", http.StatusBadRequest)
				return
			}
			secret, err := jwe.Decrypt(key)
			if err != nil || os.WriteFile(pending+".tmp", secret, 0o600) != nil || os.Rename(pending+".tmp", pending) != nil {
				http.Error(w, "cannot store the secret", http.StatusInternalServerError)
				return
			}
		case ev.Type == "secret.delivered" && ev.Data.Stage == "current":
			if _, err := os.Stat(pending); err != nil {
				http.Error(w, "pending secret not here yet", http.StatusServiceUnavailable)
				return
			}
			// Swap a symlink: the consumer never reads half a secret.
			tmp := filepath.Join(dir, ".client_secret.tmp")
			os.Remove(tmp)
			if os.Symlink(ev.Data.SecretID, tmp) != nil || os.Rename(tmp, filepath.Join(dir, "client_secret")) != nil {
				http.Error(w, "cannot switch the secret", http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}, nil
}

// A receiver of the webhook sink, from the key pair it makes once to the
// file its consumer reads.
func Example_receiver() {
	// The receiver's key pair: the public half goes into the sink
	// (PUT /v1/clients/billing/sink), the private half never leaves.
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := jose.JSONWebKey{Key: priv, KeyID: "billing-1", Use: "enc"}
	public, _ := json.Marshal(key.Public())
	cfg := sink.Config{Kind: sink.KindWebhook, URL: "https://billing.internal/rotagate", PublicKey: public}
	signingSecret, _ := sink.NewSigningSecret() // shown once when the sink is set

	dir, _ := os.MkdirTemp("", "receiver")
	defer os.RemoveAll(dir)
	handle, _ := receiver(signingSecret, &key, dir)

	// What the control plane sends: the new secret, then its promotion.
	send := func(id string, e sink.Event) int {
		body, _ := e.Body(time.Now())
		req := httptest.NewRequest(http.MethodPost, cfg.URL, bytes.NewReader(body))
		req.Header, _ = sink.SignatureHeaders(signingSecret, id, time.Now(), body)
		rec := httptest.NewRecorder()
		handle(rec, req)
		return rec.Code
	}
	jwe, _ := cfg.Encrypt("rgs_exampleSecret")
	fmt.Println(send("evt_1", sink.Event{ClientID: "billing", SecretID: "sec_new", Stage: sink.StagePending, SecretJWE: jwe}))
	fmt.Println(send("evt_0", sink.Event{ClientID: "billing", SecretID: "sec_late", Stage: sink.StageCurrent})) // its pending event is still on the way
	fmt.Println(send("evt_2", sink.Event{ClientID: "billing", SecretID: "sec_new", Stage: sink.StageCurrent}))
	fmt.Println(send("evt_2", sink.Event{ClientID: "billing", SecretID: "sec_new", Stage: sink.StageCurrent})) // sent again
	secret, _ := os.ReadFile(filepath.Join(dir, "client_secret"))
	fmt.Println(string(secret))
	// Output:
	// 204
	// 503
	// 204
	// 204
	// rgs_exampleSecret
}
