package interoptest

import (
	"crypto"
	"crypto/elliptic"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/credkey"
	"github.com/rotagate/rotagate/internal/testkeys"
)

// tokenEndpoint is a stand-in for an edge in front of a token endpoint:
// private_key_jwt verified by clientassertion, a token on success, the
// edge's 401 otherwise.
func tokenEndpoint(t *testing.T, keys map[string][]clientassertion.Key) string {
	t.Helper()
	v, err := clientassertion.New(clientassertion.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var tokenURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		refuse := func(reason string) {
			t.Logf("refused: %s", reason)
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client"}`))
		}
		if err := r.ParseForm(); err != nil || r.PostForm.Get("client_assertion_type") != clientassertion.AssertionType {
			refuse("no client assertion")
			return
		}
		a, err := v.Parse(r.PostForm.Get("client_assertion"), r.PostForm.Get("client_id"), []string{tokenURL}, time.Now())
		if err != nil {
			refuse(err.(clientassertion.Reason).String())
			return
		}
		got, err := v.Verify(a, keys[a.ClientID()], time.Now())
		if err != nil {
			refuse(err.(clientassertion.Reason).String())
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + got.CredentialID, "token_type": "Bearer", "expires_in": 60})
	}))
	t.Cleanup(srv.Close)
	tokenURL = srv.URL + "/oauth/token"
	return tokenURL
}

func register(t *testing.T, id string, pub crypto.PublicKey, kid string) clientassertion.Key {
	t.Helper()
	k, err := credkey.ParseJWK(testkeys.JWK(t, jose.JSONWebKey{Key: pub, KeyID: kid}))
	if err != nil {
		t.Fatal(err)
	}
	return clientassertion.Key{CredentialID: id, Key: k}
}

type clientCase struct {
	name   string
	client Client
	want   Result
}

func clientCases(t *testing.T) ([]clientCase, map[string][]clientassertion.Key) {
	ec := testkeys.ECDSA(t, elliptic.P256(), "")
	rs := testkeys.RSA(t, 2048, "")
	ed := testkeys.Ed25519(t, "")
	keys := map[string][]clientassertion.Key{
		"cli_ec":  {register(t, "sec_ec", &ec.PublicKey, "ec-1")},
		"cli_rsa": {register(t, "sec_rsa", &rs.PublicKey, "")},
		"cli_ed":  {register(t, "sec_ed", ed.Public(), "")},
	}
	ok := func(id string) Result { return Result{Status: 200, AccessToken: "at-" + id} }
	refused := Result{Status: 401, Error: "invalid_client"}
	return []clientCase{
		{"ES256 with kid", Client{ClientID: "cli_ec", Key: ec, Alg: "ES256", KeyID: "ec-1"}, ok("sec_ec")},
		{"RS256", Client{ClientID: "cli_rsa", Key: rs, Alg: "RS256"}, ok("sec_rsa")},
		{"PS256", Client{ClientID: "cli_rsa", Key: rs, Alg: "PS256"}, ok("sec_rsa")},
		// openid-client names it "Ed25519" (RFC 9864) whatever Alg says.
		{"EdDSA", Client{ClientID: "cli_ed", Key: ed, Alg: "EdDSA"}, ok("sec_ed")},
		{"unknown client", Client{ClientID: "cli_nobody", Key: ec, Alg: "ES256"}, refused},
		{"another client's key", Client{ClientID: "cli_rsa", Key: ec, Alg: "ES256"}, refused},
	}, keys
}

// library is a client library the tests drive: run authenticates a client
// through it, and quirk is a default of its own that rotagate refuses, set
// on a client by setQuirk.
type library struct {
	name     string
	run      func(testing.TB, Client) Result
	quirk    string
	setQuirk func(*Client)
}

var libraries = []library{
	// oauth4webapi puts the issuer, not the token endpoint, in aud: an
	// edge whose audience is only the token endpoint URL refuses it.
	{"openid-client", OpenIDClient, "issuer as audience", func(c *Client) { c.Issuer = "https://issuer.example.com" }},
	// authlib's own assertion lifetime (an hour) is over the 5 minutes
	// rotagate accepts.
	{"authlib", Authlib, "authlib's default lifetime", func(c *Client) { c.ExpiresIn = -1 }},
}

// TestLibraries runs every client case through each library, then the
// library's quirk, which must be refused.
func TestLibraries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node, which may install openid-client from npm, and python3 with authlib")
	}
	cases, keys := clientCases(t)
	tokenURL := tokenEndpoint(t, keys)
	for _, lib := range libraries {
		t.Run(lib.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					c.client.TokenURL = tokenURL
					if got := lib.run(t, c.client); got != c.want {
						t.Fatalf("%s got %+v, want %+v", lib.name, got, c.want)
					}
				})
			}
			t.Run(lib.quirk, func(t *testing.T) {
				c := cases[0].client
				c.TokenURL = tokenURL
				lib.setQuirk(&c)
				if got := lib.run(t, c); got.Status != 401 {
					t.Fatalf("%s: %s accepted: %+v", lib.name, lib.quirk, got)
				}
			})
		})
	}
}
