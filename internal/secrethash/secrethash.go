// Package secrethash parses and checks the stored forms of client secrets
// (docs/design.md §2): `sha256:<base64url>` for generated secrets; bcrypt, argon2id
// PHC and PBKDF2 (Kong's and passlib's forms) strings for imported legacy
// secrets. It is shared by the control plane,
// which writes and validates hashes, and the edge, which verifies against
// them. Nothing here ever formats a secret into an error.
package secrethash

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
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
	PBKDF2
)

func (s Scheme) String() string {
	switch s {
	case SHA256:
		return "sha256"
	case Bcrypt:
		return "bcrypt"
	case Argon2id:
		return "argon2id"
	case PBKDF2:
		return "pbkdf2"
	}
	return "unknown"
}

// Slow reports whether checking a secret against this scheme costs real CPU
// (bcrypt, argon2id, PBKDF2), so that callers cache verified pairs and
// bound the concurrency of misses.
func (s Scheme) Slow() bool { return s == Bcrypt || s == Argon2id || s == PBKDF2 }

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
	// Encoded is the stored string: as given, except that a PBKDF2 string
	// is re-encoded in its canonical form (see parsePBKDF2), so that one
	// hash has one stored spelling.
	Encoded string

	// argon2id parameters.
	memory  uint32
	time    uint32
	threads uint8
	// PBKDF2 parameters: the HMAC's hash, its name in the encoding, the
	// iteration count, and which spelling (Kong's or passlib's) it came in.
	prf      func() hash.Hash
	prfName  string
	iter     int
	kongForm bool
	// salt and key (argon2id, PBKDF2).
	salt []byte
	key  []byte
}

// ErrUnknownScheme is returned by Parse for a string in no supported format.
var ErrUnknownScheme = errors.New("unsupported hash format (want sha256:…, bcrypt $2a$/$2b$/$2y$, $argon2id$v=19$…, " +
	"or $pbkdf2-sha256$/$pbkdf2-sha512$ in Kong's or passlib's form)")

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
	case strings.HasPrefix(encoded, "$pbkdf2-"):
		if err := h.parsePBKDF2(encoded); err != nil {
			return Hash{}, err
		}
		h.Scheme = PBKDF2
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

// Limits on PBKDF2 parameters accepted by Parse (wider than an import may
// ask, see CheckImportCost).
const (
	maxPBKDF2Iterations = 10_000_000
	minPBKDF2Salt       = 8
	maxPBKDF2Salt       = 1024
	minPBKDF2Key        = 16
	maxPBKDF2Key        = 128
)

// passlib's "ab64" alphabet: standard base64 with '.' in place of '+',
// written without padding.
var ab64 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./").WithPadding(base64.NoPadding).Strict()

// parsePBKDF2 reads the two spellings of PBKDF2-HMAC hashes met in the
// wild, which share their prefix:
//
//	Kong:    $pbkdf2-<sha256|sha512>$i=<iterations>,l=<key bytes>$<salt>$<key>
//	passlib: $pbkdf2-<sha256|sha512>$<iterations>$<salt>$<key>
//
// Kong writes salt and key in standard base64 without padding (padded is
// accepted too); passlib in its ab64 variant ('.' for '+', no padding).
// h.Encoded becomes the canonical spelling: the same form, decimal numbers
// without leading zeros, Kong's base64 unpadded.
func (h *Hash) parsePBKDF2(encoded string) error {
	bad := func(what string) error { return fmt.Errorf("malformed pbkdf2 hash: %s", what) }
	parts := strings.Split(encoded, "$")
	if len(parts) != 5 || parts[0] != "" {
		return bad("want $pbkdf2-<sha256|sha512>$<iterations>$<salt>$<hash> (passlib) or $pbkdf2-<sha256|sha512>$i=<n>,l=<n>$<salt>$<hash> (Kong)")
	}
	switch parts[1] {
	case "pbkdf2-sha256":
		h.prf, h.prfName = sha256.New, "sha256"
	case "pbkdf2-sha512":
		h.prf, h.prfName = sha512.New, "sha512"
	default:
		return bad("only pbkdf2-sha256 and pbkdf2-sha512 are supported")
	}
	if strings.ContainsAny(encoded, "\r\n") {
		return bad("line breaks")
	}
	iterText, keyLenText := parts[2], ""
	decode := ab64.DecodeString
	if params, ok := strings.CutPrefix(parts[2], "i="); ok {
		if iterText, keyLenText, ok = strings.Cut(params, ",l="); !ok {
			return bad("want i=<iterations>,l=<key length>")
		}
		h.kongForm = true
		decode = decodeStdBase64
	}
	iter, err := strconv.ParseUint(iterText, 10, 32)
	if err != nil || iter < 1 || iter > maxPBKDF2Iterations {
		return bad(fmt.Sprintf("iterations must be a whole number from 1 to %d", maxPBKDF2Iterations))
	}
	h.iter = int(iter)
	if h.salt, err = decode(parts[3]); err != nil || len(h.salt) < minPBKDF2Salt || len(h.salt) > maxPBKDF2Salt {
		return bad(fmt.Sprintf("salt (want %d to %d bytes)", minPBKDF2Salt, maxPBKDF2Salt))
	}
	if h.key, err = decode(parts[4]); err != nil || len(h.key) < minPBKDF2Key || len(h.key) > maxPBKDF2Key {
		return bad(fmt.Sprintf("hash (want %d to %d bytes)", minPBKDF2Key, maxPBKDF2Key))
	}
	if h.kongForm {
		if l, err := strconv.ParseUint(keyLenText, 10, 32); err != nil || l != uint64(len(h.key)) {
			return bad("l must be the length of the hash in bytes")
		}
	}
	h.Encoded = h.encodePBKDF2()
	return nil
}

// decodeStdBase64 reads standard base64, padded or not.
func decodeStdBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// encodePBKDF2 writes a parsed PBKDF2 hash in the canonical spelling of
// the form it came in.
func (h *Hash) encodePBKDF2() string {
	if h.kongForm {
		return fmt.Sprintf("$pbkdf2-%s$i=%d,l=%d$%s$%s", h.prfName, h.iter, len(h.key),
			base64.RawStdEncoding.EncodeToString(h.salt), base64.RawStdEncoding.EncodeToString(h.key))
	}
	return fmt.Sprintf("$pbkdf2-%s$%d$%s$%s", h.prfName, h.iter, ab64.EncodeToString(h.salt), ab64.EncodeToString(h.key))
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
	// OWASP asks 600,000 iterations of PBKDF2-HMAC-SHA256 and 210,000 of
	// SHA-512 today; twice that still costs well under a second.
	maxImportPBKDF2Iterations = 1_200_000
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
	case PBKDF2:
		// A key longer than the hash's output is derived block by block,
		// each block costing the full iteration count again.
		if h.iter > maxImportPBKDF2Iterations || len(h.key) > h.prf().Size() {
			return fmt.Errorf("pbkdf2 above %d iterations, or with a hash longer than the %s output (%d bytes), is refused: every wrong try at an edge would pay it",
				maxImportPBKDF2Iterations, h.prfName, h.prf().Size())
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
		// bcrypt reads only the first 72 bytes of a secret: a longer one
		// would match every secret that starts with the same 72 bytes.
		return len(secret) <= MaxBcryptSecret && bcrypt.CompareHashAndPassword([]byte(h.Encoded), secret) == nil
	case Argon2id:
		key := argon2.IDKey(secret, h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
		return subtle.ConstantTimeCompare(key, h.key) == 1
	case PBKDF2:
		key, err := pbkdf2.Key(h.prf, string(secret), h.salt, h.iter, len(h.key))
		return err == nil && subtle.ConstantTimeCompare(key, h.key) == 1
	}
	return false
}

// MaxBcryptSecret is the longest secret bcrypt tells apart: it ignores
// every byte after the 72nd, so Verify refuses longer secrets for a
// bcrypt hash.
const MaxBcryptSecret = 72

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
	return FormatSHA256(sha256.Sum256([]byte(secret)))
}

// FormatSHA256 returns the stored form of a generated secret's digest.
func FormatSHA256(digest [sha256.Size]byte) string {
	return sha256Prefix + base64.RawURLEncoding.EncodeToString(digest[:])
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
