package rules

import (
	"hash/crc32"
	"math/big"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/internal/base62"
)

// referenceBase62 encodes with math/big, translating its digit order
// (0-9a-zA-Z) to ours (0-9A-Za-z), and pads to width.
func referenceBase62(b []byte, width int) string {
	s := new(big.Int).SetBytes(b).Text(62)
	swap := func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return r
	}
	s = strings.Map(swap, s)
	return strings.Repeat("0", width-len(s)) + s
}

func TestEncodeBase62(t *testing.T) {
	cases := [][]byte{
		make([]byte, 32),
		{0, 0, 0, 1},
		{0, 0, 0, 61},
		{0, 0, 0, 62},
		{0xff, 0xff, 0xff, 0xff},
		[]byte(strings.Repeat("\xff", 32)),
		[]byte("0123456789abcdef0123456789abcdef"),
	}
	for _, b := range cases {
		width := secretBodyLen
		if len(b) == 4 {
			width = secretCheckLen
		}
		if got, want := encodeBase62(b, width), referenceBase62(b, width); got != want {
			t.Errorf("encodeBase62(%x) = %s, want %s", b, got, want)
		}
	}
	if got := encodeBase62([]byte{0, 0, 0, 10}, 6); got != "00000A" {
		t.Errorf("10 encodes as %s, want 00000A (digits 0-9A-Za-z)", got)
	}
	if got := encodeBase62([]byte{0, 0, 0, 36}, 6); got != "00000a" {
		t.Errorf("36 encodes as %s, want 00000a", got)
	}
}

func TestNewSecretShape(t *testing.T) {
	for _, prefix := range []string{DefaultSecretPrefix, "x", "acme_prod_2024_"} {
		s, err := NewSecret(prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != len(prefix)+49 || !strings.HasPrefix(s, prefix) {
			t.Fatalf("prefix %q: secret has length %d, want %d", prefix, len(s), len(prefix)+49)
		}
		body, check := s[len(prefix):len(s)-6], s[len(s)-6:]
		for _, c := range body + check {
			if !strings.ContainsRune(base62.Alphabet, c) {
				t.Fatalf("prefix %q: secret holds a non-base62 character", prefix)
			}
		}
		var sum [4]byte
		crc := crc32.ChecksumIEEE([]byte(prefix + body))
		sum[0], sum[1], sum[2], sum[3] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
		if check != referenceBase62(sum[:], 6) {
			t.Fatalf("prefix %q: check digits do not match CRC-32 of prefix+body", prefix)
		}
		if !CheckSecret(s, prefix) {
			t.Fatalf("prefix %q: CheckSecret rejects a generated secret", prefix)
		}
	}
}

func TestNewSecretsDiffer(t *testing.T) {
	seen := make(map[string]bool)
	for range 200 {
		s, err := NewSecret(DefaultSecretPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatal("two generated secrets are equal")
		}
		seen[s] = true
	}
}

func TestCheckSecretRejects(t *testing.T) {
	s, err := NewSecret(DefaultSecretPrefix)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	bad := map[string]string{
		"body changed":   flip(10),
		"check changed":  flip(len(s) - 1),
		"truncated":      s[:len(s)-1],
		"extended":       s + "0",
		"other prefix":   "rgx_" + s[4:],
		"bad character":  s[:10] + "-" + s[11:],
		"empty":          "",
		"prefix only":    DefaultSecretPrefix,
		"uppercase pref": "RGS_" + s[4:],
	}
	for name, v := range bad {
		if CheckSecret(v, DefaultSecretPrefix) {
			t.Errorf("%s: CheckSecret accepted it", name)
		}
	}
	if CheckSecret(s, "BAD") {
		t.Error("CheckSecret accepted an invalid prefix")
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"a", "rgs_", "0123456789abcdef", "_"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "RGS_", "rgs-", "0123456789abcdefg", "rg s", "é"} {
		if ValidatePrefix(p) == nil {
			t.Errorf("%q accepted", p)
		}
	}
	if _, err := NewSecret("Bad"); err == nil {
		t.Error("NewSecret accepted a bad prefix")
	}
}

func TestIDs(t *testing.T) {
	sid, err := NewSecretID()
	if err != nil {
		t.Fatal(err)
	}
	if !validSecretID(sid) || len(sid) != 24 || !strings.HasPrefix(sid, "sec_") {
		t.Errorf("secret id %q malformed", sid)
	}
	cid, err := NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	if len(cid) != 24 || !strings.HasPrefix(cid, "cli_") || ValidateClientID(cid) != nil {
		t.Errorf("client id %q malformed", cid)
	}
	for _, bad := range []string{"", "sec_", "sec_0123456789012345678", "sec_01234567890123456789x", "sec_0123456789012345678-", "cli_01234567890123456789"} {
		if validSecretID(bad) {
			t.Errorf("validSecretID(%q) = true", bad)
		}
	}
}

func TestValidateClientID(t *testing.T) {
	good := []string{"a", "my-client", "x/y?z#%", strings.Repeat("a", 255), "!~", "UPPER.lower_0"}
	for _, id := range good {
		if err := ValidateClientID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	bad := []string{"", strings.Repeat("a", 256), "a b", "a:b", "tab\tx", "nl\n", "del\x7f", "é", ".", ".."}
	for _, id := range bad {
		if ValidateClientID(id) == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestHint(t *testing.T) {
	s, err := NewSecret(DefaultSecretPrefix)
	if err != nil {
		t.Fatal(err)
	}
	h := Hint(DefaultSecretPrefix, s)
	if h != "rgs_…"+s[len(s)-4:] {
		t.Errorf("hint is not prefix + … + last 4")
	}
	if got := importedHint("short"); got != "…" {
		t.Errorf("a short legacy secret's hint reveals characters: %q", got)
	}
	if got := importedHint("a-rather-long-legacy-sécrèt"); got != "…crèt" {
		t.Errorf("importedHint = %q, want …crèt", got)
	}
}
