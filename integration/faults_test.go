package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane"
	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/internal/loopback"
)

// outsideCP is a control plane running outside Caddy — the real
// controlplane code on a real SQLite file — that a test can stop and start
// again on the same port, as an operator's restart would.
type outsideCP struct {
	t    *testing.T
	addr string // host:port
	path string
	http *http.Server
	cp   *controlplane.Server
}

// startOutsideCP starts it at addr (from freeAddr, or the address of one
// stopped before) on the SQLite file at path; wrap, if given, wraps its
// handler (a test that watches the feed).
func startOutsideCP(t *testing.T, addr, path string, wrap ...func(http.Handler) http.Handler) *outsideCP {
	t.Helper()
	cp, err := controlplane.NewServer(context.Background(), path, rules.ServiceOptions{},
		api.Options{AdminToken: adminToken, EdgeToken: edgeToken})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = cp
	for _, w := range wrap {
		h = w(h)
	}
	p := &outsideCP{t: t, addr: addr, path: path, http: serveOutside(t, cp, addr, h), cp: cp}
	t.Cleanup(p.stop)
	return p
}

// serveOutside serves h, the handler of cp or one wrapping it, on addr
// outside Caddy, until the returned server is closed; when addr cannot be
// had, it closes cp and fails the test.
func serveOutside(t *testing.T, cp *controlplane.Server, addr string, h http.Handler) *http.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cp.Close()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	return srv
}

func (p *outsideCP) url() string { return "http://" + p.addr }

// stop closes the listener and every connection, then the store.
func (p *outsideCP) stop() {
	if p.http == nil {
		return
	}
	_ = p.http.Close()
	_ = p.cp.Close()
	p.http = nil
}

// edgeOnly is a Caddyfile with an edge alone on edgePort, fed by the
// control plane at cpURL.
func edgeOnly(edgePort int, cpURL, maxStale string) string {
	return globalOptions + `
:` + strconv.Itoa(edgePort) + ` {
	bind 127.0.0.1
	client_credentials {
		control_plane ` + cpURL + ` {
			token ` + edgeToken + `
		}
		revocation_delay 1s
		max_stale ` + maxStale + `
		usage_flush 1s
	}
	respond "upstream reached" 200
}
`
}

// noEdge is a Caddyfile that unloads the edge on edgePort (its feed
// stops) but keeps the port answering.
func noEdge(edgePort int) string {
	return globalOptions + ":" + strconv.Itoa(edgePort) + " {\n\tbind 127.0.0.1\n\trespond \"no edge\" 200\n}\n"
}

// freshConn sends each request on a new connection: tests restart Caddy on
// the same port, and a POST on a kept-alive connection the old server
// closed is reset, not retried.
var freshConn = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// status makes one Basic-authenticated request to the edge at edge.
func status(t *testing.T, edge, client, secret string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, edge+"/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := freshConn.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// syncedEdge starts an outside control plane with one client and secret,
// and an edge on it with the given max_stale on a free port, and returns
// once the edge accepts the secret.
func syncedEdge(t *testing.T, client, maxStale string) (*outsideCP, adminAPI, secretInfo, int) {
	t.Helper()
	cp := startOutsideCP(t, freeAddr(t), filepath.Join(t.TempDir(), "rotagate.db"))
	api := adminAPI{t: t, base: cp.url()}
	api.createClient(client)
	s := api.generate(client)
	edgePort := loopback.FreePort(t)
	startCaddy(t, edgeOnly(edgePort, cp.url(), maxStale))
	cptest.WaitFor(t, 5*time.Second, "the edge accepts the secret", func() bool {
		code, _ := status(t, localURL(edgePort), client, s.Secret)
		return code == 200
	})
	return cp, api, s, edgePort
}

// TestControlPlaneDown: with the control plane stopped the edge serves
// until max_stale, then answers 503, then recovers by itself when the
// control plane returns; a stamp whose flush failed meanwhile arrives.
// Then the edge restarts while the control plane is down and serves from
// its saved snapshot.
func TestControlPlaneDown(t *testing.T) {
	cp, api, s, port := syncedEdge(t, "ops", "2s")
	edgeURL := localURL(port)

	cp.stop()
	stopped := time.Now()
	if code, _ := status(t, edgeURL, "ops", s.Secret); code != 200 { // its stamp cannot be flushed now
		t.Fatalf("right after the control plane stopped: %d", code)
	}
	usedWhileDown := time.Now()
	until503 := cptest.WaitFor(t, 4*time.Second, "503 once max_stale has passed", func() bool {
		code, hdr := status(t, edgeURL, "ops", s.Secret)
		return code == 503 && hdr.Get("Retry-After") != ""
	})
	if since := time.Since(stopped); since < time.Second || since > 3*time.Second {
		t.Fatalf("503 came %v after the stop; max_stale is 2s", since)
	}
	t.Logf("control plane down: the edge served for %v, then answered 503 (max_stale 2s)", until503)

	startOutsideCP(t, cp.addr, cp.path)
	recovered := cptest.WaitFor(t, 10*time.Second, "the edge recovers by itself", func() bool {
		code, _ := status(t, edgeURL, "ops", s.Secret)
		return code == 200
	})
	t.Logf("the edge recovered %v after the control plane came back", recovered)
	cptest.WaitFor(t, 10*time.Second, "the stamp recorded while the control plane was down arrives", func() bool {
		got := api.secrets("ops")[s.ID]
		return got.LastUsedAt != nil && !got.LastUsedAt.Before(usedWhileDown.Add(-time.Second).Truncate(time.Millisecond))
	})
}

// TestEdgeRestartWhileControlPlaneDown: an edge that synced once and is
// restarted while the control plane is down serves from its saved snapshot
// within max_stale, then 503.
func TestEdgeRestartWhileControlPlaneDown(t *testing.T) {
	cp, _, s, port := syncedEdge(t, "ops2", "5s")
	edgeURL := localURL(port)

	cp.stop()
	// Unload the edge (its feed stops), then load it again: a fresh feed
	// that can only start from disk.
	startCaddy(t, noEdge(port))
	startCaddy(t, edgeOnly(port, cp.url(), "5s"))
	if code, _ := status(t, edgeURL, "ops2", s.Secret); code != 200 {
		t.Fatalf("the restarted edge did not serve from its saved snapshot: %d", code)
	}
	if code, _ := status(t, edgeURL, "ops2", s.Secret+"x"); code != 401 {
		t.Fatalf("a wrong secret on the restarted edge: %d", code)
	}
	cptest.WaitFor(t, 8*time.Second, "503 once max_stale has passed since the saved confirmation", func() bool {
		code, _ := status(t, edgeURL, "ops2", s.Secret)
		return code == 503
	})
}

// TestEdgeRestartWithFutureConfirmation (issue 9, defect 1): an edge
// restarted with its saved confirmation time set ahead of now (a clock
// stepped back, a data directory copied from elsewhere) does not trust it:
// with the control plane down it answers 503 from the start.
func TestEdgeRestartWithFutureConfirmation(t *testing.T) {
	cp, _, s, port := syncedEdge(t, "ops3", "2s")
	edgeURL := localURL(port)

	cp.stop()
	startCaddy(t, noEdge(port))
	// Other tests leave their feeds' files in the same data directory:
	// this edge's is the one written last.
	files, err := filepath.Glob(filepath.Join(os.Getenv("XDG_DATA_HOME"), "caddy", "rotagate", "edge", "*.confirmed"))
	if err != nil || len(files) == 0 {
		t.Fatalf("saved confirmation files: %v %v", files, err)
	}
	saved := []string{newestFile(t, files)}
	raw, err := os.ReadFile(saved[0])
	if err != nil {
		t.Fatal(err)
	}
	// Only the time moves a day ahead; whatever else the file says stays.
	fields := strings.Fields(string(raw))
	fields[0] = strconv.FormatInt(time.Now().Add(24*time.Hour).UnixNano(), 10)
	if err := os.WriteFile(saved[0], []byte(strings.Join(fields, " ")), 0o600); err != nil {
		t.Fatal(err)
	}
	startCaddy(t, edgeOnly(port, cp.url(), "2s"))
	if code, _ := status(t, edgeURL, "ops3", s.Secret); code != 503 {
		t.Fatalf("with a saved confirmation a day ahead and the control plane down: %d, want 503", code)
	}
}

// TestGarbageFromControlPlane: an endpoint that answers garbage is not
// trusted — the edge keeps what it had and ends in 503 at max_stale.
func TestGarbageFromControlPlane(t *testing.T) {
	cp, _, s, port := syncedEdge(t, "g", "2s")
	edgeURL := localURL(port)
	cp.stop()
	ln, err := net.Listen("tcp", cp.addr)
	if err != nil {
		t.Fatal(err)
	}
	garbage := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"x.999"`)
		_, _ = w.Write([]byte(`{"epoch":"x","revision":999,"clients":[{"client_id":"g","secrets":[{"id":"s","hash":"plain"}]}]`))
	})}
	go func() { _ = garbage.Serve(ln) }()
	defer garbage.Close()
	if code, _ := status(t, edgeURL, "ops", "anything"); code != 401 {
		t.Fatalf("unknown client: %d", code)
	}
	cptest.WaitFor(t, 4*time.Second, "503 once max_stale passes with only garbage answers", func() bool {
		code, _ := status(t, edgeURL, "g", s.Secret)
		return code == 503
	})
}

// newestFile returns the most recently modified of files.
func newestFile(t *testing.T, files []string) string {
	t.Helper()
	var newest string
	var at time.Time
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if info.ModTime().After(at) {
			newest, at = f, info.ModTime()
		}
	}
	return newest
}
