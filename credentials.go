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

// parseBasic reads an Authorization header value. ok is false when the
// header does not use the Basic scheme at all (it then carries no client
// credentials); err is set when it does but is malformed. The base64 part
// may omit its padding; the client id and secret are form-urldecoded after
// splitting at the first colon.
func parseBasic(header string) (id, secret string, ok bool, err error) {
	const scheme = "basic "
	if strings.EqualFold(strings.TrimSpace(header), "basic") {
		return "", "", true, errMalformedBasic // the scheme with nothing after it
	}
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", "", false, nil
	}
	enc := strings.TrimRight(strings.TrimSpace(header[len(scheme):]), "=")
	raw, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return "", "", true, errMalformedBasic
	}
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return "", "", true, errMalformedBasic
	}
	if id, err = formUnescape(raw[:colon]); err != nil {
		return "", "", true, errMalformedBasic
	}
	if secret, err = formUnescape(raw[colon+1:]); err != nil {
		return "", "", true, errMalformedBasic
	}
	return id, secret, true, nil
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
// Each may appear at most once. Names are unescaped to be recognised
// (client%5Fsecret is client_secret), so a bad escape in any name is an
// error; the values of other parameters are the upstream's business.
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
		pair := body[start:end]
		if len(pair) > 0 {
			rawName, rawValue, _ := bytes.Cut(pair, []byte{'='})
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
// It allocates only when there is something to decode.
func formUnescape(b []byte) (string, error) {
	if bytes.IndexByte(b, '%') < 0 && bytes.IndexByte(b, '+') < 0 {
		return string(b), nil
	}
	return url.QueryUnescape(string(b))
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
