package rotagate

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotagate/rotagate/internal/wire"
)

func TestNetworksMatch(t *testing.T) {
	nets, err := parseNetworks([]string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "198.51.100.9/24"})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{networks: nets}
	for ip, want := range map[string]bool{
		"10.1.2.3":                true,
		"11.0.0.0":                false,
		"192.0.2.7":               true,
		"192.0.2.8":               false,
		"198.51.100.200":          true, // the host bits of 198.51.100.9/24 are masked
		"2001:db8:1::5":           true,
		"2001:db9::1":             false,
		"::ffff:10.9.9.9":         true, // IPv4-mapped: its IPv4 address counts
		"2001:db8::1%eth0":        true, // a zone is ignored
		"fe80::1%eth0":            false,
		"":                        false, // no client IP: outside
		"not an address":          false,
		"::ffff:192.0.2.8":        false,
		"2001:0db8:0000::0000:01": true,
	} {
		if got := c.allows(ip); got != want {
			t.Errorf("allows(%q) = %v, want %v", ip, got, want)
		}
	}
	if !(&client{}).allows("203.0.113.1") || !(&client{}).allows("") {
		t.Error("a client without networks must allow anywhere")
	}
	for _, bad := range [][]string{{"10.0.0.0"}, {"10.0.0.0/33"}, {"2001:db8::/129"}, {"example.com/8"}, {""}} {
		if _, err := parseNetworks(bad); err == nil {
			t.Errorf("parseNetworks(%q) accepted", bad)
		}
	}
	if _, err := newSnapshot(&wire.Snapshot{Epoch: "e", Clients: []wire.Client{{ClientID: "a", AllowedCIDRs: []string{"10/8"}}}}); err == nil {
		t.Error("a snapshot with a bad allowed network was accepted")
	}
}

// withNetworks swaps in the test snapshot with app's allowed networks set.
func withNetworks(t *testing.T, h *Handler, reportOnly bool, cidrs ...string) {
	t.Helper()
	w := testSnapshot(t)
	w.Clients[0].AllowedCIDRs, w.Clients[0].NetworksReportOnly = cidrs, reportOnly
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
}

// TestNetworkRefused: a caller outside the client's allowed networks gets
// exactly the 401 of a wrong secret, counted as network_refused, spends
// its failure budget, and is recorded among the secret's callers (with no
// last-used stamp); one inside goes through.
func TestNetworkRefused(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	withNetworks(t, h, false, "192.0.2.0/31", "2001:db8::/48")
	from := func(ip string, secret string) *httptestResult {
		r := basicRequest("app", secret)
		r.RemoteAddr = netip.AddrPortFrom(netip.MustParseAddr(ip), 4711).String()
		w, up := serve(t, h, r)
		return &httptestResult{code: w.Code, body: w.Body.String(), challenge: w.Header().Get("WWW-Authenticate"), called: up.called}
	}
	refused := edgeMetrics.authBy[outcomeNetworkRefused]
	before := testutil.ToFloat64(refused)

	wrong := from("192.0.2.1", appSecret+"x")
	outside := from("192.0.2.2", appSecret)
	if outside.code != 401 || outside.called || outside.body != wrong.body || outside.challenge != wrong.challenge {
		t.Fatalf("outside: %+v; a wrong secret: %+v", outside, wrong)
	}
	if got := testutil.ToFloat64(refused) - before; got != 1 {
		t.Fatalf("network_refused counted %v times, want 1", got)
	}
	for _, ip := range []string{"192.0.2.1", "192.0.2.0", "2001:db8:0:ffff::1"} {
		if in := from(ip, appSecret); in.code != 200 || !in.called {
			t.Fatalf("from %s inside: %+v", ip, in)
		}
	}
	su := h.feed.usage.pending["sec_app1"]
	if c := su.callers["192.0.2.2"]; c == nil || c.requests != 1 || c.refused != 1 {
		t.Fatalf("the refusal is not among the callers: %+v", su.callers)
	}
	if su.lastFrom == "192.0.2.2" {
		t.Fatal("a refused request became the last use")
	}

	// Each refusal spends budget like a wrong secret: the 21st in a
	// minute from that address is throttled (20 per 1m, one spent).
	for i := range 19 {
		if got := from("192.0.2.2", appSecret); got.code != 401 {
			t.Fatalf("refusal %d: %d", i+2, got.code)
		}
	}
	if got := from("192.0.2.2", appSecret); got.code != 429 {
		t.Fatalf("after 21 refusals: %d, want 429", got.code)
	}
}

type httptestResult struct {
	code            int
	body, challenge string
	called          bool
}

// TestNetworkReportOnly: in report-only mode a caller from outside goes
// through, counted as network_report_only, its use both a last-used stamp
// and a refusal among the callers, and no budget spent.
func TestNetworkReportOnly(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	withNetworks(t, h, true, "10.0.0.0/8")
	reported := edgeMetrics.authBy[outcomeNetworkReported]
	before := testutil.ToFloat64(reported)
	for range 30 {
		r := basicRequest("app", appSecret)
		r.RemoteAddr = "192.0.2.9:4711"
		if w, up := serve(t, h, r); w.Code != 200 || !up.called {
			t.Fatalf("report-only: %d", w.Code)
		}
	}
	if got := testutil.ToFloat64(reported) - before; got != 30 {
		t.Fatalf("network_report_only counted %v times, want 30", got)
	}
	su := h.feed.usage.pending["sec_app1"]
	if c := su.callers["192.0.2.9"]; c == nil || c.requests != 30 || c.refused != 30 || su.lastFrom != "192.0.2.9" {
		t.Fatalf("report-only use: %+v last from %q", su.callers, su.lastFrom)
	}
}

// TestNetworksFollowChanges: a client whose networks alone changed is
// rebuilt from a full answer (not reused from the snapshot held), a change
// answer carries them too, and the disk copy keeps them.
func TestNetworksFollowChanges(t *testing.T) {
	w := testSnapshot(t)
	held, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	w.Clients[0].AllowedCIDRs, w.Clients[0].NetworksReportOnly = []string{"10.0.0.0/8"}, true
	b := newSnapshotBuilder(held)
	var rc rawClient
	for i := range w.Clients {
		rc.setWire(&w.Clients[i])
		if err := b.add(&rc); err != nil {
			t.Fatal(err)
		}
	}
	next, err := b.finish(w.Epoch, w.Revision+1)
	if err != nil {
		t.Fatal(err)
	}
	app := next.client("app")
	if app == held.client("app") || app.allows("192.0.2.1") || !app.allows("10.1.1.1") || !app.reportOnly {
		t.Fatalf("networks of a full answer not applied: %+v", app)
	}
	if next.client("legacy-bcrypt") != held.client("legacy-bcrypt") {
		t.Fatal("an unchanged client was rebuilt")
	}
	if wc := app.wire(); !slices.Equal(wc.AllowedCIDRs, []string{"10.0.0.0/8"}) || !wc.NetworksReportOnly {
		t.Fatalf("the disk copy of the client: %+v", wc)
	}
	d, err := newDelta(&wire.Delta{Epoch: w.Epoch, Since: w.Revision + 1, Revision: w.Revision + 2,
		Changed: []wire.Client{{ClientID: "app", Secrets: w.Clients[0].Secrets}}})
	if err != nil {
		t.Fatal(err)
	}
	after, err := next.apply(d)
	if err != nil {
		t.Fatal(err)
	}
	if !after.client("app").allows("192.0.2.1") {
		t.Fatal("a change that clears the networks was not applied")
	}
}
