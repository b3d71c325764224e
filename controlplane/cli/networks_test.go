package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

func TestCLINetworks(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "acme")
	out, errOut := c.mustRun("client", "networks", "acme")
	if out != "" || !strings.Contains(errOut, "may call from anywhere") {
		t.Fatalf("no networks: %q / %q", out, errOut)
	}
	out, errOut = c.mustRun("client", "networks", "acme", "--set", "10.0.0.0/8,2001:db8::/32", "--report-only")
	if out != "10.0.0.0/8\n2001:db8::/32\n" || !strings.Contains(errOut, "2 networks (report only") {
		t.Fatalf("set: %q / %q", out, errOut)
	}
	// A mode flag alone keeps the networks; --set alone keeps the mode.
	if _, errOut = c.mustRun("client", "networks", "acme", "--enforce"); !strings.Contains(errOut, "2 networks (enforced)") {
		t.Fatalf("enforce: %q", errOut)
	}
	if out, errOut = c.mustRun("client", "networks", "acme", "--set", "192.0.2.1"); out != "192.0.2.1/32\n" || !strings.Contains(errOut, "(enforced)") {
		t.Fatalf("set again: %q / %q", out, errOut)
	}
	if out, _ = c.mustRun("client", "show", "acme"); !strings.Contains(out, "networks:  192.0.2.1/32\n") {
		t.Fatalf("show:\n%s", out)
	}
	if out, errOut = c.mustRun("client", "networks", "acme", "--clear"); out != "" || !strings.Contains(errOut, "anywhere") {
		t.Fatalf("clear: %q / %q", out, errOut)
	}
	for _, bad := range [][]string{
		{"--set", "10.0.0.1/8"},
		{"--set", "10.0.0.0/8", "--clear"},
		{"--report-only", "--enforce"},
		{"--suggest", "--clear"},
		{"--within", "1h"},
	} {
		if _, _, err := c.run(append([]string{"client", "networks", "acme"}, bad...)...); err == nil {
			t.Errorf("client networks %v succeeded", bad)
		}
	}
}

func TestCLICallersAndSuggest(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "acme")
	ctx := context.Background()
	old := c.MustGenerate("acme").Secret.ID
	now := c.Clock.Now()
	if _, err := c.Svc.ApplyUsage(ctx, wire.Usage{Callers: []wire.SecretCallers{{ClientID: "acme", SecretID: old, OtherRequests: 7, IPs: []wire.Caller{
		{IP: "192.0.2.1", FirstAt: now.Add(-time.Hour), LastAt: now.Add(-time.Minute), Requests: 12},
		{IP: "192.0.2.0", FirstAt: now.Add(-time.Hour), LastAt: now.Add(-time.Minute), Requests: 3, Refused: 3},
	}}}}); err != nil {
		t.Fatal(err)
	}
	c.Clock.Add(time.Second)
	next := c.MustGenerate("acme").Secret.ID
	if _, err := c.Svc.ApplyUsage(ctx, wire.Usage{Callers: []wire.SecretCallers{{ClientID: "acme", SecretID: next, IPs: []wire.Caller{
		{IP: "192.0.2.1", FirstAt: c.Clock.Now(), LastAt: c.Clock.Now(), Requests: 1},
	}}}}); err != nil {
		t.Fatal(err)
	}
	out, errOut := c.mustRun("secret", "callers", "acme", old)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "CALLER IP") ||
		!strings.Contains(lines[1], "192.0.2.0") || !strings.HasSuffix(lines[1], "3         3        not yet") ||
		!strings.Contains(lines[2], "192.0.2.1") || !strings.HasSuffix(lines[2], "moved") ||
		!strings.HasPrefix(lines[3], "(other IPs)") || !strings.Contains(errOut, "newest secret: "+next) {
		t.Fatalf("callers:\n%s\n%s", out, errOut)
	}
	out, errOut = c.mustRun("client", "networks", "acme", "--suggest")
	if out != "192.0.2.0/31\n" || !strings.Contains(errOut, "covers the 2 caller IPs") || !strings.Contains(errOut, "--set 192.0.2.0/31") ||
		!strings.Contains(errOut, "warning: 7 requests") {
		t.Fatalf("suggest: %q / %q", out, errOut)
	}
	if out, _ = c.mustRun("client", "networks", "acme", "--suggest", "--within", "30s"); out != "192.0.2.1/32\n" {
		t.Fatalf("suggest within 30s: %q", out)
	}
}
