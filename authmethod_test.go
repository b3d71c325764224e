package rotagate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/testkeys"
	"github.com/rotagate/rotagate/internal/wire"
)

// The token endpoint the tests' requests go to: the default audience.
const tokenURL = "http://edge.example/token"

// keyedClient holds the keys and certificates of the client "keyed":
// sec_key1 (ES256) and sec_cert1 registered, other* not.
type keyedClient struct {
	key, other   *ecdsa.PrivateKey
	cert, stray  *x509.Certificate
	jwk, certTP  string
	otherJWK     string
	otherClient  *ecdsa.PrivateKey // registered as the key of "keyed2"
	otherClientJ string
}

func newKeyedClient(t testing.TB) *keyedClient {
	t.Helper()
	k := &keyedClient{
		key:         testkeys.ECDSA(t, elliptic.P256(), "keyed"),
		other:       testkeys.ECDSA(t, elliptic.P256(), "other"),
		otherClient: testkeys.ECDSA(t, elliptic.P256(), "keyed2"),
	}
	k.jwk, k.otherJWK, k.otherClientJ = publicJWK(t, k.key), publicJWK(t, k.other), publicJWK(t, k.otherClient)
	k.cert, k.stray = selfSigned(t, "keyed"), selfSigned(t, "stray")
	k.certTP = thumbprintOf(k.cert)
	return k
}

func publicJWK(t testing.TB, k *ecdsa.PrivateKey) string {
	return string(testkeys.JWK(t, jose.JSONWebKey{Key: &k.PublicKey}))
}

func selfSigned(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	key := testkeys.ECDSA(t, elliptic.P256(), "certificate "+cn)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	return testkeys.SelfSigned(t, tmpl, &key.PublicKey, key)
}

func thumbprintOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// withKeyedClients adds "keyed" (a key and a certificate) and "keyed2" (a
// key) to the handler's snapshot, the first with networks when given.
func withKeyedClients(t testing.TB, h *Handler, k *keyedClient, cidrs ...string) {
	t.Helper()
	w := testSnapshot(t)
	w.Clients = append(w.Clients,
		wire.Client{ClientID: "keyed", AllowedCIDRs: cidrs,
			PublicKeys:   []wire.PublicKey{{ID: "sec_key1", JWK: json.RawMessage(k.jwk)}},
			Certificates: []wire.Certificate{{ID: "sec_cert1", Thumbprint: k.certTP}}},
		wire.Client{ClientID: "keyed2", PublicKeys: []wire.PublicKey{{ID: "sec_key2", JWK: json.RawMessage(k.otherClientJ)}}},
	)
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
}

// claims are a good assertion's claims for client "keyed".
func claims() map[string]any {
	return map[string]any{"iss": "keyed", "sub": "keyed", "aud": tokenURL,
		"exp": testNow.Add(2 * time.Minute).Unix(), "iat": testNow.Unix(),
		"jti": testkeys.JTI()}
}

// signed makes an assertion with go-jose, without a kid: the edge's
// clients here have one key each.
func signed(t testing.TB, alg jose.SignatureAlgorithm, key any, c map[string]any) string {
	t.Helper()
	return testkeys.Sign(t, alg, key, "", c)
}

// assertionRequest is a token request authenticated by an assertion.
func assertionRequest(assertion string, extra ...string) *http.Request {
	form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {clientassertion.AssertionType},
		"client_assertion": {assertion}}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	r := httptest.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// TestPrivateKeyJWT: a good assertion goes through with the placeholders
// of the key's credential, the assertion stripped from the body, and a
// usage stamp for the key.
func TestPrivateKeyJWT(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	w, up := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()), "client_id", "keyed"))
	if w.Code != 200 || !up.called {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if up.clientID != "keyed" || up.secretID != "sec_key1" || up.userID != "keyed" {
		t.Fatalf("placeholders %q %q %q", up.clientID, up.secretID, up.userID)
	}
	if up.body != "client_id=keyed&grant_type=client_credentials" {
		t.Fatalf("upstream body %q", up.body)
	}
	if su := h.feed.usage.pending["sec_key1"]; su == nil || su.clientID != "keyed" {
		t.Fatal("no usage stamp for the key")
	}
}

// TestPrivateKeyJWTRefusals: every claim rule, every refused algorithm,
// a wrong key, an unknown client, a replay and an oversized assertion get
// the same 401 bytes as a wrong secret, and nothing reaches the upstream.
func TestPrivateKeyJWTRefusals(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.FailureBudget = &FailureBudget{Off: true} })
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	wrongSecret, _ := serve(t, h, postForm("app", "wrong"))

	with := func(kv ...any) map[string]any { return testkeys.With(claims(), kv...) }
	replayed := signed(t, jose.ES256, k.key, claims())
	if w, _ := serve(t, h, assertionRequest(replayed)); w.Code != 200 {
		t.Fatalf("first use of the replayed assertion: %d", w.Code)
	}
	hmacKey := make([]byte, 32)
	cases := map[string]string{
		"iss differs from sub":   signed(t, jose.ES256, k.key, with("sub", "other")),
		"no iss":                 signed(t, jose.ES256, k.key, with("iss", nil)),
		"another audience":       signed(t, jose.ES256, k.key, with("aud", "http://elsewhere.example/token")),
		"no exp":                 signed(t, jose.ES256, k.key, with("exp", nil)),
		"expired":                signed(t, jose.ES256, k.key, with("exp", testNow.Add(-time.Minute).Unix())),
		"exp too far ahead":      signed(t, jose.ES256, k.key, with("exp", testNow.Add(10*time.Minute).Unix())),
		"no jti":                 signed(t, jose.ES256, k.key, with("jti", nil)),
		"not yet valid":          signed(t, jose.ES256, k.key, with("nbf", testNow.Add(5*time.Minute).Unix())),
		"wrong key":              signed(t, jose.ES256, k.other, claims()),
		"another client's key":   signed(t, jose.ES256, k.otherClient, claims()),
		"unknown client":         signed(t, jose.ES256, k.key, with("iss", "nobody", "sub", "nobody")),
		"HS256":                  signed(t, jose.HS256, hmacKey, claims()),
		"alg none":               unsignedAssertion(claims()),
		"replay":                 replayed,
		"oversized":              signed(t, jose.ES256, k.key, with("pad", strings.Repeat("x", clientassertion.MaxSize))),
		"not a JWT":              "not.a.jwt",
		"body client_id differs": signed(t, jose.ES256, k.key, claims()) + "|keyed2",
	}
	for name, a := range cases {
		var r *http.Request
		if a2, id, ok := strings.Cut(a, "|"); ok {
			r = assertionRequest(a2, "client_id", id)
		} else {
			r = assertionRequest(a)
		}
		w, up := serve(t, h, r)
		if w.Code != 401 || up.called || w.Body.String() != wrongSecret.Body.String() || w.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("%s: status %d, body %s, upstream called %v", name, w.Code, w.Body, up.called)
		}
	}
}

// unsignedAssertion is an assertion with "alg":"none" and no signature.
func unsignedAssertion(c map[string]any) string {
	hdr, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	body, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body) + "."
}

// TestPrivateKeyJWTMalformedRequests: an assertion beside a secret or
// Basic credentials, a missing or unknown assertion type, or a repeated
// assertion is a 400 invalid_request, with nothing verified.
func TestPrivateKeyJWTMalformedRequests(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	a := signed(t, jose.ES256, k.key, claims())
	basic := assertionRequest(a)
	basic.SetBasicAuth("app", appSecret)
	noType := httptest.NewRequest(http.MethodPost, tokenURL, strings.NewReader("client_assertion="+a))
	noType.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	twice := httptest.NewRequest(http.MethodPost, tokenURL, strings.NewReader(
		"client_assertion_type="+url.QueryEscape(clientassertion.AssertionType)+"&client_assertion="+a+"&client_assertion="+a))
	twice.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, r := range map[string]*http.Request{
		"with a secret": assertionRequest(a, "client_id", "app", "client_secret", appSecret),
		"with Basic":    basic,
		"no type":       noType,
		"another type":  assertionRequest(a, "client_assertion_type", "urn:example:saml"),
		"repeated":      twice,
	} {
		if w, up := serve(t, h, r); w.Code != 400 || up.called || !strings.Contains(w.Body.String(), "invalid_request") {
			t.Errorf("%s: status %d, body %s", name, w.Code, w.Body)
		}
	}
}

// TestPrivateKeyJWTEqualWork: an unknown client, a wrong key and a good
// assertion from outside the client's networks cost the same signature
// checks and get the same 401 bytes.
func TestPrivateKeyJWTEqualWork(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.FailureBudget = &FailureBudget{Off: true} })
	k := newKeyedClient(t)
	withKeyedClients(t, h, k, "192.0.2.0/31")
	v := h.keyAuth.verifier
	cost := func(c map[string]any, key *ecdsa.PrivateKey, ip string) (uint64, string) {
		r := assertionRequest(signed(t, jose.ES256, key, c))
		r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(ip), 4711).String()
		before := v.SignatureChecks()
		w, up := serve(t, h, r)
		if w.Code != 401 || up.called {
			t.Fatalf("status %d", w.Code)
		}
		return v.SignatureChecks() - before, w.Body.String()
	}
	unknown := claims()
	unknown["iss"], unknown["sub"] = "nobody", "nobody"
	nUnknown, bUnknown := cost(unknown, k.key, "192.0.2.1")
	nWrong, bWrong := cost(claims(), k.other, "192.0.2.1")
	nOutside, bOutside := cost(claims(), k.key, "198.51.100.7")
	if nUnknown != nWrong || nWrong != nOutside || nUnknown != clientassertion.DefaultMaxKeys {
		t.Fatalf("signature checks: unknown client %d, wrong key %d, outside the networks %d", nUnknown, nWrong, nOutside)
	}
	if bUnknown != bWrong || bWrong != bOutside {
		t.Fatalf("bodies differ: %s / %s / %s", bUnknown, bWrong, bOutside)
	}
	if su := h.feed.usage.pending["sec_key1"]; su == nil || su.callers["198.51.100.7"] == nil || su.callers["198.51.100.7"].refused != 1 {
		t.Fatal("the refusal for the network is not among the key's callers")
	}
}

// TestPrivateKeyJWTBudget: a flood of bad assertions for one client from
// one address costs at most the failure budget's worth of verifications;
// then 429 with no signature checked.
func TestPrivateKeyJWTBudget(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	v := h.keyAuth.verifier
	before := v.SignatureChecks()
	throttled := 0
	for range 30 {
		w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.other, claims())))
		if w.Code == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled != 10 {
		t.Fatalf("%d of 30 throttled, want 10 (a budget of 20)", throttled)
	}
	if n := v.SignatureChecks() - before; n != 20*clientassertion.DefaultMaxKeys {
		t.Fatalf("%d signature checks for 20 verified failures", n)
	}
}

// TestPrivateKeyJWTRevokedKey: once the feed drops a key (a change
// applied to the snapshot), an assertion it signs is refused; and a key
// past its expiry is refused before the feed says so.
func TestPrivateKeyJWTRevokedKey(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()))); w.Code != 200 {
		t.Fatalf("before the revocation: %d", w.Code)
	}
	snap, _ := h.feed.snapshots.current()
	body := `{"epoch":"e1","revision":8,"since":7,"changed":[{"client_id":"keyed","secrets":[]}],"removed":[]}`
	ans, err := decodeAnswer(strings.NewReader(body), 1<<20, snap)
	if err != nil {
		t.Fatal(err)
	}
	next, err := snap.apply(ans.delta)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(next)
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()))); w.Code != 401 {
		t.Fatalf("after the revocation: %d", w.Code)
	}

	past := testNow.Add(-time.Second)
	w := testSnapshot(t)
	w.Clients = append(w.Clients, wire.Client{ClientID: "keyed",
		PublicKeys: []wire.PublicKey{{ID: "sec_key1", JWK: json.RawMessage(k.jwk), ExpiresAt: &past}}})
	expired, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(expired)
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()))); w.Code != 401 {
		t.Fatalf("an expired key: %d", w.Code)
	}
}

// TestAudienceOption: with the audience option, an assertion must name it
// and the request's own URL no longer does.
func TestAudienceOption(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.Audience = []string{"https://idp.example/token"} })
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	good := claims()
	good["aud"] = []string{"https://idp.example/token", "other"}
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, good))); w.Code != 200 {
		t.Fatalf("the configured audience: %d", w.Code)
	}
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()))); w.Code != 401 {
		t.Fatalf("the request URL as audience: %d", w.Code)
	}
}

// TestMethodsOptionNewMethods: a method left out of methods is refused
// with the same 401, counted as method_not_allowed.
func TestMethodsOptionNewMethods(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.Methods = []string{methodBasic, methodPost} })
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	if w, _ := serve(t, h, assertionRequest(signed(t, jose.ES256, k.key, claims()))); w.Code != 401 {
		t.Fatalf("private_key_jwt not allowed: %d", w.Code)
	}
	if w, _ := serve(t, h, certRequest(k.cert, "keyed")); w.Code != 401 {
		t.Fatalf("tls_client_auth not allowed: %d", w.Code)
	}
}

// certRequest is a token request over a TLS connection with a client
// certificate, naming clientID in the body.
func certRequest(cert *x509.Certificate, clientID string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "https://edge.example/token",
		strings.NewReader("grant_type=client_credentials&client_id="+url.QueryEscape(clientID)))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cert != nil {
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	}
	return r
}

// TestTLSClientAuth: the registered certificate goes through as its
// credential; an unknown client, a wrong certificate and a caller outside
// the networks cost the same digests and comparisons and get the same
// 401 bytes.
func TestTLSClientAuth(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.FailureBudget = &FailureBudget{Off: true} })
	k := newKeyedClient(t)
	withKeyedClients(t, h, k, "192.0.2.0/31")
	from := func(r *http.Request, ip string) *http.Request {
		r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(ip), 4711).String()
		return r
	}
	w, up := serve(t, h, from(certRequest(k.cert, "keyed"), "192.0.2.1"))
	if w.Code != 200 || up.secretID != "sec_cert1" || up.clientID != "keyed" {
		t.Fatalf("status %d, secret id %q", w.Code, up.secretID)
	}
	cost := func(r *http.Request) ([2]int, string) {
		work := countWork(h)
		w, up := serve(t, h, r)
		if w.Code != 401 || up.called {
			t.Fatalf("status %d", w.Code)
		}
		return [2]int{work.of(workDigest), work.of(workCompare)}, w.Body.String()
	}
	unknown, b1 := cost(from(certRequest(k.cert, "nobody"), "192.0.2.1"))
	wrong, b2 := cost(from(certRequest(k.stray, "keyed"), "192.0.2.1"))
	outside, b3 := cost(from(certRequest(k.cert, "keyed"), "198.51.100.7"))
	if unknown != wrong || wrong != outside || unknown != [2]int{1, minCompares} {
		t.Fatalf("work (digests, comparisons): unknown %v, wrong %v, outside %v", unknown, wrong, outside)
	}
	if b1 != b2 || b2 != b3 {
		t.Fatal("the 401 bodies differ")
	}
	// No certificate at all: a client_id alone is no credential.
	if w, _ := serve(t, h, certRequest(nil, "keyed")); w.Code != 401 || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no certificate: %d", w.Code)
	}
}

// TestClientCertHeader: an RFC 9440 Client-Cert header counts only when a
// trusted proxy sent the request.
func TestClientCertHeader(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	send := func(trusted bool) int {
		r := certRequest(nil, "keyed")
		r.Header.Set("Client-Cert", ":"+base64.StdEncoding.EncodeToString(k.cert.Raw)+":")
		w := httptest.NewRecorder()
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
		caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, trusted)
		if err := h.ServeHTTP(w, r, &upstream{}); err != nil {
			t.Fatal(err)
		}
		return w.Code
	}
	if got := send(false); got != 401 {
		t.Fatalf("from an untrusted address: %d", got)
	}
	if got := send(true); got != 200 {
		t.Fatalf("from a trusted proxy: %d", got)
	}
}

// TestSavedCredentials: keys and certificates survive the binary saved
// copy, and a change's feed answer carries them.
func TestSavedCredentials(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	k := newKeyedClient(t)
	withKeyedClients(t, h, k)
	snap, _ := h.feed.snapshots.current()
	back, err := readBack(encodedFile(t, snap), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	c := back.client("keyed")
	if c == nil || len(c.keyCreds()) != 1 || c.keyCreds()[0].id != "sec_key1" || len(c.certCreds()) != 1 || c.certCreds()[0].id != "sec_cert1" ||
		!c.sameAs(rawOf(snap.client("keyed"))) {
		t.Fatalf("after the saved copy: %+v", c)
	}
}

func rawOf(c *client) *rawClient {
	var rc rawClient
	wc := c.wire()
	rc.setWire(&wc)
	return &rc
}

// TestFeedCarriesCredentials: the streaming decoder reads a full
// snapshot's public keys and certificates (a client equal to the one held
// is reused, not rebuilt), a change adds and drops them, and a malformed
// key or thumbprint rejects the answer.
func TestFeedCarriesCredentials(t *testing.T) {
	k := newKeyedClient(t)
	w := testSnapshot(t)
	w.Clients = append(w.Clients, wire.Client{ClientID: "keyed",
		PublicKeys:   []wire.PublicKey{{ID: "sec_key1", JWK: json.RawMessage(k.jwk)}},
		Certificates: []wire.Certificate{{ID: "sec_cert1", Thumbprint: k.certTP}}})
	body, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := decodeAnswer(strings.NewReader(string(body)), 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := ans.full.client("keyed")
	if c == nil || len(c.keyCreds()) != 1 || c.keyCreds()[0].id != "sec_key1" || len(c.certCreds()) != 1 || thumbprintOf(k.cert) != k.certTP ||
		base64.RawURLEncoding.EncodeToString(c.certCreds()[0].thumbprint[:]) != k.certTP {
		t.Fatalf("decoded %+v", c)
	}
	again, err := decodeAnswer(strings.NewReader(string(body)), 1<<20, ans.full)
	if err != nil || again.full.client("keyed") != c {
		t.Fatalf("an unchanged client was rebuilt (%v)", err)
	}

	change := `{"epoch":"e1","revision":8,"since":7,"changed":[{"client_id":"keyed","secrets":[],
		"public_keys":[{"id":"sec_key1","jwk":` + k.jwk + `},{"id":"sec_key3","jwk":` + k.otherJWK + `}]}],"removed":[]}`
	d, err := decodeAnswer(strings.NewReader(change), 1<<20, ans.full)
	if err != nil {
		t.Fatal(err)
	}
	next, err := ans.full.apply(d.delta)
	if err != nil {
		t.Fatal(err)
	}
	if c := next.client("keyed"); len(c.keyCreds()) != 2 || len(c.certCreds()) != 0 {
		t.Fatalf("after the change: %d keys, %d certificates", len(c.keyCreds()), len(c.certCreds()))
	}

	for name, bad := range map[string]string{
		"a private key":    strings.Replace(string(body), `"kty":"EC"`, `"kty":"EC","d":"AAAA"`, 1),
		"a bad thumbprint": strings.Replace(string(body), k.certTP, "short", 1),
		"a duplicate id":   strings.Replace(string(body), `"sec_cert1"`, `"sec_key1"`, 1),
	} {
		if bad == string(body) {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		if _, err := decodeAnswer(strings.NewReader(bad), 1<<20, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
