package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSet remembers every long-running process the harness starts, so that
// each is ended by its PID on every path out.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (ps *procSet) start(name string, cmd *exec.Cmd) (*proc, error) {
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	ps.mu.Lock()
	ps.procs = append(ps.procs, p)
	ps.mu.Unlock()
	return p, nil
}

// stop asks the process (by PID) to end with SIGTERM, then kills it after
// grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (ps *procSet) stopAll() {
	ps.mu.Lock()
	procs := ps.procs
	ps.procs = nil
	ps.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
}

// caddy is one running Caddy binary.
type caddy struct {
	*proc
	admin string // http://127.0.0.1:port
	dir   string
}

// startCaddy writes cfg to dir/<name>.json and runs the binary on the
// server core, with its data directory under dir, then waits until its
// admin endpoint answers.
func (e *env) startCaddy(name string, adminPort int, cfg map[string]any, extraEnv ...string) (*caddy, error) {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg["admin"] = map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", adminPort), "config": map[string]any{"persist": false}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("taskset", "-c", strconv.Itoa(e.s.serverCPU), e.bin, "run", "--config", path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := e.procs.start("caddy "+name, cmd)
	if err != nil {
		return nil, err
	}
	c := &caddy{proc: p, admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), dir: dir}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("caddy %s exited at start (%v); see %s", name, p.err, logf.Name())
		case <-e.ctx.Done():
			return nil, e.ctx.Err()
		default:
		}
		if code, _, err := httpGet(e.ctx, c.admin+"/config/", nil); err == nil && code == 200 {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("caddy %s: admin endpoint not up after 30s; see %s", name, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// memStats are the runtime numbers read from the admin endpoint and /proc.
type memStats struct {
	HeapAlloc  uint64 // live heap right after a forced GC
	HeapSys    uint64
	Sys        uint64
	Goroutines int
	RSS, HWM   uint64 // VmRSS, VmHWM (peak RSS) from /proc, bytes
}

// mem forces a GC in Caddy (/debug/pprof/heap?gc=1), then reads memstats
// from /debug/vars, the goroutine count from /debug/pprof/goroutine, and
// RSS from /proc/<pid>/status.
func (c *caddy) mem(ctx context.Context) (memStats, error) {
	var m memStats
	if code, _, err := httpGet(ctx, c.admin+"/debug/pprof/heap?gc=1", nil); err != nil || code != 200 {
		return m, fmt.Errorf("forcing a GC through the admin endpoint: %d %v", code, err)
	}
	code, body, err := httpGet(ctx, c.admin+"/debug/vars", nil)
	if err != nil || code != 200 {
		return m, fmt.Errorf("/debug/vars: %d %v", code, err)
	}
	var vars struct {
		Memstats struct {
			HeapAlloc uint64
			HeapSys   uint64
			Sys       uint64
		} `json:"memstats"`
	}
	if err := json.Unmarshal(body, &vars); err != nil {
		return m, fmt.Errorf("/debug/vars: %v", err)
	}
	m.HeapAlloc, m.HeapSys, m.Sys = vars.Memstats.HeapAlloc, vars.Memstats.HeapSys, vars.Memstats.Sys
	code, body, err = httpGet(ctx, c.admin+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil || code != 200 {
		return m, fmt.Errorf("goroutine profile: %d %v", code, err)
	}
	first, _, _ := strings.Cut(string(body), "\n")
	if _, n, ok := strings.Cut(first, "total "); ok {
		m.Goroutines, _ = strconv.Atoi(strings.TrimSpace(n))
	}
	m.RSS, m.HWM = procMem(c.cmd.Process.Pid)
	return m, nil
}

// heapNow reads HeapAlloc from /debug/vars without forcing a GC: live
// data plus garbage not yet collected, what the process really holds.
func (c *caddy) heapNow(ctx context.Context) (uint64, error) {
	code, body, err := httpGet(ctx, c.admin+"/debug/vars", nil)
	if err != nil || code != 200 {
		return 0, fmt.Errorf("/debug/vars: %d %v", code, err)
	}
	var vars struct {
		Memstats struct{ HeapAlloc uint64 } `json:"memstats"`
	}
	err = json.Unmarshal(body, &vars)
	return vars.Memstats.HeapAlloc, err
}

// heapPeak samples heapNow every 20ms until stop is closed and returns
// the largest value seen.
func (c *caddy) heapPeak(ctx context.Context, stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if h, err := c.heapNow(ctx); err == nil {
				peak = max(peak, h)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-ctx.Done():
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func procMem(pid int) (rss, hwm uint64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseUint(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm
}

// Config pieces.

func server(port int, handlers ...map[string]any) map[string]any {
	return map[string]any{
		"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
		"routes":          []any{map[string]any{"handle": handlers}},
		"automatic_https": map[string]any{"disable": true},
	}
}

func staticOK() map[string]any {
	return map[string]any{"handler": "static_response", "status_code": 200, "body": "ok\n"}
}

func reverseProxy(port int) map[string]any {
	return map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": fmt.Sprintf("127.0.0.1:%d", port)}}}
}

func edgeHandler(cpURL, token string, flush time.Duration) map[string]any {
	return map[string]any{
		"handler":       "client_credentials",
		"control_plane": map[string]any{"urls": []string{cpURL}, "token": token},
		"usage_flush":   flush.String(),
	}
}

func controlPlaneHandler(db, adminToken, edgeToken string) map[string]any {
	return map[string]any{
		"handler":     "client_credentials_control_plane",
		"store":       map[string]any{"sqlite": map[string]any{"path": db}},
		"admin_token": adminToken,
		"edge_token":  edgeToken,
	}
}

// logging sends Caddy's log to dir/caddy.log; with debugCP, the control
// plane's logger goes at debug level, as JSON, to dir/controlplane.log.
func logging(dir string, debugCP bool) map[string]any {
	const cpLogger = "http.handlers.client_credentials_control_plane"
	logs := map[string]any{
		"default": map[string]any{
			"writer": map[string]any{"output": "file", "filename": filepath.Join(dir, "caddy.log")},
			"level":  "INFO",
		},
	}
	if debugCP {
		logs["default"].(map[string]any)["exclude"] = []string{cpLogger}
		logs["cp"] = map[string]any{
			"writer":  map[string]any{"output": "file", "filename": filepath.Join(dir, "controlplane.log")},
			"encoder": map[string]any{"format": "json"},
			"level":   "DEBUG",
			"include": []string{cpLogger},
		}
	}
	return map[string]any{"logs": logs}
}

func httpConfig(servers map[string]any) map[string]any {
	return map[string]any{"http": map[string]any{"servers": servers}}
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// HTTP helpers (loopback only; every request bounded in time).

var httpClient = &http.Client{Timeout: 30 * time.Second}

func httpGet(ctx context.Context, u string, hdr map[string]string) (int, []byte, error) {
	return httpDo(ctx, http.MethodGet, u, hdr, nil)
}

func httpDo(ctx context.Context, method, u string, hdr map[string]string, body any) (int, []byte, error) {
	if err := loopbackOnly(u); err != nil {
		return 0, nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func loopbackOnly(u string) error {
	pu, err := url.Parse(u)
	if err != nil {
		return err
	}
	if pu.Hostname() != "127.0.0.1" {
		return fmt.Errorf("refusing a non-loopback URL %s", u)
	}
	return nil
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(user)+":"+url.QueryEscape(pass)))
}

// controlPlane is a client of the management API.
type controlPlane struct {
	base, token string
}

func (cp controlPlane) call(ctx context.Context, method, path string, body any, want int) ([]byte, error) {
	code, b, err := httpDo(ctx, method, cp.base+path, map[string]string{"Authorization": "Bearer " + cp.token}, body)
	if err != nil {
		return nil, err
	}
	if code != want {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, code, bytes.TrimSpace(b))
	}
	return b, nil
}

func (cp controlPlane) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _, err := httpGet(ctx, cp.base+"/healthz", nil); err == nil && code == 200 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("control plane /healthz not 200 after 20s")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startControlPlane runs Caddy with cfg, which serves the control plane at
// cpURL among its servers, and waits until the control plane is healthy.
// The caller stops the Caddy it returns.
func (e *env) startControlPlane(name string, adminPort int, cfg map[string]any, cpURL, adminTok string) (*caddy, controlPlane, error) {
	c, err := e.startCaddy(name, adminPort, cfg)
	if err != nil {
		return nil, controlPlane{}, err
	}
	cp := controlPlane{base: cpURL, token: adminTok}
	if err := cp.waitHealthy(e.ctx); err != nil {
		c.stop(15 * time.Second)
		return nil, controlPlane{}, err
	}
	return c, cp, nil
}

func (cp controlPlane) createClient(ctx context.Context, id string) error {
	_, err := cp.call(ctx, http.MethodPost, "/v1/clients", map[string]any{"client_id": id}, http.StatusCreated)
	return err
}

// addSecret generates a secret (hash empty) or imports a hash; it returns
// the secret id and, for a generated one, the secret.
func (cp controlPlane) addSecret(ctx context.Context, client, hash string) (id, secret string, err error) {
	body := map[string]any{}
	if hash != "" {
		body["import"] = map[string]any{"hash": hash}
	}
	b, err := cp.call(ctx, http.MethodPost, "/v1/clients/"+url.PathEscape(client)+"/secrets", body, http.StatusCreated)
	if err != nil {
		return "", "", err
	}
	var out struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	err = json.Unmarshal(b, &out)
	return out.ID, out.Secret, err
}

// waitStatus polls u with the Authorization header until it answers want.
func waitStatus(ctx context.Context, u, auth string, want int, limit time.Duration) error {
	return waitStatusEvery(ctx, u, auth, want, limit, 20*time.Millisecond)
}

// waitStatusEvery is waitStatus with a pause of every between tries.
func waitStatusEvery(ctx context.Context, u, auth string, want int, limit, every time.Duration) error {
	deadline := time.Now().Add(limit)
	last := 0
	for {
		code, _, err := httpGet(ctx, u, map[string]string{"Authorization": auth})
		if err == nil && code == want {
			return nil
		}
		last = code
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still %d (err %v) after %s, want %d", u, last, err, limit, want)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(every)
	}
}

func randToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
