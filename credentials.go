package rotagate

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
)

// Client credentials as RFC 6749 §2.3.1 carries them: in an HTTP Basic
// Authorization header (client_secret_basic) or in a form body
// (client_secret_post). The parsers never put a secret into an error.

var (
	errMalformedBasic = errors.New("malformed Basic authorization")
	errRepeatedParam  = errors.New("a credential or grant_type parameter is repeated")
	errMalformedForm  = errors.New("malformed form body")
)

// basicPair is what a Basic Authorization header carried.
type basicPair struct {
	// id and secret are the parts form-urldecoded after splitting at the
	// first colon, as RFC 6749 §2.3.1 asks; valid is false when a part is
	// no valid form-encoding (a raw '%' not starting an escape).
	id, secret string
	valid      bool
	// rawID and rawSecret are the parts as sent: many clients (Python's
	// authlib and requests-oauthlib among them) skip the form-encoding.
	rawID, rawSecret string
}

// parseBasic reads an Authorization header value. ok is false when the
// header does not use the Basic scheme at all (it then carries no client
// credentials); err is set when it does but is malformed: no credentials
// after the scheme, bad base64, no colon. The base64 part may omit its
// padding.
func parseBasic(header string) (p basicPair, ok bool, err error) {
	const scheme = "basic "
	if strings.EqualFold(strings.TrimSpace(header), "basic") {
		return basicPair{}, true, errMalformedBasic // the scheme with nothing after it
	}
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return basicPair{}, false, nil
	}
	enc := strings.TrimRight(strings.TrimSpace(header[len(scheme):]), "=")
	raw, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return basicPair{}, true, errMalformedBasic
	}
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return basicPair{}, true, errMalformedBasic
	}
	p.rawID, p.rawSecret = string(raw[:colon]), string(raw[colon+1:])
	id, errID := unescape(p.rawID)
	secret, errSecret := unescape(p.rawSecret)
	if errID == nil && errSecret == nil {
		p.id, p.secret, p.valid = id, secret, true
	}
	return p, true, nil
}

// candidates lists the (client id, secret) pairs to try, in order: the
// decoded pair when it is valid, then the raw pair when it differs. How
// many there are depends on the header alone, never on the store, so an
// unknown client costs what a known one does.
func (p *basicPair) candidates() (pairs [2]credentialPair, n int) {
	if p.valid {
		pairs[n] = credentialPair{id: p.id, secret: p.secret}
		n++
	}
	if !p.valid || p.rawID != p.id || p.rawSecret != p.secret {
		pairs[n] = credentialPair{id: p.rawID, secret: p.rawSecret}
		n++
	}
	return pairs, n
}

// credentialPair is one client id and secret to check.
type credentialPair struct{ id, secret string }

// querySecret reports whether a raw query string carries a non-empty
// client_secret parameter. RFC 6749 §2.3.1 forbids credentials in the
// URI: they end up in access logs. Names are unescaped to be recognised;
// a name that is no valid escape cannot be client_secret.
func querySecret(rawQuery string) bool {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		name, value, _ := strings.Cut(pair, "=")
		if value == "" || !strings.Contains(name, "secret") && !strings.Contains(name, "%") {
			continue
		}
		if n, err := url.QueryUnescape(name); err == nil && n == "client_secret" {
			return true
		}
	}
	return false
}

// formCredentials is what parseForm found in an
// application/x-www-form-urlencoded body.
type formCredentials struct {
	clientID, secret string
	hasID, hasSecret bool
	// secretStart and secretEnd delimit the client_secret pair in the body,
	// with one adjacent '&', so that cutting it leaves a well-formed body.
	secretStart, secretEnd int
}

// parseForm scans a form body for client_id, client_secret and grant_type.
// Each may appear at most once; one sent without a value counts as
// omitted. Names are unescaped to be recognised (client%5Fsecret is
// client_secret), so a bad escape in the name of a parameter with a value
// is an error; the values of other parameters are the upstream's business.
func parseForm(body []byte) (formCredentials, error) {
	var f formCredentials
	grantTypes := 0
	for start := 0; start <= len(body); {
		end := bytes.IndexByte(body[start:], '&')
		if end < 0 {
			end = len(body)
		} else {
			end += start
		}
		// RFC 6749 §3.2: a parameter sent without a value is treated as
		// omitted.
		if rawName, rawValue, _ := bytes.Cut(body[start:end], []byte{'='}); len(rawValue) > 0 {
			name, err := formUnescape(rawName)
			if err != nil {
				return formCredentials{}, errMalformedForm
			}
			switch name {
			case "client_id", "client_secret":
				value, err := formUnescape(rawValue)
				if err != nil {
					return formCredentials{}, errMalformedForm
				}
				if name == "client_id" {
					if f.hasID {
						return formCredentials{}, errRepeatedParam
					}
					f.clientID, f.hasID = value, true
					break
				}
				if f.hasSecret {
					return formCredentials{}, errRepeatedParam
				}
				f.secret, f.hasSecret = value, true
				f.secretStart, f.secretEnd = start, end
				if end < len(body) {
					f.secretEnd = end + 1 // the '&' after it
				} else if start > 0 {
					f.secretStart = start - 1 // the '&' before it
				}
			case "grant_type":
				if grantTypes++; grantTypes > 1 {
					return formCredentials{}, errRepeatedParam
				}
			}
		}
		start = end + 1
	}
	return f, nil
}

// formUnescape decodes one form-urlencoded component ('+' is a space).
func formUnescape(b []byte) (string, error) { return unescape(string(b)) }

// unescape decodes one form-urlencoded component, and allocates only when
// there is something to decode.
func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// isForm reports whether a Content-Type names a form body.
func isForm(contentType string) bool {
	const form = "application/x-www-form-urlencoded"
	if len(contentType) < len(form) || !strings.EqualFold(contentType[:len(form)], form) {
		return false
	}
	rest := contentType[len(form):]
	return rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}
