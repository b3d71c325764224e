package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/internal/interoptest"
	"github.com/rotagate/rotagate/internal/loopback"
	"github.com/rotagate/rotagate/internal/testkeys"
)

// registerKey registers the public half of key for client as a
// public-key credential and returns its id.
func (a adminAPI) registerKey(client string, key *ecdsa.PrivateKey, kid string) string {
	a.t.Helper()
	jwk := testkeys.JWK(a.t, jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid})
	var s struct{ ID, Kind string }
	a.must(a.call(http.MethodPost, "/v1/clients/"+client+"/secrets", map[string]any{"public_key": jwk}, &s))
	if s.Kind != "public_key" {
		a.t.Fatalf("registered a %q", s.Kind)
	}
	return s.ID
}

// TestPrivateKeyJWTInterop: authlib (Python) and openid-client (Node)
// authenticate with private_key_jwt at a real Caddy edge fed by a real
// control plane, on SQLite (both halves in one Caddy) and on PostgreSQL
// (a control plane of its own); the key's last use is stamped on the
// control plane; a revoked key is refused within the revocation delay.
func TestPrivateKeyJWTInterop(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		h := newHalves(t)
		h.Upstream = upstreamAddr(newTokenUpstream(t).URL)
		api := h.start(t)
		privateKeyJWTInterop(t, h.edgeURL(), api)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn, schema := fleetSchema(t)
		cp := startReplica(t, dsn, schema, freeAddr(t))
		edge := startSite(t, fmt.Sprintf(`
	client_credentials {
		control_plane %s {
			token %s
		}
		revocation_delay 2s
		usage_flush 1s
	}
	request_header X-Client-Id {http.auth.client_id}
	reverse_proxy %s
`, cp.url, edgeToken, upstreamAddr(newTokenUpstream(t).URL)))
		privateKeyJWTInterop(t, edge, adminAPI{t: t, base: cp.url})
	})
}

func privateKeyJWTInterop(t *testing.T, edge string, api adminAPI) {
	api.createClient("svc")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyID := api.registerKey("svc", key, "svc-key-1")
	edgeKnows(t, edge, api, "probe-keys")

	c := interoptest.Client{TokenURL: edge + "/oauth/token", ClientID: "svc", Key: key, Alg: "ES256", KeyID: "svc-key-1"}
	if res := interoptest.Authlib(t, c); res.Status != 200 || res.AccessToken != "tok-svc" {
		t.Fatalf("authlib: %+v", res)
	}
	if res := interoptest.OpenIDClient(t, c); res.Status != 200 || res.AccessToken != "tok-svc" {
		t.Fatalf("openid-client: %+v", res)
	}
	cptest.WaitFor(t, 5*time.Second, "the key's last use stamped", func() bool {
		return api.secrets("svc")[keyID].LastUsedAt != nil
	})

	api.revoke("svc", keyID)
	took := cptest.WaitFor(t, 5*time.Second, "the revoked key refused", func() bool {
		return interoptest.Authlib(t, c).Status == http.StatusUnauthorized
	})
	t.Logf("the revoked key was refused %v after the revocation (revocation_delay 2s)", took)
}

// mtlsFiles writes a self-signed server certificate for localhost into
// dir and returns a pool that trusts it.
func mtlsFiles(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	cert, key := selfSignedPair(t, "localhost", x509.ExtKeyUsageServerAuth)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func selfSignedPair(t *testing.T, cn string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	return testkeys.SelfSigned(t, tmpl, &key.PublicKey, key), key
}

// TestTLSClientAuthThroughCaddy: a client certificate registered on the
// control plane authenticates at a Caddy site with `client_auth { mode
// request }`, self-signed certificates on loopback; another certificate,
// or none, is refused; a revoked certificate is refused within the
// revocation delay.
func TestTLSClientAuthThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	pool := mtlsFiles(t, dir)
	cpPort, edgePort := loopback.FreePort(t), loopback.FreePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	client_credentials_control_plane {
		store sqlite %[3]s/rotagate.db
		admin_token %[4]s
		edge_token %[5]s
	}
}

https://localhost:%[2]d {
	bind 127.0.0.1
	tls %[3]s/server.pem %[3]s/server.key {
		client_auth {
			mode request
		}
	}
	client_credentials {
		control_plane http://127.0.0.1:%[1]d {
			token %[5]s
		}
		revocation_delay 2s
		methods tls_client_auth
	}
	respond "token for {http.auth.client_id} with {http.auth.secret_id}" 200
}
`, cpPort, edgePort, dir, adminToken, edgeToken))
	api := adminAPI{t: t, base: localURL(cpPort)}
	api.createClient("machine")
	clientCert, clientKey := selfSignedPair(t, "machine", x509.ExtKeyUsageClientAuth)
	var reg struct{ ID, Kind, Thumbprint string }
	api.must(api.call(http.MethodPost, "/v1/clients/machine/secrets",
		map[string]string{"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientCert.Raw}))}, &reg))
	if reg.Kind != "certificate" || reg.Thumbprint == "" {
		t.Fatalf("registered %+v", reg)
	}
	stray, strayKey := selfSignedPair(t, "stray", x509.ExtKeyUsageClientAuth)

	ask := func(cert *x509.Certificate, key *ecdsa.PrivateKey) (int, string) {
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
		}
		// localhost is dialled on 127.0.0.1 only, whatever it resolves to.
		dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", edgePort))
		}
		tr := &http.Transport{TLSClientConfig: cfg, DialContext: dial, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post(fmt.Sprintf("https://localhost:%d/token", edgePort),
			"application/x-www-form-urlencoded", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "client_id": {"machine"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	cptest.WaitFor(t, 5*time.Second, "the edge accepts the registered certificate", func() bool {
		status, _ := ask(clientCert, clientKey)
		return status == 200
	})
	if status, body := ask(clientCert, clientKey); status != 200 || body != "token for machine with "+reg.ID {
		t.Fatalf("the registered certificate: %d %s", status, body)
	}
	_, wrong := ask(stray, strayKey)
	if status, body := ask(stray, strayKey); status != 401 || body != wrong {
		t.Fatalf("another certificate: %d %s", status, body)
	}
	if status, _ := ask(nil, nil); status != 401 {
		t.Fatalf("no certificate: %d", status)
	}
	api.revoke("machine", reg.ID)
	cptest.WaitFor(t, 5*time.Second, "the revoked certificate refused", func() bool {
		status, _ := ask(clientCert, clientKey)
		return status == 401
	})
}

// TestAssertionReplayAcrossReload: the replay cache outlives a config
// reload (it belongs to the feed the reloaded sites share), so an
// assertion accepted before the reload is refused after it.
func TestAssertionReplayAcrossReload(t *testing.T) {
	h := newHalves(t)
	api := h.start(t)
	api.createClient("svc")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	api.registerKey("svc", key, "")
	edgeKnows(t, h.edgeURL(), api, "probe-replay")

	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: "svc", Subject: "svc", ID: "replay-1",
		Audience: jwt.Audience{h.edgeURL() + "/token"}, Expiry: jwt.NewNumericDate(now.Add(2 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	send := func() int {
		resp, err := http.PostForm(h.edgeURL()+"/token", url.Values{"grant_type": {"client_credentials"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(); got != 200 {
		t.Fatalf("first use: %d", got)
	}
	h.Realm = "reloaded"
	startCaddy(t, h.caddyfile())
	if got := send(); got != 401 {
		t.Fatalf("the same assertion after a reload: %d, want 401", got)
	}
}
