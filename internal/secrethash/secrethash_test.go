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

// checkImportCosts parses each encoded hash and checks that CheckImportCost
// accepts it exactly when its value is true.
func checkImportCosts(t *testing.T, costs map[string]bool) {
	t.Helper()
	for enc, ok := range costs {
		h, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(%q): %v", enc, err)
		}
		if err := h.CheckImportCost(); (err == nil) != ok {
			t.Errorf("%s: CheckImportCost = %v, want ok=%v", enc, err, ok)
		}
	}
}

func TestCheckImportCost(t *testing.T) {
	checkImportCosts(t, map[string]bool{
		"$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc":   true,
		"$argon2id$v=19$m=1048576,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc": false,
		"$argon2id$v=19$m=65536,t=3,p=64$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc":  false,
		"$2a$10$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi":                                        true,
		"$2a$15$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi":                                        false,
	})
}

func TestBcryptRefusesSecretsOver72Bytes(t *testing.T) {
	secret := strings.Repeat("B", 72)
	raw, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !h.Verify([]byte(secret)) {
		t.Fatal("the 72-byte secret does not match its own hash")
	}
	// bcrypt itself compares only the first 72 bytes and would say yes.
	if h.Verify([]byte(secret + "zzz")) {
		t.Fatal("a secret longer than 72 bytes matched the hash of its first 72 bytes")
	}
}

// The vectors below were computed apart from this package: Kong's from its
// own oauth2 plugin test (secret "tofu"), passlib's from its documentation
// (secret "password"), and the others with Python's hashlib.pbkdf2_hmac.
var pbkdf2Vectors = []struct {
	name, secret, encoded, canonical string
}{
	{"kong sha512", "tofu",
		"$pbkdf2-sha512$i=10000,l=32$YSBsaXR0ZSBiaXQsIGp1c3QgYSBsaXR0bGUgYml0$z6ysNworexAhDELywIDi0ba0B0T7F/MBZ6Ige9lWRYI", ""},
	{"kong sha256, padded base64", "tofu",
		"$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZisvP34=$FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ=",
		"$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZisvP34$FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ"},
	{"passlib sha256", "password",
		"$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M", ""},
	{"passlib sha256, ab64 '.'", "password",
		"$pbkdf2-sha256$8000$XAuBMIYQQogxRg$tRRlz8hYn63B9LYiCd6PRo6FMiunY9ozmMMI3srxeRE", ""},
	{"passlib sha512", "legacy+secret%20",
		"$pbkdf2-sha512$25000$MDEyMzQ1Njc4OWFiY2RlZisvP34$pmnRyRxuLoKGQq2tcKsXT5LIDZ5LdUsJEmwj0MpOdAIZLAMb2rPLFdH68RXgeOfdI34Htgo1o/RhRYw3Q8Nm5Q", ""},
}

func TestPBKDF2Vectors(t *testing.T) {
	for _, v := range pbkdf2Vectors {
		h, err := Parse(v.encoded)
		if err != nil || h.Scheme != PBKDF2 || !h.Scheme.Slow() {
			t.Fatalf("%s: Parse: %v %v", v.name, h.Scheme, err)
		}
		want := v.canonical
		if want == "" {
			want = v.encoded
		}
		if h.Encoded != want {
			t.Errorf("%s: canonical form %q, want %q", v.name, h.Encoded, want)
		}
		if !h.Verify([]byte(v.secret)) {
			t.Errorf("%s: the secret does not match", v.name)
		}
		if h.Verify([]byte(v.secret+"x")) || h.Verify([]byte(v.secret[1:])) || h.Verify(nil) {
			t.Errorf("%s: a wrong secret matched", v.name)
		}
		if err := h.CheckImportCost(); err != nil {
			t.Errorf("%s: CheckImportCost: %v", v.name, err)
		}
		again, err := Parse(h.Encoded)
		if err != nil || again.Encoded != h.Encoded || !again.Verify([]byte(v.secret)) {
			t.Errorf("%s: the canonical form does not parse back: %v", v.name, err)
		}
	}
}

func TestPBKDF2Rejects(t *testing.T) {
	const salt, key = "MDEyMzQ1Njc4OWFiY2RlZisvP34", "FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ"
	for _, bad := range []string{
		"$pbkdf2-sha256$",
		"$pbkdf2-sha1$1000$" + salt + "$" + key,
		"$pbkdf2-md5$i=1000,l=32$" + salt + "$" + key,
		"$pbkdf2-sha256$0$" + salt + "$" + key,
		"$pbkdf2-sha256$-5$" + salt + "$" + key,
		"$pbkdf2-sha256$+5$" + salt + "$" + key,
		"$pbkdf2-sha256$10000001$" + salt + "$" + key,
		"$pbkdf2-sha256$99999999999999999999$" + salt + "$" + key,
		"$pbkdf2-sha256$1000$" + salt + "$" + key + "$",
		"x$pbkdf2-sha256$1000$" + salt + "$" + key,
		"$pbkdf2-sha256$1000$c2FsdA$" + key,                                           // 4-byte salt
		"$pbkdf2-sha256$1000$" + salt + "$c2hvcnQ",                                    // 5-byte hash
		"$pbkdf2-sha256$1000$" + salt + "$" + strings.Repeat("A", 200),                // 150-byte hash
		"$pbkdf2-sha256$1000$" + salt + "$" + key + "=",                               // passlib writes no padding
		"$pbkdf2-sha256$1000$" + salt + "$" + strings.Replace(key, "/", "+", 1) + "x", // '+' is not ab64
		"$pbkdf2-sha256$1000$" + salt + "$Fq\nbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ",
		"$pbkdf2-sha256$i=1000$" + salt + "$" + key,
		"$pbkdf2-sha256$i=1000,l=31$" + salt + "$" + key,
		"$pbkdf2-sha256$i=1000,l=32,x=1$" + salt + "$" + key,
		"$pbkdf2-sha256$l=32,i=1000$" + salt + "$" + key,
		"$pbkdf2-sha256$i=1000,l=32$" + salt + "$" + strings.Replace(key, "/", ".", 1),        // '.' is not standard base64
		"$pbkdf2-sha256$i=1000,l=32$" + salt + "$FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeR", // non-zero trailing bits
	} {
		if h, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted, as %q", bad, h.Encoded)
		}
	}
}

func TestPBKDF2ImportCost(t *testing.T) {
	const salt = "MDEyMzQ1Njc4OWFiY2RlZisvP34"
	key32 := strings.Repeat("A", 43)
	key64 := strings.Repeat("A", 86)
	checkImportCosts(t, map[string]bool{
		"$pbkdf2-sha256$1200000$" + salt + "$" + key32:        true,
		"$pbkdf2-sha256$1200001$" + salt + "$" + key32:        false,
		"$pbkdf2-sha512$i=1200001,l=32$" + salt + "$" + key32: false,
		"$pbkdf2-sha512$210000$" + salt + "$" + key64:         true,
		"$pbkdf2-sha256$600000$" + salt + "$" + key64:         false, // 64 bytes from a 32-byte hash: two blocks
	})
}

// FuzzParse: the seed corpus is in testdata/fuzz/FuzzParse (every scheme,
// both PBKDF2 spellings, non-canonical ones among them). Parse never panics, and what it accepts parses back from its stored form to the same form; a
// cheap accepted hash verifies without panicking.
func FuzzParse(f *testing.F) {
	f.Add(NewSHA256("rgs_example"))
	f.Fuzz(func(t *testing.T, encoded string) {
		h, err := Parse(encoded)
		if err != nil {
			return
		}
		again, err := Parse(h.Encoded)
		if err != nil || again.Encoded != h.Encoded || again.Scheme != h.Scheme {
			t.Fatalf("%q was accepted as %q, which parses as %q (%v)", encoded, h.Encoded, again.Encoded, err)
		}
		if h.Scheme == SHA256 || (h.Scheme == PBKDF2 && h.iter <= 1000) {
			h.Verify([]byte("secret"))
		}
	})
}
