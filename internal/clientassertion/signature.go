package clientassertion

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/credkey"
)

// verifySignature checks a JWS signature (RFC 7515 §5.2, algorithms of RFC
// 7518 §3 and RFC 8037 §3.1) over the signing input exactly as received
// (the first two parts of the compact form), with the standard library.
// EdDSA and Ed25519 (RFC 9864) are one algorithm for an Ed25519 key.
// A key that does not fit the algorithm fails the check.
//
// go-jose's JSONWebSignature.Verify does the same at more than twice the
// allocations (it decodes the protected header again to rebuild the
// signing input, and converts r and s through math/big); the assertion's
// form and header are parsed here too (see parseCompact), so go-jose
// serves for keys (credkey) and claims (jwt.Claims).
func verifySignature(alg jose.SignatureAlgorithm, key crypto.PublicKey, input, sig []byte) bool {
	switch alg {
	case jose.ES256:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() || len(sig) != 64 {
			return false
		}
		digest := sha256.Sum256(input)
		var der [72]byte
		return ecdsa.VerifyASN1(k, digest[:], derSignature(der[:0], sig[:32], sig[32:]))
	case jose.ES384:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P384() || len(sig) != 96 {
			return false
		}
		digest := sha512.Sum384(input)
		var der [104]byte
		return ecdsa.VerifyASN1(k, digest[:], derSignature(der[:0], sig[:48], sig[48:]))
	case jose.RS256:
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return false
		}
		digest := sha256.Sum256(input)
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case jose.PS256:
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return false
		}
		digest := sha256.Sum256(input)
		// RFC 7518 §3.5: the salt is as long as the hash.
		return rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig, &pssOptions) == nil
	case jose.EdDSA, credkey.Ed25519:
		k, ok := key.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return false
		}
		return ed25519.Verify(k, input, sig)
	}
	return false
}

var pssOptions = rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}

// derSignature appends the ASN.1 DER form of an ECDSA signature,
// SEQUENCE { INTEGER r, INTEGER s }, given the fixed-size big-endian r and
// s of a JWS signature (RFC 7518 §3.4). Both fit short-form lengths for
// P-256 and P-384.
func derSignature(dst, r, s []byte) []byte {
	r, s = trimZeros(r), trimZeros(s)
	n := derIntLen(r) + derIntLen(s)
	dst = append(dst, 0x30, byte(n))
	dst = appendDERInt(dst, r)
	return appendDERInt(dst, s)
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// derIntLen is the encoded length of a non-negative INTEGER whose
// magnitude, without leading zeros, is b.
func derIntLen(b []byte) int {
	if len(b) == 0 || b[0]&0x80 != 0 {
		return 2 + len(b) + 1
	}
	return 2 + len(b)
}

func appendDERInt(dst, b []byte) []byte {
	if len(b) == 0 || b[0]&0x80 != 0 {
		dst = append(dst, 0x02, byte(len(b)+1), 0)
		return append(dst, b...)
	}
	dst = append(dst, 0x02, byte(len(b)))
	return append(dst, b...)
}
