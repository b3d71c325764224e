package rotagate

import (
	"encoding/base64"
	"net/url"
	"testing"
)

// The seed corpus lives in testdata/fuzz/<target>; `go test` runs it, and
// `go test -fuzz=FuzzParseBasic` (or FuzzParseForm) explores further.

func FuzzParseBasic(f *testing.F) {
	f.Add("Basic " + base64.StdEncoding.EncodeToString([]byte("app:secret")))
	f.Fuzz(func(t *testing.T, header string) {
		p, ok, err := parseBasic(header)
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
		again, ok, err := parseBasic("Basic " + base64.StdEncoding.EncodeToString([]byte(p.rawID+":"+p.rawSecret)))
		if err != nil || !ok || again.rawID != p.rawID || again.rawSecret != p.rawSecret {
			t.Fatalf("raw round trip of %q: %+v %v %v", header, again, ok, err)
		}
		if !p.valid {
			return
		}
		// What was decoded must survive a round trip through the encoding
		// a conforming client uses.
		again, ok, err = parseBasic("Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.id)+":"+url.QueryEscape(p.secret))))
		if err != nil || !ok || !again.valid || again.id != p.id || again.secret != p.secret {
			t.Fatalf("round trip of %q: %+v %v %v", header, again, ok, err)
		}
	})
}

func FuzzParseForm(f *testing.F) {
	f.Add([]byte("grant_type=client_credentials&client_id=app&client_secret=s"))
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := parseForm(body)
		if err != nil || !form.hasSecret {
			return
		}
		if form.secretStart < 0 || form.secretEnd > len(body) || form.secretStart >= form.secretEnd {
			t.Fatalf("bad secret span [%d,%d) in %d bytes", form.secretStart, form.secretEnd, len(body))
		}
		cut := append(append([]byte{}, body[:form.secretStart]...), body[form.secretEnd:]...)
		after, err := parseForm(cut)
		if err != nil {
			t.Fatalf("cutting the secret out of %q made it unparsable: %v", body, err)
		}
		if after.hasSecret || after.hasID != form.hasID || after.clientID != form.clientID {
			t.Fatalf("cutting the secret out of %q changed more than the secret: %q", body, cut)
		}
		if want := len(body) - (form.secretEnd - form.secretStart); len(cut) != want {
			t.Fatalf("cut length %d, want %d", len(cut), want)
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
