// Package integration drives real Caddy (in process) with rotagate compiled
// in, against real upstreams and real clients. Every test listens on free
// loopback ports the kernel hands out, never on fixed ones: a demo or a
// second run on the same machine cannot take its requests.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/template"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rotagate/rotagate"
	_ "github.com/rotagate/rotagate/controlplane"
	"github.com/rotagate/rotagate/internal/caddyhome"
	"github.com/rotagate/rotagate/internal/loopback"
)

// TestMain keeps Caddy's config and data files in a temporary home.
func TestMain(m *testing.M) {
	os.Exit(caddyhome.Run(m, "rotagate-integration-"))
}

// startCaddy loads a Caddyfile into the in-process Caddy, as a reload
// through the admin API would (an unchanged config is left running), and
// stops Caddy when the test ends. Tests of this package share that one
// Caddy, so none of them runs in parallel.
func startCaddy(t *testing.T, caddyfile string) {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting the test Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("Caddyfile warning: %s", w)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if err := caddy.Load(cfg, false); err != nil {
		t.Fatalf("loading the test Caddyfile: %v\n%s", err, caddyfile)
	}
}

// globalOptions are the options every test Caddyfile starts with: no admin
// endpoint (startCaddy loads configs in process), no TLS automation, fast
// shutdowns.
const globalOptions = `{
	admin off
	persist_config off
	grace_period 1s
	skip_install_trust
	auto_https off
}
`

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", loopback.FreePort(t))
}

// startSite loads the global options and one site into the in-process
// Caddy, as startCaddy does: the site listens on a free loopback port and
// holds directives, which start on a line of their own. It returns the
// site's URL.
func startSite(t *testing.T, directives string) string {
	t.Helper()
	port := loopback.FreePort(t)
	startCaddy(t, globalOptions+fmt.Sprintf("\n:%d {\n\tbind 127.0.0.1%s}\n", port, directives))
	return localURL(port)
}

// localURL is the http URL of a loopback port.
func localURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// halves is the Caddyfile of the tests that run both halves in one Caddy:
// a control plane on SQLite in Dir and an edge fed by it, with a 2s
// revocation delay, each on a free port. The fields are what the tests
// vary; newHalves fills the rest, Dir with a temporary directory.
type halves struct {
	EdgePort, CPPort int
	Dir              string
	// Servers are lines of the global servers block (trusted_proxies).
	Servers string
	// CPRoutes are lines of the control plane's site before its handler:
	// a metrics route, basic_auth for people.
	CPRoutes string
	// CPOptions are lines of client_credentials_control_plane after the
	// store and the tokens.
	CPOptions string
	// UsageFlush is the edge's usage_flush. Default: 1s.
	UsageFlush string
	// Budget is the edge's failure_budget. Default: the edge's default.
	Budget string
	// Realm is the edge's realm. Default: the edge's default.
	Realm string
	// Upstream is the host:port the edge proxies to, with X-Client-Id set.
	// Default: the edge answers "token for <client id>" itself.
	Upstream string
}

// testBudget is the failure budget of tests that present revoked secrets
// on purpose, dozens of times a minute from one address: raised so that
// they measure revocation, not throttling.
const testBudget = "1000 per 1m"

func newHalves(t *testing.T) halves {
	return halves{EdgePort: loopback.FreePort(t), CPPort: loopback.FreePort(t), Dir: t.TempDir()}
}

func (h halves) edgeURL() string { return localURL(h.EdgePort) }
func (h halves) cpURL() string   { return localURL(h.CPPort) }

// upstreamAddr is the host:port of an httptest server's URL, for Upstream.
func upstreamAddr(url string) string { return strings.TrimPrefix(url, "http://") }

var halvesTemplate = template.Must(template.New("halves").Parse(strings.TrimSuffix(globalOptions, "}\n") +
	`{{with .Servers}}	servers {
{{.}}	}
{{end}}}

http://127.0.0.1:{{.CPPort}} {
	bind 127.0.0.1
{{.CPRoutes}}	client_credentials_control_plane {
		store sqlite {{.Dir}}/rotagate.db
		admin_token ` + adminToken + `
		edge_token ` + edgeToken + `
{{.CPOptions}}	}
}

:{{.EdgePort}} {
	bind 127.0.0.1
	client_credentials {
		control_plane http://127.0.0.1:{{.CPPort}} {
			token ` + edgeToken + `
		}
		revocation_delay 2s
		usage_flush {{or .UsageFlush "1s"}}
{{with .Budget}}		failure_budget {{.}}
{{end}}{{with .Realm}}		realm {{.}}
{{end}}	}
{{if .Upstream}}	request_header X-Client-Id {http.auth.client_id}
	reverse_proxy {{.Upstream}}
{{else}}	respond "token for {http.auth.client_id}" 200
{{end}}}
`))

// start loads the halves into the in-process Caddy, as startCaddy does,
// and returns the management API of their control plane.
func (h halves) start(t *testing.T) adminAPI {
	t.Helper()
	startCaddy(t, h.caddyfile())
	return adminAPI{t: t, base: h.cpURL()}
}

// caddyfile renders the Caddyfile.
func (h halves) caddyfile() string {
	var b bytes.Buffer
	if err := halvesTemplate.Execute(&b, h); err != nil {
		panic(err) // the template and its fields are fixed at compile time
	}
	return b.String()
}
