package api

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// testPublicKeyCredentials: keys and certificates are registered through
// the secrets API, listed with their kind and thumbprint, carried in the
// snapshot and the change feed as public material only, rotated and
// revoked like secrets; bad keys are refused with a 400 naming the
// problem.
func testPublicKeyCredentials(t *testing.T, k storeKit) {
	e := k.newClientEnv(t)
	pub, priv := cptest.KeyJWKs(t)

	r := e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"public_key": pub})
	cptest.MustStatus(t, r, 201)
	var key CreatedSecret
	r.Decode(t, &key)
	if key.Kind != "public_key" || len(key.Thumbprint) != 43 || key.Secret != "" || !strings.HasPrefix(key.ID, "sec_") {
		t.Fatalf("registered key: %s", r.Body)
	}
	epoch, rev, _ := e.Svc.Notifier().Current()

	certPEM, tp := cptest.CertificatePEM(t, e.Clock.Now().Add(30*24*time.Hour).Truncate(time.Second))
	r = e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"certificate": certPEM})
	cptest.MustStatus(t, r, 201)
	var cert CreatedSecret
	r.Decode(t, &cert)
	if cert.Kind != "certificate" || cert.Thumbprint != tp || cert.ExpiresAt == nil {
		t.Fatalf("registered certificate: %s", r.Body)
	}

	// Listed with their kinds.
	var list SecretList
	r = e.Admin("GET", "/v1/clients/c/secrets", nil)
	r.Decode(t, &list)
	kinds := map[store.Kind]string{}
	for _, s := range list.Secrets {
		kinds[s.Kind] = s.Thumbprint
	}
	if len(list.Secrets) != 2 || kinds["public_key"] != key.Thumbprint || kinds["certificate"] != tp {
		t.Fatalf("listing: %s", r.Body)
	}

	// The snapshot carries the public JWK and the thumbprint, no secret.
	r = e.Do("GET", wire.SnapshotPath, cptest.EdgeToken, nil)
	var snap wire.Snapshot
	r.Decode(t, &snap)
	if len(snap.Clients) != 1 || len(snap.Clients[0].Secrets) != 0 || len(snap.Clients[0].PublicKeys) != 1 ||
		len(snap.Clients[0].Certificates) != 1 || snap.Clients[0].Certificates[0].Thumbprint != tp {
		t.Fatalf("snapshot: %s", r.Body)
	}
	if strings.Contains(string(snap.Clients[0].PublicKeys[0].JWK), `"d"`) {
		t.Fatal("the snapshot carries a private member")
	}

	// The change feed since the key carries the certificate.
	r = e.Do("GET", wire.SnapshotPath+"?since="+wire.FormatSince(epoch, rev), cptest.EdgeToken, nil)
	var d wire.Delta
	r.Decode(t, &d)
	if len(d.Changed) != 1 || len(d.Changed[0].Certificates) != 1 || len(d.Changed[0].PublicKeys) != 1 {
		t.Fatalf("change: %s", r.Body)
	}

	// Bad keys: 400 naming the problem, nothing stored.
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakJWK, _ := json.Marshal(jose.JSONWebKey{Key: &weak.PublicKey})
	before := e.Revision()
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
		r := e.Admin("POST", "/v1/clients/c/secrets", c.body)
		if r.Status != 400 || !strings.Contains(string(r.Body), c.want) || strings.Contains(string(r.Body), `"d":`) {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	if e.Revision() != before {
		t.Fatal("a refused credential changed the store")
	}

	// Rotation to a new key with no grace revokes the others; the change
	// feed lists the client with the new key alone.
	pub2, _ := cptest.KeyJWKs(t)
	epoch, rev, _ = e.Svc.Notifier().Current()
	r = e.Admin("POST", "/v1/clients/c/secrets/rotate", map[string]any{"grace": "0s", "public_key": pub2})
	cptest.MustStatus(t, r, 201)
	var rotated RotatedSecret
	r.Decode(t, &rotated)
	if rotated.Kind != "public_key" || len(rotated.Revoked) != 2 {
		t.Fatalf("rotation: %s", r.Body)
	}
	r = e.Do("GET", wire.SnapshotPath+"?since="+wire.FormatSince(epoch, rev), cptest.EdgeToken, nil)
	d = wire.Delta{}
	r.Decode(t, &d)
	if len(d.Changed) != 1 || len(d.Changed[0].PublicKeys) != 1 || d.Changed[0].PublicKeys[0].ID != rotated.ID ||
		len(d.Changed[0].Certificates) != 0 || len(d.Changed[0].Tombstones) != 0 {
		t.Fatalf("change after the rotation: %s", r.Body)
	}
}
