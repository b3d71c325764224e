package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// testKeyJWKs makes an EC P-256 key pair: its public JWK and its private
// one.
func testKeyJWKs(t *testing.T) (public, private json.RawMessage) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := json.Marshal(jose.JSONWebKey{Key: k, KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// testCertificatePEM makes a self-signed client certificate valid until
// notAfter, and its x5t#S256 thumbprint.
func testCertificatePEM(t *testing.T, notAfter time.Time) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "client"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), base64.RawURLEncoding.EncodeToString(sum[:])
}

// testPublicKeyCredentials: keys and certificates are registered through
// the secrets API, listed with their kind and thumbprint, carried in the
// snapshot and the change feed as public material only, rotated and
// revoked like secrets; bad keys are refused with a 400 naming the
// problem.
func testPublicKeyCredentials(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	e.mustClient("c")
	pub, priv := testKeyJWKs(t)

	r := e.admin("POST", "/v1/clients/c/secrets", map[string]any{"public_key": pub})
	mustStatus(t, r, 201)
	var key createdSecretJSON
	r.decode(t, &key)
	if key.Kind != "public_key" || len(key.Thumbprint) != 43 || key.Secret != "" || !strings.HasPrefix(key.ID, "sec_") {
		t.Fatalf("registered key: %s", r.body)
	}
	epoch, rev, _ := e.svc.Notifier().Current()

	certPEM, tp := testCertificatePEM(t, e.clock.Now().Add(30*24*time.Hour).Truncate(time.Second))
	r = e.admin("POST", "/v1/clients/c/secrets", map[string]any{"certificate": certPEM})
	mustStatus(t, r, 201)
	var cert createdSecretJSON
	r.decode(t, &cert)
	if cert.Kind != "certificate" || cert.Thumbprint != tp || cert.ExpiresAt == nil {
		t.Fatalf("registered certificate: %s", r.body)
	}

	// Listed with their kinds.
	var list secretListJSON
	r = e.admin("GET", "/v1/clients/c/secrets", nil)
	r.decode(t, &list)
	kinds := map[store.Kind]string{}
	for _, s := range list.Secrets {
		kinds[s.Kind] = s.Thumbprint
	}
	if len(list.Secrets) != 2 || kinds["public_key"] != key.Thumbprint || kinds["certificate"] != tp {
		t.Fatalf("listing: %s", r.body)
	}

	// The snapshot carries the public JWK and the thumbprint, no secret.
	r = e.do("GET", wire.SnapshotPath, testEdgeToken, nil)
	var snap wire.Snapshot
	r.decode(t, &snap)
	if len(snap.Clients) != 1 || len(snap.Clients[0].Secrets) != 0 || len(snap.Clients[0].PublicKeys) != 1 ||
		len(snap.Clients[0].Certificates) != 1 || snap.Clients[0].Certificates[0].Thumbprint != tp {
		t.Fatalf("snapshot: %s", r.body)
	}
	if strings.Contains(string(snap.Clients[0].PublicKeys[0].JWK), `"d"`) {
		t.Fatal("the snapshot carries a private member")
	}

	// The change feed since the key carries the certificate.
	r = e.do("GET", wire.SnapshotPath+"?since="+wire.FormatSince(epoch, rev), testEdgeToken, nil)
	var d wire.Delta
	r.decode(t, &d)
	if len(d.Changed) != 1 || len(d.Changed[0].Certificates) != 1 || len(d.Changed[0].PublicKeys) != 1 {
		t.Fatalf("change: %s", r.body)
	}

	// Bad keys: 400 naming the problem, nothing stored.
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakJWK, _ := json.Marshal(jose.JSONWebKey{Key: &weak.PublicKey})
	before := e.revision()
	for name, c := range map[string]struct {
		body map[string]any
		want string
	}{
		"private key":   {map[string]any{"public_key": priv}, "private key"},
		"symmetric key": {map[string]any{"public_key": map[string]string{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}}, "symmetric"},
		"weak RSA key":  {map[string]any{"public_key": json.RawMessage(weakJWK)}, "1024 bits"},
		"not PEM":       {map[string]any{"certificate": "hello"}, "certificate"},
		"both":          {map[string]any{"certificate": certPEM, "public_key": pub}, "either"},
		"the same key":  {map[string]any{"public_key": pub}, "already holds"},
	} {
		r := e.admin("POST", "/v1/clients/c/secrets", c.body)
		if r.status != 400 || !strings.Contains(string(r.body), c.want) || strings.Contains(string(r.body), `"d":`) {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if e.revision() != before {
		t.Fatal("a refused credential changed the store")
	}

	// Rotation to a new key with no grace revokes the others; the change
	// feed lists the client with the new key alone.
	pub2, _ := testKeyJWKs(t)
	epoch, rev, _ = e.svc.Notifier().Current()
	r = e.admin("POST", "/v1/clients/c/secrets/rotate", map[string]any{"grace": "0s", "public_key": pub2})
	mustStatus(t, r, 201)
	var rotated rotatedSecretJSON
	r.decode(t, &rotated)
	if rotated.Kind != "public_key" || len(rotated.Revoked) != 2 {
		t.Fatalf("rotation: %s", r.body)
	}
	r = e.do("GET", wire.SnapshotPath+"?since="+wire.FormatSince(epoch, rev), testEdgeToken, nil)
	d = wire.Delta{}
	r.decode(t, &d)
	if len(d.Changed) != 1 || len(d.Changed[0].PublicKeys) != 1 || d.Changed[0].PublicKeys[0].ID != rotated.ID ||
		len(d.Changed[0].Certificates) != 0 || len(d.Changed[0].Tombstones) != 0 {
		t.Fatalf("change after the rotation: %s", r.body)
	}
}
