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
		id, secret, ok, err := parseBasic(header)
		if err != nil || !ok {
			if id != "" || secret != "" {
				t.Fatal("credentials returned with a failure")
			}
			return
		}
		// What was read must survive a round trip through the encoding a
		// conforming client uses.
		again := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
		id2, secret2, ok2, err2 := parseBasic(again)
		if err2 != nil || !ok2 || id2 != id || secret2 != secret {
			t.Fatalf("round trip of %q: %q %q %v %v", header, id2, secret2, ok2, err2)
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
