package interoptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/credkey"
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
	raw, err := jose.JSONWebKey{Key: pub, KeyID: kid}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	k, err := credkey.ParseJWK(raw)
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
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
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

func TestOpenIDClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node and may install openid-client from npm")
	}
	cases, keys := clientCases(t)
	tokenURL := tokenEndpoint(t, keys)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.client.TokenURL = tokenURL
			if got := OpenIDClient(t, c.client); got != c.want {
				t.Fatalf("openid-client got %+v, want %+v", got, c.want)
			}
		})
	}
	// oauth4webapi puts the issuer, not the token endpoint, in aud: an
	// edge whose audience is only the token endpoint URL refuses it.
	t.Run("issuer as audience", func(t *testing.T) {
		c := cases[0].client
		c.TokenURL, c.Issuer = tokenURL, "https://issuer.example.com"
		if got := OpenIDClient(t, c); got.Status != 401 {
			t.Fatalf("aud = issuer accepted: %+v", got)
		}
	})
}

func TestAuthlib(t *testing.T) {
	if testing.Short() {
		t.Skip("runs python3 with authlib")
	}
	cases, keys := clientCases(t)
	tokenURL := tokenEndpoint(t, keys)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.client.TokenURL = tokenURL
			if got := Authlib(t, c.client); got != c.want {
				t.Fatalf("authlib got %+v, want %+v", got, c.want)
			}
		})
	}
	// authlib's own assertion lifetime (an hour) is over the 5 minutes
	// rotagate accepts.
	t.Run("authlib's default lifetime", func(t *testing.T) {
		c := cases[0].client
		c.TokenURL, c.ExpiresIn = tokenURL, -1
		if got := Authlib(t, c); got.Status != 401 {
			t.Fatalf("an hour-long assertion accepted: %+v", got)
		}
	})
}
