package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// got is what a receiver (it verifies every delivery's Standard Webhooks
// signature, timestamp included, and processes each webhook-id once, as
// an operator's would) accepted: the event types in order, the deliveries
// answered 2xx, repeats included, and those with a forged signature.
func got(t *testing.T, rcv *webhooktest.Receiver) (types []string, accepted, forged int) {
	t.Helper()
	for _, ev := range rcv.Events() {
		var e struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(ev.Body), &e); err != nil {
			t.Fatalf("event %s: %v", ev.ID, err)
		}
		types = append(types, e.Type)
	}
	return types, rcv.RawCount(), rcv.Forged()
}

// TestWebhooksInOrder: a real Caddy control plane sends the events of
// create, generate, rotate and revoke, signed, in order, to a receiver
// that verifies them; `events list` shows them delivered.
func TestWebhooksInOrder(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	t.Setenv("ROTAGATE_TEST_WEBHOOK_SECRET", secret)
	db := filepath.Join(t.TempDir(), "cp.db")
	cp := startSite(t, `
	client_credentials_control_plane {
		store sqlite `+db+`
		admin_token `+adminToken+`
		edge_token `+edgeToken+`
		webhook `+rcv.URL+`/rotagate {
			secret {env.ROTAGATE_TEST_WEBHOOK_SECRET}
			events client.created secret.generated secret.rotated secret.revoked
			timeout 5s
		}
	}
`)
	api := adminAPI{t: t, base: cp}
	api.createClient("hooked")
	first := api.generate("hooked")
	var rotated secretInfo
	api.must(api.call("POST", "/v1/clients/hooked/secrets/rotate", map[string]string{"grace": "1h"}, &rotated))
	api.revoke("hooked", first.ID)
	want := "client.created secret.generated secret.rotated secret.revoked"
	cptest.WaitFor(t, 5*time.Second, "the receiver gets every event", func() bool {
		types, _, _ := got(t, rcv)
		return len(types) >= 4
	})
	types, accepted, forged := got(t, rcv)
	if strings.Join(types, " ") != want || accepted != 4 || forged != 0 {
		t.Fatalf("received %v (%d accepted, %d forged), want %s once each", types, accepted, forged, want)
	}

	var listed struct {
		Events []struct {
			Type       string `json:"type"`
			Deliveries []struct {
				Webhook string `json:"webhook"`
				State   string `json:"state"`
			} `json:"deliveries"`
		} `json:"events"`
	}
	api.must(api.call("GET", "/v1/events?limit=10", nil, &listed))
	if len(listed.Events) != 4 || listed.Events[0].Type != "secret.revoked" {
		t.Fatalf("events list: %+v", listed)
	}
	for _, e := range listed.Events {
		if len(e.Deliveries) != 1 || e.Deliveries[0].State != "delivered" || e.Deliveries[0].Webhook != strings.TrimPrefix(rcv.URL, "http://") {
			t.Fatalf("event %s: %+v", e.Type, e.Deliveries)
		}
	}
}

// goEnv is the Go toolchain's cache and module directories, read when
// the package initialises: TestMain then points HOME at a temporary
// directory, where `go build` would find empty caches and build Caddy
// cold.
var goEnv = func() []string {
	out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		return nil
	}
	vals := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(vals) != 3 {
		return nil
	}
	return []string{"GOCACHE=" + vals[0], "GOMODCACHE=" + vals[1], "GOPATH=" + vals[2]}
}()

// buildCaddy builds this repository's cmd/caddy into a temporary
// directory of the test (seconds with a warm build cache).
func buildCaddy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), goEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

// childControlPlaneCaddyfile is the Caddyfile of a control plane on addr
// with its SQLite database in dir; extra goes inside its directive's block.
func childControlPlaneCaddyfile(addr, dir, extra string) string {
	return `{
	admin off
	auto_https off
	persist_config off
}
http://` + addr + ` {
	client_credentials_control_plane {
		store sqlite ` + filepath.Join(dir, "cp.db") + `
		admin_token ` + adminToken + `
		edge_token ` + edgeToken + extra + `
	}
}
`
}

// childControlPlane is a control plane in a Caddy process of its own.
type childControlPlane struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
}

func startChildControlPlane(t *testing.T, bin, dir, caddyfile, addr string, env ...string) *childControlPlane {
	t.Helper()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	logs, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childControlPlane{t: t, cmd: cmd, base: "http://" + addr}
	t.Cleanup(c.kill)
	t.Cleanup(func() {
		if t.Failed() { // the control plane's log holds no secret
			if out, err := os.ReadFile(logs.Name()); err == nil {
				t.Logf("control plane log:\n%s", out)
			}
		}
	})
	cptest.WaitFor(t, 20*time.Second, "the control plane process answers", func() bool {
		resp, err := http.Get(c.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return c
}

// kill ends the process with SIGKILL: no shutdown, no flushing.
func (c *childControlPlane) kill() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	c.cmd = nil
}

// TestWebhookSurvivesSIGKILL: a change commits while the receiver is
// down; the control plane process is killed with SIGKILL before it could
// deliver; restarted, it delivers the event once.
func TestWebhookSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	bin := buildCaddy(t)
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	rcv.SetStatus(http.StatusServiceUnavailable)
	dir := t.TempDir()
	addr := freeAddr(t)
	caddyfile := childControlPlaneCaddyfile(addr, dir, `
		webhook `+rcv.URL+` {
			secret {env.HOOK_SECRET}
			timeout 2s
		}`)
	cp := startChildControlPlane(t, bin, dir, caddyfile, addr, "HOOK_SECRET="+secret)
	api := adminAPI{t: t, base: cp.base}
	api.createClient("killed") // committed: the API answered 201
	// Wait until the failed first attempt is recorded (an attempt in
	// flight holds a lease of 10 × timeout + 30s; a recorded failure is
	// retried 10–12s later).
	cptest.WaitFor(t, 5*time.Second, "the first attempt fails and is recorded", func() bool {
		var listed struct {
			Events []struct {
				Deliveries []struct {
					LastError string `json:"last_error"`
				} `json:"deliveries"`
			} `json:"events"`
		}
		api.must(api.call("GET", "/v1/events", nil, &listed))
		return len(listed.Events) == 1 && listed.Events[0].Deliveries[0].LastError != ""
	})
	cp.kill()
	if types, accepted, _ := got(t, rcv); len(types) != 0 || accepted != 0 {
		t.Fatalf("delivered before the kill: %v", types)
	}

	rcv.SetStatus(0)
	restarted := startChildControlPlane(t, bin, dir, caddyfile, addr, "HOOK_SECRET="+secret)
	defer restarted.kill()
	// The retry is due 10–12s after the failed attempt.
	cptest.WaitFor(t, 30*time.Second, "the restarted control plane delivers the event", func() bool {
		types, _, _ := got(t, rcv)
		return len(types) == 1
	})
	// Once the outbox records the delivery as done, nothing sends it again.
	rapi := adminAPI{t: t, base: restarted.base}
	cptest.WaitFor(t, 5*time.Second, "the outbox records the delivery", func() bool {
		var listed struct {
			Events []struct {
				Deliveries []struct {
					State    string `json:"state"`
					Attempts int    `json:"attempts"`
				} `json:"deliveries"`
			} `json:"events"`
		}
		rapi.must(rapi.call("GET", "/v1/events", nil, &listed))
		d := listed.Events[0].Deliveries[0]
		return d.State == "delivered" && d.Attempts == 2
	})
	types, accepted, forged := got(t, rcv)
	if strings.Join(types, " ") != "client.created" || accepted != 1 || forged != 0 {
		t.Fatalf("received %v, %d accepted, %d forged; want client.created once", types, accepted, forged)
	}
}
