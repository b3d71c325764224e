package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/internal/wire"
)

// TestNetworksAPI: GET and PUT /v1/clients/{id}/networks, owners
// included; the client's JSON shows the networks; bad bodies are 400.
func TestNetworksAPI(t *testing.T) {
	e := newEnv(t)
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients", map[string]any{"client_id": "c", "owners": []string{"alice"}}), 201)
	var n Networks
	r := e.Admin("GET", "/v1/clients/c/networks", nil)
	cptest.MustStatus(t, r, 200)
	if r.Decode(t, &n); n.AllowedCIDRs == nil || len(n.AllowedCIDRs) != 0 || n.ReportOnly {
		t.Fatalf("a new client's networks: %s", r.Body)
	}
	r = e.Admin("PUT", "/v1/clients/c/networks", map[string]any{"allowed_cidrs": []string{"10.0.0.0/8", "192.0.2.7"}, "report_only": true})
	cptest.MustStatus(t, r, 200)
	if r.Decode(t, &n); !slices.Equal(n.AllowedCIDRs, []string{"10.0.0.0/8", "192.0.2.7/32"}) || !n.ReportOnly {
		t.Fatalf("put: %s", r.Body)
	}
	var c Client
	r = e.Admin("GET", "/v1/clients/c", nil)
	if r.Decode(t, &c); !slices.Equal(c.AllowedCIDRs, n.AllowedCIDRs) || !c.NetworksReportOnly {
		t.Fatalf("the client shows %s", r.Body)
	}
	for _, body := range []string{`{}`, `{"allowed_cidrs": "10.0.0.0/8"}`, `{"allowed_cidrs": ["10.0.0.1/8"]}`, `{"allowed_cidrs": [], "extra": 1}`, ``} {
		if r := e.Admin("PUT", "/v1/clients/c/networks", body); r.Status != 400 || !strings.Contains(string(r.Body), "invalid_request") {
			t.Fatalf("PUT %s: %d %s", body, r.Status, r.Body)
		}
	}
	// The owner may read and set; a stranger gets 404, as for the client.
	cptest.MustStatus(t, e.DoAs("alice", "PUT", "/v1/clients/c/networks", "", map[string]any{"allowed_cidrs": []string{}}), 200)
	cptest.MustStatus(t, e.DoAs("alice", "GET", "/v1/clients/c/networks", "", nil), 200)
	cptest.MustStatus(t, e.DoAs("bob", "GET", "/v1/clients/c/networks", "", nil), 404)
	cptest.MustStatus(t, e.DoAs("bob", "PUT", "/v1/clients/c/networks", "", map[string]any{"allowed_cidrs": []string{}}), 404)
	cptest.MustStatus(t, e.Admin("PUT", "/v1/clients/nobody/networks", map[string]any{"allowed_cidrs": []string{}}), 404)
	cptest.MustStatus(t, e.Do("GET", "/v1/clients/c/networks", cptest.EdgeToken, nil), 403)
	if r := e.Admin("DELETE", "/v1/clients/c/networks", nil); r.Status != 405 || r.Header.Get("Allow") != "GET, HEAD, PUT" {
		t.Fatalf("DELETE: %d %q", r.Status, r.Header.Get("Allow"))
	}
}

// TestCallersAndSuggestAPI: the callers listing and the suggestion over
// HTTP, fed through the usage ingest as an edge would.
func TestCallersAndSuggestAPI(t *testing.T) {
	e := newEnv(t)
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients", map[string]any{"client_id": "c", "owners": []string{"alice"}}), 201)
	var old, next CreatedSecret
	e.Admin("POST", "/v1/clients/c/secrets", nil).Decode(t, &old)
	now := e.Clock.Now()
	usage := func(secretID string, callers ...wire.Caller) {
		t.Helper()
		cptest.MustStatus(t, e.Do("POST", wire.UsagePath, cptest.EdgeToken, wire.Usage{Edge: "t", Stamps: []wire.Stamp{},
			Callers: []wire.SecretCallers{{ClientID: "c", SecretID: secretID, IPs: callers}}}), 204)
	}
	usage(old.ID, wire.Caller{IP: "127.0.0.1", FirstAt: now.Add(-time.Hour), LastAt: now.Add(-time.Minute), Requests: 3},
		wire.Caller{IP: "127.0.0.2", FirstAt: now.Add(-time.Hour), LastAt: now, Requests: 2, Refused: 2})
	e.Clock.Add(time.Second)
	e.Admin("POST", "/v1/clients/c/secrets/rotate", map[string]string{"grace": "1h"}).Decode(t, &next)
	usage(next.ID, wire.Caller{IP: "127.0.0.1", FirstAt: e.Clock.Now(), LastAt: e.Clock.Now(), Requests: 1})

	var list Callers
	r := e.DoAs("alice", "GET", "/v1/clients/c/secrets/"+old.ID+"/callers", "", nil)
	cptest.MustStatus(t, r, 200)
	r.Decode(t, &list)
	if list.SecretID != old.ID || list.NewestSecretID == nil || *list.NewestSecretID != next.ID || list.Window != "720h0m0s" || list.Unlisted != nil || len(list.Callers) != 2 {
		t.Fatalf("listing: %s", r.Body)
	}
	first, second := list.Callers[0], list.Callers[1]
	if first.IP != "127.0.0.2" || first.Refused != 2 || *first.OnNewest || *first.Moved ||
		second.IP != "127.0.0.1" || second.Requests != 3 || !*second.OnNewest || !*second.Moved {
		t.Fatalf("callers: %s", r.Body)
	}
	r = e.Admin("GET", "/v1/clients/c/secrets/"+next.ID+"/callers", nil)
	var newest Callers
	if r.Decode(t, &newest); len(newest.Callers) != 1 || newest.Callers[0].OnNewest != nil || strings.Contains(string(r.Body), "moved") {
		t.Fatalf("the newest secret's listing: %s", r.Body)
	}
	cptest.MustStatus(t, e.DoAs("bob", "GET", "/v1/clients/c/secrets/"+old.ID+"/callers", "", nil), 404)
	cptest.MustStatus(t, e.Admin("GET", "/v1/clients/c/secrets/sec_00000000000000000000/callers", nil), 404)
	cptest.MustStatus(t, e.Admin("GET", "/v1/clients/c/secrets/nope/callers", nil), 400)

	var sug Suggestion
	r = e.DoAs("alice", "POST", "/v1/clients/c/networks/suggest", "", nil)
	cptest.MustStatus(t, r, 200)
	if r.Decode(t, &sug); !slices.Equal(sug.AllowedCIDRs, []string{"127.0.0.1/32", "127.0.0.2/32"}) || sug.Callers != 2 || sug.UnlistedRequests != 0 {
		t.Fatalf("suggestion: %s", r.Body)
	}
	r = e.Admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "30s"})
	if r.Decode(t, &sug); !slices.Equal(sug.AllowedCIDRs, []string{"127.0.0.1/32", "127.0.0.2/32"}) {
		t.Fatalf("suggestion within 30s: %s", r.Body) // 127.0.0.2 was last seen on the old secret 1s ago
	}
	e.Clock.Add(time.Minute)
	r = e.Admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "30s"})
	if r.Decode(t, &sug); len(sug.AllowedCIDRs) != 0 || sug.AllowedCIDRs == nil {
		t.Fatalf("suggestion within 30s a minute later: %s", r.Body)
	}
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "-1h"}), 400)
	// Nothing was saved.
	if c, _, _ := e.Svc.GetClient(context.Background(), cptest.Who, "c"); len(c.AllowedCIDRs) != 0 {
		t.Fatalf("the suggestion was saved: %v", c.AllowedCIDRs)
	}
}

// TestUsageBatchFromOlderEdge: the ingest takes the previous edge's batch
// (stamps only) and a batch with fields it does not know.
func TestUsageBatchFromOlderEdge(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	sec := e.MustGenerate("c").Secret.ID
	at := e.Clock.Now().Add(-time.Second).Format(time.RFC3339Nano)
	body := `{"edge":"old/1","stamps":[{"client_id":"c","secret_id":"` + sec + `","last_used_at":"` + at + `","from":"192.0.2.1"}],"from_the_future":{"x":1}}`
	cptest.MustStatus(t, e.Do(http.MethodPost, wire.UsagePath, cptest.EdgeToken, body), 204)
	var list Callers
	e.Admin("GET", "/v1/clients/c/secrets/"+sec+"/callers", nil).Decode(t, &list)
	if len(list.Callers) != 1 || list.Callers[0].IP != "192.0.2.1" || list.Callers[0].Requests != 1 {
		t.Fatalf("an older edge's stamp as a caller: %+v", list)
	}
}
