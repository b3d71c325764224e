package sink

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const testSecret = "rgs_4kT9mQ2xV7pL1nR8sW3yZ6bC0dF5gH2jK9mN4pQ7rS1t0a1B2c"

func decrypt(t *testing.T, jwe string, key *ecdsa.PrivateKey) (string, error) {
	t.Helper()
	obj, err := jose.ParseEncryptedCompact(jwe, []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatalf("parsing the JWE: %v", err)
	}
	b, err := obj.Decrypt(key)
	return string(b), err
}

// A receiver holding the private key reads the secret; nobody else does.
func TestEncrypt(t *testing.T) {
	key, pub := p256Key(t)
	c := Config{Kind: KindWebhook, URL: "https://r.example/", PublicKey: pub}
	jwe, err := c.Encrypt(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(jwe, ".") != 4 {
		t.Fatalf("not a compact JWE: %q", jwe)
	}
	if strings.Contains(jwe, testSecret) || strings.Contains(jwe, base64.RawURLEncoding.EncodeToString([]byte(testSecret))) {
		t.Fatal("the JWE holds the secret in the clear")
	}
	got, err := decrypt(t, jwe, key)
	if err != nil || got != testSecret {
		t.Fatalf("the receiver decrypted %q, %v", got, err)
	}
	obj, _ := jose.ParseEncryptedCompact(jwe, []jose.KeyAlgorithm{KeyAlgorithm}, []jose.ContentEncryption{ContentEncryption})
	if h := obj.Header; h.Algorithm != string(jose.ECDH_ES_A256KW) || h.KeyID != "receiver-1" {
		t.Fatalf("header alg %q kid %q, want ECDH-ES+A256KW and the JWK's kid", h.Algorithm, h.KeyID)
	}

	other, _ := p256Key(t)
	if got, err := decrypt(t, jwe, other); err == nil {
		t.Fatalf("another key decrypted the JWE: %q", got)
	}

	// Each encryption has its own ephemeral key.
	again, err := c.Encrypt(testSecret)
	if err != nil || again == jwe {
		t.Fatalf("a second encryption gave the same JWE (%v)", err)
	}

	if _, err := (Config{Kind: KindAWSSecretsManager}).Encrypt(testSecret); err == nil {
		t.Fatal("an AWS sink encrypted a JWE")
	}
	bad := Config{Kind: KindWebhook, URL: "https://r.example/", PublicKey: jwkJSON(t, key)}
	if _, err := bad.Encrypt(testSecret); err == nil || strings.Contains(err.Error(), testSecret) {
		t.Fatalf("encrypting to a private JWK: %v", err)
	}
}

// The signing secret is in the Standard Webhooks format, and what
// SignatureHeaders signs the library's verifier accepts.
func TestSignatureHeaders(t *testing.T) {
	secret, err := NewSigningSecret()
	if err != nil {
		t.Fatal(err)
	}
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		t.Fatalf("signing secret %q lacks whsec_", secret)
	}
	if key, err := base64.StdEncoding.DecodeString(b64); err != nil || len(key) != signingKeyLen {
		t.Fatalf("signing key: %d bytes, %v", len(key), err)
	}
	if other, _ := NewSigningSecret(); other == secret {
		t.Fatal("two signing secrets are equal")
	}

	body := []byte(`{"type":"secret.delivered"}`)
	h, err := SignatureHeaders(secret, "evt_1", time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(body, h); err != nil {
		t.Fatalf("the verifier refused the signature: %v", err)
	}
	if err := v.Verify([]byte(`{"type":"secret.revoked"}`), h); err == nil {
		t.Fatal("the verifier accepted another body")
	}
	other, _ := NewSigningSecret()
	ov, _ := standardwebhooks.NewWebhook(other)
	if err := ov.Verify(body, h); err == nil {
		t.Fatal("another sink's secret verified the signature")
	}
	if _, err := SignatureHeaders("not-a-secret", "evt_1", time.Now(), body); err == nil || strings.Contains(err.Error(), "not-a-secret") {
		t.Fatalf("a bad signing secret: %v", err)
	}
}

func TestEventBody(t *testing.T) {
	at := time.Date(2026, 12, 2, 18, 0, 0, 0, time.FixedZone("CET", 3600))
	body, err := Event{ClientID: "billing", SecretID: "sec_1", Stage: StagePending, SecretJWE: "a.b.c.d.e"}.Body(at)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"secret.delivered","timestamp":"2026-12-02T17:00:00Z","data":{"client_id":"billing","secret_id":"sec_1","stage":"pending","secret_jwe":"a.b.c.d.e"}}`
	if string(body) != want {
		t.Fatalf("pending body:\n got %s\nwant %s", body, want)
	}
	body, err = Event{ClientID: "billing", SecretID: "sec_1", Stage: StageCurrent}.Body(at)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, []byte("secret_jwe")) || !bytes.Contains(body, []byte(`"stage":"current"`)) {
		t.Fatalf("current body: %s", body)
	}
	var decoded map[string]json.RawMessage
	if err := json.Unmarshal(body, &decoded); err != nil || len(decoded) != 3 {
		t.Fatalf("body %s: %v", body, err)
	}

	for name, e := range map[string]Event{
		"pending without the JWE": {ClientID: "c", SecretID: "s", Stage: StagePending},
		"current with the JWE":    {ClientID: "c", SecretID: "s", Stage: StageCurrent, SecretJWE: "a.b.c.d.e"},
		"previous with the JWE":   {ClientID: "c", SecretID: "s", Stage: StagePrevious, SecretJWE: "a.b.c.d.e"},
		"unknown stage":           {ClientID: "c", SecretID: "s", Stage: "done"},
		"no client":               {SecretID: "s", Stage: StageCurrent},
		"no secret id":            {ClientID: "c", Stage: StagePrevious},
	} {
		if _, err := e.Body(at); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
