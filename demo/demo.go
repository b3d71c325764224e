// Package demo is `caddy client-credentials demo`: a complete local rotagate
// setup in one process — a control plane on SQLite, an edge in front of a
// small token-issuing upstream, one client with one secret — and the shell
// lines that walk through a zero-downtime rotation.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/controlplane/cli"
)

func init() {
	cli.AddCommand(func(root *cobra.Command) { root.AddCommand(command()) })
}

// Options place the demo.
type Options struct {
	EdgePort, ControlPlanePort, UpstreamPort int
	// Dir holds the SQLite database and Caddy's data; empty: a new
	// temporary directory, removed on Stop.
	Dir string
	// RevocationDelay of the demo edge.
	RevocationDelay time.Duration
}

// Demo is a running demo.
type Demo struct {
	EdgeURL, APIURL string
	AdminToken      string
	// ConsoleURL is the web console, behind basic_auth: AdminUser is an
	// admin, OwnerUser owns the demo client.
	ConsoleURL            string
	AdminPassword         string
	OwnerPassword         string
	ClientID              string
	SecretID, Secret      string
	RevocationDelay       time.Duration
	dir                   string
	removeDir             bool
	caddyfile, shellSteps string
}

// The demo's client and console users.
const (
	demoClient = "demo-app"
	AdminUser  = "admin"
	OwnerUser  = "owner"
)

func command() *cobra.Command {
	var opts Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Runs a complete local setup: control plane, edge, demo upstream, one client",
		Long: `
Starts, in this process, a rotagate control plane on SQLite, an edge on
127.0.0.1:<edge-port> in front of a small upstream that issues demo tokens,
and one client with one secret; then prints the Caddyfile it runs and the
shell lines that walk through a rotation. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := stopWithParent(); err != nil {
				return err
			}
			d, err := Start(ctx, opts)
			if err != nil {
				return err
			}
			d.Print(cmd.OutOrStdout())
			<-ctx.Done()
			fmt.Fprintln(cmd.ErrOrStderr(), "stopping the demo")
			return d.Stop()
		},
	}
	cmd.Flags().IntVar(&opts.EdgePort, "edge-port", 8080, "port of the edge (token endpoint)")
	cmd.Flags().IntVar(&opts.ControlPlanePort, "control-plane-port", 9180, "port of the control plane API")
	cmd.Flags().IntVar(&opts.UpstreamPort, "upstream-port", 9190, "port of the demo upstream")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "directory for the database and data (default: a temporary one, removed at exit)")
	cmd.Flags().DurationVar(&opts.RevocationDelay, "revocation-delay", 3*time.Second, "the edge's revocation delay")
	return cmd
}

var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin off
	auto_https off
	persist_config off
	storage file_system {{.Dir}}/caddy
}

# The control plane: management API, edge feed, usage ingest, and the
# web console for people signed in by basic_auth (bearer tokens pass).
http://127.0.0.1:{{.CPPort}} {
	bind 127.0.0.1
	@people {
		path /console /console/* /v1/clients /v1/clients/*
		not header Authorization "Bearer *"
	}
	basic_auth @people {
		{{.AdminUser}} {{.AdminHash}}
		{{.OwnerUser}} {{.OwnerHash}}
	}
	client_credentials_control_plane {
		store sqlite {{.Dir}}/rotagate.db
		admin_token {{.AdminToken}}
		edge_token {{.EdgeToken}}
		admins {{.AdminUser}}
	}
}

# The edge, in front of a legacy token endpoint.
:{{.EdgePort}} {
	bind 127.0.0.1
	client_credentials {
		control_plane http://127.0.0.1:{{.CPPort}} {
			token {{.EdgeToken}}
		}
		revocation_delay {{.Delay}}
		usage_flush 1s
	}
	request_header X-Client-Id {http.auth.client_id}
	reverse_proxy 127.0.0.1:{{.UpstreamPort}}
}

# The legacy upstream: it trusts whoever the edge lets through.
:{{.UpstreamPort}} {
	bind 127.0.0.1
	header Content-Type application/json
	respond ` + "`" + `{"access_token":"demo-token-for-{http.request.header.X-Client-Id}","token_type":"bearer","expires_in":3600}` + "`" + `
}
`))

var shellTemplate = template.Must(template.New("steps").Parse(`export EDGE={{.EdgeURL}} API={{.APIURL}} ADMIN={{.AdminToken}} CLIENT={{.ClientID}}
export SECRET1={{.Secret}} SECRET1_ID={{.SecretID}}

echo '# 1. The app gets a token with its secret (HTTP Basic):'
curl -s -u "$CLIENT:$SECRET1" -d grant_type=client_credentials "$EDGE/token"; echo

echo '# 2. Rotation starts: generate a second secret (shown once, never again):'
SECRET2=$(curl -s -X POST -H "Authorization: Bearer $ADMIN" "$API/v1/clients/$CLIENT/secrets" | sed -E 's/.*"secret":"([^"]+)".*/\1/'); echo "second secret: $SECRET2"

echo '# 3. Both secrets work, so the app can switch without downtime (here as a form body):'
curl -s -d "grant_type=client_credentials&client_id=$CLIENT&client_secret=$SECRET2" "$EDGE/token"; echo
curl -s -u "$CLIENT:$SECRET1" -d grant_type=client_credentials "$EDGE/token"; echo

echo '# 4. Revoke the first secret:'
curl -s -X DELETE -H "Authorization: Bearer $ADMIN" "$API/v1/clients/$CLIENT/secrets/$SECRET1_ID"; echo

echo '# 5. Within the revocation delay ({{.RevocationDelay}}) every edge refuses it; the second goes on working:'
sleep {{.RevocationDelay.Seconds}}
curl -s -u "$CLIENT:$SECRET1" -d grant_type=client_credentials "$EDGE/token"; echo
curl -s -u "$CLIENT:$SECRET2" -d grant_type=client_credentials "$EDGE/token"; echo

echo '# 6. The listing shows the revoked secret, and when and from where each was last used:'
curl -s -H "Authorization: Bearer $ADMIN" "$API/v1/clients/$CLIENT/secrets"; echo
`))

// Start runs the demo until Stop. It refuses ports someone listens on.
func Start(ctx context.Context, opts Options) (*Demo, error) {
	if opts.RevocationDelay <= 0 {
		opts.RevocationDelay = 3 * time.Second
	}
	if err := checkPorts(opts); err != nil {
		return nil, err
	}
	d := &Demo{
		EdgeURL:         fmt.Sprintf("http://127.0.0.1:%d", opts.EdgePort),
		APIURL:          fmt.Sprintf("http://127.0.0.1:%d", opts.ControlPlanePort),
		AdminToken:      "adm_" + randomHex(),
		ConsoleURL:      fmt.Sprintf("http://127.0.0.1:%d/console/", opts.ControlPlanePort),
		AdminPassword:   randomHex(),
		OwnerPassword:   randomHex(),
		ClientID:        demoClient,
		RevocationDelay: opts.RevocationDelay,
		dir:             opts.Dir,
	}
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "rotagate-demo-")
		if err != nil {
			return nil, err
		}
		d.dir, d.removeDir = dir, true
	}
	dir, err := filepath.Abs(d.dir)
	if err != nil {
		return nil, err
	}
	d.dir = dir
	// The edge keeps its last snapshot under Caddy's data directory: keep
	// the demo's with the rest of it.
	if err := os.Setenv("XDG_DATA_HOME", filepath.Join(d.dir, "data")); err != nil {
		return nil, err
	}
	// basic_auth keeps bcrypt hashes of the generated passwords.
	adminHash, err := bcrypt.GenerateFromPassword([]byte(d.AdminPassword), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	ownerHash, err := bcrypt.GenerateFromPassword([]byte(d.OwnerPassword), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	var cf bytes.Buffer
	err = caddyfileTemplate.Execute(&cf, map[string]any{
		"Dir": d.dir, "CPPort": opts.ControlPlanePort, "EdgePort": opts.EdgePort, "UpstreamPort": opts.UpstreamPort,
		"AdminToken": d.AdminToken, "EdgeToken": "edg_" + randomHex(), "Delay": opts.RevocationDelay.String(),
		"AdminUser": AdminUser, "AdminHash": string(adminHash), "OwnerUser": OwnerUser, "OwnerHash": string(ownerHash),
	})
	if err != nil {
		return nil, err
	}
	d.caddyfile = cf.String()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(cf.Bytes(), nil)
	if err != nil {
		return nil, fmt.Errorf("adapting the demo Caddyfile: %v", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		d.cleanupDir()
		return nil, fmt.Errorf("starting Caddy: %v", err)
	}
	if err := d.seed(ctx); err != nil {
		_ = d.Stop()
		return nil, err
	}
	if err := d.waitForEdge(ctx); err != nil {
		_ = d.Stop()
		return nil, err
	}
	var steps bytes.Buffer
	if err := shellTemplate.Execute(&steps, d); err != nil {
		_ = d.Stop()
		return nil, err
	}
	d.shellSteps = steps.String()
	return d, nil
}

// checkPorts returns an error naming the flag to pass for the first of the
// demo's ports that is out of range, repeated, or taken. Caddy listens with
// SO_REUSEPORT, so it would share a taken port silently with the server
// there (another demo, another Caddy), and the kernel would split the
// connections between the two; a plain bind, without SO_REUSEPORT, fails
// on a port anyone listens on.
func checkPorts(opts Options) error {
	ports := []struct {
		port int
		flag string
	}{
		{opts.EdgePort, "--edge-port"},
		{opts.ControlPlanePort, "--control-plane-port"},
		{opts.UpstreamPort, "--upstream-port"},
	}
	for i, p := range ports {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("port %d is no TCP port; pass %s with one from 1 to 65535", p.port, p.flag)
		}
		for _, q := range ports[:i] {
			if q.port == p.port {
				return fmt.Errorf("%s and %s are both %d; the demo needs three different ports", q.flag, p.flag, p.port)
			}
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d is in use (%v); pass %s to choose another", p.port, err, p.flag)
		}
		if err != nil {
			return fmt.Errorf("port %d cannot be used (%v); pass %s to choose another", p.port, err, p.flag)
		}
		if err := ln.Close(); err != nil {
			return err
		}
	}
	return nil
}

// seed creates the demo client and its first secret through the API.
func (d *Demo) seed(ctx context.Context) error {
	// A --dir reused from an earlier run already has the client: start it
	// afresh, since its old secret was shown once and is gone.
	if err := d.api(ctx, http.MethodDelete, "/v1/clients/"+d.ClientID, nil, nil); err != nil && !errors.Is(err, errNotFound) {
		return fmt.Errorf("removing the previous demo client: %v", err)
	}
	if err := d.api(ctx, http.MethodPost, "/v1/clients", map[string]any{"client_id": d.ClientID, "name": "Demo app", "owners": []string{OwnerUser}}, nil); err != nil {
		return fmt.Errorf("creating the demo client: %v", err)
	}
	var created struct{ ID, Secret string }
	if err := d.api(ctx, http.MethodPost, "/v1/clients/"+d.ClientID+"/secrets", map[string]string{}, &created); err != nil {
		return fmt.Errorf("generating the demo secret: %v", err)
	}
	d.SecretID, d.Secret = created.ID, created.Secret
	return nil
}

var errNotFound = errors.New("not found")

func (d *Demo) api(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.APIURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitForEdge returns once the edge has the demo secret in its snapshot:
// the edge and the control plane start together, so the edge's first fetch
// may have found nobody listening yet.
func (d *Demo) waitForEdge(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.EdgeURL+"/token", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(d.ClientID, d.Secret)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("the demo edge did not come up within 15s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Steps is the shell walk-through of a rotation, for bash.
func (d *Demo) Steps() string { return d.shellSteps }

// Print writes what the demo runs and how to try it.
func (d *Demo) Print(w io.Writer) {
	fmt.Fprintf(w, `rotagate demo is running; Ctrl-C stops it.

  token endpoint (the edge):  %s/token
  control plane API:          %s   (admin token %s)
  web console:                %s
    log in as %s / %s (an admin), or as %s / %s (owner of %s)
  client %q with secret %s (shown once)
  data directory:             %s

The Caddyfile it runs:

%s
Try a zero-downtime rotation in another shell (or pipe these lines to bash):

%s`, d.EdgeURL, d.APIURL, d.AdminToken, d.ConsoleURL, AdminUser, d.AdminPassword, OwnerUser, d.OwnerPassword, d.ClientID,
		d.ClientID, d.Secret, d.dir, indent(d.caddyfile), d.shellSteps)
	fmt.Fprintf(w, "\nThe same with the CLI: export ROTAGATE_API=%s ROTAGATE_ADMIN_TOKEN=%s, then\n  go run ./cmd/caddy client-credentials secret list %s\n", d.APIURL, d.AdminToken, d.ClientID)
}

// Stop stops Caddy and removes a temporary data directory.
func (d *Demo) Stop() error {
	err := caddy.Stop()
	d.cleanupDir()
	return err
}

func (d *Demo) cleanupDir() {
	if d.removeDir {
		if err := os.RemoveAll(d.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(os.Stderr, "removing the demo directory:", err)
		}
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
