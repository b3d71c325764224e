package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/internal/wire"
)

// cliEnv is the API on the shared harness (cptest.Env), served over
// HTTP for the CLI to call.
type cliEnv struct {
	*cptest.Env
	url string
}

// newCLIEnv serves the API with the service options that opts set.
func newCLIEnv(t *testing.T, opts ...func(*rules.ServiceOptions)) *cliEnv {
	t.Helper()
	e := cptest.New(t, func(so *rules.ServiceOptions) {
		for _, o := range opts {
			o(so)
		}
	})
	a, err := api.New(e.Svc, api.Options{AdminToken: cptest.AdminToken, EdgeToken: cptest.EdgeToken})
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	t.Cleanup(a.Close)
	e.Handler = a
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Setenv(EnvAdminToken, "")
	t.Setenv(EnvAPIURL, "")
	return &cliEnv{Env: e, url: srv.URL}
}

// run executes the CLI with --api and --token set; stdout may hold a
// secret and is never logged.
func (c *cliEnv) run(args ...string) (stdout, stderr string, err error) {
	return c.runIn("", append([]string{"--api", c.url, "--token", cptest.AdminToken}, args...)...)
}

func (c *cliEnv) runIn(stdin string, args ...string) (string, string, error) {
	cmd := New()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func (c *cliEnv) mustRun(args ...string) (string, string) {
	c.T.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.T.Fatalf("%v: %v (stderr: %s)", args, err, cptest.Redact([]byte(errOut)))
	}
	return out, errOut
}

func TestCLIClients(t *testing.T) {
	c := newCLIEnv(t)
	out, errOut := c.mustRun("client", "create", "--id", "acme", "--name", "ACME Corp")
	if out != "acme\n" || !strings.Contains(errOut, "created client acme") {
		t.Fatalf("create: %q / %q", out, errOut)
	}
	out, _ = c.mustRun("client", "create")
	if !strings.HasPrefix(out, "cli_") {
		t.Fatalf("create with a generated id printed %q", out)
	}
	out, _ = c.mustRun("client", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CLIENT_ID") || !strings.Contains(out, "ACME Corp") || !strings.Contains(out, "2030-01-02T03:04:05Z") {
		t.Fatalf("list:\n%s", out)
	}
	out, _ = c.mustRun("client", "show", "acme")
	if !strings.Contains(out, "client_id: acme") || !strings.Contains(out, "ID") {
		t.Fatalf("show:\n%s", out)
	}
	out, _ = c.mustRun("--json", "client", "show", "acme")
	var d api.ClientDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.ClientID != "acme" || d.Name != "ACME Corp" {
		t.Fatalf("show --json: %v", err)
	}
	_, errOut = c.mustRun("client", "delete", "acme")
	if !strings.Contains(errOut, "deleted client acme") {
		t.Fatalf("delete: %q", errOut)
	}
	_, _, err := c.run("client", "show", "acme")
	if err == nil || !strings.Contains(err.Error(), "not_found (HTTP 404)") {
		t.Fatalf("show a deleted client: %v", err)
	}
	if _, _, err := c.run("client", "create", "--id", "a:b"); err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Fatalf("create with a bad id: %v", err)
	}
}

func TestCLISecrets(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "svc/one")

	out, errOut := c.mustRun("secret", "generate", "svc/one")
	first := strings.TrimSpace(out)
	if !rules.CheckSecret(first, rules.DefaultSecretPrefix) || strings.Count(out, "\n") != 1 {
		t.Fatal("generate did not print exactly one secret on stdout")
	}
	if strings.Contains(errOut, first) || !strings.Contains(errOut, "shown only this once") || !strings.Contains(errOut, "expires never") {
		t.Fatalf("generate stderr: %s", cptest.Redact([]byte(errOut)))
	}

	out, errOut = c.mustRun("secret", "rotate", "svc/one", "--grace", "24h")
	second := strings.TrimSpace(out)
	if !rules.CheckSecret(second, rules.DefaultSecretPrefix) || second == first || !strings.Contains(errOut, "expires within 24h") {
		t.Fatalf("rotate: stderr %s", cptest.Redact([]byte(errOut)))
	}
	if _, _, err := c.run("secret", "rotate", "svc/one"); err == nil || !strings.Contains(err.Error(), "--grace is required") {
		t.Fatalf("rotate without --grace: %v", err)
	}
	if _, _, err := c.run("secret", "generate", "svc/one"); err == nil || !strings.Contains(err.Error(), "too_many_active_secrets (HTTP 409)") {
		t.Fatalf("generate at the max: %v", err)
	}

	// Usage shows up in the listing.
	secrets, err := c.Svc.ListSecrets(context.Background(), cptest.Who, "svc/one")
	if err != nil || len(secrets) != 2 {
		t.Fatalf("%d secrets (%v)", len(secrets), err)
	}
	used := c.Clock.Now().Add(-5 * time.Minute)
	if _, err := c.Svc.ApplyUsage(context.Background(), wire.Usage{Stamps: []wire.Stamp{{ClientID: "svc/one", SecretID: secrets[0].ID, LastUsedAt: used, From: "203.0.113.5"}}}); err != nil {
		t.Fatal(err)
	}
	out, _ = c.mustRun("secret", "list", "svc/one")
	if strings.Contains(out, first) || strings.Contains(out, second) {
		t.Fatal("secret list shows a secret")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "ID KIND STATUS HINT CREATED EXPIRES LAST USED LAST USED FROM PRESENTED AFTER REVOKE" || len(lines) != 3 {
		t.Fatalf("secret list:\n%s", out)
	}
	for _, want := range []string{secrets[0].ID, "expiring", "active", rules.Hint(rules.DefaultSecretPrefix, first), used.Format(time.RFC3339), "203.0.113.5", "never", "2030-01-03T03:04:05Z"} {
		if !strings.Contains(out, want) {
			t.Fatalf("secret list lacks %q:\n%s", want, out)
		}
	}

	_, errOut = c.mustRun("secret", "revoke", "svc/one", secrets[0].ID)
	if !strings.Contains(errOut, "revoked secret "+secrets[0].ID) {
		t.Fatalf("revoke: %s", errOut)
	}
	out, _ = c.mustRun("secret", "list", "svc/one")
	if !strings.Contains(out, "revoked") {
		t.Fatalf("after revoke:\n%s", out)
	}
	out, errOut = c.mustRun("secret", "rotate", "svc/one", "--grace", "0s")
	if !rules.CheckSecret(strings.TrimSpace(out), rules.DefaultSecretPrefix) || !strings.Contains(errOut, "revoked") {
		t.Fatalf("rotate 0s: %s", cptest.Redact([]byte(errOut)))
	}
	if _, _, err := c.run("secret", "revoke", "svc/one", "sec_01234567890123456789"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, _, err := c.run("secret", "generate", "svc/one", "--expires-in", "soon"); err == nil || !strings.Contains(err.Error(), "--expires-in \"soon\" is not a duration") {
		t.Fatalf("bad --expires-in: %v", err)
	}
}

func TestCLIImport(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "legacy")
	const plaintext = "legacy-plaintext-from-stdin"
	out, errOut, err := c.runIn(plaintext+"\n", "--api", c.url, "--token", cptest.AdminToken, "secret", "import", "legacy", "--stdin")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errOut, plaintext) || !strings.HasPrefix(out, "sec_") || strings.Contains(errOut, "warning") {
		t.Fatal("import --stdin printed the secret, or no id, or a warning")
	}
	// A secret that clients skipping form-encoding send differently:
	// the warning goes to stderr, the secret nowhere.
	const plus = "legacy+plaintext%20"
	out, errOut, err = c.runIn(plus+"\n", "--api", c.url, "--token", cptest.AdminToken, "secret", "import", "legacy", "--stdin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "sec_") || strings.Contains(out, "warning") || !strings.Contains(errOut, "warning: the secret contains '+' or '%'") ||
		strings.Contains(out+errOut, plus) {
		t.Fatalf("import of a secret with '+': stdout %q, stderr without the warning or with the secret", out)
	}
	c.mustRun("secret", "revoke", "legacy", strings.TrimSpace(out))
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	out, _ = c.mustRun("secret", "import", "legacy", "--hash", string(h), "--expires-in", "1h")
	if !strings.HasPrefix(out, "sec_") {
		t.Fatalf("import --hash printed %q", out)
	}
	if _, _, err := c.run("secret", "import", "legacy"); err == nil {
		t.Fatal("import without --hash or --stdin succeeded")
	}
	out, _ = c.mustRun("secret", "list", "legacy")
	if !strings.Contains(out, "(imported bcrypt)") || !strings.Contains(out, "…tdin") {
		t.Fatalf("imported hints:\n%s", out)
	}
}

func TestCLITokenAndURL(t *testing.T) {
	c := newCLIEnv(t)
	if _, _, err := c.runIn("", "--api", c.url, "client", "list"); err == nil || !strings.Contains(err.Error(), EnvAdminToken) {
		t.Fatalf("no token: %v", err)
	}
	t.Setenv(EnvAdminToken, cptest.AdminToken)
	t.Setenv(EnvAPIURL, c.url)
	if _, _, err := c.runIn("", "client", "list"); err != nil {
		t.Fatalf("token and URL from the environment: %v", err)
	}
	if _, _, err := c.runIn("", "--token", "wrong", "client", "list"); err == nil || !strings.Contains(err.Error(), "invalid_token (HTTP 401)") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, _, err := c.runIn("", "--token", cptest.EdgeToken, "client", "list"); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("edge token: %v", err)
	}
	if _, _, err := c.runIn("", "--api", "not a url", "client", "list"); err == nil || !strings.Contains(err.Error(), "--api") {
		t.Fatalf("bad --api: %v", err)
	}
	cmd := New()
	cmd.SetArgs([]string{"client", "list"})
	t.Setenv(EnvAPIURL, "")
	if api, _ := Flags(cmd); api != DefaultAPIURL {
		t.Fatalf("default API URL %q", api)
	}
}

func TestCLIRegisteredAndExtensible(t *testing.T) {
	if _, ok := caddycmd.Commands()["client-credentials"]; !ok {
		t.Fatal("caddy client-credentials is not registered")
	}
	cliExtMu.Lock()
	saved := cliExts
	cliExtMu.Unlock()
	t.Cleanup(func() {
		cliExtMu.Lock()
		cliExts = saved
		cliExtMu.Unlock()
	})
	var gotAPI, gotToken string
	AddCommand(func(root *cobra.Command) {
		root.AddCommand(&cobra.Command{
			Use: "demo",
			RunE: func(cmd *cobra.Command, _ []string) error {
				gotAPI, gotToken = Flags(cmd)
				return nil
			},
		})
	})
	cmd := New()
	cmd.SetArgs([]string{"demo", "--api", "http://x:1", "--token", "t"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if gotAPI != "http://x:1" || gotToken != "t" {
		t.Fatalf("extension saw %q %q", gotAPI, gotToken)
	}
}

func TestCLIOwners(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "acme", "--owner", "olive", "--owner", "amy")
	out, _ := c.mustRun("client", "owners", "acme", "--add", "bob", "--remove", "amy")
	if out != "bob\nolive\n" {
		t.Fatalf("owners after the change: %q", out)
	}
	out, _ = c.mustRun("client", "owners", "acme")
	if out != "bob\nolive\n" {
		t.Fatalf("owners: %q", out)
	}
	out, _ = c.mustRun("client", "show", "acme")
	if !strings.Contains(out, "owners:    bob, olive") {
		t.Fatalf("show:\n%s", out)
	}
	out, _ = c.mustRun("client", "list")
	if !strings.Contains(out, "OWNERS") || !strings.Contains(out, "bob,olive") {
		t.Fatalf("list:\n%s", out)
	}
}

// TestCLIHelpListsEveryCommand: the help text is written from the
// command tree, so every command that runs is in it, events list too.
func TestCLIHelpListsEveryCommand(t *testing.T) {
	root := New()
	var leaves []string
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() {
				continue
			}
			p := strings.TrimSpace(path + " " + sub.Name())
			if sub.Runnable() {
				leaves = append(leaves, p)
			}
			walk(sub, p)
		}
	}
	walk(root, "")
	if !slices.Contains(leaves, "events list") || len(leaves) < 13 {
		t.Fatalf("commands in the tree: %q", leaves)
	}
	for _, l := range leaves {
		if !strings.Contains(root.Long, "  "+l+" ") {
			t.Errorf("the help text does not list %q:\n%s", l, root.Long)
		}
	}
}

// TestCLIKeysAndCertificates: `secret add` registers a public key or a
// certificate from a file and prints its id, `secret rotate` takes one
// too, `secret list` shows the kinds; a private key file is refused with
// the API's reason.
func TestCLIKeysAndCertificates(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "svc")
	dir := t.TempDir()
	pub, priv := cptest.KeyJWKs(t)
	certPEM, tp := cptest.CertificatePEM(t, c.Clock.Now().Add(90*24*time.Hour))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, errOut := c.mustRun("secret", "add", "svc", "--public-key", write("key.jwk", string(pub)))
	keyID := strings.TrimSpace(out)
	if !strings.HasPrefix(keyID, "sec_") || !strings.Contains(errOut, "public key "+keyID+" (thumbprint ") {
		t.Fatalf("add --public-key: %q / %s", out, errOut)
	}
	if _, _, err := c.run("secret", "add", "svc", "--public-key", write("priv.jwk", string(priv))); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("a private key: %v", err)
	}
	if _, _, err := c.run("secret", "add", "svc"); err == nil || !strings.Contains(err.Error(), "--public-key") {
		t.Fatalf("add without a file: %v", err)
	}
	out, errOut = c.mustRun("secret", "rotate", "svc", "--grace", "1h", "--certificate", write("c.pem", certPEM))
	if !strings.Contains(errOut, "certificate "+strings.TrimSpace(out)+" (thumbprint "+tp+")") || !strings.Contains(errOut, keyID+" expires within 1h") {
		t.Fatalf("rotate --certificate: %q / %s", out, errOut)
	}
	out, _ = c.mustRun("secret", "list", "svc")
	if !strings.Contains(out, "public_key") || !strings.Contains(out, "certificate") {
		t.Fatalf("secret list:\n%s", out)
	}
}

// TestCLILabel: the CLI sets a secret's label and lists it.
func TestCLILabel(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "svc")
	c.mustRun("secret", "generate", "svc")
	secrets, _ := c.Svc.ListSecrets(context.Background(), cptest.Who, "svc")
	_, errOut := c.mustRun("secret", "label", "svc", secrets[0].ID, "nightly export")
	if !strings.Contains(errOut, "labelled secret "+secrets[0].ID) || !strings.Contains(errOut, ": nightly export") {
		t.Fatalf("secret label: %s", errOut)
	}
	if out, _ := c.mustRun("--json", "secret", "list", "svc"); !strings.Contains(out, `"label": "nightly export"`) {
		t.Fatalf("secret list --json:\n%s", out)
	}
}

// TestCLIAfterRevoke: the secret listing's column for a dead secret
// presented at an edge has the count and the last caller; for a leak
// report, its time.
func TestCLIAfterRevoke(t *testing.T) {
	c := newCLIEnv(t)
	c.MustClient("app")
	first := c.MustGenerate("app")
	c.PresentedAfterRevoke("app", first.Secret.ID, "198.51.100.4", 3)
	fresh := c.MustGenerate("app")
	c.ReportLeak(fresh.Plaintext)
	var list api.SecretList
	c.Admin("GET", "/v1/clients/app/secrets", nil).Decode(t, &list)
	want := map[string]string{
		first.Secret.ID: "3 (last 2030-01-02T03:03:05Z from 198.51.100.4)",
		fresh.Secret.ID: "-; leak reported 2030-01-02T03:04:05Z",
	}
	for _, s := range list.Secrets {
		if got := afterRevoke(s); got != want[s.ID] {
			t.Errorf("secret list column of %s: %q, want %q", s.ID, got, want[s.ID])
		}
	}
}
