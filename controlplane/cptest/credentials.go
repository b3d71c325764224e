package cptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// KeyJWKs makes an EC P-256 key pair: its public JWK and its private
// one.
func KeyJWKs(t *testing.T) (public, private json.RawMessage) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testkeys.JWK(t, jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k1"}), testkeys.JWK(t, jose.JSONWebKey{Key: k, KeyID: "k1"})
}

// CertificatePEM makes a self-signed client certificate valid until
// notAfter, and its x5t#S256 thumbprint.
func CertificatePEM(t *testing.T, notAfter time.Time) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "client"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der := testkeys.SelfSigned(t, tmpl, &k.PublicKey, k).Raw
	sum := sha256.Sum256(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), base64.RawURLEncoding.EncodeToString(sum[:])
}
