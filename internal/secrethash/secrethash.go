// Package secrethash parses and checks the stored forms of client secrets
// (SPEC §1): `sha256:<base64url>` for generated secrets, bcrypt and argon2id
// PHC strings for imported legacy secrets. It is shared by the control plane,
// which writes and validates hashes, and the edge, which verifies against
// them. Nothing here ever formats a secret into an error.
package secrethash

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Scheme names a hash scheme.
type Scheme uint8

// The supported schemes.
const (
	SHA256 Scheme = iota + 1
	Bcrypt
	Argon2id
)

func (s Scheme) String() string {
	switch s {
	case SHA256:
		return "sha256"
	case Bcrypt:
		return "bcrypt"
	case Argon2id:
		return "argon2id"
	}
	return "unknown"
}

// Slow reports whether checking a secret against this scheme costs real CPU
// (bcrypt, argon2id), so that callers cache verified pairs and bound the
// concurrency of misses.
func (s Scheme) Slow() bool { return s == Bcrypt || s == Argon2id }

const sha256Prefix = "sha256:"

// Limits on argon2id parameters accepted from an import, so that a hostile
// or mistaken hash cannot make every verification take gigabytes or minutes.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 16
	maxArgonThreads   = 64
	minArgonSalt      = 8
	minArgonKey       = 16
	maxArgonKey       = 128
)

// Parameters used when the control plane hashes an imported plaintext legacy
// secret (OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane).
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Hash is a parsed stored hash.
type Hash struct {
	Scheme Scheme
	// Digest is the SHA-256 of the secret (SHA256 scheme only).
	Digest [sha256.Size]byte
	// Encoded is the stored string as given.
	Encoded string

	// argon2id parameters, salt and key.
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// ErrUnknownScheme is returned by Parse for a string in no supported format.
var ErrUnknownScheme = errors.New("unsupported hash format (want sha256:…, bcrypt $2a$/$2b$/$2y$ or $argon2id$v=19$…)")

// Parse checks a stored hash string and returns its parsed form.
func Parse(encoded string) (Hash, error) {
	h := Hash{Encoded: encoded}
	switch {
	case strings.HasPrefix(encoded, sha256Prefix):
		raw, err := base64.RawURLEncoding.Strict().DecodeString(encoded[len(sha256Prefix):])
		if err != nil || len(raw) != sha256.Size {
			return Hash{}, errors.New("malformed sha256 hash: want sha256:<43 chars of unpadded base64url>")
		}
		h.Scheme = SHA256
		copy(h.Digest[:], raw)
		return h, nil
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		if _, err := bcrypt.Cost([]byte(encoded)); err != nil || len(encoded) != 60 {
			return Hash{}, errors.New("malformed bcrypt hash")
		}
		h.Scheme = Bcrypt
		return h, nil
	case strings.HasPrefix(encoded, "$argon2id$"):
		if err := h.parseArgon2id(encoded); err != nil {
			return Hash{}, err
		}
		h.Scheme = Argon2id
		return h, nil
	}
	return Hash{}, ErrUnknownScheme
}

// parseArgon2id reads `$argon2id$v=19$m=M,t=T,p=P$salt$key` (PHC, standard
// base64 without padding).
func (h *Hash) parseArgon2id(encoded string) error {
	bad := func(what string) error { return fmt.Errorf("malformed argon2id hash: %s", what) }
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return bad("want $argon2id$v=19$m=…,t=…,p=…$salt$hash")
	}
	if parts[2] != "v=19" {
		return bad("only version 19 is supported")
	}
	var seen [3]bool
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return bad("parameters")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + k)
		}
		switch k {
		case "m":
			if seen[0] || n < 8 || n > maxArgonMemoryKiB {
				return bad("memory out of range")
			}
			seen[0], h.memory = true, uint32(n)
		case "t":
			if seen[1] || n < 1 || n > maxArgonTime {
				return bad("time out of range")
			}
			seen[1], h.time = true, uint32(n)
		case "p":
			if seen[2] || n < 1 || n > maxArgonThreads {
				return bad("parallelism out of range")
			}
			seen[2], h.threads = true, uint8(n)
		default:
			return bad("unknown parameter " + k)
		}
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return bad("m, t and p are all required")
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(h.salt) < minArgonSalt {
		return bad("salt")
	}
	if h.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(h.key) < minArgonKey || len(h.key) > maxArgonKey {
		return bad("hash")
	}
	return nil
}

// What one check of an imported hash may cost: the edge runs it for every
// try of a wrong secret of that client (through a bounded semaphore whose
// slots each hold one check), so an import cannot demand hours of CPU or
// gigabytes per try. Parse accepts wider parameters, so that hashes stored
// before these limits still load.
const (
	maxImportBcryptCost    = 14 // about a second per check
	maxImportArgonMemoryKB = 256 << 10
	maxImportArgonTime     = 8
	maxImportArgonThreads  = 8
)

// CheckImportCost refuses a slow hash whose parameters exceed what an
// import may ask of every edge.
func (h *Hash) CheckImportCost() error {
	switch h.Scheme {
	case Bcrypt:
		if cost, err := bcrypt.Cost([]byte(h.Encoded)); err != nil || cost > maxImportBcryptCost {
			return fmt.Errorf("bcrypt cost above %d is refused: every wrong try at an edge would pay it", maxImportBcryptCost)
		}
	case Argon2id:
		if h.memory > maxImportArgonMemoryKB || h.time > maxImportArgonTime || h.threads > maxImportArgonThreads {
			return fmt.Errorf("argon2id parameters above m=%d,t=%d,p=%d are refused: every wrong try at an edge would pay them",
				maxImportArgonMemoryKB, maxImportArgonTime, maxImportArgonThreads)
		}
	}
	return nil
}

// Verify reports whether secret matches h. For SHA256 prefer comparing
// digests with MatchDigest: the caller hashes the secret once for all of a
// client's hashes. Verify on a slow scheme costs what the scheme costs.
func (h *Hash) Verify(secret []byte) bool {
	switch h.Scheme {
	case SHA256:
		return MatchDigest(&h.Digest, Sum(secret))
	case Bcrypt:
		return bcrypt.CompareHashAndPassword([]byte(h.Encoded), secret) == nil
	case Argon2id:
		key := argon2.IDKey(secret, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
		return subtle.ConstantTimeCompare(key, h.key) == 1
	}
	return false
}

// Sum is the SHA-256 of a secret.
func Sum(secret []byte) *[sha256.Size]byte {
	d := sha256.Sum256(secret)
	return &d
}

// MatchDigest compares two digests in constant time.
func MatchDigest(a, b *[sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// NewSHA256 returns the stored form of a generated secret:
// `sha256:` + base64url(sha256(secret)) without padding.
func NewSHA256(secret string) string {
	d := sha256.Sum256([]byte(secret))
	return sha256Prefix + base64.RawURLEncoding.EncodeToString(d[:])
}

// NewArgon2id hashes a plaintext legacy secret for storage, as a PHC string.
func NewArgon2id(secret string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading random salt: %w", err)
	}
	key := argon2.IDKey([]byte(secret), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}
