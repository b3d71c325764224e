package credkey

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxCertificatePEMBytes bounds the PEM text of a certificate credential.
const MaxCertificatePEMBytes = 32 << 10

// Certificate is a parsed client certificate for tls_client_auth.
type Certificate struct {
	// Thumbprint is the RFC 8705 §3.1 x5t#S256 value: base64url (no
	// padding) of the SHA-256 of the certificate's DER. An edge compares a
	// peer certificate's thumbprint with it; nothing else of the
	// certificate travels to edges.
	Thumbprint string
	// NotBefore and NotAfter are the certificate's validity period. A
	// control plane may cap the credential's expiry at NotAfter.
	NotBefore, NotAfter time.Time
	// Subject is the certificate's subject, for listings.
	Subject string
}

// ParseCertificatePEM parses a certificate given at registration: exactly
// one PEM "CERTIFICATE" block and nothing else but white space around it.
// It refuses private keys (whatever else the PEM holds), other block
// types, more than one certificate (register the client's own certificate,
// not its chain), certificates Go cannot parse and public keys that are
// weak or of a refused type (RSA under MinRSABits, EC curves other than
// P-256, P-384 and P-521, anything but RSA, ECDSA and Ed25519).
func ParseCertificatePEM(data []byte) (*Certificate, error) {
	if len(data) > MaxCertificatePEMBytes {
		return nil, fmt.Errorf("the certificate is larger than %d KiB", MaxCertificatePEMBytes>>10)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		return nil, errors.New("the PEM holds a private key; register only the certificate and keep the key with the client")
	}
	text := bytes.TrimSpace(data)
	if len(text) == 0 {
		return nil, errors.New("no certificate given; give it as -----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----")
	}
	// One block and nothing else: counting the boundaries first also keeps
	// pem.Decode from skipping a malformed block to reach a later one.
	if n := bytes.Count(text, []byte("-----BEGIN ")); n > 1 {
		return nil, errors.New("the PEM holds more than one block; register only the client's own certificate, not its chain")
	}
	if !bytes.HasPrefix(text, []byte("-----BEGIN ")) {
		return nil, errors.New("the certificate is not PEM, or has text before it; give only the -----BEGIN CERTIFICATE----- … -----END CERTIFICATE----- block")
	}
	block, rest := pem.Decode(text)
	if block == nil {
		return nil, errors.New("the PEM block is malformed (check its BEGIN and END lines and its base64)")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("the PEM block is a %q; give a CERTIFICATE", block.Type)
	}
	if len(block.Headers) > 0 {
		return nil, errors.New("the CERTIFICATE block has PEM headers; give a plain certificate")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("the PEM has text after the certificate; give only the -----BEGIN CERTIFICATE----- block")
	}
	der := block.Bytes
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("the certificate cannot be parsed: %s", strings.TrimPrefix(err.Error(), "x509: "))
	}
	if err := checkStrength(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("the certificate's public key is refused: %w", err)
	}
	sum := sha256.Sum256(cert.Raw)
	return &Certificate{
		Thumbprint: base64.RawURLEncoding.EncodeToString(sum[:]),
		NotBefore:  cert.NotBefore,
		NotAfter:   cert.NotAfter,
		Subject:    cert.Subject.String(),
	}, nil
}

// CertificateThumbprint is the x5t#S256 thumbprint of a certificate's DER,
// as an edge computes it for a peer certificate.
func CertificateThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
