package credkey

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// FuzzParseJWK: whatever the input, ParseJWK does not panic, and a key it
// accepts has canonical JSON of public members only that parses again to
// the same key, with algorithms from the accepted list.
func FuzzParseJWK(f *testing.F) {
	f.Add([]byte(rfc7517RSA))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseJWK(data)
		if err != nil {
			if k != nil {
				t.Fatal("a key and an error")
			}
			return
		}
		if len(k.Algorithms()) == 0 {
			t.Fatal("an accepted key with no algorithm")
		}
		for _, a := range k.Algorithms() {
			if !slices.Contains(Algorithms, a) {
				t.Fatalf("algorithm %s is not accepted", a)
			}
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(k.JSON(), &m); err != nil {
			t.Fatal(err)
		}
		for name := range m {
			if slices.Contains(privateMembers, strings.ToLower(name)) {
				t.Fatalf("canonical JSON carries %q", name)
			}
		}
		assertCanonical(t, k)
	})
}

// FuzzParseCertificatePEM: whatever the input, ParseCertificatePEM does not
// panic, and what it accepts has no private key and one thumbprint.
func FuzzParseCertificatePEM(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCertificatePEM(data)
		if err != nil {
			return
		}
		if strings.Contains(string(data), "PRIVATE KEY") {
			t.Fatal("accepted a PEM holding a private key")
		}
		if len(c.Thumbprint) != 43 {
			t.Fatalf("thumbprint %q", c.Thumbprint)
		}
	})
}
