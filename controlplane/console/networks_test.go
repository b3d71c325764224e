package console

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/internal/wire"
)

// TestConsoleCallersAndNetworks: an owner sees, per secret, its callers
// and whether each moved to the newest secret; Allow only these networks
// proposes the callers' networks in the form, report-only first, and
// saving them sets the client's networks; a stranger sees nothing and a
// forged form changes nothing.
func TestConsoleCallersAndNetworks(t *testing.T) {
	e, first := consoleEnv(t)
	ctx := context.Background()
	now := e.Clock.Now()
	caller := func(ip string, at time.Time, requests, refused int64) wire.Caller {
		return wire.Caller{IP: ip, FirstAt: at, LastAt: at, Requests: requests, Refused: refused}
	}
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Callers: []wire.SecretCallers{{ClientID: "app", SecretID: first.Secret.ID, OtherRequests: 5,
		IPs: []wire.Caller{caller("10.1.2.3", now.Add(-time.Hour), 41, 0), caller("10.1.2.2", now.Add(-time.Hour), 7, 2)}}}}); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(time.Second)
	second := e.MustGenerate("app")
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Callers: []wire.SecretCallers{{ClientID: "app", SecretID: second.Secret.ID,
		IPs: []wire.Caller{caller("10.1.2.3", e.Clock.Now(), 1, 0)}}}}); err != nil {
		t.Fatal(err)
	}

	olive := e.browser("olive")
	r := olive.get("/console/clients/app")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "Callers", "10.1.2.3", "10.1.2.2", "<td>41</td>", "other addresses", "<td>5</td>",
		"Moved to the newest secret", `<td class="moved">moved</td>`, `<td class="moved">not yet</td>`,
		"Allowed networks", "Calls are allowed from anywhere.", "Allow only these networks", `href="/console/clients/app/networks/suggest"`)

	r = olive.get("/console/clients/app/networks/suggest")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "cover exactly the 2 caller addresses", ">10.1.2.2/31</textarea>", `<option value="report_only" selected>`,
		"5 requests came from addresses the edges counted without listing them")
	if c, _, _ := e.Svc.GetClient(ctx, cptest.Who, "app"); len(c.AllowedCIDRs) != 0 {
		t.Fatal("showing the suggestion saved it")
	}
	r = olive.post("/console/clients/app/networks", url.Values{"networks": {"10.1.2.2/31\n192.0.2.7"}, "mode": {"report_only"}})
	if r.Status != 303 || r.Header.Get("Location") != "/console/clients/app?done=networks" {
		t.Fatalf("saving networks: %d %s", r.Status, r.Header.Get("Location"))
	}
	c, _, _ := e.Svc.GetClient(ctx, cptest.Who, "app")
	if !slices.Equal(c.AllowedCIDRs, []string{"10.1.2.2/31", "192.0.2.7/32"}) || !c.NetworksReportOnly {
		t.Fatalf("saved: %v report-only %v", c.AllowedCIDRs, c.NetworksReportOnly)
	}
	r = olive.get("/console/clients/app?done=networks")
	mustContain(t, r, "Allowed networks saved.", "report only", "10.1.2.2/31")

	// Bad input is a page that says so; nothing changes.
	r = olive.post("/console/clients/app/networks", url.Values{"networks": {"10.0.0.1/8"}, "mode": {"enforce"}})
	cptest.MustStatus(t, r, 400)
	mustContain(t, r, "host bits set")
	// A forged form, or a stranger, changes nothing.
	cptest.MustStatus(t, olive.post("/console/clients/app/networks", url.Values{"csrf": {"forged"}, "networks": {""}}), 403)
	mallory := e.browser("mallory")
	mallory.get("/console/")
	cptest.MustStatus(t, mallory.get("/console/clients/app/networks/suggest"), 404)
	cptest.MustStatus(t, mallory.post("/console/clients/app/networks", url.Values{"networks": {""}}), 404)
	if c, _, _ := e.Svc.GetClient(ctx, cptest.Who, "app"); len(c.AllowedCIDRs) != 2 {
		t.Fatalf("networks changed to %v", c.AllowedCIDRs)
	}
}
