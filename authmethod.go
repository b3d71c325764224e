package rotagate

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rotagate/rotagate/internal/clientassertion"
)

// Client authentication methods (SPEC §5, §16), as the methods option
// names them.
const (
	methodBasic         = "basic"           // client_secret_basic
	methodPost          = "post"            // client_secret_post
	methodPrivateKeyJWT = "private_key_jwt" // RFC 7523 §2.2, OIDC Core §9
	methodTLSClientAuth = "tls_client_auth" // RFC 8705 §2.1
)

// The seam between the handler and the ways a client proves who it is.
// The handler finds the method from the request (extract), checks it is
// allowed, asks the method which client the request claims to be (the
// failure budget's key) and then to check the credential against that
// client's record in the snapshot. What follows a check (the network
// check, placeholders, usage stamps, stripping) is the same for every
// method.
//
// Secrets (Basic or body) are the verifier's (verifier.go), called
// directly: their pairs view the request's bytes on the stack, which an
// interface call would move to the heap, and that path allocates nothing.
// The other methods implement authMethod, in the spirit of caddyauth's
// Authenticator and fosite's client authentication strategies.
type authMethod interface {
	// claim reads what the request presented, without cryptography, and
	// names the client it claims to be. ok is false when the credential
	// cannot be right whoever sent it (malformed, expired, the wrong
	// audience…): it is refused like a wrong one, with no further work.
	claim(p *presented, now time.Time) (clientID string, ok bool)
	// check verifies the credential against the usable credentials of its
	// kind of c, the claimed client's record (nil for a client the
	// snapshot does not know, which costs what a known one does), and
	// returns the id of the one that matched, or "".
	check(c *client, p *presented, now time.Time) string
	// pad does, after a check that matched, the work a check that matched
	// nothing would have done: a request then refused for its network
	// costs what a wrong credential costs.
	pad(p *presented)
}

// presented is what a request presented to a method other than a
// secret. Its strings are copies: nothing of it views the request.
type presented struct {
	// clientID is the client_id form parameter, "" when absent.
	clientID string
	// assertion is the client_assertion (private_key_jwt) and audiences
	// those it must be addressed to.
	assertion string
	audiences []string
	audience  [1]string // the default audience, without a slice of its own
	parsed    *clientassertion.Assertion
	result    clientassertion.Verified
	// cert is the DER of the client's certificate (tls_client_auth).
	cert []byte
}

// present gathers what the request presented to its method. A copy of
// every string is taken (strings.Clone), so that no view of the request's
// bytes reaches an interface call.
func (h *Handler) present(r *http.Request, c *credentials) (authMethod, *presented) {
	p := &presented{clientID: strings.Clone(c.form.clientID)}
	if c.method == idPrivateKeyJWT {
		p.assertion = strings.Clone(c.form.assertion)
		p.audiences = h.Audience
		if len(p.audiences) == 0 {
			p.audience[0] = requestURL(r)
			p.audiences = p.audience[:]
		}
		return h.keyAuth, p
	}
	p.cert = peerCertificate(r)
	return h.certAuth, p
}

// requestURL is the URL of the token endpoint the request came to, an
// assertion's audience unless the audience option says otherwise.
func requestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.Path
}

// peerCertificate is the client's certificate: the one an RFC 9440
// Client-Cert header carries when a trusted proxy (Caddy's
// trusted_proxies) sent the request, otherwise the one of the TLS
// connection; nil when there is none.
func peerCertificate(r *http.Request) []byte {
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if der, ok := clientCertHeader(r.Header); ok {
			return der
		}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0].Raw
	}
	return nil
}

// clientCertHeader reads an RFC 9440 Client-Cert header: one structured
// field byte sequence, `:base64(DER):`.
func clientCertHeader(hdr http.Header) ([]byte, bool) {
	values := hdr.Values("Client-Cert")
	if len(values) != 1 {
		return nil, false
	}
	v := strings.TrimSpace(values[0])
	if len(v) < 2 || v[0] != ':' || v[len(v)-1] != ':' {
		return nil, false
	}
	der, err := base64.StdEncoding.DecodeString(v[1 : len(v)-1])
	if err != nil || len(der) == 0 {
		return nil, false
	}
	return der, true
}

// hasCertificate reports whether the request carries a client certificate
// peerCertificate would take.
func hasCertificate(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return true
	}
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted && r.Header.Get("Client-Cert") != ""
}

// keyAuth is private_key_jwt: a client assertion signed with one of the
// client's registered private keys, checked against their public keys.
type keyAuth struct {
	verifier *clientassertion.Verifier
}

func (k *keyAuth) claim(p *presented, now time.Time) (string, bool) {
	a, err := k.verifier.Parse(p.assertion, p.clientID, p.audiences, now)
	if err != nil {
		return p.clientID, false
	}
	p.parsed = a
	return a.ClientID(), true
}

func (k *keyAuth) check(c *client, p *presented, now time.Time) string {
	var keys []clientassertion.Key
	if c != nil {
		keys = c.usableKeys(now)
	}
	res, err := k.verifier.Verify(p.parsed, keys, now)
	if err != nil {
		return ""
	}
	p.result = res
	return res.CredentialID
}

func (k *keyAuth) pad(p *presented) { k.verifier.Pad(p.parsed, p.result.Checks) }

// usableKeys are the client's public keys that may verify at now: all of
// them (a slice built with the record) unless one has expired since.
func (c *client) usableKeys(now time.Time) []clientassertion.Key {
	if c.pub == nil {
		return nil
	}
	for i := range c.pub.keys {
		if !c.pub.keys[i].usable(now) {
			keys := make([]clientassertion.Key, 0, len(c.pub.keys))
			for j := range c.pub.keys {
				if c.pub.keys[j].usable(now) {
					keys = append(keys, c.pub.assertionKeys[j])
				}
			}
			return keys
		}
	}
	return c.pub.assertionKeys
}

// certAuth is tls_client_auth: the SHA-256 thumbprint of the client's
// certificate against the client's registered ones, compared in constant
// time, at least minCompares of them whatever the client holds.
type certAuth struct {
	dummy [sha256.Size]byte // compared when a client has fewer certificates
	work  *verifyWork       // the verifier's counters, when tests count
}

func (ca *certAuth) claim(p *presented, _ time.Time) (string, bool) {
	return p.clientID, p.clientID != "" && len(p.cert) > 0
}

func (ca *certAuth) check(c *client, p *presented, now time.Time) string {
	thumbprint := sha256.Sum256(p.cert)
	ca.work.count(workDigest)
	var certs []certCredential
	if c != nil {
		certs = c.certCreds()
	}
	matched := -1
	for i := range max(len(certs), minCompares) {
		stored := &ca.dummy
		if i < len(certs) {
			stored = &certs[i].thumbprint
		}
		ca.work.count(workCompare)
		if subtle.ConstantTimeCompare(stored[:], thumbprint[:]) == 1 && i < len(certs) && certs[i].usable(now) {
			matched = i
		}
	}
	if matched < 0 {
		return ""
	}
	return certs[matched].id
}

// pad has nothing to do: a check compares as many thumbprints whatever it
// finds.
func (ca *certAuth) pad(*presented) {}

// Interface guards
var (
	_ authMethod = (*keyAuth)(nil)
	_ authMethod = (*certAuth)(nil)
)
