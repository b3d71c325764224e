package credkey

import (
	"crypto"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// selfSigned makes a self-signed certificate for pub, signed by a P-256
// key (the signer's type does not matter to the checks under test; the
// subject key's does). It answers the DER.
func selfSigned(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "client-1"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return testkeys.SelfSigned(t, tmpl, pub, testkeys.ECDSA(t, elliptic.P256(), "issuer")).Raw
}

func pemOf(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestParseCertificatePEMAccepts(t *testing.T) {
	for name, pub := range map[string]crypto.PublicKey{
		"P-256":    &testkeys.ECDSA(t, elliptic.P256(), "").PublicKey,
		"P-384":    &testkeys.ECDSA(t, elliptic.P384(), "").PublicKey,
		"P-521":    &testkeys.ECDSA(t, elliptic.P521(), "").PublicKey, // a TLS key, not an assertion key: no ES512 needed
		"Ed25519":  testkeys.Ed25519(t, "").Public(),
		"RSA 2048": &testkeys.RSA(t, 2048, "").PublicKey,
	} {
		t.Run(name, func(t *testing.T) {
			der := selfSigned(t, pub)
			sum := sha256.Sum256(der)
			want := base64.RawURLEncoding.EncodeToString(sum[:])
			for _, text := range []string{pemOf("CERTIFICATE", der), "\n  " + pemOf("CERTIFICATE", der) + "\r\n\n"} {
				c, err := ParseCertificatePEM([]byte(text))
				if err != nil {
					t.Fatalf("ParseCertificatePEM: %v", err)
				}
				if c.Thumbprint != want || CertificateThumbprint(der) != want {
					t.Fatalf("thumbprint %s, want base64url(sha256(DER)) %s", c.Thumbprint, want)
				}
				if c.Subject != "CN=client-1" || !c.NotAfter.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || !c.NotBefore.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
					t.Fatalf("subject %q, validity %v – %v", c.Subject, c.NotBefore, c.NotAfter)
				}
			}
		})
	}
}

func TestParseCertificatePEMRefuses(t *testing.T) {
	ecKey := testkeys.ECDSA(t, elliptic.P256(), "")
	good := selfSigned(t, &ecKey.PublicKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	withHeaders := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: good}))
	goodPEM := pemOf("CERTIFICATE", good)
	cases := []struct {
		name, pem, want string
	}{
		{"empty", "", "no certificate given"},
		{"white space", " \n\t", "no certificate given"},
		{"garbage", "hello", "not PEM"},
		{"DER instead of PEM", string(good), "not PEM"},
		{"text before", "Bag Attributes\n" + goodPEM, "text before it"},
		{"text after", goodPEM + "trailing", "text after the certificate"},
		{"chain of two", goodPEM + goodPEM, "more than one block"},
		{"PKCS#8 private key", pemOf("PRIVATE KEY", keyDER), "holds a private key"},
		{"EC private key", pemOf("EC PRIVATE KEY", ecDER), "holds a private key"},
		{"certificate then key", goodPEM + pemOf("PRIVATE KEY", keyDER), "holds a private key"},
		{"key then certificate", pemOf("ENCRYPTED PRIVATE KEY", keyDER) + goodPEM, "holds a private key"},
		{"public key block", pemOf("PUBLIC KEY", pubDER), `block is a "PUBLIC KEY"`},
		{"PEM headers", withHeaders, "has PEM headers"},
		{"no END line", strings.TrimSuffix(goodPEM, "-----END CERTIFICATE-----\n"), "malformed"},
		{"bad base64", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "malformed"},
		{"not a certificate inside", pemOf("CERTIFICATE", []byte("not DER")), "cannot be parsed"},
		{"truncated DER", pemOf("CERTIFICATE", good[:len(good)-10]), "cannot be parsed"},
		{"RSA 1024", pemOf("CERTIFICATE", selfSigned(t, &testkeys.RSA(t, 1024, "").PublicKey)), "has 1024 bits; at least 2048"},
		{"P-224", pemOf("CERTIFICATE", selfSigned(t, &testkeys.ECDSA(t, elliptic.P224(), "").PublicKey)), "curve P-224 is not accepted"},
		{"too large", goodPEM + strings.Repeat(" ", MaxCertificatePEMBytes), "larger than 32 KiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert, err := ParseCertificatePEM([]byte(c.pem))
			if err == nil {
				t.Fatalf("accepted, thumbprint %s", cert.Thumbprint)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}
