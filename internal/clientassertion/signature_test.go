package clientassertion

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// derSignature agrees with encoding/asn1 on the edge cases of INTEGER
// encoding: a high bit that needs a 0x00 prefix, leading zeros to drop, zero.
func TestDERSignature(t *testing.T) {
	for _, rs := range [][2][]byte{
		{bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0x7f}, 32)},
		{append([]byte{0, 0, 0x80}, bytes.Repeat([]byte{1}, 29)...), append([]byte{0}, bytes.Repeat([]byte{0x01}, 31)...)},
		{make([]byte, 32), append(make([]byte, 31), 1)},
		{bytes.Repeat([]byte{0x80}, 48), bytes.Repeat([]byte{0x01}, 48)},
	} {
		want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(rs[0]), new(big.Int).SetBytes(rs[1])})
		if err != nil {
			t.Fatal(err)
		}
		if got := derSignature(nil, rs[0], rs[1]); !bytes.Equal(got, want) {
			t.Fatalf("derSignature(%x, %x) = %x, encoding/asn1 says %x", rs[0], rs[1], got, want)
		}
	}
}

// Signatures of the right algorithm but the wrong form are refused.
func TestSignatureForms(t *testing.T) {
	fixture(t)
	keys := []Key{
		registered(t, "sec_ec", &ec256.PublicKey, "", ""),
		registered(t, "sec_rsa", &rsaKey.PublicKey, "", ""),
	}
	good := testkeys.Sign(t, jose.ES256, ec256, "", goodClaims())
	i := strings.LastIndexByte(good, '.')
	sig, err := b64.DecodeString(good[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	// A PS256 signature with a salt shorter than the hash (RFC 7518 §3.5: equal).
	_, rest, _ := strings.Cut(good, ".")
	input := enc(`{"alg":"PS256"}`) + "." + rest[:strings.IndexByte(rest, '.')]
	digest := sha256.Sum256([]byte(input))
	shortSalt, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: 20})
	if err != nil {
		t.Fatal(err)
	}
	hashSalt, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, assertion string
		want            Reason
	}{
		{"ES256 signature one byte short", good[:i+1] + enc(string(sig[:63])), ReasonSignature},
		{"ES256 signature in DER", good[:i+1] + enc(string(derSignature(nil, sig[:32], sig[32:]))), ReasonSignature},
		{"signature padded base64", good + "=", ReasonMalformed},
		{"signature not base64", good[:i+1] + "*", ReasonMalformed},
		{"PS256 salt of 20 bytes", input + "." + enc(string(shortSalt)), ReasonSignature},
		{"PS256 salt of 32 bytes", input + "." + enc(string(hashSalt)), reasonNone},
	}
	v := newVerifier(t, Config{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := run(v, c.assertion, "", keys)
			if r := reasonOf(t, err); r != c.want {
				t.Fatalf("reason %v, want %v", r, c.want)
			}
		})
	}
}
