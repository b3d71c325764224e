package integration

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	cpcli "github.com/rotagate/rotagate/controlplane/cli"
)

// cli runs `caddy client-credentials args…` in process and returns its
// stdout, its stderr and its error (an exit code of 1 in a shell).
func cli(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := cpcli.New()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// TestCLIAsAnOwnerAndAtTheEdge: behind real Caddy and basic_auth, an
// owner uses the CLI with their own user and password (--user and
// $ROTAGATE_PASSWORD, or in --api's URL) and sees and rotates only their
// client; a wrong password is named as such, without the password; and
// --api pointed at an edge says so.
func TestCLIAsAnOwnerAndAtTheEdge(t *testing.T) {
	h := consoleHalves(t)
	api := h.start(t)
	api.must(api.call("POST", "/v1/clients", map[string]any{"client_id": "owned", "owners": []string{"olive"}}, nil))
	api.createClient("theirs")
	t.Setenv(cpcli.EnvAdminToken, "")
	t.Setenv(cpcli.EnvAPIURL, "")

	t.Setenv(cpcli.EnvPassword, consoleUsers["olive"])
	out, _, err := cli(t, "--api", h.cpURL(), "--user", "olive", "client", "list")
	if err != nil || !strings.Contains(out, "owned") || strings.Contains(out, "theirs") {
		t.Fatalf("the owner's client list: %v\n%s", err, out)
	}
	out, errOut, err := cli(t, "--api", h.cpURL(), "--user", "olive", "secret", "generate", "owned", "--expires-in", "30d")
	if err != nil || !strings.HasPrefix(out, "rgs_") || !strings.Contains(errOut, "for client owned") {
		t.Fatalf("the owner's generate: %v\n%s", err, errOut)
	}
	if _, _, err := cli(t, "--api", h.cpURL(), "--user", "olive", "client", "delete", "owned"); err == nil || !strings.Contains(err.Error(), "insufficient_scope (HTTP 403)") {
		t.Fatalf("the owner deleting: %v", err)
	}
	if _, _, err := cli(t, "--api", h.cpURL(), "--user", "olive", "secret", "list", "theirs"); err == nil || !strings.Contains(err.Error(), "not_found (HTTP 404)") {
		t.Fatalf("the owner reading another's client: %v", err)
	}

	// The user and password in --api's URL; the password never in a
	// message.
	t.Setenv(cpcli.EnvPassword, "")
	withPassword := func(pw string) string {
		u, _ := url.Parse(h.cpURL())
		u.User = url.UserPassword("olive", pw)
		return u.String()
	}
	out, _, err = cli(t, "--api", withPassword(consoleUsers["olive"]), "secret", "list", "owned")
	if err != nil || !strings.Contains(out, "expiring") {
		t.Fatalf("the owner's secret list with the user in --api: %v\n%s", err, out)
	}
	_, errOut, err = cli(t, "--api", withPassword("wrong-password-42"), "client", "list")
	if err == nil || !strings.Contains(err.Error(), "refused user olive") || strings.Contains(err.Error()+errOut, "wrong-password-42") {
		t.Fatalf("a wrong password: %v", err)
	}

	// --api at the edge.
	t.Setenv(cpcli.EnvAdminToken, adminToken)
	_, _, err = cli(t, "--api", h.edgeURL(), "client", "list")
	if err == nil || !strings.Contains(err.Error(), "as a rotagate edge does") || !strings.Contains(err.Error(), h.edgeURL()+"/v1/clients") {
		t.Fatalf("--api at the edge: %v", err)
	}
	// --api …/v1: the control plane's site passes the path on, and the
	// answer names it.
	_, _, err = cli(t, "--api", h.cpURL()+"/v1", "client", "list")
	if err == nil || !strings.Contains(err.Error(), h.cpURL()+"/v1/v1/clients") || !strings.Contains(err.Error(), "without /v1") {
		t.Fatalf("--api …/v1: %v", err)
	}
}
