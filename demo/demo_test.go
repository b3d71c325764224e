package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rotagate/rotagate"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestDemoEndToEnd starts the demo, runs the shell steps it prints with
// bash, and checks each step's answer: the rotation story works as told.
func TestDemoEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is needed to run the demo's printed steps")
		}
		t.Skip("no curl")
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	d, err := Start(context.Background(), Options{
		EdgePort: freePort(t), ControlPlanePort: freePort(t), UpstreamPort: freePort(t),
		RevocationDelay: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	var printed strings.Builder
	d.Print(&printed)
	if !strings.Contains(printed.String(), d.Steps()) || !strings.Contains(printed.String(), d.Secret) {
		t.Fatal("the printed text lacks the steps or the secret")
	}
	for _, want := range []string{
		"web console:                " + d.ConsoleURL,
		"log in as admin / " + d.AdminPassword + " (an admin), or as owner / " + d.OwnerPassword + " (owner of demo-app)",
	} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("the printed text lacks %q", want)
		}
	}
	if strings.Contains(d.caddyfile, d.AdminPassword) || strings.Contains(d.caddyfile, d.OwnerPassword) {
		t.Error("the Caddyfile holds a console password instead of its hash")
	}
	// The console answers both logins: the owner sees demo-app on My
	// clients, a wrong password is refused by basic_auth.
	for _, login := range []struct {
		user, password string
		want           int
	}{{"owner", d.OwnerPassword, 200}, {"admin", d.AdminPassword, 200}, {"owner", "wrong", 401}} {
		req, _ := http.NewRequest("GET", d.ConsoleURL, nil)
		req.SetBasicAuth(login.user, login.password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != login.want || (login.want == 200 && !strings.Contains(string(body), `href="/console/clients/demo-app"`)) {
			t.Errorf("console as %s: %d", login.user, resp.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", d.Steps()).CombinedOutput()
	if err != nil {
		t.Fatalf("steps failed: %v\n%s", err, out)
	}
	var lines, labels []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "# ") {
			labels = append(labels, l)
		} else if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	// Piped to bash, the steps still say what each answer is.
	for i, l := range labels {
		if !strings.HasPrefix(l, fmt.Sprintf("# %d. ", i+1)) {
			t.Errorf("label %d is %q", i+1, l)
		}
	}
	if len(labels) != 6 {
		t.Errorf("want 6 step labels in the output, got %d:\n%s", len(labels), out)
	}
	if len(lines) != 8 {
		t.Fatalf("want 8 answers, got %d:\n%s", len(lines), out)
	}
	token := `"access_token":"demo-token-for-demo-app"`
	for i, want := range []string{
		token,                 // 1. first secret
		"second secret: rgs_", // 2. generated
		token, token,          // 3. both work
		`"status":"revoked"`,              // 4. revoke answer
		`"error":"invalid_client"`, token, // 5. first refused, second works
		`"status":"revoked"`, // 6. listing
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("answer %d is %q, want it to contain %q", i+1, lines[i], want)
		}
	}
	if !strings.Contains(lines[7], `"last_used_at":"20`) || !strings.Contains(lines[7], `"last_used_from":"127.0.0.1"`) {
		t.Errorf("the listing shows no last use: %s", lines[7])
	}
}

// TestDemoReusesItsDir: a second run on the same --dir starts afresh.
func TestDemoReusesItsDir(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	opts := Options{Dir: t.TempDir(), EdgePort: freePort(t), ControlPlanePort: freePort(t), UpstreamPort: freePort(t)}
	first, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	second, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("second run on the same dir: %v", err)
	}
	defer second.Stop()
	if second.Secret == first.Secret || second.Secret == "" {
		t.Fatal("the second run did not issue a fresh secret")
	}
}
