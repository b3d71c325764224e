// Package integration drives real Caddy (in process, through caddytest)
// with rotagate compiled in, against real upstreams and real clients.
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/certmagic"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rotagate/rotagate"
	_ "github.com/rotagate/rotagate/controlplane"
)

// TestMain keeps Caddy's config and data files in a temporary home.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "rotagate-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, k := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		os.Setenv(k, home)
	}
	// Caddy computed these from the real home at init.
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(home, "caddy")}
	caddy.ConfigAutosavePath = filepath.Join(home, "autosave.json")
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}

// startCaddy loads a Caddyfile into the in-process Caddy. Under CI a
// skipped start (caddytest skips silently with -short or when its
// prerequisites are missing) is a failure.
func startCaddy(t *testing.T, caddyfile string) *caddytest.Tester {
	t.Helper()
	t.Cleanup(func() {
		if t.Skipped() && os.Getenv("CI") != "" {
			t.Error("the integration test was skipped under CI")
		}
	})
	tester := caddytest.NewTester(t)
	tester.InitServer(caddyfile, "caddyfile")
	return tester
}

// globalOptions are the options every test Caddyfile starts with: the
// ports caddytest expects, no TLS automation, fast shutdowns.
const globalOptions = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 1s
	skip_install_trust
	auto_https off
}
`
