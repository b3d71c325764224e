package controlplane

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// TestNetworksAPI: GET and PUT /v1/clients/{id}/networks, owners
// included; the client's JSON shows the networks; bad bodies are 400.
func TestNetworksAPI(t *testing.T) {
	e := newEnv(t)
	mustStatus(t, e.admin("POST", "/v1/clients", map[string]any{"client_id": "c", "owners": []string{"alice"}}), 201)
	var n networksJSON
	r := e.admin("GET", "/v1/clients/c/networks", nil)
	mustStatus(t, r, 200)
	if r.decode(t, &n); n.AllowedCIDRs == nil || len(n.AllowedCIDRs) != 0 || n.ReportOnly {
		t.Fatalf("a new client's networks: %s", r.body)
	}
	r = e.admin("PUT", "/v1/clients/c/networks", map[string]any{"allowed_cidrs": []string{"10.0.0.0/8", "192.0.2.7"}, "report_only": true})
	mustStatus(t, r, 200)
	if r.decode(t, &n); !slices.Equal(n.AllowedCIDRs, []string{"10.0.0.0/8", "192.0.2.7/32"}) || !n.ReportOnly {
		t.Fatalf("put: %s", r.body)
	}
	var c clientJSON
	r = e.admin("GET", "/v1/clients/c", nil)
	if r.decode(t, &c); !slices.Equal(c.AllowedCIDRs, n.AllowedCIDRs) || !c.NetworksReportOnly {
		t.Fatalf("the client shows %s", r.body)
	}
	for _, body := range []string{`{}`, `{"allowed_cidrs": "10.0.0.0/8"}`, `{"allowed_cidrs": ["10.0.0.1/8"]}`, `{"allowed_cidrs": [], "extra": 1}`, ``} {
		if r := e.admin("PUT", "/v1/clients/c/networks", body); r.status != 400 || !strings.Contains(string(r.body), "invalid_request") {
			t.Fatalf("PUT %s: %d %s", body, r.status, r.body)
		}
	}
	// The owner may read and set; a stranger gets 404, as for the client.
	mustStatus(t, e.doAs("alice", "PUT", "/v1/clients/c/networks", "", map[string]any{"allowed_cidrs": []string{}}), 200)
	mustStatus(t, e.doAs("alice", "GET", "/v1/clients/c/networks", "", nil), 200)
	mustStatus(t, e.doAs("bob", "GET", "/v1/clients/c/networks", "", nil), 404)
	mustStatus(t, e.doAs("bob", "PUT", "/v1/clients/c/networks", "", map[string]any{"allowed_cidrs": []string{}}), 404)
	mustStatus(t, e.admin("PUT", "/v1/clients/nobody/networks", map[string]any{"allowed_cidrs": []string{}}), 404)
	mustStatus(t, e.do("GET", "/v1/clients/c/networks", testEdgeToken, nil), 403)
	if r := e.admin("DELETE", "/v1/clients/c/networks", nil); r.status != 405 || r.header.Get("Allow") != "GET, HEAD, PUT" {
		t.Fatalf("DELETE: %d %q", r.status, r.header.Get("Allow"))
	}
}

// TestCallersAndSuggestAPI: the callers listing and the suggestion over
// HTTP, fed through the usage ingest as an edge would.
func TestCallersAndSuggestAPI(t *testing.T) {
	e := newEnv(t)
	mustStatus(t, e.admin("POST", "/v1/clients", map[string]any{"client_id": "c", "owners": []string{"alice"}}), 201)
	var old, next createdSecretJSON
	e.admin("POST", "/v1/clients/c/secrets", nil).decode(t, &old)
	now := e.clock.Now()
	usage := func(secretID string, callers ...wire.Caller) {
		t.Helper()
		mustStatus(t, e.do("POST", wire.UsagePath, testEdgeToken, wire.Usage{Edge: "t", Stamps: []wire.Stamp{},
			Callers: []wire.SecretCallers{{ClientID: "c", SecretID: secretID, IPs: callers}}}), 204)
	}
	usage(old.ID, wire.Caller{IP: "127.0.0.1", FirstAt: now.Add(-time.Hour), LastAt: now.Add(-time.Minute), Requests: 3},
		wire.Caller{IP: "127.0.0.2", FirstAt: now.Add(-time.Hour), LastAt: now, Requests: 2, Refused: 2})
	e.clock.Add(time.Second)
	e.admin("POST", "/v1/clients/c/secrets/rotate", map[string]string{"grace": "1h"}).decode(t, &next)
	usage(next.ID, wire.Caller{IP: "127.0.0.1", FirstAt: e.clock.Now(), LastAt: e.clock.Now(), Requests: 1})

	var list callersJSON
	r := e.doAs("alice", "GET", "/v1/clients/c/secrets/"+old.ID+"/callers", "", nil)
	mustStatus(t, r, 200)
	r.decode(t, &list)
	if list.SecretID != old.ID || list.NewestSecretID == nil || *list.NewestSecretID != next.ID || list.Window != "720h0m0s" || list.Unlisted != nil || len(list.Callers) != 2 {
		t.Fatalf("listing: %s", r.body)
	}
	first, second := list.Callers[0], list.Callers[1]
	if first.IP != "127.0.0.2" || first.Refused != 2 || *first.OnNewest || *first.Moved ||
		second.IP != "127.0.0.1" || second.Requests != 3 || !*second.OnNewest || !*second.Moved {
		t.Fatalf("callers: %s", r.body)
	}
	r = e.admin("GET", "/v1/clients/c/secrets/"+next.ID+"/callers", nil)
	var newest callersJSON
	if r.decode(t, &newest); len(newest.Callers) != 1 || newest.Callers[0].OnNewest != nil || strings.Contains(string(r.body), "moved") {
		t.Fatalf("the newest secret's listing: %s", r.body)
	}
	mustStatus(t, e.doAs("bob", "GET", "/v1/clients/c/secrets/"+old.ID+"/callers", "", nil), 404)
	mustStatus(t, e.admin("GET", "/v1/clients/c/secrets/sec_00000000000000000000/callers", nil), 404)
	mustStatus(t, e.admin("GET", "/v1/clients/c/secrets/nope/callers", nil), 400)

	var sug suggestionJSON
	r = e.doAs("alice", "POST", "/v1/clients/c/networks/suggest", "", nil)
	mustStatus(t, r, 200)
	if r.decode(t, &sug); !slices.Equal(sug.AllowedCIDRs, []string{"127.0.0.1/32", "127.0.0.2/32"}) || sug.Callers != 2 || sug.UnlistedRequests != 0 {
		t.Fatalf("suggestion: %s", r.body)
	}
	r = e.admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "30s"})
	if r.decode(t, &sug); !slices.Equal(sug.AllowedCIDRs, []string{"127.0.0.1/32", "127.0.0.2/32"}) {
		t.Fatalf("suggestion within 30s: %s", r.body) // 127.0.0.2 was last seen on the old secret 1s ago
	}
	e.clock.Add(time.Minute)
	r = e.admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "30s"})
	if r.decode(t, &sug); len(sug.AllowedCIDRs) != 0 || sug.AllowedCIDRs == nil {
		t.Fatalf("suggestion within 30s a minute later: %s", r.body)
	}
	mustStatus(t, e.admin("POST", "/v1/clients/c/networks/suggest", map[string]string{"within": "-1h"}), 400)
	// Nothing was saved.
	if c, _, _ := e.svc.GetClient(context.Background(), who, "c"); len(c.AllowedCIDRs) != 0 {
		t.Fatalf("the suggestion was saved: %v", c.AllowedCIDRs)
	}
}

// TestUsageBatchFromOlderEdge: the ingest takes the previous edge's batch
// (stamps only) and a batch with fields it does not know.
func TestUsageBatchFromOlderEdge(t *testing.T) {
	e := newEnv(t)
	e.mustClient("c")
	sec := e.mustGenerate("c").Secret.ID
	at := e.clock.Now().Add(-time.Second).Format(time.RFC3339Nano)
	body := `{"edge":"old/1","stamps":[{"client_id":"c","secret_id":"` + sec + `","last_used_at":"` + at + `","from":"192.0.2.1"}],"from_the_future":{"x":1}}`
	mustStatus(t, e.do(http.MethodPost, wire.UsagePath, testEdgeToken, body), 204)
	var list callersJSON
	e.admin("GET", "/v1/clients/c/secrets/"+sec+"/callers", nil).decode(t, &list)
	if len(list.Callers) != 1 || list.Callers[0].IP != "192.0.2.1" || list.Callers[0].Requests != 1 {
		t.Fatalf("an older edge's stamp as a caller: %+v", list)
	}
}
