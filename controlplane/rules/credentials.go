package rules

import (
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/credkey"
)

// Credentials without a shared secret (SPEC §16): a public key for
// private_key_jwt, a certificate for tls_client_auth. They are kept as the
// public material the edges need (the canonical public JWK, the
// certificate's thumbprint) and follow the rotation rules of secrets.

// hintChars is how much of a thumbprint a hint shows.
const hintChars = 4

// setPublicKey fills the record of a public-key credential from a JWK, or
// says what is wrong with it (a private key, a symmetric key, a weak key).
func setPublicKey(sec *store.Secret, jwk []byte) error {
	k, err := credkey.ParseJWK(jwk)
	if err != nil {
		return invalidf("public_key: %v", err)
	}
	sec.Material, sec.Thumbprint = string(k.JSON()), k.Thumbprint()
	sec.Hint = "(public key …" + sec.Thumbprint[len(sec.Thumbprint)-hintChars:] + ")"
	return nil
}

// setCertificate fills the record of a certificate credential from PEM, or
// says what is wrong with it. The credential expires with the
// certificate: a certificate past its validity is refused, and one that
// ends before the requested expiry (or with none requested) caps it.
func setCertificate(sec *store.Secret, pem string) error {
	c, err := credkey.ParseCertificatePEM([]byte(pem))
	if err != nil {
		return invalidf("certificate: %v", err)
	}
	if !c.NotAfter.After(sec.CreatedAt) {
		return invalidf("certificate: it expired at %s", c.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	}
	sec.Thumbprint = c.Thumbprint
	sec.Hint = "(certificate …" + sec.Thumbprint[len(sec.Thumbprint)-hintChars:] + ")"
	notAfter := c.NotAfter.UTC().Truncate(1e6) // the store keeps milliseconds
	sec.ExpiresAt = &notAfter
	return nil
}

// checkNewThumbprint refuses a key or certificate that the client already
// holds among its active credentials: a second copy would only hide which
// one a client uses.
func checkNewThumbprint(active []store.Secret, sec store.Secret) error {
	if sec.Thumbprint == "" {
		return nil
	}
	for _, a := range active {
		if a.Kind == sec.Kind && a.Thumbprint == sec.Thumbprint {
			return invalidf("%s: the client already holds this %s as %s", sec.Kind, sec.Kind, a.ID)
		}
	}
	return nil
}

// credentialDetail is the audit detail that says which key or certificate
// a credential is; empty for a secret.
func credentialDetail(sec store.Secret) string {
	if sec.Thumbprint == "" {
		return ""
	}
	return string(sec.Kind) + " " + sec.Thumbprint
}
