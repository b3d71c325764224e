package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/sink/sinktest"
)

// setSink gives client a sink through the API and returns the answer.
func setSink(api adminAPI, client string, cfg any) map[string]any {
	api.t.Helper()
	var out map[string]any
	api.must(api.call(http.MethodPut, "/v1/clients/"+client+"/sink", cfg, &out))
	return out
}

// rawCall is a management call whose raw answer the test keeps.
func rawCall(t *testing.T, base, method, path string, body any) (int, []byte) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(method, base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// withLogFile adds a global log to a file, at debug level, to a test
// Caddyfile that starts with the global options.
func withLogFile(caddyfile, path string) string {
	return strings.Replace(caddyfile, "{\n", "{\n\tlog {\n\t\toutput file "+path+"\n\t\tlevel DEBUG\n\t}\n", 1)
}

// filesHold reports which of the files hold any 16 characters of secret
// in a row.
func filesHold(t *testing.T, secret string, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+16 <= len(secret); i++ {
			if bytes.Contains(data, []byte(secret[i:i+16])) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// TestSinkWebhookEndToEnd: real Caddy runs both halves; a client's
// webhook sink receives its new secret as a JWE, signed; the decrypted
// secret gets a token at the edge; the generate answer, the SQLite
// database (outbox included) and the logs hold no plaintext; the secret
// becomes current after the revocation delay.
func TestSinkWebhookEndToEnd(t *testing.T) {
	h := bothHalves(t)
	h.CPOptions = "\t\trevocation_delay 2s\n"
	logPath := filepath.Join(h.Dir, "caddy.log")
	startCaddy(t, withLogFile(h.caddyfile(), logPath))
	api := adminAPI{t: t, base: h.cpURL()}
	rcv := cptest.NewReceiver(t, cptest.WallClock, cptest.OncePerID)
	api.createClient("sunk")
	set := setSink(api, "sunk", rcv.Config(""))
	signing, _ := set["signing_secret"].(string)
	rcv.SetSigningSecret(signing)

	status, answer := rawCall(t, h.cpURL(), http.MethodPost, "/v1/clients/sunk/secrets", map[string]string{})
	var gen map[string]any
	if err := json.Unmarshal(answer, &gen); err != nil || status != http.StatusCreated {
		t.Fatalf("generate: %d", status)
	}
	id, _ := gen["id"].(string)
	if _, has := gen["secret"]; has || gen["delivered_to"] != "webhook" {
		t.Fatalf("generate answer with a sink: keys %v", len(gen))
	}
	cptest.WaitFor(t, 10*time.Second, "the sink receives the secret", func() bool { return rcv.Delivered(id) != "" })
	secret := rcv.Delivered(id)
	ctx := context.Background()
	took := cptest.WaitFor(t, 10*time.Second, "the delivered secret gets a token at the edge", func() bool {
		return fetchToken(ctx, h.edgeURL(), "sunk", secret, oauth2.AuthStyleInHeader) == nil
	})
	t.Logf("delivered secret accepted at the edge %v after delivery", took)
	cptest.WaitFor(t, 15*time.Second, "the secret becomes current at the sink", func() bool { return slices.Equal(rcv.Stages(id), []string{"pending", "current"}) })

	if bytes.Contains(answer, []byte(secret[4:20])) {
		t.Error("the generate answer holds the secret")
	}
	db := filepath.Join(h.Dir, "rotagate.db")
	if held := filesHold(t, secret, db, db+"-wal", logPath); len(held) > 0 {
		t.Errorf("these files hold the secret: %v", held)
	}
	if held := filesHold(t, signing, logPath); len(held) > 0 {
		t.Errorf("the log holds the sink's signing secret")
	}
}

// TestSinkScheduledEndToEnd: a client with rotate_every (the shortest
// allowed, 1m) is rotated through its webhook sink by the control plane
// alone; the edge accepts the new secret, and refuses the old one once
// the rotation's grace (at most rotate_every) has run from the delivery.
func TestSinkScheduledEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a one-minute schedule")
	}
	h := bothHalves(t)
	h.CPOptions = "\t\trevocation_delay 2s\n"
	api := h.start(t)
	rcv := cptest.NewReceiver(t, cptest.WallClock, cptest.OncePerID)
	api.createClient("sched")
	rcv.SetSigningSecret(setSink(api, "sched", rcv.Config("1m"))["signing_secret"].(string))
	first := api.generate("sched").ID
	cptest.WaitFor(t, 10*time.Second, "the first secret reaches the sink", func() bool { return rcv.Delivered(first) != "" })
	old := rcv.Delivered(first)
	ctx := context.Background()
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the first secret", func() bool {
		return fetchToken(ctx, h.edgeURL(), "sched", old, oauth2.AuthStyleInHeader) == nil
	})

	var second string
	cptest.WaitFor(t, 90*time.Second, "the schedule rotates the client", func() bool {
		for id := range api.secrets("sched") {
			if id != first {
				second = id
				return true
			}
		}
		return false
	})
	rotatedAt := time.Now()
	cptest.WaitFor(t, 10*time.Second, "the new secret reaches the sink", func() bool { return rcv.Delivered(second) != "" })
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the new secret", func() bool {
		return fetchToken(ctx, h.edgeURL(), "sched", rcv.Delivered(second), oauth2.AuthStyleInHeader) == nil
	})
	cptest.WaitFor(t, 90*time.Second, "the edge refuses the old secret", func() bool {
		return refused(fetchToken(ctx, h.edgeURL(), "sched", old, oauth2.AuthStyleInHeader))
	})
	t.Logf("old secret refused %v after the scheduled rotation was seen", time.Since(rotatedAt).Round(100*time.Millisecond))
	if n := len(api.secrets("sched")); n != 2 {
		t.Fatalf("%d secrets, want 2: one scheduled rotation", n)
	}
	if st := rcv.Stages(first); len(st) == 0 || st[len(st)-1] != "previous" {
		t.Fatalf("stages of the first secret: %v", st)
	}
}

// TestSinkAWSEndToEnd: the AWS sink against moto_server, in real Caddy:
// AWSPENDING holds the new secret before the edge accepts it, AWSCURRENT
// after the revocation delay, AWSPREVIOUS after a rotation; a put that
// fails is a 502 and leaves nothing active.
func TestSinkAWSEndToEnd(t *testing.T) {
	endpoint := sinktest.StartMoto(t)
	sinktest.AWSEnv(t)
	sm := sinktest.AWSClient(t, endpoint)
	ctx := context.Background()
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("rotagate/aws-e2e"), SecretString: aws.String(`{}`),
	}); err != nil {
		t.Fatal(err)
	}
	h := bothHalves(t)
	h.CPOptions = "\t\trevocation_delay 2s\n"
	api := h.start(t)
	api.createClient("aws-e2e")
	setSink(api, "aws-e2e", map[string]any{"kind": "aws_secrets_manager", "secret_id": "rotagate/aws-e2e", "region": "us-east-1", "endpoint": endpoint})
	read := func(stage string) (v struct{ ClientSecret, SecretID string }) {
		t.Helper()
		out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("rotagate/aws-e2e"), VersionStage: aws.String(stage)})
		if err != nil {
			return v
		}
		var raw struct {
			ClientSecret string `json:"client_secret"`
			SecretID     string `json:"secret_id"`
		}
		json.Unmarshal([]byte(aws.ToString(out.SecretString)), &raw)
		v.ClientSecret, v.SecretID = raw.ClientSecret, raw.SecretID
		return v
	}

	first := api.generate("aws-e2e")
	if first.Secret != "" {
		t.Fatal("generate answer with an AWS sink holds the secret")
	}
	pending := read("AWSPENDING")
	if pending.SecretID != first.ID {
		t.Fatalf("AWSPENDING holds %q, want %s", pending.SecretID, first.ID)
	}
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the AWSPENDING secret", func() bool {
		return fetchToken(ctx, h.edgeURL(), "aws-e2e", pending.ClientSecret, oauth2.AuthStyleInParams) == nil
	})
	cptest.WaitFor(t, 15*time.Second, "the secret becomes AWSCURRENT", func() bool { return read("AWSCURRENT").SecretID == first.ID })

	var rotated secretInfo
	api.must(api.call(http.MethodPost, "/v1/clients/aws-e2e/secrets/rotate", map[string]string{"grace": "0s"}, &rotated))
	next := read("AWSPENDING")
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the rotated secret", func() bool {
		return fetchToken(ctx, h.edgeURL(), "aws-e2e", next.ClientSecret, oauth2.AuthStyleInHeader) == nil
	})
	cptest.WaitFor(t, 10*time.Second, "the edge refuses the old secret", func() bool {
		return refused(fetchToken(ctx, h.edgeURL(), "aws-e2e", pending.ClientSecret, oauth2.AuthStyleInHeader))
	})
	cptest.WaitFor(t, 15*time.Second, "AWSCURRENT moves, the old value AWSPREVIOUS", func() bool {
		return read("AWSCURRENT").SecretID == rotated.ID && read("AWSPREVIOUS").SecretID == first.ID
	})

	api.createClient("aws-missing")
	setSink(api, "aws-missing", map[string]any{"kind": "aws_secrets_manager", "secret_id": "rotagate/missing", "region": "us-east-1", "endpoint": endpoint})
	if status, _ := rawCall(t, h.cpURL(), http.MethodPost, "/v1/clients/aws-missing/secrets", map[string]string{}); status != http.StatusBadGateway {
		t.Fatalf("generate with a failing put: %d, want 502", status)
	}
	if n := len(api.secrets("aws-missing")); n != 0 {
		t.Fatalf("a failed put left %d secrets", n)
	}
}

// TestSinkSurvivesSIGKILL: a secret is generated while its webhook sink
// is down, and the control plane process is killed with SIGKILL before
// it could deliver; restarted, it delivers the secret to the sink once.
func TestSinkSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/caddy")
	}
	bin := buildCaddy(t)
	rcv := cptest.NewReceiver(t, cptest.WallClock, cptest.OncePerID)
	dir := t.TempDir()
	addr := freeAddr(t)
	caddyfile := childControlPlaneCaddyfile(addr, dir, "")
	cp := startChildControlPlane(t, bin, dir, caddyfile, addr)
	api := adminAPI{t: t, base: cp.base}
	api.createClient("killed")
	rcv.SetSigningSecret(setSink(api, "killed", rcv.Config(""))["signing_secret"].(string))
	rcv.SetFailing(true)
	id := api.generate("killed").ID // committed: the JWE is in the outbox
	lastError := func(a adminAPI) (string, string) {
		var listed struct {
			Events []struct {
				Type       string `json:"type"`
				Deliveries []struct {
					State     string `json:"state"`
					LastError string `json:"last_error"`
				} `json:"deliveries"`
			} `json:"events"`
		}
		a.must(a.call(http.MethodGet, "/v1/events", nil, &listed))
		for _, e := range listed.Events {
			if e.Type == "sink.delivery" && len(e.Deliveries) == 1 {
				return e.Deliveries[0].State, e.Deliveries[0].LastError
			}
		}
		return "", ""
	}
	cptest.WaitFor(t, 10*time.Second, "the first attempt fails and is recorded", func() bool {
		_, e := lastError(api)
		return e != ""
	})
	cp.kill()
	if rcv.Delivered(id) != "" {
		t.Fatal("delivered before the kill")
	}
	rcv.SetFailing(false)
	restarted := startChildControlPlane(t, bin, dir, caddyfile, addr)
	defer restarted.kill()
	cptest.WaitFor(t, 30*time.Second, "the restarted control plane delivers the secret", func() bool { return rcv.Delivered(id) != "" })
	rapi := adminAPI{t: t, base: restarted.base}
	cptest.WaitFor(t, 5*time.Second, "the outbox records the delivery", func() bool {
		st, _ := lastError(rapi)
		return st == "delivered"
	})
	if n := rcv.Deliveries(); n != 1 {
		t.Fatalf("the sink accepted %d deliveries, want 1", n)
	}
	if held := filesHold(t, rcv.Delivered(id), filepath.Join(dir, "cp.db"), filepath.Join(dir, "cp.db-wal"), filepath.Join(dir, "caddy.log")); len(held) > 0 {
		t.Fatalf("these files hold the secret: %v", held)
	}
}

// TestConsoleSinkInABrowser: in headless Chromium, olive sets her
// client's webhook sink from the Sink panel's JSON, reads the signing
// secret on the page that answers, sees kind and target on the client
// page, and a Generate new secret goes to the sink (which decrypts it)
// instead of the page; Remove sink removes it.
func TestConsoleSinkInABrowser(t *testing.T) {
	browser := headless(t)
	h := consoleHalves(t)
	api := h.start(t)
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "sinky", "owners": []string{"olive"}}, nil))
	rcv := cptest.NewReceiver(t, cptest.WallClock, cptest.OncePerID)
	cfg, err := json.Marshal(rcv.Config("30d"))
	if err != nil {
		t.Fatal(err)
	}
	clientURL := h.cpURL() + "/console/clients/sinky"

	olive := openTab(t, browser, "olive", true)
	olive.open(clientURL)
	if panel := olive.text("section.sink"); !strings.Contains(panel, "No sink") {
		t.Fatalf("the Sink panel without a sink: %q", panel)
	}
	run(olive, "typing the sink", chromedp.SetValue(chromedp.CSS("#sink-config"), string(cfg)))
	if status := olive.click("//section[@id='sink']//button[normalize-space()='Save sink']"); status != 200 {
		t.Fatalf("saving the sink answered %d", status)
	}
	signing := run(olive, "reading the signing secret", chromedp.Value(chromedp.CSS("#signing-secret")))
	if !strings.HasPrefix(signing, "whsec_") {
		t.Fatal("the answer page shows no signing secret")
	}
	rcv.SetSigningSecret(signing)
	olive.open(clientURL)
	panel := olive.text("section.sink")
	if !strings.Contains(panel, "webhook") || !strings.Contains(panel, rcv.URL+"/rotagate") || strings.Contains(olive.body(), signing) {
		t.Fatalf("the Sink panel with a sink: %q (or the page shows the signing secret)", panel)
	}

	run(olive, "opening the generate dialog", chromedp.Click("//a[normalize-space()='Generate new secret']"))
	run(olive, "waiting for the dialog", chromedp.WaitVisible(chromedp.CSS("#dlg-generate")))
	olive.click("//dialog[@id='dlg-generate']//button[normalize-space()='Confirm']")
	if !strings.Contains(olive.body(), "handed to the client's sink") || olive.count("#new-secret") != 0 {
		t.Fatal("a generate with a sink showed a secret, or did not say where it went")
	}
	var id string
	for sid := range api.secrets("sinky") {
		id = sid
	}
	cptest.WaitFor(t, 10*time.Second, "the sink receives the secret", func() bool { return rcv.Delivered(id) != "" })
	if strings.Contains(olive.body(), rcv.Delivered(id)) {
		t.Fatal("the page holds the delivered secret")
	}

	olive.click("//section[@id='sink']//button[normalize-space()='Remove sink']")
	if panel := olive.text("section.sink"); !strings.Contains(panel, "No sink") {
		t.Fatalf("the Sink panel after Remove sink: %q", panel)
	}
}
