package rotagate

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// The seed corpus lives in testdata/fuzz/<target>; `go test` runs it, and
// `go test -fuzz=FuzzParseBasic` (or FuzzParseForm) explores further.

func FuzzParseBasic(f *testing.F) {
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("app:secret")))
	f.Fuzz(func(t *testing.T, header string) {
		// A small scratch: short pairs decode into it, longer ones on the
		// heap; both must read the same.
		p, ok, err := parseBasic(header, make([]byte, 16))
		if heap, hok, herr := parseBasic(header, nil); heap != p || hok != ok || (herr == nil) != (err == nil) {
			t.Fatalf("%q read %+v with scratch, %+v without", header, p, heap)
		}
		if err != nil || !ok {
			if p != (basicPair{}) {
				t.Fatal("credentials returned with a failure")
			}
			return
		}
		pairs, n := p.candidates()
		if n < 1 || n > 2 {
			t.Fatalf("%d pairs to try", n)
		}
		// The raw pair is tried whenever it differs, and last.
		if raw := (credentialPair{p.rawID, p.rawSecret}); pairs[n-1] != raw {
			t.Fatalf("last pair %q, want the raw pair %q", pairs[n-1], raw)
		}
		if n == 2 && (!p.valid || pairs[0] == pairs[1]) {
			t.Fatalf("two pairs for %q: %q", header, pairs)
		}
		// The raw pair survives being sent again unencoded.
		again, ok, err := parseBasic("Basic "+base64.StdEncoding.EncodeToString([]byte(p.rawID+":"+p.rawSecret)), nil)
		if err != nil || !ok || again.rawID != p.rawID || again.rawSecret != p.rawSecret {
			t.Fatalf("raw round trip of %q: %+v %v %v", header, again, ok, err)
		}
		if !p.valid {
			return
		}
		// What was decoded must survive a round trip through the encoding
		// a conforming client uses.
		again, ok, err = parseBasic("Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.id)+":"+url.QueryEscape(p.secret))), nil)
		if err != nil || !ok || !again.valid || again.id != p.id || again.secret != p.secret {
			t.Fatalf("round trip of %q: %+v %v %v", header, again, ok, err)
		}
	})
}

func FuzzParseForm(f *testing.F) {
	f.Add([]byte("grant_type=client_credentials&client_id=app&client_secret=s"))
	f.Add([]byte("client_id=app&client_secret=&client%5Fsecret=s&x"))
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := parseForm(body)
		if err != nil {
			return
		}
		// keep drops every client_secret parameter, empty or not, and
		// leaves the others as they were sent, in order.
		var others []string
		params := formParams{body: body}
		for param, name, _, ok := params.param(); ok; param, name, _, ok = params.param() {
			if !isSecretParam(name) {
				others = append(others, string(param))
			}
		}
		if sent := len(others) < strings.Count(string(body), "&")+1; sent != form.sentSecret {
			t.Fatalf("%q: client_secret sent %v, parseForm says %v", body, sent, form.sentSecret)
		}
		cut := form.keep(body)
		if want := strings.Join(others, "&"); string(cut) != want {
			t.Fatalf("%q kept as %q, want %q", body, cut, want)
		}
		after, err := parseForm(cut)
		if err != nil {
			t.Fatalf("cutting the secret out of %q made it unparsable: %v", body, err)
		}
		if after.sentSecret || after.hasID != form.hasID || after.clientID != form.clientID {
			t.Fatalf("cutting the secret out of %q changed more than the secret: %q", body, cut)
		}
	})
}

// FuzzFormDecode: the decoder of credentials reads what the standard
// library's does, and refuses what it refuses.
func FuzzFormDecode(f *testing.F) {
	f.Add("legacy+secret%20%2B%zz")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := url.QueryUnescape(s)
		got, ok := formDecode(nil, s)
		if ok != (err == nil) || ok && string(got) != want {
			t.Fatalf("formDecode(%q) = %q, %v; url.QueryUnescape: %q, %v", s, got, ok, want, err)
		}
	})
}

func FuzzQuerySecret(f *testing.F) {
	f.Add("client_id=app&client_secret=s")
	f.Fuzz(func(t *testing.T, query string) {
		got := querySecret(query)
		values, err := url.ParseQuery(query)
		if err != nil {
			return // the standard parser gives up on any bad escape
		}
		want := false
		for _, v := range values["client_secret"] {
			want = want || v != ""
		}
		if got != want {
			t.Fatalf("querySecret(%q) = %v, the standard parser finds a secret: %v", query, got, want)
		}
	})
}

func TestIsForm(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/x-www-form-urlencoded":                true,
		"Application/X-WWW-Form-Urlencoded; charset=utf-8": true,
		"application/x-www-form-urlencodedx":               false,
		"application/json":                                 false,
		"":                                                 false,
	} {
		if isForm(ct) != want {
			t.Errorf("isForm(%q) = %v", ct, !want)
		}
	}
}
