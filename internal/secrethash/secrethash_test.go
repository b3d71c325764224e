package secrethash

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestSHA256RoundTrip(t *testing.T) {
	stored := NewSHA256("rgs_example")
	if len(stored) != len("sha256:")+43 {
		t.Fatalf("stored form has length %d", len(stored))
	}
	h, err := Parse(stored)
	if err != nil || h.Scheme != SHA256 {
		t.Fatalf("Parse: %v %v", h.Scheme, err)
	}
	if !h.Verify([]byte("rgs_example")) || h.Verify([]byte("rgs_examplf")) {
		t.Fatal("Verify disagrees with the hashed secret")
	}
}

func TestBcrypt(t *testing.T) {
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		raw, err := bcrypt.GenerateFromPassword([]byte("legacy pass"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		enc := prefix + string(raw[4:])
		h, err := Parse(enc)
		if err != nil || h.Scheme != Bcrypt || !h.Scheme.Slow() {
			t.Fatalf("%s: Parse: %v", prefix, err)
		}
		if !h.Verify([]byte("legacy pass")) || h.Verify([]byte("legacy pasS")) {
			t.Fatalf("%s: Verify disagrees", prefix)
		}
	}
}

func TestArgon2id(t *testing.T) {
	enc, err := NewArgon2id("legacy: pass%")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(enc, "legacy") {
		t.Fatal("the PHC string holds the plaintext")
	}
	h, err := Parse(enc)
	if err != nil || h.Scheme != Argon2id {
		t.Fatalf("Parse(%q): %v", enc, err)
	}
	if !h.Verify([]byte("legacy: pass%")) || h.Verify([]byte("legacy: pass")) {
		t.Fatal("Verify disagrees")
	}
	// A hash made elsewhere (RFC 9106 style, p=4) parses too.
	if _, err := Parse("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{
		"", "plaintext", "sha256:", "sha256:abc", "sha256:" + strings.Repeat("A", 44),
		"$2a$04$short", "$2x$04$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi",
		"$argon2i$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=9999999999,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=3$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=3,p=4,x=1$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$!!!",
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestCheckImportCost(t *testing.T) {
	for enc, ok := range map[string]bool{
		"$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc":   true,
		"$argon2id$v=19$m=1048576,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc": false,
		"$argon2id$v=19$m=65536,t=3,p=64$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc":  false,
		"$2a$10$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi":                                        true,
		"$2a$15$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi":                                        false,
	} {
		h, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(%q): %v", enc, err)
		}
		if err := h.CheckImportCost(); (err == nil) != ok {
			t.Errorf("%s: CheckImportCost = %v, want ok=%v", enc, err, ok)
		}
	}
}
