package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// client sink: set from flags (the signing secret on stdout, once), show
// without it, generate then names the sink instead of printing a secret,
// set from a JSON file, refuse mixed flags, delete.
func TestCLISink(t *testing.T) {
	c := newCLIEnv(t)
	rc := cptest.NewReceiver(t)
	c.mustRun("client", "create", "--id", "acme")
	keyFile := filepath.Join(t.TempDir(), "receiver.jwk")
	if err := os.WriteFile(keyFile, rc.PublicJWK(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut := c.mustRun("client", "sink", "acme", "--webhook", rc.URL+"/hook", "--public-key", keyFile, "--rotate-every", "90d")
	signing := strings.TrimSpace(out)
	if !strings.HasPrefix(signing, "whsec_") || !strings.Contains(errOut, "kind:          webhook") || !strings.Contains(errOut, "rotate every:  90d") {
		t.Fatalf("set: stdout has a signing secret: %v; stderr %q", strings.HasPrefix(signing, "whsec_"), errOut)
	}
	if out, _ = c.mustRun("client", "sink", "acme"); strings.Contains(out, signing) || !strings.Contains(out, "target:        "+rc.URL+"/hook") {
		t.Fatalf("show: %q", out)
	}
	out, errOut = c.mustRun("secret", "generate", "acme")
	if !strings.HasPrefix(out, "sec_") || !strings.Contains(errOut, "delivered to the client's webhook sink") {
		t.Fatalf("generate with a sink: %q / %q", cptest.Redact([]byte(out)), errOut)
	}
	jsonFile := filepath.Join(t.TempDir(), "sink.json")
	if err := os.WriteFile(jsonFile, []byte(`{"kind":"aws_secrets_manager","secret_id":"rotagate/acme","region":"eu-west-1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut = c.mustRun("client", "sink", "acme", "--file", jsonFile); out != "" || !strings.Contains(errOut, "rotagate/acme (eu-west-1)") {
		t.Fatalf("set from file: %q / %q", out, errOut)
	}
	for _, bad := range [][]string{
		{"--webhook", "https://example.com/x"},
		{"--webhook", "https://example.com/x", "--public-key", keyFile, "--aws", "x"},
		{"--region", "us-east-1"},
		{"--delete", "--rotate-every", "90d"},
		{"--aws", "x", "--region", "nowhere"},
	} {
		if _, _, err := c.run(append([]string{"client", "sink", "acme"}, bad...)...); err == nil {
			t.Errorf("client sink %v succeeded", bad)
		}
	}
	if _, errOut = c.mustRun("client", "sink", "acme", "--delete"); !strings.Contains(errOut, "no sink any more") {
		t.Fatalf("delete: %q", errOut)
	}
	if _, _, err := c.run("client", "sink", "acme"); err == nil {
		t.Fatal("show after delete succeeded")
	}
}
