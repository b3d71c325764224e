package clientassertion

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/credkey"
	"github.com/rotagate/rotagate/internal/testkeys"
)

const (
	clientID = "cli_test"
	tokenURL = "https://api.example.com/oauth/token"
)

var (
	now       = time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	audiences = []string{tokenURL}
)

var (
	fixtureOnce                 sync.Once
	ec256, ec256b, ec384, ec521 *ecdsa.PrivateKey
	rsaKey                      *rsa.PrivateKey
	edKey                       ed25519.PrivateKey
	attacker                    *ecdsa.PrivateKey
)

// fixture readies the tests' keys, made once per process by testkeys.
func fixture(t testing.TB) {
	t.Helper()
	fixtureOnce.Do(func() {
		ec256 = testkeys.ECDSA(t, elliptic.P256(), "")
		ec256b = testkeys.ECDSA(t, elliptic.P256(), "b")
		ec384 = testkeys.ECDSA(t, elliptic.P384(), "")
		ec521 = testkeys.ECDSA(t, elliptic.P521(), "")
		attacker = testkeys.ECDSA(t, elliptic.P256(), "attacker")
		edKey = testkeys.Ed25519(t, "")
		rsaKey = testkeys.RSA(t, 2048, "")
	})
}

// registered parses pub as the control plane would have registered it and
// the edge read it from the snapshot.
func registered(t testing.TB, id string, pub crypto.PublicKey, kid string, alg jose.SignatureAlgorithm) Key {
	t.Helper()
	k, err := credkey.ParseJWK(testkeys.JWK(t, jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(alg)}))
	if err != nil {
		t.Fatalf("ParseJWK: %v", err)
	}
	return Key{CredentialID: id, Key: k}
}

// goodClaims are claims every rule accepts, with a fresh jti.
func goodClaims() map[string]any {
	return map[string]any{
		"iss": clientID,
		"sub": clientID,
		"aud": tokenURL,
		"exp": now.Add(time.Minute).Unix(),
		"iat": now.Unix(),
		"jti": testkeys.JTI(),
	}
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func newVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// oneKeyClient readies the keys and a verifier with cfg for the tests'
// usual client, clientID holding ec256 registered as sec_1.
func oneKeyClient(t testing.TB, cfg Config) (*Verifier, []Key) {
	t.Helper()
	fixture(t)
	return newVerifier(t, cfg), []Key{registered(t, "sec_1", &ec256.PublicKey, "", "")}
}

// kidKeys readies the keys and registers two keys of one client under
// kids: ec256 as sec_1 "k1", ec256b as sec_2 "k2".
func kidKeys(t testing.TB) (k1, k2 Key) {
	t.Helper()
	fixture(t)
	return registered(t, "sec_1", &ec256.PublicKey, "k1", ""), registered(t, "sec_2", &ec256b.PublicKey, "k2", "")
}

// run parses and verifies as the edge does.
func run(v *Verifier, assertion, bodyClientID string, keys []Key) (Verified, error) {
	a, err := v.Parse(assertion, bodyClientID, audiences, now)
	if err != nil {
		return Verified{}, err
	}
	return v.Verify(a, keys, now)
}

func reasonOf(t testing.TB, err error) Reason {
	t.Helper()
	var r Reason
	if err != nil && !errors.As(err, &r) {
		t.Fatalf("error %v is not a Reason", err)
	}
	return r
}

func TestVerifyEveryAlgorithm(t *testing.T) {
	fixture(t)
	cases := []struct {
		alg  jose.SignatureAlgorithm
		priv any
		key  Key
	}{
		{jose.ES256, ec256, registered(t, "sec_es256", &ec256.PublicKey, "", "")},
		{jose.ES384, ec384, registered(t, "sec_es384", &ec384.PublicKey, "", jose.ES384)},
		{jose.RS256, rsaKey, registered(t, "sec_rsa", &rsaKey.PublicKey, "", "")},
		{jose.PS256, rsaKey, registered(t, "sec_rsa", &rsaKey.PublicKey, "", "")},
		{jose.EdDSA, edKey, registered(t, "sec_ed", edKey.Public(), "", "")},
	}
	v := newVerifier(t, Config{})
	for _, c := range cases {
		t.Run(string(c.alg), func(t *testing.T) {
			got, err := run(v, testkeys.Sign(t, c.alg, c.priv, "", goodClaims()), clientID, []Key{c.key})
			if err != nil {
				t.Fatalf("refused: %v", reasonOf(t, err))
			}
			if got != (Verified{ClientID: clientID, CredentialID: c.key.CredentialID, Checks: 1}) {
				t.Fatalf("verified %+v", got)
			}
		})
	}
}

// Every claim rule, one case each side of its line where it has one.
func TestClaimRules(t *testing.T) {
	v, keys := oneKeyClient(t, Config{})
	cases := []struct {
		name   string
		claims map[string]any
		body   string
		want   Reason // reasonNone: accepted
	}{
		{"good, no client_id in body", goodClaims(), "", reasonNone},
		{"good, client_id in body", goodClaims(), clientID, reasonNone},
		{"client_id in body differs", goodClaims(), "cli_other", ReasonClientMismatch},
		{"no iss", testkeys.With(goodClaims(), "iss", nil), "", ReasonIssuer},
		{"no sub", testkeys.With(goodClaims(), "sub", nil), "", ReasonIssuer},
		{"sub differs from iss", testkeys.With(goodClaims(), "sub", "cli_other"), "", ReasonIssuer},
		{"iss longer than a client id", testkeys.With(goodClaims(), "iss", strings.Repeat("c", 256), "sub", strings.Repeat("c", 256)), "", ReasonIssuer},
		{"iss and sub another client", testkeys.With(goodClaims(), "iss", "cli_other", "sub", "cli_other"), clientID, ReasonClientMismatch},
		{"no aud", testkeys.With(goodClaims(), "aud", nil), "", ReasonAudience},
		{"aud another endpoint", testkeys.With(goodClaims(), "aud", "https://other.example.com/token"), "", ReasonAudience},
		{"aud array holding ours", testkeys.With(goodClaims(), "aud", []string{"https://issuer.example.com", tokenURL}), "", reasonNone},
		{"aud array without ours", testkeys.With(goodClaims(), "aud", []string{"https://issuer.example.com"}), "", ReasonAudience},
		{"aud a prefix of ours", testkeys.With(goodClaims(), "aud", tokenURL[:len(tokenURL)-1]), "", ReasonAudience},
		{"no exp", testkeys.With(goodClaims(), "exp", nil), "", ReasonNoExpiry},
		{"exp 29 s ago (leeway)", testkeys.With(goodClaims(), "exp", now.Add(-29*time.Second).Unix()), "", reasonNone},
		{"exp 31 s ago", testkeys.With(goodClaims(), "exp", now.Add(-31*time.Second).Unix()), "", ReasonExpired},
		{"exp 5 min 30 s ahead", testkeys.With(goodClaims(), "exp", now.Add(MaxLifetime+Leeway).Unix()), "", reasonNone},
		{"exp 5 min 31 s ahead", testkeys.With(goodClaims(), "exp", now.Add(MaxLifetime+Leeway+time.Second).Unix()), "", ReasonLifetime},
		{"exp an hour ahead (authlib's default)", testkeys.With(goodClaims(), "exp", now.Add(time.Hour).Unix()), "", ReasonLifetime},
		{"exp fractional", testkeys.With(goodClaims(), "exp", float64(now.Add(time.Minute).Unix())+0.5), "", reasonNone},
		{"exp a string", testkeys.With(goodClaims(), "exp", "soon"), "", ReasonMalformed},
		{"nbf 29 s ahead (leeway)", testkeys.With(goodClaims(), "nbf", now.Add(29*time.Second).Unix()), "", reasonNone},
		{"nbf 31 s ahead", testkeys.With(goodClaims(), "nbf", now.Add(31*time.Second).Unix()), "", ReasonNotYetValid},
		{"iat 31 s ahead", testkeys.With(goodClaims(), "iat", now.Add(31*time.Second).Unix()), "", ReasonNotYetValid},
		{"iat an hour ago", testkeys.With(goodClaims(), "iat", now.Add(-time.Hour).Unix()), "", reasonNone},
		{"no jti", testkeys.With(goodClaims(), "jti", nil), "", ReasonNoJTI},
		{"empty jti", testkeys.With(goodClaims(), "jti", ""), "", ReasonNoJTI},
		{"claims in other case", map[string]any{"ISS": clientID, "SUB": clientID, "AUD": tokenURL, "EXP": now.Unix(), "JTI": "x"}, "", ReasonIssuer},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := v.SignatureChecks()
			got, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", c.claims), c.body, keys)
			if r := reasonOf(t, err); r != c.want {
				t.Fatalf("reason %v, want %v", r, c.want)
			}
			if c.want == reasonNone && got.CredentialID != "sec_1" {
				t.Fatalf("verified %+v", got)
			}
			// Rules that need no key are checked before any signature.
			if c.want != reasonNone && c.want != ReasonSignature && v.SignatureChecks() != before {
				t.Fatalf("%d signature checks before refusing for %v", v.SignatureChecks()-before, c.want)
			}
		})
	}
}

// The refused algorithms never reach a signature check, whatever key the
// client has; a mismatch between an allowed algorithm and the client's
// keys fails at the signature.
func TestAlgorithms(t *testing.T) {
	fixture(t)
	spki, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	rsaKeys := []Key{registered(t, "sec_rsa", &rsaKey.PublicKey, "", "")}
	rsaJWK := rsaKeys[0].Key.JSON()
	ecKeys := []Key{registered(t, "sec_ec", &ec256.PublicKey, "", "")}
	rsaPinned := []Key{registered(t, "sec_rsa", &rsaKey.PublicKey, "", jose.RS256)}

	claims := enc(fmt.Sprintf(`{"iss":%q,"sub":%q,"aud":%q,"exp":%d,"jti":"n1"}`, clientID, clientID, tokenURL, now.Add(time.Minute).Unix()))
	cases := []struct {
		name      string
		assertion string
		keys      []Key
		want      Reason
	}{
		{"none", enc(`{"alg":"none"}`) + "." + claims + ".", rsaKeys, ReasonAlgorithm},
		{"None", enc(`{"alg":"None"}`) + "." + claims + ".", rsaKeys, ReasonAlgorithm},
		{"no alg", enc(`{"typ":"JWT"}`) + "." + claims + ".", rsaKeys, ReasonAlgorithm},
		// The classic confusion: the public key, which anyone may read, as an HMAC secret.
		{"HS256 keyed with the public key's PEM", testkeys.Sign(t, jose.HS256, pubPEM, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"HS256 keyed with the public JWK", testkeys.Sign(t, jose.HS256, rsaJWK, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"HS384", testkeys.Sign(t, jose.HS384, pubPEM, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"HS512", testkeys.Sign(t, jose.HS512, pubPEM, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"RS384", testkeys.Sign(t, jose.RS384, rsaKey, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"RS512", testkeys.Sign(t, jose.RS512, rsaKey, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"PS384", testkeys.Sign(t, jose.PS384, rsaKey, "", goodClaims()), rsaKeys, ReasonAlgorithm},
		{"ES512", testkeys.Sign(t, jose.ES512, ec521, "", goodClaims()), ecKeys, ReasonAlgorithm},
		// Allowed algorithms that do not fit the client's keys.
		{"ES256 against an RSA key", testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), rsaKeys, ReasonSignature},
		{"RS256 against an EC key", testkeys.Sign(t, jose.RS256, rsaKey, "", goodClaims()), ecKeys, ReasonSignature},
		{"PS256 against a key pinned to RS256", testkeys.Sign(t, jose.PS256, rsaKey, "", goodClaims()), rsaPinned, ReasonSignature},
		{"ES384 against a P-256 key", testkeys.Sign(t, jose.ES384, ec384, "", goodClaims()), ecKeys, ReasonSignature},
		{"EdDSA against an EC key", testkeys.Sign(t, jose.EdDSA, edKey, "", goodClaims()), ecKeys, ReasonSignature},
		{"RS256 signature relabelled PS256", relabel(t, testkeys.Sign(t, jose.RS256, rsaKey, "", goodClaims()), "PS256"), rsaKeys, ReasonSignature},
		{"ES256 signature relabelled ES384", relabel(t, testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), "ES384"), ecKeys, ReasonSignature},
		{"RS256 signed and pinned", testkeys.Sign(t, jose.RS256, rsaKey, "", goodClaims()), rsaPinned, reasonNone},
	}
	v := newVerifier(t, Config{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := v.SignatureChecks()
			_, err := run(v, c.assertion, "", c.keys)
			if r := reasonOf(t, err); r != c.want {
				t.Fatalf("reason %v, want %v", r, c.want)
			}
			if c.want == ReasonAlgorithm && v.SignatureChecks() != before {
				t.Fatal("a refused algorithm reached a signature check")
			}
		})
	}
}

// relabel swaps the alg of an assertion's header, keeping its signature.
func relabel(t testing.TB, assertion, alg string) string {
	t.Helper()
	parts := strings.Split(assertion, ".")
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var old string
	for _, a := range []string{"RS256", "ES256"} {
		if strings.Contains(string(head), `"`+a+`"`) {
			old = a
		}
	}
	parts[0] = enc(strings.Replace(string(head), `"`+old+`"`, `"`+alg+`"`, 1))
	return strings.Join(parts, ".")
}

func TestMalformed(t *testing.T) {
	fixture(t)
	good := testkeys.Sign(t, jose.ES256, ec256, "", goodClaims())
	parts := strings.Split(good, ".")
	cases := map[string]string{
		"empty":               "",
		"one part":            "abc",
		"two parts":           parts[0] + "." + parts[1],
		"four parts":          good + ".x",
		"header not base64":   "!!." + parts[1] + "." + parts[2],
		"header not JSON":     enc("ES256") + "." + parts[1] + "." + parts[2],
		"claims not base64":   parts[0] + ".!!." + parts[2],
		"claims not JSON":     parts[0] + "." + enc("iss=cli_test") + "." + parts[2],
		"claims a JSON array": parts[0] + "." + enc(`["iss"]`) + "." + parts[2],
		"crit header":         enc(`{"alg":"ES256","crit":["exp"],"exp":1}`) + "." + parts[1] + "." + parts[2],
		"b64 header":          enc(`{"alg":"ES256","b64":false,"crit":["b64"]}`) + "." + parts[1] + "." + parts[2],
		"JSON serialization":  `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`,
	}
	v := newVerifier(t, Config{})
	for name, assertion := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := v.Parse(assertion, "", audiences, now)
			if r := reasonOf(t, err); r != ReasonMalformed {
				t.Fatalf("reason %v, want malformed", r)
			}
		})
	}
}

func TestSize(t *testing.T) {
	v, keys := oneKeyClient(t, Config{})
	// Pad a claim until the assertion is exactly MaxSize bytes.
	padded := func(total int) string {
		c := goodClaims()
		base := len(testkeys.Sign(t, jose.ES256, ec256, "", testkeys.With(c, "pad", "")))
		// 3 bytes of claim make 4 of base64url.
		pad := (total - base) / 4 * 3
		a := testkeys.Sign(t, jose.ES256, ec256, "", testkeys.With(c, "pad", strings.Repeat("p", pad)))
		for len(a) < total {
			pad++
			a = testkeys.Sign(t, jose.ES256, ec256, "", testkeys.With(c, "pad", strings.Repeat("p", pad)))
		}
		return a
	}
	atMax := padded(MaxSize)
	if len(atMax) != MaxSize {
		t.Fatalf("could not make an assertion of exactly %d bytes (%d)", MaxSize, len(atMax))
	}
	if _, err := run(v, atMax, "", keys); err != nil {
		t.Fatalf("an assertion of MaxSize bytes refused: %v", reasonOf(t, err))
	}
	over := padded(MaxSize + 1)
	if _, err := run(v, over, "", keys); reasonOf(t, err) != ReasonOversized {
		t.Fatalf("an assertion of %d bytes: %v", len(over), err)
	}
	// Refused before parsing: garbage over the size says oversized, not malformed.
	if _, err := v.Parse(strings.Repeat("a", MaxSize+1), "", audiences, now); reasonOf(t, err) != ReasonOversized {
		t.Fatalf("garbage over the size: %v", err)
	}
}

func TestReplay(t *testing.T) {
	v, keys := oneKeyClient(t, Config{})
	assertion := testkeys.Sign(t, jose.ES256, ec256, "", goodClaims())
	if _, err := run(v, assertion, "", keys); err != nil {
		t.Fatalf("first use refused: %v", reasonOf(t, err))
	}
	if _, err := run(v, assertion, "", keys); reasonOf(t, err) != ReasonReplay {
		t.Fatalf("replay: %v", err)
	}
	// The same jti in another assertion (new signature, other exp) is a replay too.
	c := goodClaims()
	c["exp"] = now.Add(2 * time.Minute).Unix()
	jti := c["jti"]
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", c), "", keys); err != nil {
		t.Fatalf("fresh jti refused: %v", reasonOf(t, err))
	}
	c = goodClaims()
	c["jti"] = jti
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", c), "", keys); reasonOf(t, err) != ReasonReplay {
		t.Fatalf("same jti, new assertion: %v", err)
	}
	// A refused assertion is not remembered: a bad signature does not burn its jti.
	c = goodClaims()
	if _, err := run(v, testkeys.Sign(t, jose.ES256, attacker, "", c), "", keys); reasonOf(t, err) != ReasonSignature {
		t.Fatalf("attacker's signature: %v", err)
	}
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", c), "", keys); err != nil {
		t.Fatalf("jti burnt by a forged assertion: %v", reasonOf(t, err))
	}
	if v.ReplayEntries() != 3 {
		t.Fatalf("%d entries, want 3", v.ReplayEntries())
	}
}

// The replay cache forgets an entry only once its assertion has expired
// (exp + Leeway), keys jti per client, and refuses at its bounds.
func TestReplayCache(t *testing.T) {
	c := newReplayCache(2, 3)
	exp := now.Add(time.Minute)
	if r := c.add("a", "1", exp.Add(Leeway), now); r != reasonNone {
		t.Fatal(r)
	}
	if r := c.add("a", "1", exp.Add(Leeway), now.Add(time.Minute)); r != ReasonReplay {
		t.Fatalf("within exp: %v", r)
	}
	if r := c.add("a", "1", exp.Add(Leeway), now.Add(time.Minute+Leeway-time.Nanosecond)); r != ReasonReplay {
		t.Fatalf("within exp + leeway: %v", r)
	}
	if r := c.add("b", "1", exp.Add(Leeway), now); r != reasonNone {
		t.Fatalf("same jti, other client: %v", r)
	}
	// Client ids and jtis are not confused by concatenation.
	if r := c.add("a1", "", exp.Add(Leeway), now); r != reasonNone {
		t.Fatalf("a1/\"\" vs a/1: %v", r)
	}
	if r := c.add("a", "2", exp.Add(Leeway), now); r != ReasonReplayFull {
		t.Fatalf("over the total bound: %v", r)
	}
	c = newReplayCache(2, 10)
	for _, jti := range []string{"1", "2"} {
		if r := c.add("a", jti, exp, now); r != reasonNone {
			t.Fatal(r)
		}
	}
	if r := c.add("a", "3", exp, now); r != ReasonReplayFull {
		t.Fatalf("over the client bound: %v", r)
	}
	if r := c.add("b", "3", exp, now); r != reasonNone {
		t.Fatalf("another client is not held by a's bound: %v", r)
	}
	// An entry lives through its expiry instant…
	if r := c.add("a", "1", exp.Add(time.Minute), exp); r != ReasonReplay {
		t.Fatalf("at the expiry instant: %v", r)
	}
	// …then leaves and makes room; the jti is no longer held.
	if r := c.add("a", "1", exp.Add(time.Minute), exp.Add(time.Nanosecond)); r != reasonNone {
		t.Fatalf("after expiry: %v", r)
	}
	if n := c.entries(); n != 1 {
		t.Fatalf("%d entries after expiry, want 1", n)
	}
}

// A full replay cache refuses a good assertion (it never forgets a live jti).
func TestReplayFullRefuses(t *testing.T) {
	v, keys := oneKeyClient(t, Config{ReplayPerClient: 1, ReplayTotal: 1})
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), "", keys); err != nil {
		t.Fatal(reasonOf(t, err))
	}
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), "", keys); reasonOf(t, err) != ReasonReplayFull {
		t.Fatalf("full cache: %v", err)
	}
}

// kid picks the key when the assertion names one; without it each key is
// tried.
func TestKeyChoice(t *testing.T) {
	k1, k2 := kidKeys(t)
	noKid := registered(t, "sec_3", &ec256b.PublicKey, "", "")
	cases := []struct {
		name   string
		kid    string
		keys   []Key
		want   string // credential id, "" for a refusal
		checks uint64
	}{
		{"kid names the second key", "k2", []Key{k1, k2}, "sec_2", 1},
		{"kid names the key by its thumbprint", k2.Key.Thumbprint(), []Key{k1, k2}, "sec_2", 1},
		{"no kid: each key in turn", "", []Key{k1, k2}, "sec_2", 2},
		{"kid of the other key", "k1", []Key{k1, k2}, "", 2},
		{"unknown kid", "k9", []Key{k1, k2}, "", 2},
		{"kid the key was registered without", "client-side-name", []Key{k1, noKid}, "sec_3", 1},
	}
	v := newVerifier(t, Config{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := v.SignatureChecks()
			got, err := run(v, testkeys.Sign(t, jose.ES256, ec256b, c.kid, goodClaims()), "", c.keys)
			if c.want == "" {
				if reasonOf(t, err) != ReasonSignature {
					t.Fatalf("want a signature refusal, got %+v %v", got, err)
				}
			} else if err != nil || got.CredentialID != c.want {
				t.Fatalf("verified %+v %v, want %s", got, err, c.want)
			}
			if n := v.SignatureChecks() - before; n != c.checks {
				t.Fatalf("%d signature checks, want %d", n, c.checks)
			}
		})
	}
}

// Equal work: an assertion that does not verify costs MaxKeys signature
// checks whether the client is unknown, has no key for the algorithm, has
// keys that do not verify it, or has the kid it names. Only a client with
// more matching keys than MaxKeys costs more (one check per key).
func TestEqualWork(t *testing.T) {
	k1, k2 := kidKeys(t)
	rsaOnly := registered(t, "sec_r", &rsaKey.PublicKey, "", "")
	clients := []struct {
		name     string
		keys     []Key
		matching map[string]int // by kid: keys the verifier must try
	}{
		{"unknown client", nil, nil},
		{"no active key", []Key{}, nil},
		{"one key", []Key{k1}, map[string]int{"": 1, "k1": 1}},
		{"two keys", []Key{k1, k2}, map[string]int{"": 2, "k1": 1}},
		{"RSA key only", []Key{rsaOnly}, nil},
		{"one EC key, one RSA", []Key{k1, rsaOnly}, map[string]int{"": 1, "k1": 1}},
	}
	for _, maxKeys := range []int{1, 2, 3} {
		v := newVerifier(t, Config{MaxKeys: maxKeys})
		for _, c := range clients {
			for _, kid := range []string{"", "k1", "nope"} {
				before := v.SignatureChecks()
				_, err := run(v, testkeys.Sign(t, jose.ES256, attacker, kid, goodClaims()), "", c.keys)
				if reasonOf(t, err) != ReasonSignature {
					t.Fatalf("%s: %v", c.name, err)
				}
				if n, want := v.SignatureChecks()-before, uint64(max(maxKeys, c.matching[kid])); n != want {
					t.Fatalf("max_keys %d, %s, kid %q: %d checks, want %d", maxKeys, c.name, kid, n, want)
				}
			}
		}
	}
}

// Every refusal reads the same to a caller and says nothing of the
// assertion; the codes for logs are distinct.
func TestReasonsAreOpaque(t *testing.T) {
	codes := map[string]bool{}
	for r := ReasonOversized; r <= ReasonReplayFull; r++ {
		if r.Error() != "invalid client assertion" {
			t.Fatalf("%v.Error() = %q", r, r.Error())
		}
		if codes[r.String()] || r.String() == "unknown" || strings.ContainsAny(r.String(), " .") {
			t.Fatalf("code %q repeated or not a label", r.String())
		}
		codes[r.String()] = true
	}
	if Reason(200).String() != "unknown" {
		t.Fatal("an out-of-range reason has a code")
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{{MaxKeys: -1}, {ReplayPerClient: -1}, {ReplayPerClient: 10, ReplayTotal: 5}} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("New(%+v) accepted", cfg)
		}
	}
}

// The dummy RSA key really runs a verification: the RSA refusal path costs
// MaxKeys checks that each fail, without error from a malformed key.
func TestDummyKeysVerify(t *testing.T) {
	fixture(t)
	v := newVerifier(t, Config{})
	if v.dummies[credkey.Ed25519] == nil || !v.dummies[credkey.Ed25519].(ed25519.PublicKey).Equal(v.dummies[jose.EdDSA]) {
		t.Fatal("Ed25519 and EdDSA do not share their dummy key")
	}
	for alg, key := range v.dummies {
		if alg == credkey.Ed25519 {
			continue // go-jose cannot sign under this name; the key is EdDSA's
		}
		var priv any
		switch alg {
		case jose.ES256:
			priv = ec256
		case jose.ES384:
			priv = ec384
		case jose.EdDSA:
			priv = edKey
		default:
			priv = rsaKey
		}
		a, err := v.Parse(testkeys.Sign(t, alg, priv, "", goodClaims()), "", audiences, now)
		if err != nil {
			t.Fatal(reasonOf(t, err))
		}
		if v.check(a, key) {
			t.Fatalf("%s: a dummy key verified a real signature", alg)
		}
	}
	// The RSA dummy is refused by the arithmetic, not as a malformed key
	// (which could be refused before the modular exponentiation).
	dummy := v.dummies[jose.RS256].(*rsa.PublicKey)
	if dummy.N.Cmp(rsaKey.N) <= 0 {
		t.Fatal("the dummy modulus is not above a real 2048-bit one")
	}
	digest := make([]byte, 32)
	sig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(dummy, crypto.SHA256, digest, sig); err != rsa.ErrVerification {
		t.Fatalf("RS256 against the dummy: %v", err)
	}
	if err := rsa.VerifyPSS(dummy, crypto.SHA256, digest, sig, nil); err != rsa.ErrVerification {
		t.Fatalf("PS256 against the dummy: %v", err)
	}
}

// FuzzParse: whatever the input, Parse does not panic, and what it accepts
// is refused by Verify for a client without keys, after MaxKeys checks.
func FuzzParse(f *testing.F) {
	fixture(f)
	f.Add(testkeys.Sign(f, jose.ES256, ec256, "k1", goodClaims()), "")
	f.Add(testkeys.Sign(f, jose.EdDSA, edKey, "", goodClaims()), clientID)
	f.Add(enc(`{"alg":"none"}`)+"."+enc(`{"iss":"a"}`)+".", "")
	v := newVerifier(f, Config{})
	f.Fuzz(func(t *testing.T, assertion, bodyClientID string) {
		a, err := v.Parse(assertion, bodyClientID, audiences, now)
		if err != nil {
			if a != nil {
				t.Fatal("an assertion and an error")
			}
			reasonOf(t, err)
			return
		}
		before := v.SignatureChecks()
		if _, err := v.Verify(a, nil, now); reasonOf(t, err) != ReasonSignature {
			t.Fatalf("verified without a key: %v", err)
		}
		if v.SignatureChecks()-before != DefaultMaxKeys {
			t.Fatal("a refusal without keys did not cost MaxKeys checks")
		}
	})
}

// RFC 9864's "Ed25519", as openid-client 6 sends it, is EdDSA for an
// Ed25519 key, whether the key was registered with "EdDSA", "Ed25519" or
// no alg; it is refused for any other key.
func TestEd25519Name(t *testing.T) {
	fixture(t)
	claims, err := json.Marshal(goodClaims())
	if err != nil {
		t.Fatal(err)
	}
	input := enc(`{"alg":"Ed25519","typ":"JWT"}`) + "." + enc(string(claims))
	assertion := input + "." + enc(string(ed25519.Sign(edKey, []byte(input))))
	for _, alg := range []jose.SignatureAlgorithm{"", jose.EdDSA, credkey.Ed25519} {
		v := newVerifier(t, Config{})
		got, err := run(v, assertion, "", []Key{registered(t, "sec_ed", edKey.Public(), "", alg)})
		if err != nil || got.CredentialID != "sec_ed" {
			t.Fatalf("key registered with alg %q: %+v %v", alg, got, err)
		}
	}
	v := newVerifier(t, Config{})
	if _, err := run(v, assertion, "", []Key{registered(t, "sec_ec", &ec256.PublicKey, "", "")}); reasonOf(t, err) != ReasonSignature {
		t.Fatalf("Ed25519 against an EC key: %v", err)
	}
}

// A replay is caught up to the last instant Parse accepts the assertion
// (exp + Leeway), and after it Parse refuses it as expired.
func TestReplayAtTheEdgeOfExpiry(t *testing.T) {
	v, keys := oneKeyClient(t, Config{})
	a := testkeys.Sign(t, jose.ES256, ec256, "", testkeys.With(goodClaims(), "exp", now.Unix()))
	verify := func(at time.Time) Reason {
		p, err := v.Parse(a, "", audiences, at)
		if err == nil {
			_, err = v.Verify(p, keys, at)
		}
		return reasonOf(t, err)
	}
	if r := verify(now); r != reasonNone {
		t.Fatalf("first use: %v", r)
	}
	if r := verify(now.Add(Leeway)); r != ReasonReplay {
		t.Fatalf("replay at exp + leeway: %v", r)
	}
	if r := verify(now.Add(Leeway + time.Second)); r != ReasonExpired {
		t.Fatalf("replay after exp + leeway: %v", r)
	}
}

// Concurrent presentations of one assertion to one edge: exactly
// one is accepted.
func TestReplayConcurrent(t *testing.T) {
	v, keys := oneKeyClient(t, Config{})
	a := testkeys.Sign(t, jose.ES256, ec256, "", goodClaims())
	const n = 16
	results := make(chan Reason, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := run(v, a, "", keys)
			var r Reason
			errors.As(err, &r)
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	accepted, replays := 0, 0
	for r := range results {
		switch r {
		case reasonNone:
			accepted++
		case ReasonReplay:
			replays++
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	if accepted != 1 || replays != n-1 {
		t.Fatalf("%d accepted, %d replays", accepted, replays)
	}
}

// TestPadCostsARefusal: a verified assertion padded after the fact has
// cost the signature checks of a refused one.
func TestPadCostsARefusal(t *testing.T) {
	fixture(t)
	v := newVerifier(t, Config{})
	key := registered(t, "sec_es", &ec256.PublicKey, "", "")
	before := v.SignatureChecks()
	if _, err := run(v, testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), clientID, []Key{registered(t, "sec_other", &ec256b.PublicKey, "", "")}); err == nil {
		t.Fatal("a wrong key verified")
	}
	refused := v.SignatureChecks() - before

	a, err := v.Parse(testkeys.Sign(t, jose.ES256, ec256, "", goodClaims()), clientID, audiences, now)
	if err != nil {
		t.Fatal(err)
	}
	before = v.SignatureChecks()
	got, err := v.Verify(a, []Key{key}, now)
	if err != nil || got.Checks != 1 {
		t.Fatalf("verified %+v, %v", got, err)
	}
	v.Pad(a, got.Checks)
	if padded := v.SignatureChecks() - before; padded != refused || padded != DefaultMaxKeys {
		t.Fatalf("padded to %d checks; a refusal costs %d", padded, refused)
	}
}
