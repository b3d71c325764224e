package integration

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// callersHalves runs a control plane (three active secrets allowed so
// that a rotation with grace leaves two older ones working) and an edge
// whose server trusts 127.0.0.1 as a proxy: a request from 127.0.0.1
// carrying X-Forwarded-For is from the forwarded address; from any other
// address the header is ignored.
func callersHalves(t *testing.T) halves {
	h := newHalves(t)
	h.Servers = "\t\ttrusted_proxies static 127.0.0.1/32\n"
	h.CPOptions = "\t\tmax_active_secrets 3\n"
	h.Budget = testBudget
	return h
}

// callerRow is one caller in GET …/callers.
type callerRow struct {
	IP       string `json:"ip"`
	Requests int64  `json:"requests"`
	Refused  int64  `json:"refused"`
	OnNewest *bool  `json:"on_newest"`
	Moved    *bool  `json:"moved"`
}

func (a adminAPI) callers(client, secretID string) map[string]callerRow {
	a.t.Helper()
	var out struct{ Callers []callerRow }
	a.must(a.call(http.MethodGet, "/v1/clients/"+client+"/secrets/"+secretID+"/callers", nil, &out))
	m := map[string]callerRow{}
	for _, c := range out.Callers {
		m[c.IP] = c
	}
	return m
}

// token asks the edge at edge for a token from the source address from, with
// Basic credentials and optionally an X-Forwarded-For header, and returns
// the status and the body.
func token(t *testing.T, edge, from, client, secret, forwardedFor string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, edge+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(client), url.QueryEscape(secret))
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	resp, err := clientFrom(from).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp.Header
}

// mustToken sends n requests that must each get a token.
func mustToken(t *testing.T, edge string, n int, from, client, secret string) {
	t.Helper()
	for range n {
		if status, body, _ := token(t, edge, from, client, secret, ""); status != 200 {
			t.Fatalf("from %s: %d %s", from, status, body)
		}
	}
}

// edgeKnows waits until the edge authenticates a probe client created
// after everything the test set up: its snapshot holds all of it then.
func edgeKnows(t *testing.T, edge string, api adminAPI, probe string) {
	t.Helper()
	api.createClient(probe)
	secret := api.generate(probe).Secret
	cptest.WaitFor(t, 5*time.Second, "the edge learns of the probe client", func() bool {
		status, _, _ := token(t, edge, "127.0.0.9", probe, secret, "")
		return status == 200
	})
}

// TestCallersAndAllowedNetworks is SPEC §13's "who uses a secret" and
// "allowed networks" end to end, in real Caddy: callers from three
// loopback addresses on two secrets appear with their counts after a
// flush; after a rotation the listing tells who moved; allowed_cidrs
// 127.0.0.1/32 refuses 127.0.0.2 with the wrong-secret 401, byte for
// byte, lets 127.0.0.1 through, and lists the refusal; report-only lets
// 127.0.0.2 through and still records it; the suggestion covers exactly
// the callers seen.
func TestCallersAndAllowedNetworks(t *testing.T) {
	h := callersHalves(t)
	api := h.start(t)
	edge := h.edgeURL()
	api.createClient("app")
	s1, s2 := api.generate("app"), api.generate("app")
	edgeKnows(t, edge, api, "probe-1")

	mustToken(t, edge, 3, "127.0.0.1", "app", s1.Secret)
	mustToken(t, edge, 2, "127.0.0.2", "app", s1.Secret)
	mustToken(t, edge, 4, "127.0.0.3", "app", s2.Secret)
	mustToken(t, edge, 1, "127.0.0.1", "app", s2.Secret)
	cptest.WaitFor(t, 5*time.Second, "callers listed after a flush", func() bool {
		c1, c2 := api.callers("app", s1.ID), api.callers("app", s2.ID)
		return len(c1) == 2 && c1["127.0.0.1"].Requests == 3 && c1["127.0.0.2"].Requests == 2 &&
			len(c2) == 2 && c2["127.0.0.3"].Requests == 4 && c2["127.0.0.1"].Requests == 1
	})

	// Rotate with a grace: 127.0.0.1 takes the new secret, 127.0.0.2 and
	// 127.0.0.3 do not (yet).
	var rotated secretInfo
	api.must(api.call(http.MethodPost, "/v1/clients/app/secrets/rotate", map[string]string{"grace": "1h"}, &rotated))
	edgeKnows(t, edge, api, "probe-2")
	mustToken(t, edge, 2, "127.0.0.1", "app", rotated.Secret)
	mustToken(t, edge, 1, "127.0.0.2", "app", s1.Secret)
	cptest.WaitFor(t, 5*time.Second, "the rotation's callers listed", func() bool {
		return api.callers("app", rotated.ID)["127.0.0.1"].Requests == 2 && api.callers("app", s1.ID)["127.0.0.2"].Requests == 3
	})
	c1 := api.callers("app", s1.ID)
	if one, two := c1["127.0.0.1"], c1["127.0.0.2"]; one.Moved == nil || !*one.Moved || two.Moved == nil || *two.Moved || *two.OnNewest {
		t.Fatalf("after the rotation, callers of the old secret: %+v", c1)
	}
	if c := api.callers("app", s2.ID)["127.0.0.3"]; c.Moved == nil || *c.Moved {
		t.Fatalf("127.0.0.3 never used the new secret: %+v", c)
	}

	// The suggestion covers exactly the callers seen: 127.0.0.1 alone,
	// and 127.0.0.2 with 127.0.0.3, which fill 127.0.0.2/31.
	var sug struct {
		AllowedCIDRs []string `json:"allowed_cidrs"`
		Callers      int      `json:"callers"`
	}
	api.must(api.call(http.MethodPost, "/v1/clients/app/networks/suggest", map[string]string{}, &sug))
	if !slices.Equal(sug.AllowedCIDRs, []string{"127.0.0.1/32", "127.0.0.2/31"}) || sug.Callers != 3 {
		t.Fatalf("suggestion %+v", sug)
	}

	// Enforce 127.0.0.1/32.
	_, wrongBody, wrongHeader := token(t, edge, "127.0.0.1", "app", rotated.Secret+"x", "")
	api.must(api.call(http.MethodPut, "/v1/clients/app/networks", map[string]any{"allowed_cidrs": []string{"127.0.0.1/32"}}, nil))
	var refusedBody []byte
	var refusedHeader http.Header
	cptest.WaitFor(t, 5*time.Second, "the edge enforces the allowed networks", func() bool {
		status, body, h := token(t, edge, "127.0.0.2", "app", s1.Secret, "")
		refusedBody, refusedHeader = body, h
		return status == 401
	})
	if !bytes.Equal(refusedBody, wrongBody) || refusedHeader.Get("WWW-Authenticate") != wrongHeader.Get("WWW-Authenticate") || refusedHeader.Get("WWW-Authenticate") == "" {
		t.Fatalf("refused for its network: %q %q; a wrong secret: %q %q", refusedBody, refusedHeader.Get("WWW-Authenticate"), wrongBody, wrongHeader.Get("WWW-Authenticate"))
	}
	mustToken(t, edge, 1, "127.0.0.1", "app", rotated.Secret)
	if status, _, _ := token(t, edge, "127.0.0.3", "app", s2.Secret, ""); status != 401 {
		t.Fatalf("127.0.0.3 outside the networks: %d", status)
	}
	var refusedBefore int64
	cptest.WaitFor(t, 5*time.Second, "the refusals listed", func() bool {
		refusedBefore = api.callers("app", s1.ID)["127.0.0.2"].Refused
		return refusedBefore >= 1 && api.callers("app", s2.ID)["127.0.0.3"].Refused == 1
	})

	// Report-only: 127.0.0.2 goes through, and is still recorded.
	api.must(api.call(http.MethodPut, "/v1/clients/app/networks", map[string]any{"allowed_cidrs": []string{"127.0.0.1/32"}, "report_only": true}, nil))
	cptest.WaitFor(t, 5*time.Second, "the edge lets report-only through", func() bool {
		status, _, _ := token(t, edge, "127.0.0.2", "app", s1.Secret, "")
		return status == 200
	})
	cptest.WaitFor(t, 5*time.Second, "the report-only pass recorded as refused", func() bool {
		return api.callers("app", s1.ID)["127.0.0.2"].Refused > refusedBefore
	})
	if from := api.secrets("app")[s1.ID].LastUsedFrom; from == nil || *from != "127.0.0.2" {
		t.Fatalf("a report-only pass is a use of the secret: last used from %v", from)
	}
}

// TestCallersBehindTrustedProxy: behind a trusted proxy the caller is the
// forwarded address, for the listing and for the network check; from an
// address that is no trusted proxy, X-Forwarded-For is ignored.
func TestCallersBehindTrustedProxy(t *testing.T) {
	h := callersHalves(t)
	api := h.start(t)
	edge := h.edgeURL()
	api.createClient("app")
	s := api.generate("app")
	edgeKnows(t, edge, api, "probe")

	for range 2 {
		if status, body, _ := token(t, edge, "127.0.0.1", "app", s.Secret, "203.0.113.7"); status != 200 {
			t.Fatalf("through the trusted proxy: %d %s", status, body)
		}
	}
	if status, body, _ := token(t, edge, "127.0.0.2", "app", s.Secret, "198.51.100.9"); status != 200 {
		t.Fatalf("forged X-Forwarded-For: %d %s", status, body)
	}
	cptest.WaitFor(t, 5*time.Second, "forwarded and direct callers listed", func() bool {
		c := api.callers("app", s.ID)
		return c["203.0.113.7"].Requests == 2 && c["127.0.0.2"].Requests == 1
	})
	if c := api.callers("app", s.ID); len(c) != 2 {
		t.Fatalf("callers %+v: want the forwarded address and the untrusted sender, not the proxy or the forged address", c)
	}

	// The network check sees the forwarded address too.
	api.must(api.call(http.MethodPut, "/v1/clients/app/networks", map[string]any{"allowed_cidrs": []string{"203.0.113.0/24"}}, nil))
	cptest.WaitFor(t, 5*time.Second, "the edge enforces 203.0.113.0/24", func() bool {
		status, _, _ := token(t, edge, "127.0.0.1", "app", s.Secret, "198.51.100.1")
		return status == 401
	})
	if status, _, _ := token(t, edge, "127.0.0.1", "app", s.Secret, "203.0.113.99"); status != 200 {
		t.Fatalf("forwarded from inside the network: %d", status)
	}
	if status, _, _ := token(t, edge, "127.0.0.2", "app", s.Secret, "203.0.113.99"); status != 401 {
		t.Fatalf("an untrusted sender claiming an address inside: %d", status)
	}
}
