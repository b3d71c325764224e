// Package base62 holds the digits of rotagate's generated secrets and
// ids, and draws random strings of them.
package base62

import (
	"crypto/rand"
	"fmt"
)

// Alphabet is the digit order (docs/design.md §2): 0-9, then A-Z, then
// a-z.
const Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Random returns n base62 characters from crypto/rand, without modulo
// bias (bytes of 248 and above are drawn again).
func Random(n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, c := range buf {
			if c < 248 && len(out) < n {
				out = append(out, Alphabet[c%62])
			}
		}
	}
	return string(out), nil
}
