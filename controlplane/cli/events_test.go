package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

func TestCLIEventsList(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	rcv.IgnoreTime = true
	rcv.SetStatus(http.StatusServiceUnavailable)
	c := newCLIEnv(t, func(so *rules.ServiceOptions) {
		so.Webhooks = []webhook.Config{{URL: rcv.URL, Secret: secret, Events: []string{store.EventSecretGenerated}}}
	})
	e := c.Env
	e.MustClient("app")
	ns := e.MustGenerate("app")
	if err := e.Sender(0).DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, _ := c.mustRun("events", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	host := strings.TrimPrefix(rcv.URL, "http://")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], "secret.generated") || !strings.Contains(lines[1], ns.Secret.ID) ||
		!strings.Contains(lines[1], host+"=pending (1 attempts, last: 503 Service Unavailable)") ||
		!strings.Contains(lines[2], "client.created") || !strings.Contains(lines[2], "no webhook") {
		t.Fatalf("events list:\n%s", out)
	}
	out, _ = c.mustRun("events", "list", "--limit", "1", "--json")
	var listed api.EventList
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Events) != 1 || listed.Events[0].Type != store.EventSecretGenerated {
		t.Fatalf("--json --limit 1: %v %s", err, out)
	}
	if _, _, err := c.run("events", "list", "--limit", "5000"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("--limit 5000: %v", err)
	}
}
