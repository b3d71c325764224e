package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Tokens of the control planes the tests run. They are test values.
const (
	adminToken = "admin-token-for-tests"
	edgeToken  = "edge-token-for-tests"
)

// adminAPI talks to a control plane's management API as an operator would.
type adminAPI struct {
	t    *testing.T
	base string
}

type secretInfo struct {
	ID           string     `json:"id"`
	Secret       string     `json:"secret"`
	Status       string     `json:"status"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	LastUsedFrom *string    `json:"last_used_from"`
	// PresentedAfterRevoke counts the times the secret was presented
	// after its revocation; PresentedAfterRevokeFrom is the address of
	// the last of them.
	PresentedAfterRevoke     int64   `json:"presented_after_revoke_count"`
	PresentedAfterRevokeFrom *string `json:"last_presented_after_revoke_from"`
}

func (a adminAPI) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (a adminAPI) must(err error) {
	a.t.Helper()
	if err != nil {
		a.t.Fatal(err)
	}
}

func (a adminAPI) createClient(id string) {
	a.t.Helper()
	a.must(a.call(http.MethodPost, "/v1/clients", map[string]string{"client_id": id}, nil))
}

func (a adminAPI) generate(client string) secretInfo {
	a.t.Helper()
	var s secretInfo
	a.must(a.call(http.MethodPost, "/v1/clients/"+client+"/secrets", map[string]string{}, &s))
	return s
}

func (a adminAPI) revoke(client, secretID string) {
	a.t.Helper()
	a.must(a.call(http.MethodDelete, "/v1/clients/"+client+"/secrets/"+secretID, nil, nil))
}

func (a adminAPI) secrets(client string) map[string]secretInfo {
	a.t.Helper()
	var out struct{ Secrets []secretInfo }
	a.must(a.call(http.MethodGet, "/v1/clients/"+client+"/secrets", nil, &out))
	m := map[string]secretInfo{}
	for _, s := range out.Secrets {
		m[s.ID] = s
	}
	return m
}

// fetchToken asks the edge's token endpoint for a token with the real
// oauth2 client-credentials client.
func fetchToken(ctx context.Context, edge, client, secret string, style oauth2.AuthStyle) error {
	cfg := clientcredentials.Config{ClientID: client, ClientSecret: secret, TokenURL: edge + "/token", AuthStyle: style}
	_, err := cfg.Token(ctx)
	return err
}

// refused reports whether err is the edge's 401 invalid_client.
func refused(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response.StatusCode == http.StatusUnauthorized && re.ErrorCode == "invalid_client"
}
