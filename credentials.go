package rotagate

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"unsafe"

	"github.com/rotagate/rotagate/internal/clientassertion"
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
// padding. The pair, raw and decoded, goes into scratch when it fits
// there (twice its length), on the heap otherwise; the pair's strings view
// it: scratch must stay unchanged while they are used.
func parseBasic(header string, scratch []byte) (p basicPair, ok bool, err error) {
	const scheme = "basic "
	if strings.EqualFold(strings.TrimSpace(header), "basic") {
		return basicPair{}, true, errMalformedBasic // the scheme with nothing after it
	}
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return basicPair{}, false, nil
	}
	enc := strings.TrimRight(strings.TrimSpace(header[len(scheme):]), "=")
	buf := scratch
	if n := 2 * base64.RawStdEncoding.DecodedLen(len(enc)); n > len(buf) {
		buf = make([]byte, n)
	}
	n, err := base64.RawStdEncoding.Decode(buf, readOnlyBytes(enc))
	if err != nil {
		return basicPair{}, true, errMalformedBasic
	}
	raw := buf[:n]
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return basicPair{}, true, errMalformedBasic
	}
	p.rawID, p.rawSecret = viewString(raw[:colon]), viewString(raw[colon+1:])
	// Decoding only shrinks a part: both fit in the room after raw.
	room := buf[n:n]
	id, room, okID := unescapeInto(room, p.rawID)
	secret, _, okSecret := unescapeInto(room, p.rawSecret)
	if okID && okSecret {
		p.id, p.secret, p.valid = id, secret, true
	}
	return p, true, nil
}

// unescapeInto form-decodes s, appending to room when there is something
// to decode (the result then views room, which should have the space),
// and returning s itself otherwise; room comes back with what it holds.
func unescapeInto(room []byte, s string) (string, []byte, bool) {
	if !encoded(s) {
		return s, room, true
	}
	start := len(room)
	room, ok := formDecode(room, s)
	return viewString(room[start:]), room, ok
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
// application/x-www-form-urlencoded body. Its strings may view the body,
// which must then stay unchanged.
type formCredentials struct {
	clientID, secret string
	hasID, hasSecret bool
	// sentSecret: a client_secret parameter was sent, with a value or not.
	sentSecret bool
	// assertion is private_key_jwt's client_assertion (RFC 7521 §4.2);
	// jwtBearer tells whether its client_assertion_type is the JWT bearer
	// type, the one rotagate verifies.
	assertion                      string
	hasAssertion, hasAssertionType bool
	jwtBearer                      bool
	// sentAssertion: either was sent, with a value or not.
	sentAssertion bool
}

// formParams walks the parameters of a form body: each is the bytes
// between two '&' (or an end of the body), a name and a value split at
// the first '='. It is the one reader of parameter bounds, for parseForm
// and keep alike.
type formParams struct {
	body []byte
	next int // where the next parameter starts; past the end when done
}

// param returns the next parameter, or ok false when there is none left.
func (w *formParams) param() (param, name, value []byte, ok bool) {
	if w.next > len(w.body) {
		return nil, nil, nil, false
	}
	rest := w.body[w.next:]
	end := bytes.IndexByte(rest, '&')
	if end < 0 {
		end = len(rest)
	}
	param = rest[:end]
	w.next += end + 1
	name, value, _ = bytes.Cut(param, []byte{'='})
	return param, name, value, true
}

// isAssertionParam reports whether a raw parameter name is
// client_assertion or client_assertion_type.
func isAssertionParam(rawName []byte) bool {
	name, err := formUnescape(rawName)
	return err == nil && (name == "client_assertion" || name == "client_assertion_type")
}

// isSecretParam reports whether a raw parameter name is client_secret.
func isSecretParam(rawName []byte) bool {
	name, err := formUnescape(rawName)
	return err == nil && name == "client_secret"
}

// parseForm scans a form body for client_id, client_secret, grant_type,
// client_assertion and client_assertion_type. Each may appear at most once; one sent without a value counts as
// omitted. Names are unescaped to be recognised (client%5Fsecret is
// client_secret), so a bad escape in the name of a parameter with a value
// is an error; the values of other parameters are the upstream's business.
func parseForm(body []byte) (formCredentials, error) {
	var f formCredentials
	grantTypes := 0
	params := formParams{body: body}
	for {
		_, rawName, rawValue, ok := params.param()
		if !ok {
			return f, nil
		}
		if len(rawValue) == 0 {
			// RFC 6749 §3.2: a parameter sent without a value is treated
			// as omitted; an empty client_secret is still cut by keep.
			f.sentSecret = f.sentSecret || isSecretParam(rawName)
			f.sentAssertion = f.sentAssertion || isAssertionParam(rawName)
			continue
		}
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
			f.secret, f.hasSecret, f.sentSecret = value, true, true
		case "grant_type":
			if grantTypes++; grantTypes > 1 {
				return formCredentials{}, errRepeatedParam
			}
		case "client_assertion":
			f.sentAssertion = true
			value, err := formUnescape(rawValue)
			if err != nil {
				return formCredentials{}, errMalformedForm
			}
			if f.hasAssertion {
				return formCredentials{}, errRepeatedParam
			}
			f.assertion, f.hasAssertion = value, true
		case "client_assertion_type":
			f.sentAssertion = true
			if f.hasAssertionType {
				return formCredentials{}, errRepeatedParam
			}
			// Decoded on the stack: only its equality to the type matters.
			var buf [len(clientassertion.AssertionType)]byte
			value, ok := formDecode(buf[:0], viewString(rawValue))
			if !ok {
				return formCredentials{}, errMalformedForm
			}
			f.hasAssertionType, f.jwtBearer = true, string(value) == clientassertion.AssertionType
		}
	}
}

// keep returns what of a form body the upstream gets when the credentials
// are stripped: every parameter but client_secret, client_assertion and
// client_assertion_type (sent empty or not), in the order sent. A body
// with none of them comes back as it is.
func (f *formCredentials) keep(body []byte) []byte {
	if !f.sentSecret && !f.sentAssertion {
		return body
	}
	kept := make([]byte, 0, len(body))
	params := formParams{body: body}
	first := true
	for {
		param, rawName, _, ok := params.param()
		if !ok {
			return kept
		}
		if isSecretParam(rawName) || (f.sentAssertion && isAssertionParam(rawName)) {
			continue
		}
		if !first {
			kept = append(kept, '&')
		}
		kept, first = append(kept, param...), false
	}
}

// formUnescape decodes one form-urlencoded component ('+' is a space): a
// view of b when there is nothing to decode.
func formUnescape(b []byte) (string, error) { return unescape(viewString(b)) }

// unescape decodes one form-urlencoded component, and allocates only when
// there is something to decode: s itself comes back otherwise.
func unescape(s string) (string, error) {
	if !encoded(s) {
		return s, nil
	}
	b, ok := formDecode(make([]byte, 0, len(s)), s)
	if !ok {
		return "", errMalformedForm
	}
	return viewString(b), nil
}

// encoded reports whether s has something to form-decode: a '%' or a
// '+'. (Two vectorised byte searches: strings.ContainsAny builds a byte
// set on every call.)
func encoded(s string) bool {
	return strings.IndexByte(s, '%') >= 0 || strings.IndexByte(s, '+') >= 0
}

// formDecode appends the form-decoding of s to dst, as url.QueryUnescape
// decodes it: '+' is a space, %XX a byte. ok is false when a '%' starts no
// escape.
func formDecode(dst []byte, s string) (_ []byte, ok bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return dst, false
			}
			dst = append(dst, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// viewString views bytes as a string without copying: the bytes must not
// change while the string is used.
func viewString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// readOnlyBytes views a string as bytes without copying, for a reader
// that does not write to them.
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// isForm reports whether a Content-Type names a form body.
func isForm(contentType string) bool {
	const form = "application/x-www-form-urlencoded"
	if len(contentType) < len(form) || !strings.EqualFold(contentType[:len(form)], form) {
		return false
	}
	rest := contentType[len(form):]
	return rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}
