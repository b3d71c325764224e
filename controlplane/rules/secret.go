package rules

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/rotagate/rotagate/internal/base62"
)

// DefaultSecretPrefix starts every generated secret unless configured
// otherwise, so that secret scanners can recognise rotagate secrets.
const DefaultSecretPrefix = "rgs_"

// Lengths of the parts of a generated secret and of generated ids.
const (
	secretBodyLen  = 43 // base62 digits of a 256-bit number
	secretCheckLen = 6  // base62 digits of a CRC-32
	secretRandLen  = 32 // bytes of entropy in a secret
	idRandLen      = 20 // base62 characters after an id's kind prefix

	maxPrefixLen   = 16
	maxClientIDLen = 255
)

// Kind prefixes of generated ids.
const (
	secretIDPrefix = "sec_"
	clientIDPrefix = "cli_"
)

// ValidatePrefix checks a configured secret prefix: 1 to 16 characters of
// [a-z0-9_].
func ValidatePrefix(prefix string) error {
	if len(prefix) == 0 || len(prefix) > maxPrefixLen {
		return fmt.Errorf("secret prefix must be 1 to %d characters long", maxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("secret prefix %q may only hold a-z, 0-9 and _", prefix)
		}
	}
	return nil
}

// NewSecret generates a secret: prefix, 43 base62 digits of 32 random bytes
// read as a big-endian number, then the 6-digit base62 CRC-32 (IEEE) of
// everything before it.
func NewSecret(prefix string) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	var raw [secretRandLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	body := encodeBase62(raw[:], secretBodyLen)
	return prefix + body + secretCheck(prefix+body), nil
}

// CheckSecret reports whether s is shaped like a secret generated with
// prefix and carries a valid checksum. It needs no store: secret scanners
// and clients can run it offline. A true answer says nothing about whether
// the secret is known or active.
func CheckSecret(s, prefix string) bool {
	if ValidatePrefix(prefix) != nil || len(s) != len(prefix)+secretBodyLen+secretCheckLen || !strings.HasPrefix(s, prefix) {
		return false
	}
	payload := s[:len(s)-secretCheckLen]
	for i := len(prefix); i < len(s); i++ {
		if strings.IndexByte(base62.Alphabet, s[i]) < 0 {
			return false
		}
	}
	return s[len(payload):] == secretCheck(payload)
}

// secretCheck is the check suffix of a secret: CRC-32 (IEEE) of payload in
// base62, most significant digit first, left-padded with '0' to 6 digits.
func secretCheck(payload string) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.ChecksumIEEE([]byte(payload)))
	return encodeBase62(b[:], secretCheckLen)
}

// encodeBase62 writes the big-endian number in b as exactly width base62
// digits, most significant first, left-padded with '0'. width must be large
// enough for any value of len(b) bytes; callers use fixed sizes that are.
func encodeBase62(b []byte, width int) string {
	num := append([]byte(nil), b...)
	out := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		// Long division of num by 62; the remainder is the next digit.
		var rem uint
		for j, d := range num {
			acc := rem<<8 | uint(d)
			num[j] = byte(acc / 62)
			rem = acc % 62
		}
		out[i] = base62.Alphabet[rem]
	}
	return string(out)
}

// NewSecretID returns a fresh secret id: "sec_" and 20 base62 characters.
func NewSecretID() (string, error) {
	r, err := base62.Random(idRandLen)
	return secretIDPrefix + r, err
}

// NewClientID returns a fresh client id: "cli_" and 20 base62 characters.
func NewClientID() (string, error) {
	r, err := base62.Random(idRandLen)
	return clientIDPrefix + r, err
}

// errBadClientID explains the client id syntax; it never repeats the input.
var errBadClientID = errors.New("client_id must be 1 to 255 bytes of printable ASCII without spaces or ':', and not \".\" or \"..\"")

// ValidateClientID checks a client id: 1 to 255 bytes of printable ASCII
// except space and ':' (a colon cannot travel unescaped in Basic auth).
// "." and ".." are refused too: as path segments of the management API
// they are cleaned away, so such a client could never be reached.
func ValidateClientID(id string) error {
	if len(id) == 0 || len(id) > maxClientIDLen || id == "." || id == ".." {
		return errBadClientID
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == ':' {
			return errBadClientID
		}
	}
	return nil
}

// validSecretID reports whether id has the shape of a generated secret id.
func validSecretID(id string) bool {
	if len(id) != len(secretIDPrefix)+idRandLen || !strings.HasPrefix(id, secretIDPrefix) {
		return false
	}
	for i := len(secretIDPrefix); i < len(id); i++ {
		if strings.IndexByte(base62.Alphabet, id[i]) < 0 {
			return false
		}
	}
	return true
}

// Hint is how listings show a generated secret: its prefix, an ellipsis and
// its last 4 characters (e.g. "rgs_…x9Qa"), enough to tell secrets apart and
// far too little to guess one.
func Hint(prefix, secret string) string {
	if len(secret) < len(prefix)+secretBodyLen {
		return prefix + "…"
	}
	return prefix + "…" + secret[len(secret)-4:]
}

// importedHint is the hint of an imported plaintext legacy secret: its last
// 4 characters when the secret is long enough (16+) for that to reveal
// little, else nothing. Legacy secrets carry no rotagate prefix.
func importedHint(secret string) string {
	r := []rune(secret)
	if len(r) < 16 {
		return "…"
	}
	return "…" + string(r[len(r)-4:])
}
