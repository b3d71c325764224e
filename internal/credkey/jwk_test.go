package credkey

import (
	"crypto"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// rfc7517RSA is the RSA public key of RFC 7517 appendix A.1, whose RFC 7638
// thumbprint is given in RFC 7638 §3.1.
const rfc7517RSA = `{"kty":"RSA",
 "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
 "e":"AQAB",
 "alg":"RS256",
 "kid":"2011-04-29"}`

const rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

// jwkMembers is the JWK of key (private or public) as a map to edit.
func jwkMembers(t testing.TB, key any) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(testkeys.JWK(t, jose.JSONWebKey{Key: key}), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rsaModulus is an odd number of the given bit length: not a real RSA
// modulus, but parsing looks only at its size and parity.
func rsaModulus(bits int) string {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(0x10001))
	return base64.RawURLEncoding.EncodeToString(n.Bytes())
}

func TestParseJWKAccepts(t *testing.T) {
	ec := jwkMembers(t, &testkeys.ECDSA(t, elliptic.P256(), "").PublicKey)
	edKey := testkeys.Ed25519(t, "")
	cases := []struct {
		name string
		jwk  []byte
		algs []jose.SignatureAlgorithm
	}{
		{"P-256 without alg", marshal(t, ec), []jose.SignatureAlgorithm{jose.ES256}},
		{"P-256 ES256 use sig kid", marshal(t, testkeys.With(ec, "alg", "ES256", "use", "sig", "kid", "k1")), []jose.SignatureAlgorithm{jose.ES256}},
		{"P-256 key_ops verify", marshal(t, testkeys.With(ec, "key_ops", []string{"verify"})), []jose.SignatureAlgorithm{jose.ES256}},
		{"P-384", marshal(t, jwkMembers(t, &testkeys.ECDSA(t, elliptic.P384(), "").PublicKey)), []jose.SignatureAlgorithm{jose.ES384}},
		{"Ed25519", marshal(t, jwkMembers(t, edKey.Public())), []jose.SignatureAlgorithm{jose.EdDSA, Ed25519}},
		{"Ed25519 EdDSA", marshal(t, testkeys.With(jwkMembers(t, edKey.Public()), "alg", "EdDSA")), []jose.SignatureAlgorithm{jose.EdDSA, Ed25519}},
		{"Ed25519 alg Ed25519 (RFC 9864)", marshal(t, testkeys.With(jwkMembers(t, edKey.Public()), "alg", "Ed25519")), []jose.SignatureAlgorithm{jose.EdDSA, Ed25519}},
		{"RSA pinned RS256 (RFC 7517 A.1)", []byte(rfc7517RSA), []jose.SignatureAlgorithm{jose.RS256}},
		{"RSA without alg", marshal(t, map[string]any{"kty": "RSA", "n": rsaModulus(2048), "e": "AQAB"}), []jose.SignatureAlgorithm{jose.RS256, jose.PS256}},
		{"RSA PS256 4096 bits", marshal(t, map[string]any{"kty": "RSA", "n": rsaModulus(4096), "e": "AQAB", "alg": "PS256"}), []jose.SignatureAlgorithm{jose.PS256}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseJWK(c.jwk)
			if err != nil {
				t.Fatalf("ParseJWK: %v", err)
			}
			if !slices.Equal(k.Algorithms(), c.algs) {
				t.Fatalf("algorithms %v, want %v", k.Algorithms(), c.algs)
			}
			for _, a := range Algorithms {
				if k.Allows(a) != slices.Contains(c.algs, a) {
					t.Fatalf("Allows(%s) = %v", a, k.Allows(a))
				}
			}
			assertCanonical(t, k)
		})
	}
}

// assertCanonical checks the invariants of a parsed key's JSON: public
// members only, and parsing it again gives the same key.
func assertCanonical(t testing.TB, k *PublicKey) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(k.JSON(), &m); err != nil {
		t.Fatalf("canonical JSON %s: %v", k.JSON(), err)
	}
	for name := range m {
		switch name {
		case "kty", "crv", "x", "y", "n", "e", "kid", "alg":
		default:
			t.Fatalf("canonical JSON has member %q: %s", name, k.JSON())
		}
	}
	again, err := ParseJWK(k.JSON())
	if err != nil {
		t.Fatalf("canonical JSON does not parse again: %v", err)
	}
	if again.Thumbprint() != k.Thumbprint() || again.KeyID() != k.KeyID() || again.Algorithm() != k.Algorithm() ||
		!slices.Equal(again.Algorithms(), k.Algorithms()) || string(again.JSON()) != string(k.JSON()) {
		t.Fatalf("canonical JSON is not a fixed point: %s vs %s", k.JSON(), again.JSON())
	}
	if len(k.Thumbprint()) != 43 {
		t.Fatalf("thumbprint %q is not base64url of 32 bytes", k.Thumbprint())
	}
}

func TestThumbprintRFC7638(t *testing.T) {
	k, err := ParseJWK([]byte(rfc7517RSA))
	if err != nil {
		t.Fatal(err)
	}
	if k.Thumbprint() != rfc7638Thumbprint {
		t.Fatalf("thumbprint %s, RFC 7638 §3.1 says %s", k.Thumbprint(), rfc7638Thumbprint)
	}
	if k.KeyID() != "2011-04-29" || k.Algorithm() != jose.RS256 {
		t.Fatalf("kid %q alg %q", k.KeyID(), k.Algorithm())
	}
	// The thumbprint names the key, not its kid or alg.
	m := map[string]any{}
	if err := json.Unmarshal([]byte(rfc7517RSA), &m); err != nil {
		t.Fatal(err)
	}
	k2, err := ParseJWK(marshal(t, testkeys.With(m, "kid", "other", "alg", "PS256")))
	if err != nil || k2.Thumbprint() != rfc7638Thumbprint {
		t.Fatalf("thumbprint changed with kid/alg: %v %v", k2, err)
	}
}

func TestParseJWKRefuses(t *testing.T) {
	ecKey, edKey := testkeys.ECDSA(t, elliptic.P256(), ""), testkeys.Ed25519(t, "")
	ec := jwkMembers(t, &ecKey.PublicKey)
	ed := jwkMembers(t, edKey.Public())
	rsaPub := map[string]any{"kty": "RSA", "n": rsaModulus(2048), "e": "AQAB"}
	offCurve := testkeys.With(ec, "y", ec["x"])
	cases := []struct {
		name string
		jwk  []byte
		want string // a part of the error an operator reads
	}{
		{"not JSON", []byte("-----BEGIN PUBLIC KEY-----"), "not a JSON object"},
		{"JSON array", []byte(`[{"kty":"EC"}]`), "not a JSON object"},
		{"JSON null", []byte(`null`), "not a JSON object"},
		{"too large", marshal(t, testkeys.With(ec, "kid", strings.Repeat("a", MaxJWKBytes))), "larger than 16 KiB"},
		{"EC private", marshal(t, jwkMembers(t, ecKey)), `private key (it has the member "d")`},
		{"RSA private member p only", marshal(t, testkeys.With(rsaPub, "p", "AQAB")), `private key (it has the member "p")`},
		{"RSA private member oth", marshal(t, testkeys.With(rsaPub, "oth", []any{})), `private key (it has the member "oth")`},
		{"RSA private qi", marshal(t, testkeys.With(rsaPub, "qi", "AQAB")), `private key (it has the member "qi")`},
		{"Ed25519 private", marshal(t, jwkMembers(t, edKey)), `private key (it has the member "d")`},
		{"private member in upper case", marshal(t, testkeys.With(ec, "D", "AAAA")), `private key (it has the member "D")`},
		{"symmetric oct", []byte(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`), "symmetric key"},
		{"symmetric kty without k", []byte(`{"kty":"oct"}`), `symmetric key (kty "oct")`},
		{"no kty", marshal(t, testkeys.With(ec, "kty", nil)), `no "kty"`},
		{"unknown kty", marshal(t, testkeys.With(ec, "kty", "DSA")), `key type "DSA" is not accepted`},
		{"kty not a string", marshal(t, testkeys.With(ec, "kty", 1)), "wrong type"},
		{"P-521", marshal(t, jwkMembers(t, &testkeys.ECDSA(t, elliptic.P521(), "").PublicKey)), "ES512, which rotagate does not accept"},
		{"secp256k1", marshal(t, testkeys.With(ec, "crv", "secp256k1")), `curve "secp256k1" is not accepted`},
		{"EC without crv", marshal(t, testkeys.With(ec, "crv", nil)), `EC key has no "crv"`},
		{"X25519", []byte(`{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}`), "key-agreement curve"},
		{"Ed448", marshal(t, testkeys.With(ed, "crv", "Ed448")), `OKP curve "Ed448" is not accepted`},
		{"OKP without crv", marshal(t, testkeys.With(ed, "crv", nil)), `OKP key has no "crv"`},
		{"Ed25519 short x", marshal(t, testkeys.With(ed, "x", "AAAA")), "OKP key is malformed"},
		{"EC point off the curve", marshal(t, offCurve), "EC key is malformed"},
		{"EC x too short", marshal(t, testkeys.With(ec, "x", "AAAA")), "EC key is malformed"},
		{"RSA 1024 bits", marshal(t, testkeys.With(rsaPub, "n", rsaModulus(1024))), "has 1024 bits; at least 2048"},
		{"RSA 2047 bits", marshal(t, testkeys.With(rsaPub, "n", rsaModulus(2047))), "has 2047 bits; at least 2048"},
		{"RSA 4097 bits", marshal(t, testkeys.With(rsaPub, "n", rsaModulus(4097))), "has 4097 bits; at most 4096"},
		{"RSA even exponent", marshal(t, testkeys.With(rsaPub, "e", "AQAA")), "public exponent"},
		{"RSA exponent 1", marshal(t, testkeys.With(rsaPub, "e", "AQ")), "public exponent"},
		{"RSA even modulus", marshal(t, testkeys.With(rsaPub, "n", base64.RawURLEncoding.EncodeToString(new(big.Int).Lsh(big.NewInt(1), 2047).Bytes()))), "modulus is even"},
		{"RSA without n", marshal(t, testkeys.With(rsaPub, "n", nil)), "RSA key is malformed"},
		{"alg none", marshal(t, testkeys.With(ec, "alg", "none")), `algorithm "none" is not accepted; use one of ES256, ES384, RS256, PS256, EdDSA, Ed25519`},
		{"alg HS256", marshal(t, testkeys.With(ec, "alg", "HS256")), `algorithm "HS256" is not accepted`},
		{"alg ES512", marshal(t, testkeys.With(ec, "alg", "ES512")), `algorithm "ES512" is not accepted`},
		{"alg RS384", marshal(t, testkeys.With(rsaPub, "alg", "RS384")), `algorithm "RS384" is not accepted`},
		{"alg ES384 on P-256", marshal(t, testkeys.With(ec, "alg", "ES384")), "ES384 does not match a P-256 key; use ES256"},
		{"alg RS256 on EC", marshal(t, testkeys.With(ec, "alg", "RS256")), "RS256 does not match a P-256 key"},
		{"alg ES256 on RSA", marshal(t, testkeys.With(rsaPub, "alg", "ES256")), "ES256 does not match an RSA key; use RS256 or PS256"},
		{"alg EdDSA on RSA", marshal(t, testkeys.With(rsaPub, "alg", "EdDSA")), "EdDSA does not match an RSA key"},
		{"alg PS256 on Ed25519", marshal(t, testkeys.With(ed, "alg", "PS256")), "PS256 does not match an Ed25519 key; use EdDSA or Ed25519"},
		{"alg Ed25519 on P-256", marshal(t, testkeys.With(ec, "alg", "Ed25519")), "Ed25519 does not match a P-256 key; use ES256"},
		{"alg Ed448", marshal(t, testkeys.With(ed, "alg", "Ed448")), `algorithm "Ed448" is not accepted; use one of ES256, ES384, RS256, PS256, EdDSA, Ed25519`},
		{"use enc", marshal(t, testkeys.With(ec, "use", "enc")), `"use" is "enc"`},
		{"key_ops without verify", marshal(t, testkeys.With(ec, "key_ops", []string{"encrypt"})), `"key_ops" do not include "verify"`},
		{"kid too long", marshal(t, testkeys.With(ec, "kid", strings.Repeat("k", MaxKeyIDBytes+1))), `"kid" is longer than 256 bytes`},
		{"alg twice by case", []byte(`{"kty":"RSA","n":"` + rsaModulus(2048) + `","e":"AQAB","alg":"RS256","ALG":"HS256"}`), `member "alg" twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseJWK(c.jwk)
			if err == nil {
				t.Fatalf("accepted: %s", k.JSON())
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "go-jose") {
				t.Fatalf("error %q names the library instead of the problem", err)
			}
		})
	}
}

// The error about a private key never quotes the key material.
func TestParseJWKErrorHoldsNoKeyMaterial(t *testing.T) {
	m := jwkMembers(t, testkeys.ECDSA(t, elliptic.P256(), ""))
	_, err := ParseJWK(marshal(t, m))
	if err == nil {
		t.Fatal("private key accepted")
	}
	for _, member := range []string{"d", "x", "y"} {
		if strings.Contains(err.Error(), m[member].(string)) {
			t.Fatalf("error quotes the key's %q: %v", member, err)
		}
	}
}

// The parsed key is the key that was given.
func TestParseJWKKeyMatches(t *testing.T) {
	for _, pub := range []crypto.PublicKey{
		&testkeys.ECDSA(t, elliptic.P256(), "").PublicKey,
		&testkeys.ECDSA(t, elliptic.P384(), "").PublicKey,
		testkeys.Ed25519(t, "").Public(),
	} {
		k, err := ParseJWK(marshal(t, jwkMembers(t, pub)))
		if err != nil {
			t.Fatal(err)
		}
		if eq, ok := k.Key().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
			t.Fatalf("parsed key differs from %T", pub)
		}
	}
}
