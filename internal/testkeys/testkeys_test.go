package testkeys

import (
	"crypto/elliptic"
	"crypto/x509"
	"math/big"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// A name is one key for the whole process; another name or curve is
// another key.
func TestKeysAreMadeOncePerName(t *testing.T) {
	a := ECDSA(t, elliptic.P256(), "a")
	if ECDSA(t, elliptic.P256(), "a") != a {
		t.Fatal("the same name gave another P-256 key")
	}
	if b := ECDSA(t, elliptic.P256(), "b"); b.Equal(a) {
		t.Fatal("two names gave the same P-256 key")
	}
	if c := ECDSA(t, elliptic.P384(), "a"); c.Curve != elliptic.P384() {
		t.Fatalf("asked for P-384, got %s", c.Curve.Params().Name)
	}
	if !Ed25519(t, "a").Equal(Ed25519(t, "a")) || Ed25519(t, "a").Equal(Ed25519(t, "b")) {
		t.Fatal("Ed25519 keys are not one per name")
	}
	if RSA(t, 2048, "a") != RSA(t, 2048, "a") || RSA(t, 2048, "a").N.BitLen() != 2048 {
		t.Fatal("RSA keys are not one 2048-bit key per name")
	}
}

// Sign's assertion verifies with the key's public half and says its
// header's kid.
func TestSign(t *testing.T) {
	key := ECDSA(t, elliptic.P256(), "a")
	tok, err := jwt.ParseSigned(Sign(t, jose.ES256, key, "k1", map[string]any{"jti": "x"}), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := tok.Claims(&key.PublicKey, &claims); err != nil || claims["jti"] != "x" {
		t.Fatalf("claims %v, %v", claims, err)
	}
	if h := tok.Headers[0]; h.KeyID != "k1" || h.ExtraHeaders["typ"] != "JWT" {
		t.Fatalf("header %+v", h)
	}
	if tok, err := jwt.ParseSigned(Sign(t, jose.ES256, key, "", map[string]any{}), []jose.SignatureAlgorithm{jose.ES256}); err != nil || tok.Headers[0].KeyID != "" {
		t.Fatalf("a kid without one asked for: %v", err)
	}
}

func TestWithCopies(t *testing.T) {
	m := map[string]any{"a": 1, "b": 2}
	got := With(m, "a", nil, "c", 3)
	if len(got) != 2 || got["b"] != 2 || got["c"] != 3 || len(m) != 2 || m["a"] != 1 {
		t.Fatalf("With = %v, m now %v", got, m)
	}
	if JTI() == JTI() {
		t.Fatal("JTI repeated itself")
	}
}

// SelfSigned's certificate is issued by itself, for pub, whatever key
// signed it.
func TestSelfSigned(t *testing.T) {
	subject, signer := ECDSA(t, elliptic.P256(), "a"), ECDSA(t, elliptic.P256(), "b")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
	c := SelfSigned(t, tmpl, &subject.PublicKey, signer)
	selfVerifies := func(c *x509.Certificate) bool {
		return c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
	}
	if !subject.PublicKey.Equal(c.PublicKey) || selfVerifies(c) {
		t.Fatal("the certificate is not for pub, or verifies with pub though signer signed it")
	}
	if !selfVerifies(SelfSigned(t, tmpl, &signer.PublicKey, signer)) {
		t.Fatal("a certificate signed by its own key does not verify")
	}
}
