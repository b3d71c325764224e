// Package clientassertion verifies private_key_jwt client assertions
// (RFC 7523 §2.2 and §3, OIDC Core §9) against a client's registered public
// keys: keys parsed with go-jose v4 (credkey), claims as go-jose's
// jwt.Claims, signatures checked by the standard library over the signing
// input exactly as received (signature.go says why).
//
// Verification runs in two steps so that the edge can consult its failure
// budget, keyed by the client id, before any signature is checked:
//
//	a, err := v.Parse(assertion, bodyClientID, audiences, now) // no crypto
//	// budget check for a.ClientID(); look up the client's active keys
//	res, err := v.Verify(a, keys, now)                         // signatures, replay
//
// Every refusal is a Reason: its Error text is the same for all (the caller
// answers the same 401 as for a wrong secret), its String is a short code
// for debug logs and metrics. Nothing here ever puts the assertion, a claim
// value or a key into an error.
package clientassertion

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/json"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/rotagate/rotagate/internal/credkey"
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// The rules of SPEC §16.
const (
	// MaxSize bounds an assertion; a longer one is refused before parsing.
	MaxSize = 8 << 10
	// MaxLifetime bounds how far ahead of now an assertion's exp may be
	// (plus Leeway), so that the replay cache holds each jti for at most
	// MaxLifetime + 2×Leeway.
	MaxLifetime = 5 * time.Minute
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 30 * time.Second
	// MaxClientIDBytes bounds iss (SPEC §3: client ids are 1–255 bytes),
	// so that no longer name reaches a lookup or a failure-budget key.
	MaxClientIDBytes = 255
)

// Defaults of Config.
const (
	DefaultMaxKeys         = 2
	DefaultReplayPerClient = 4096
	DefaultReplayTotal     = 1 << 18
)

// Config sets up a Verifier. The zero value takes every default.
type Config struct {
	// MaxKeys is the number of signature checks every refused assertion
	// costs, whatever the client: an unknown client, a client without a
	// key for the assertion's algorithm or kid, and a client whose keys do
	// not verify the signature all cost MaxKeys checks (the missing ones
	// are made against throwaway keys). Set it to the control plane's
	// max_active_secrets. A client with more matching keys than MaxKeys
	// costs one check per key. The throwaway RSA key has 2048 bits, so a
	// client whose RSA key is larger costs a little more per check than
	// an unknown client does (ES256, ES384 and EdDSA costs do not depend
	// on the key). Default: 2.
	MaxKeys int `json:"max_keys,omitempty"`
	// ReplayPerClient bounds the jti values remembered for one client.
	// A client at the bound is refused until its oldest assertions
	// expire: a replay cache that forgets would let a replay through.
	// Entries live until their assertion's exp + Leeway (at most
	// MaxLifetime + 2×Leeway), so the bound allows ReplayPerClient / 6 min
	// assertions a second with the longest lifetime, more with shorter
	// ones. Default: 4096.
	ReplayPerClient int `json:"replay_per_client,omitempty"`
	// ReplayTotal bounds the jti values remembered for all clients
	// together (about 70 bytes each). Only assertions with a valid
	// signature are remembered, so only holders of a registered private
	// key can fill the cache. Default: 262144.
	ReplayTotal int `json:"replay_total,omitempty"`
}

// Key is one active public-key credential of a client.
type Key struct {
	// CredentialID is the credential's id in the control plane
	// ({http.auth.secret_id} on success).
	CredentialID string
	// Key is the parsed public key.
	Key *credkey.PublicKey
}

// Verified is the outcome of a successful verification.
type Verified struct {
	ClientID     string
	CredentialID string
	// Checks is how many signature checks the verification made.
	Checks int
}

// Verifier verifies client assertions. It is safe for concurrent use; one
// Verifier per edge holds the replay cache.
type Verifier struct {
	maxKeys int
	dummies map[jose.SignatureAlgorithm]crypto.PublicKey
	replay  *replayCache
	checks  atomic.Uint64
}

// New makes a Verifier.
func New(cfg Config) (*Verifier, error) {
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.ReplayPerClient == 0 {
		cfg.ReplayPerClient = DefaultReplayPerClient
	}
	if cfg.ReplayTotal == 0 {
		cfg.ReplayTotal = DefaultReplayTotal
	}
	if cfg.MaxKeys < 1 || cfg.ReplayPerClient < 1 || cfg.ReplayTotal < cfg.ReplayPerClient {
		return nil, fmt.Errorf("client assertions: max_keys (%d) and replay_per_client (%d) must be positive, replay_total (%d) at least replay_per_client",
			cfg.MaxKeys, cfg.ReplayPerClient, cfg.ReplayTotal)
	}
	dummies, err := dummyKeys()
	if err != nil {
		return nil, err
	}
	return &Verifier{
		maxKeys: cfg.MaxKeys,
		dummies: dummies,
		replay:  newReplayCache(cfg.ReplayPerClient, cfg.ReplayTotal),
	}, nil
}

// dummyKeys makes one throwaway public key per accepted algorithm, to spend
// on an assertion the same work as a real key would. Nobody holds their
// private keys, and a check against one never counts as a success anyway.
func dummyKeys() (map[jose.SignatureAlgorithm]crypto.PublicKey, error) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ed, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	// An RSA check costs a modular exponentiation whether or not the
	// modulus has known factors: a random odd 2048-bit number (the usual
	// client key size) costs what a real key does, without the time of
	// generating one. Its top 64 bits are set so that a signature value
	// under a real modulus is under this one too (a value at or over the
	// modulus is refused before the exponentiation).
	buf := make([]byte, 256)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	for i := range 8 {
		buf[i] = 0xff
	}
	buf[len(buf)-1] |= 1
	rsaPub := &rsa.PublicKey{N: new(big.Int).SetBytes(buf), E: 65537}
	return map[jose.SignatureAlgorithm]crypto.PublicKey{
		jose.ES256:      &p256.PublicKey,
		jose.ES384:      &p384.PublicKey,
		jose.EdDSA:      ed,
		credkey.Ed25519: ed,
		jose.RS256:      rsaPub,
		jose.PS256:      rsaPub,
	}, nil
}

// SignatureChecks counts the signature checks this Verifier has made,
// real and throwaway alike.
func (v *Verifier) SignatureChecks() uint64 { return v.checks.Load() }

// ReplayEntries is the number of jti values the replay cache holds.
func (v *Verifier) ReplayEntries() int { return v.replay.entries() }

// Assertion is a parsed assertion whose claims passed every check that does
// not need a key. Its signature is not verified yet.
type Assertion struct {
	alg       jose.SignatureAlgorithm
	kid       string
	input     []byte // the signing input: header "." payload, as received
	signature []byte
	claims    jwt.Claims
}

// ClientID is the client the assertion names (iss = sub), not yet proven.
func (a *Assertion) ClientID() string { return a.claims.Issuer }

// header is the part of a JWS protected header (RFC 7515 §4.1) rotagate
// reads. Other members ("typ", "jwk", "x5c"…) are ignored: no key is ever
// taken from the assertion itself.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

var b64 = base64.RawURLEncoding.Strict()

// Parse checks everything an assertion can be checked for without a key:
// its size (before any parsing), its form (compact JWS, RFC 7515 §7.1,
// unpadded base64url), its algorithm (credkey.Algorithms only: never
// "none", never HS*), its critical headers (none are understood, so any
// "crit" or "b64" is refused), iss = sub non-empty, bodyClientID (the
// client_id form parameter, "" when absent) equal to them, aud containing
// one of audiences, exp present, not past (Leeway) and at most
// MaxLifetime + Leeway ahead, nbf and iat not in the future (Leeway), and
// jti present. JSON member names match exactly (go-jose's decoder), so an
// "ISS" is not an "iss".
func (v *Verifier) Parse(assertion, bodyClientID string, audiences []string, now time.Time) (*Assertion, error) {
	if len(assertion) > MaxSize {
		return nil, ReasonOversized
	}
	head, rest, ok1 := strings.Cut(assertion, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, ReasonMalformed
	}
	raw, err := b64.DecodeString(head)
	if err != nil {
		return nil, ReasonMalformed
	}
	var h header
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, ReasonMalformed
	}
	alg := jose.SignatureAlgorithm(h.Alg)
	if !slices.Contains(credkey.Algorithms, alg) {
		return nil, ReasonAlgorithm
	}
	if h.Crit != nil || h.B64 != nil {
		return nil, ReasonMalformed
	}
	a := &Assertion{alg: alg, kid: h.Kid, input: []byte(assertion[:len(head)+1+len(payload)])}
	if a.signature, err = b64.DecodeString(sig); err != nil {
		return nil, ReasonMalformed
	}
	if raw, err = b64.DecodeString(payload); err != nil {
		return nil, ReasonMalformed
	}
	if err := json.Unmarshal(raw, &a.claims); err != nil {
		return nil, ReasonMalformed
	}
	c := &a.claims
	if c.Issuer == "" || len(c.Issuer) > MaxClientIDBytes || c.Subject != c.Issuer {
		return nil, ReasonIssuer
	}
	if bodyClientID != "" && bodyClientID != c.Issuer {
		return nil, ReasonClientMismatch
	}
	if !audienceMatches(c.Audience, audiences) {
		return nil, ReasonAudience
	}
	if c.Expiry == nil {
		return nil, ReasonNoExpiry
	}
	exp := c.Expiry.Time()
	if now.Add(-Leeway).After(exp) {
		return nil, ReasonExpired
	}
	if exp.After(now.Add(MaxLifetime + Leeway)) {
		return nil, ReasonLifetime
	}
	if c.NotBefore != nil && c.NotBefore.Time().After(now.Add(Leeway)) {
		return nil, ReasonNotYetValid
	}
	if c.IssuedAt != nil && c.IssuedAt.Time().After(now.Add(Leeway)) {
		return nil, ReasonNotYetValid
	}
	if c.ID == "" {
		return nil, ReasonNoJTI
	}
	return a, nil
}

func audienceMatches(aud jwt.Audience, audiences []string) bool {
	for _, want := range audiences {
		if want != "" && aud.Contains(want) {
			return true
		}
	}
	return false
}

// Verify checks the signature of a parsed assertion against the client's
// active keys and then records its jti. keys are the client's active
// public-key credentials (nil for an unknown client). A key is tried when
// it allows the assertion's algorithm and, when the assertion names a kid,
// when its kid or RFC 7638 thumbprint is that kid (or it has no kid, so
// the client's kid may still be its name). A refusal costs
// max(MaxKeys, matching keys) signature checks whatever the cause; a
// success stops at the key that verifies.
func (v *Verifier) Verify(a *Assertion, keys []Key, now time.Time) (Verified, error) {
	checks, found := 0, -1
	for i := range keys {
		k := keys[i].Key
		if k == nil || !k.Allows(a.alg) || !kidMatches(a.kid, k) {
			continue
		}
		checks++
		if v.check(a, k.Key()) {
			found = i
			break
		}
	}
	if found < 0 {
		dummy := v.dummies[a.alg]
		for ; checks < v.maxKeys; checks++ {
			v.check(a, dummy)
		}
		return Verified{}, ReasonSignature
	}
	if r := v.replay.add(a.claims.Issuer, a.claims.ID, a.claims.Expiry.Time().Add(Leeway), now); r != reasonNone {
		return Verified{}, r
	}
	return Verified{ClientID: a.claims.Issuer, CredentialID: keys[found].CredentialID, Checks: checks}, nil
}

// Pad makes the throwaway signature checks that bring a verified
// assertion's cost (made checks, Verified.Checks) to what a refusal
// costs, for a caller that refuses it after all (the client's network
// does not allow the caller) and must not tell that it verified.
func (v *Verifier) Pad(a *Assertion, made int) {
	dummy := v.dummies[a.alg]
	for ; made < v.maxKeys; made++ {
		v.check(a, dummy)
	}
}

// kidMatches reports whether a key may be the one the assertion's kid
// names: any key when there is no kid; a key whose kid or thumbprint is
// the kid; a key registered without a kid.
func kidMatches(kid string, k *credkey.PublicKey) bool {
	return kid == "" || k.KeyID() == "" || k.KeyID() == kid || k.Thumbprint() == kid
}

func (v *Verifier) check(a *Assertion, key crypto.PublicKey) bool {
	v.checks.Add(1)
	return verifySignature(a.alg, key, a.input, a.signature)
}
