// Package credkey holds what both halves of rotagate need to know of a
// public-key credential (SPEC §16): the control plane parses what an
// operator registers and refuses anything that is not a strong public key;
// the edge parses what the snapshot carries with the same rules.
//
// Two kinds of credential live here:
//   - a public key for private_key_jwt, given as a JWK (RFC 7517), named by
//     its RFC 7638 thumbprint and carried in the snapshot as a canonical JWK
//     of public members only;
//   - a certificate for tls_client_auth, given as PEM, named by its RFC 8705
//     x5t#S256 thumbprint (the only thing an edge needs of it).
//
// Every error returned by ParseJWK and ParseCertificatePEM describes a
// problem with the input, in words meant for the operator who sent it (the
// management API answers 400 with it). Errors never quote key material.
package credkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Ed25519 is the fully-specified name of EdDSA with an Ed25519 key
// (RFC 9864), which deprecates the polymorphic "EdDSA". openid-client 6
// signs with it; for an Ed25519 key the two names are one algorithm.
const Ed25519 jose.SignatureAlgorithm = "Ed25519"

// Algorithms are the signature algorithms rotagate accepts in a client
// assertion (SPEC §16, plus Ed25519 above): never "none", never HMAC
// (HS*), whose key would be a shared secret again. ES512 is not among
// them, so a P-521 key has no algorithm and is refused at registration.
var Algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256, jose.PS256, jose.EdDSA, Ed25519}

// Limits on what a JWK may be.
const (
	// MinRSABits is the smallest RSA modulus accepted (NIST SP 800-131A).
	MinRSABits = 2048
	// MaxRSABits is the largest: go-jose parses no larger modulus (its
	// MaxRSAModulusBits, a process-wide setting rotagate leaves alone),
	// and a larger key only makes every verification slower.
	MaxRSABits = 4096
	// MaxJWKBytes bounds the JSON of a JWK (a 4096-bit RSA key with a
	// certificate chain in x5c fits with room to spare).
	MaxJWKBytes = 16 << 10
	// MaxKeyIDBytes bounds the "kid" member, which travels in every snapshot.
	MaxKeyIDBytes = 256
)

// PublicKey is a parsed, validated public JWK.
type PublicKey struct {
	key        crypto.PublicKey // *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey
	keyID      string
	alg        jose.SignatureAlgorithm // "" when the JWK named none
	algs       []jose.SignatureAlgorithm
	thumbprint string
	canonical  []byte
}

// Key is the public key itself: *ecdsa.PublicKey, *rsa.PublicKey or
// ed25519.PublicKey.
func (k *PublicKey) Key() crypto.PublicKey { return k.key }

// KeyID is the JWK's "kid", or "" when it had none.
func (k *PublicKey) KeyID() string { return k.keyID }

// Algorithm is the JWK's "alg", or "" when it had none.
func (k *PublicKey) Algorithm() jose.SignatureAlgorithm { return k.alg }

// Algorithms are the signature algorithms this key may verify: its own
// "alg" when it has one, otherwise every accepted algorithm of its type
// (RS256 and PS256 for RSA; the one ES algorithm of its curve; EdDSA
// and Ed25519, one algorithm under two names, for Ed25519).
// The caller must not modify the slice.
func (k *PublicKey) Algorithms() []jose.SignatureAlgorithm { return k.algs }

// Allows reports whether the key may verify a signature made with alg.
func (k *PublicKey) Allows(alg jose.SignatureAlgorithm) bool {
	return slices.Contains(k.algs, alg)
}

// Thumbprint is the key's RFC 7638 thumbprint: base64url (no padding) of
// the SHA-256 of its required members. It names the key whatever its kid.
func (k *PublicKey) Thumbprint() string { return k.thumbprint }

// JSON is the canonical public JWK to store and carry in the snapshot:
// the key's public members, "kid" and "alg" when given, nothing else
// (no private member, no "use", no certificate chain or URL). Parsing it
// again gives the same key and thumbprint. The caller must not modify it.
func (k *PublicKey) JSON() []byte { return k.canonical }

// privateMembers are the JWK members that carry private or secret key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2 for OKP "d").
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ParseJWK parses a JWK given at registration (or read from a snapshot) and
// refuses anything but a strong public signing key: private keys (any
// private member), symmetric keys, RSA keys under MinRSABits or over
// MaxRSABits, EC curves other than P-256 and P-384, OKP curves other than
// Ed25519, an "alg" outside Algorithms or contradicting the key type, a
// "use" other than "sig" and "key_ops" without "verify".
func ParseJWK(data []byte) (*PublicKey, error) {
	if len(data) > MaxJWKBytes {
		return nil, fmt.Errorf("the public key is larger than %d KiB; a JWK is usually under 2 KiB", MaxJWKBytes>>10)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil || members == nil {
		return nil, errors.New("the public key is not a JSON object (a JWK, RFC 7517)")
	}
	// Refuse private material before anything else looks at the key, and
	// match member names without regard to case: a JSON decoder that
	// folds case (encoding/json does, go-jose does not) must not find a
	// "D" that this check missed, nor read another "alg" than go-jose.
	folded := make(map[string]bool, len(members))
	for name := range members {
		lower := strings.ToLower(name)
		if folded[lower] {
			return nil, fmt.Errorf("the JWK has the member %q twice (names differing only in case)", lower)
		}
		folded[lower] = true
		if slices.Contains(privateMembers, lower) {
			if lower == "k" {
				return nil, errors.New(`the key is a symmetric key (it has the member "k"); private_key_jwt needs a public key`)
			}
			return nil, fmt.Errorf("the key is a private key (it has the member %q); register only the public key and keep the private key with the client", name)
		}
	}
	var head struct {
		Kty    string   `json:"kty"`
		Crv    string   `json:"crv"`
		Alg    string   `json:"alg"`
		Kid    string   `json:"kid"`
		Use    string   `json:"use"`
		KeyOps []string `json:"key_ops"`
		N      string   `json:"n"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, errors.New(`the JWK has a member of the wrong type ("kty", "crv", "alg", "kid" and "use" are strings, "key_ops" a list of strings)`)
	}
	if err := checkKeyType(head.Kty, head.Crv); err != nil {
		return nil, err
	}
	if head.Use != "" && head.Use != "sig" {
		return nil, fmt.Errorf(`the key's "use" is %q; register a signing key ("use": "sig", or no "use")`, head.Use)
	}
	if head.KeyOps != nil && !slices.Contains(head.KeyOps, "verify") {
		return nil, errors.New(`the key's "key_ops" do not include "verify"; register a signing key`)
	}
	if len(head.Kid) > MaxKeyIDBytes {
		return nil, fmt.Errorf(`the key's "kid" is longer than %d bytes`, MaxKeyIDBytes)
	}
	if head.Kty == "RSA" {
		// go-jose refuses a modulus over its limit with words about
		// itself; say how many bits the key has instead.
		if n, err := base64.RawURLEncoding.DecodeString(head.N); err == nil {
			if bits := new(big.Int).SetBytes(n).BitLen(); bits > MaxRSABits {
				return nil, fmt.Errorf("the RSA key has %d bits; at most %d are accepted", bits, MaxRSABits)
			}
		}
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("the %s key is malformed: %s", head.Kty, strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	if !jwk.IsPublic() {
		// Unreachable after the member check above; kept as the last word
		// on private material should go-jose learn a new private form.
		return nil, errors.New("the key is not a public key")
	}
	return newPublicKey(jwk.Key, jwk.KeyID, jwk.Algorithm)
}

// checkKeyType refuses key types and curves before go-jose parses them, so
// that the operator reads why rather than "unsupported key type".
func checkKeyType(kty, crv string) error {
	switch kty {
	case "EC":
		switch crv {
		case "P-256", "P-384":
			return nil
		case "P-521":
			return errors.New("P-521 keys sign with ES512, which rotagate does not accept; use a P-256 (ES256) or P-384 (ES384) key")
		case "":
			return errors.New(`the EC key has no "crv"; use P-256 or P-384`)
		}
		return fmt.Errorf("the EC curve %q is not accepted; use P-256 or P-384", crv)
	case "RSA":
		return nil
	case "OKP":
		switch crv {
		case "Ed25519":
			return nil
		case "X25519", "X448":
			return fmt.Errorf("%s is a key-agreement curve, it cannot sign; use an Ed25519 key", crv)
		case "":
			return errors.New(`the OKP key has no "crv"; use Ed25519`)
		}
		return fmt.Errorf("the OKP curve %q is not accepted; use Ed25519", crv)
	case "oct":
		return errors.New(`the key is a symmetric key (kty "oct"); private_key_jwt needs a public key`)
	case "":
		return errors.New(`the JWK has no "kty" (key type); use EC, RSA or OKP`)
	}
	return fmt.Errorf("the key type %q is not accepted; use EC (P-256, P-384), RSA (2048 bits or more) or OKP (Ed25519)", kty)
}

// newPublicKey checks the strength of a public key and its "alg", then
// computes its thumbprint and canonical JSON.
func newPublicKey(key crypto.PublicKey, kid, alg string) (*PublicKey, error) {
	algs, err := keyAlgorithms(key)
	if err != nil {
		return nil, err
	}
	if alg != "" {
		a := jose.SignatureAlgorithm(alg)
		if !slices.Contains(Algorithms, a) {
			return nil, fmt.Errorf("the algorithm %q is not accepted; use one of %s", alg, algorithmList())
		}
		if !slices.Contains(algs, a) {
			return nil, fmt.Errorf("the algorithm %s does not match %s; use %s", alg, describe(key), strings.Join(algNames(algs), " or "))
		}
		if a != jose.EdDSA && a != Ed25519 {
			// EdDSA and Ed25519 name the same algorithm: pinning one
			// pins both.
			algs = []jose.SignatureAlgorithm{a}
		}
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("the key is malformed: %s", strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	canonical, err := jwk.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("the key is malformed: %s", strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	return &PublicKey{
		key:        key,
		keyID:      kid,
		alg:        jose.SignatureAlgorithm(alg),
		algs:       algs,
		thumbprint: base64.RawURLEncoding.EncodeToString(sum),
		canonical:  canonical,
	}, nil
}

// keyAlgorithms checks a public key's strength and answers the accepted
// algorithms it can verify. It serves JWKs and certificates alike; for
// certificates P-521 is allowed (the TLS stack, not an assertion, uses it),
// so the curve check of JWKs happens earlier, in checkKeyType.
func keyAlgorithms(key crypto.PublicKey) ([]jose.SignatureAlgorithm, error) {
	if err := checkStrength(key); err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return []jose.SignatureAlgorithm{jose.RS256, jose.PS256}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []jose.SignatureAlgorithm{jose.ES256}, nil
		case elliptic.P384():
			return []jose.SignatureAlgorithm{jose.ES384}, nil
		}
		return nil, errors.New("P-521 keys sign with ES512, which rotagate does not accept; use a P-256 (ES256) or P-384 (ES384) key")
	case ed25519.PublicKey:
		return []jose.SignatureAlgorithm{jose.EdDSA, Ed25519}, nil
	}
	return nil, errors.New("the key type is not accepted; use EC (P-256, P-384), RSA (2048 bits or more) or OKP (Ed25519)")
}

// checkStrength refuses weak or odd public keys: RSA outside
// [MinRSABits, MaxRSABits] or with an exponent Go's crypto/rsa refuses,
// EC curves other than P-256, P-384 and P-521, Ed25519 keys of the wrong
// size. Any other key type is refused.
func checkStrength(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return fmt.Errorf("the RSA key has %d bits; at least %d are required", bits, MinRSABits)
		}
		if bits > MaxRSABits {
			return fmt.Errorf("the RSA key has %d bits; at most %d are accepted", bits, MaxRSABits)
		}
		if k.E < 3 || k.E > 1<<31-1 || k.E%2 == 0 {
			return errors.New("the RSA key's public exponent is not an odd number between 3 and 2^31-1 (65537 is usual)")
		}
		if k.N.Bit(0) == 0 {
			return errors.New("the RSA key's modulus is even, so it is not an RSA modulus")
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("the EC curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("the Ed25519 key does not have 32 bytes")
		}
		return nil
	}
	return errors.New("the key type is not accepted; use EC (P-256, P-384), RSA (2048 bits or more) or Ed25519")
}

// describe names a key's type for an error message.
func describe(key crypto.PublicKey) string {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "an RSA key"
	case *ecdsa.PublicKey:
		return "a " + k.Curve.Params().Name + " key"
	case ed25519.PublicKey:
		return "an Ed25519 key"
	}
	return "this key"
}

func algNames(algs []jose.SignatureAlgorithm) []string {
	names := make([]string, len(algs))
	for i, a := range algs {
		names[i] = string(a)
	}
	return names
}

func algorithmList() string { return strings.Join(algNames(Algorithms), ", ") }
