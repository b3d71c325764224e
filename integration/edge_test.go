package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

const (
	edgeSecret1 = "rgs_integrationFirstSecret000000000000000000000000000"
	edgeSecret2 = "rgs_integrationSecondSecret00000000000000000000000000"
)

// tokenUpstream is the legacy backend behind the edge: it hands out a token
// to whoever reaches it and remembers what it was sent.
type tokenUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // headers and bodies, for leak checks
	ids  []string // X-Client-Id as the edge set it
}

func newTokenUpstream(t *testing.T) *tokenUpstream {
	u := &tokenUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen = append(u.seen, string(body), r.Header.Get("Authorization"))
		u.ids = append(u.ids, r.Header.Get("X-Client-Id"))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + r.Header.Get("X-Client-Id"), "token_type": "bearer", "expires_in": 60})
	}))
	t.Cleanup(u.Close)
	return u
}

func TestEdgeInFrontOfUpstream(t *testing.T) {
	feed := feedtest.New(t, wire.Snapshot{Epoch: "e1", Revision: 1, Clients: []wire.Client{
		{ClientID: "billing", Secrets: []wire.Secret{
			{ID: "sec_one", Hash: secrethash.NewSHA256(edgeSecret1)},
			{ID: "sec_two", Hash: secrethash.NewSHA256(edgeSecret2)},
		}},
	}})
	up := newTokenUpstream(t)
	edge := startSite(t, `
	client_credentials {
		control_plane `+feed.URL+` {
			token `+feedtest.Token+`
		}
		revocation_delay 3s
	}
	request_header X-Client-Id {http.auth.client_id}
	reverse_proxy `+upstreamAddr(up.URL)+`
`)
	ctx := context.Background()
	token := func(secret string, style oauth2.AuthStyle) (*oauth2.Token, error) {
		cfg := clientcredentials.Config{ClientID: "billing", ClientSecret: secret, TokenURL: edge + "/token", AuthStyle: style}
		return cfg.Token(ctx)
	}
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		tok, err := token(edgeSecret1, style)
		if err != nil || tok.AccessToken != "tok-billing" {
			t.Fatalf("style %d: token %v, err %v", style, tok, err)
		}
		_, err = token(edgeSecret1+"x", style)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != 401 || re.ErrorCode != "invalid_client" {
			t.Fatalf("style %d: wrong secret answered %v", style, err)
		}
	}
	up.mu.Lock()
	for _, s := range up.seen {
		if strings.Contains(s, edgeSecret1) || strings.HasPrefix(s, "Basic") {
			t.Fatalf("the upstream received credentials: %q", s)
		}
	}
	if len(up.ids) != 2 || up.ids[0] != "billing" || up.ids[1] != "billing" {
		t.Fatalf("upstream saw X-Client-Id %v", up.ids)
	}
	up.mu.Unlock()

	// Revoke the first secret on the feed: the edge refuses it well within
	// the revocation delay, while the second keeps working.
	revoked := time.Now()
	feed.Update(func(s *wire.Snapshot) {
		s.Revision = 2
		s.Clients[0].Secrets = s.Clients[0].Secrets[1:]
	})
	deadline := revoked.Add(3 * time.Second)
	for {
		_, err := token(edgeSecret1, oauth2.AuthStyleInHeader)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the revoked secret still works after revocation_delay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revoked secret refused %v after the feed changed", time.Since(revoked))
	if _, err := token(edgeSecret2, oauth2.AuthStyleInParams); err != nil {
		t.Fatalf("the remaining secret: %v", err)
	}
}
