package cli

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// cliMainEnv makes the test binary run as `caddy` (the CLI inside Caddy)
// instead of running tests, so a test can read the CLI's exit code.
const cliMainEnv = "ROTAGATE_TEST_RUN_CADDY"

func TestMain(m *testing.M) {
	if os.Getenv(cliMainEnv) == "1" {
		caddycmd.Main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// caddyCLI runs `caddy client-credentials args…` in a process of its own
// and returns its exit code and stderr.
func caddyCLI(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"client-credentials"}, args...)...)
	cmd.Env = append(append(os.Environ(), cliMainEnv+"=1", EnvAdminToken+"="+cptest.AdminToken), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	}
	t.Fatalf("running the CLI: %v", err)
	return 0, ""
}

// TestCLIMistakesNameWhatIsWrong: the mistakes a new user makes with the
// CLI each end with a message naming what is wrong and a non-zero exit
// code, read from a real `caddy client-credentials` process.
func TestCLIMistakesNameWhatIsWrong(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "app")
	// A server answering other JSON, and one answering an empty 200 (as
	// Caddy does for a path no handler takes, such as /v1/v1/clients).
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok","items":[]}`))
	}))
	t.Cleanup(other.Close)
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(empty.Close)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"other JSON", []string{"--api", other.URL, "client", "list"},
			[]string{"GET " + other.URL + "/v1/clients", "HTTP 200", `JSON without "clients"`, "not the management API's answer", "--api must be the control plane's base URL"}},
		{"other JSON, --json", []string{"--api", other.URL, "--json", "secret", "list", "app"},
			[]string{other.URL + "/v1/clients/app/secrets", `JSON without "secrets"`}},
		{"other JSON, one object", []string{"--api", other.URL, "client", "show", "app"},
			[]string{other.URL + "/v1/clients/app", `JSON without any of ["client_id" "name"`}},
		{"empty 200", []string{"--api", empty.URL, "client", "show", "app"},
			[]string{"GET " + empty.URL + "/v1/clients/app", "HTTP 200", "an empty body"}},
		{"--api …/v1", []string{"--api", c.url + "/v1", "client", "list"},
			[]string{"GET " + c.url + "/v1/v1/clients", "HTTP 404", "without /v1"}},
		{"--api …/v1 inside Caddy", []string{"--api", empty.URL + "/v1", "client", "delete", "app"},
			[]string{"DELETE " + empty.URL + "/v1/v1/clients/app", "HTTP 200", "without /v1"}},
		{"unknown command", []string{"--api", c.url, "secret", "lst"},
			[]string{`unknown command "lst" for "caddy client-credentials secret"`, "did you mean list?"}},
		{"unknown top command", []string{"--api", c.url, "secrets", "list"},
			[]string{`unknown command "secrets"`, "did you mean secret?"}},
		{"missing argument", []string{"--api", c.url, "secret", "revoke", "app"},
			[]string{"missing <secret_id>", "usage: caddy client-credentials secret revoke <client_id> <secret_id>"}},
		{"missing arguments", []string{"--api", c.url, "secret", "callers"},
			[]string{"missing <client_id> <secret_id>"}},
		{"missing client of a client's setting", []string{"--api", c.url, "client", "sink"},
			[]string{"missing <client_id>", "usage: caddy client-credentials client sink <client_id>"}},
		{"missing client of a key", []string{"--api", c.url, "secret", "add"},
			[]string{"missing <client_id>", "usage: caddy client-credentials secret add <client_id>"}},
		{"too many arguments", []string{"--api", c.url, "client", "list", "app"},
			[]string{"too many arguments (app)"}},
		{"bad --expires-in", []string{"--api", c.url, "secret", "generate", "app", "--expires-in", "30x"},
			[]string{`--expires-in "30x" is not a duration such as 30d or 12h`}},
		{"zero --expires-in", []string{"--api", c.url, "secret", "generate", "app", "--expires-in", "0d"},
			[]string{"--expires-in must be positive"}},
		{"negative --grace", []string{"--api", c.url, "secret", "rotate", "app", "--grace", "-1h"},
			[]string{`--grace "-1h" is not a duration of 0s or more`}},
		{"--user without a password", []string{"--api", c.url, "--user", "olive", "client", "list"},
			[]string{"no password for user olive", EnvPassword}},
	} {
		code, stderr := caddyCLI(t, nil, tc.args...)
		if code == 0 {
			t.Errorf("%s: exit code 0 (stderr %q)", tc.name, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, stderr)
			}
		}
	}
	// The API's own refusal of a duration says what it wants.
	if r := c.Do("POST", "/v1/clients/app/secrets", cptest.AdminToken, `{"expires_in":"0s"}`); r.Status != 400 || !strings.Contains(string(r.Body), "expires_in must be positive") {
		t.Errorf("expires_in 0s: %d %s", r.Status, r.Body)
	}
}

// TestCLIExpiresInDays: --expires-in takes days, as the API does.
func TestCLIExpiresInDays(t *testing.T) {
	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "app")
	_, errOut := c.mustRun("secret", "generate", "app", "--expires-in", "30d")
	if !strings.Contains(errOut, "expires 2030-02-01T03:04:05Z") {
		t.Fatalf("generate --expires-in 30d: %s", cptest.Redact([]byte(errOut)))
	}
	// A typo in a group's command is no success, nor is a group alone
	// an error: it prints its help.
	if _, _, err := c.run("secret", "lst"); err == nil {
		t.Fatal("secret lst succeeded")
	}
	out, _, err := c.run("secret")
	if err != nil || !strings.Contains(out, "Available Commands") {
		t.Fatalf("secret alone: %v\n%s", err, out)
	}
}
