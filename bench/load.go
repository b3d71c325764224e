package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// reportLua prints wrk's summary on one machine-readable line. The good
// client's Authorization header comes from $BENCH_AUTH (not the command
// line, which other users can read).
const reportLua = `
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// attackLua sends, on every request, Basic credentials for the user in
// $BENCH_ATTACK_USER with a password never sent before: "wrong-<seed>-<n>"
// (the seed differs per run and per thread, so no cache can help).
const attackLua = `
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local s1 = math.floor(n / 262144) % 64
    local s2 = math.floor(n / 4096) % 64
    local s3 = math.floor(n / 64) % 64
    local s4 = n % 64
    out[#out + 1] = chars:sub(s1 + 1, s1 + 1) .. chars:sub(s2 + 1, s2 + 1) ..
      (b and chars:sub(s3 + 1, s3 + 1) or "=") .. (c and chars:sub(s4 + 1, s4 + 1) or "=")
  end
  return table.concat(out)
end

local prefix = os.getenv("BENCH_ATTACK_USER") .. ":wrong-" .. os.getenv("BENCH_ATTACK_SEED") .. "-" .. tostring(math.random(1, 1000000000)) .. "-"
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("GET", "/", { ["Authorization"] = "Basic " .. b64(prefix .. counter) })
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// wrkResult is one wrk run.
type wrkResult struct {
	Requests             int64
	Duration             time.Duration
	Connect, Read, Write int64
	Status, Timeout      int64 // status: answers other than 2xx/3xx
	P50, P99             time.Duration
}

func (r wrkResult) RPS() float64 { return float64(r.Requests) / r.Duration.Seconds() }

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	i := strings.LastIndex(out, "RESULT ")
	if i < 0 {
		return r, errors.New("no RESULT line in wrk's output")
	}
	line, _, _ := strings.Cut(out[i+len("RESULT "):], "\n")
	for _, kv := range strings.Fields(line) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return r, fmt.Errorf("bad field %q", kv)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return r, fmt.Errorf("bad field %q", kv)
		}
		switch k {
		case "requests":
			r.Requests = n
		case "duration_us":
			r.Duration = time.Duration(n) * time.Microsecond
		case "connect":
			r.Connect = n
		case "read":
			r.Read = n
		case "write":
			r.Write = n
		case "status":
			r.Status = n
		case "timeout":
			r.Timeout = n
		case "p50_us":
			r.P50 = time.Duration(n) * time.Microsecond
		case "p99_us":
			r.P99 = time.Duration(n) * time.Microsecond
		}
	}
	if r.Duration <= 0 {
		return r, errors.New("wrk reported no duration")
	}
	return r, nil
}

// wrkRun is one wrk process in flight on the load core.
type wrkRun struct {
	cmd    *exec.Cmd
	out    strings.Builder
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startWrk(script, target string, conns int, d time.Duration, extraEnv ...string) (*wrkRun, error) {
	if err := loopbackOnly(target); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, d+20*time.Second)
	w := &wrkRun{cancel: cancel, done: make(chan error, 1)}
	w.cmd = exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(e.s.loadCPU), "wrk",
		"-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Round(time.Second)/time.Second))+"s",
		"--timeout", "10s", "-s", script, target)
	w.cmd.Env = append(os.Environ(), extraEnv...)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	w.cmd.WaitDelay = 5 * time.Second
	if err := w.cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting wrk: %w", err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	return w, nil
}

func (w *wrkRun) wait() (wrkResult, error) {
	err := <-w.done
	w.cancel()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, w.out.String())
	}
	return parseWrk(w.out.String())
}

// contender is one row of the load table.
type contender struct {
	key, name  string
	url, auth  string
	attackUser string // empty: no attack
	attackURL  string
	target     string
}

type sample struct {
	good, attack wrkResult
	// cpu is the CPU time Caddy used while the good client ran, and wall
	// the time that took: cpu/wall is the share of its core Caddy got
	// (below 1 when other processes took some), and good requests per
	// CPU-second are free of that noise.
	cpu, wall time.Duration
}

func (s sample) cpuShare() float64 { return s.cpu.Seconds() / s.wall.Seconds() }

func (s sample) perCPUSecond() float64 { return float64(s.good.Requests) / s.cpu.Seconds() }

// procCPU is the user+system CPU time of a process, from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck
}

func runLoad(e *env) error {
	ports, err := freePorts(7)
	if err != nil {
		return err
	}
	adminPort, upPort, pA, pB, pC, pD, cpPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
	adminTok, edgeTok := randToken(), randToken()
	cpURL := fmt.Sprintf("http://127.0.0.1:%d", cpPort)

	legacyPassword := "legacy-" + randToken()
	hash, err := bcrypt.GenerateFromPassword([]byte(legacyPassword), e.s.bcryptCost)
	if err != nil {
		return err
	}
	dir := filepath.Join(e.dir, "load")
	basicAuthHandler := map[string]any{
		"handler": "authentication",
		"providers": map[string]any{"http_basic": map[string]any{
			"accounts":   []any{map[string]any{"username": "bench", "password": string(hash)}},
			"hash":       map[string]any{"algorithm": "bcrypt"},
			"hash_cache": map[string]any{},
		}},
	}
	edge := edgeHandler(cpURL, edgeTok, 10*time.Second)
	cfg := map[string]any{
		"logging": logging(dir, false),
		"apps": httpConfig(map[string]any{
			"upstream":     server(upPort, staticOK()),
			"a_proxy":      server(pA, reverseProxy(upPort)),
			"b_basic_auth": server(pB, basicAuthHandler, reverseProxy(upPort)),
			"c_rotagate":   server(pC, edge, reverseProxy(upPort)),
			"d_rotagate":   server(pD, edge, reverseProxy(upPort)),
			"control":      server(cpPort, controlPlaneHandler(filepath.Join(dir, "rotagate.db"), adminTok, edgeTok)),
		}),
	}
	c, err := e.startCaddy("load", adminPort, cfg)
	if err != nil {
		return err
	}
	defer c.stop(10 * time.Second)

	cp := controlPlane{base: cpURL, token: adminTok}
	if err := cp.waitHealthy(e.ctx); err != nil {
		return err
	}
	if err := cp.createClient(e.ctx, "bench-sha256"); err != nil {
		return err
	}
	_, shaSecret, err := cp.addSecret(e.ctx, "bench-sha256", "")
	if err != nil {
		return err
	}
	if err := cp.createClient(e.ctx, "bench-bcrypt"); err != nil {
		return err
	}
	if _, _, err := cp.addSecret(e.ctx, "bench-bcrypt", string(hash)); err != nil {
		return err
	}

	url := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d/", p) }
	basicGood := basicAuth("bench", legacyPassword)
	shaGood := basicAuth("bench-sha256", shaSecret)
	bcryptGood := basicAuth("bench-bcrypt", legacyPassword)
	cs := []contender{
		{key: "a", name: "reverse_proxy, no auth", url: url(pA)},
		{key: "a+h", name: "(a) sent (c)'s Authorization header (forwarded; diagnostic)", url: url(pA), auth: shaGood},
		{key: "b", name: "basic_auth, bcrypt (cache hit)", url: url(pB), auth: basicGood},
		{key: "c", name: "rotagate, generated sha256 secret", url: url(pC), auth: shaGood, target: "≥ 0.97"},
		{key: "d", name: "rotagate, imported bcrypt (cache hit)", url: url(pD), auth: bcryptGood, target: "≥ 0.95"},
		{key: "e", name: "good client on (b) during attack on (b)", url: url(pB), auth: basicGood, attackUser: "bench", attackURL: url(pB)},
		{key: "f-c", name: "good client on (c) during attack on (c)", url: url(pC), auth: shaGood, attackUser: "bench-sha256", attackURL: url(pC), target: "≥ 0.90"},
		{key: "f-d", name: "good client on (d) during attack on (d)", url: url(pD), auth: bcryptGood, attackUser: "bench-bcrypt", attackURL: url(pD)},
	}
	// Every contender must answer its good client 200 (the edge has
	// synced the seeded secrets) and the attacker 401 before measuring.
	for _, ct := range cs {
		if err := waitStatus(e.ctx, ct.url, ct.auth, 200, 20*time.Second); err != nil {
			return fmt.Errorf("(%s) not ready: %w", ct.key, err)
		}
		if ct.attackUser != "" {
			if err := waitStatus(e.ctx, ct.attackURL, basicAuth(ct.attackUser, "wrong"), 401, 5*time.Second); err != nil {
				return fmt.Errorf("(%s) attacker not refused: %w", ct.key, err)
			}
		}
	}

	report := filepath.Join(e.dir, "report.lua")
	attack := filepath.Join(e.dir, "attack.lua")
	if err := os.WriteFile(report, []byte(reportLua), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(attack, []byte(attackLua), 0o600); err != nil {
		return err
	}

	runCase := func(ct contender, d time.Duration, seed string) (sample, error) {
		var s sample
		var atk *wrkRun
		if ct.attackUser != "" {
			var err error
			atk, err = e.startWrk(attack, ct.attackURL, e.s.attackConn, d+2*time.Second,
				"BENCH_ATTACK_USER="+ct.attackUser, "BENCH_ATTACK_SEED="+seed)
			if err != nil {
				return s, err
			}
			time.Sleep(time.Second) // the attack is under way before measuring
		}
		cpu0, wall0 := procCPU(c.cmd.Process.Pid), time.Now()
		good, err := e.startWrk(report, ct.url, e.s.conns, d, "BENCH_AUTH="+ct.auth)
		if err != nil {
			if atk != nil {
				atk.cancel()
				<-atk.done
			}
			return s, err
		}
		s.good, err = good.wait()
		s.cpu, s.wall = procCPU(c.cmd.Process.Pid)-cpu0, time.Since(wall0)
		if atk != nil {
			var aerr error
			s.attack, aerr = atk.wait()
			if err == nil {
				err = aerr
			}
		}
		if err == nil && (s.good.Status > 0 || s.good.Connect+s.good.Read+s.good.Write+s.good.Timeout > 0) {
			err = fmt.Errorf("(%s) good client saw errors: %+v", ct.key, s.good)
		}
		if err == nil && atk != nil && s.attack.Status == 0 {
			err = fmt.Errorf("(%s) the attacker was never refused: %+v", ct.key, s.attack)
		}
		time.Sleep(500 * time.Millisecond) // let the server drain
		return s, err
	}

	fmt.Printf("warm-up: %s per contender\n", e.s.warmup)
	if e.s.warmup >= time.Second {
		for _, ct := range cs {
			if _, err := runCase(ct, e.s.warmup, "warmup"); err != nil {
				return err
			}
		}
	}
	results := make(map[string][]sample)
	for round := 1; round <= e.s.rounds; round++ {
		fmt.Printf("round %d/%d (req/s, Caddy's share of its core):", round, e.s.rounds)
		// Each round starts one contender further on, so that no
		// contender always runs right after the same one.
		order := append(slices.Clone(cs[round%len(cs):]), cs[:round%len(cs)]...)
		for _, ct := range order {
			s, err := runCase(ct, e.s.duration, fmt.Sprintf("r%d", round))
			if err != nil {
				return err
			}
			results[ct.key] = append(results[ct.key], s)
			fmt.Printf(" %s=%.0f(%.2f)", ct.key, s.good.RPS(), s.cpuShare())
		}
		fmt.Println()
	}
	fmt.Println()
	printLoadTable(cs, results)
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func printLoadTable(cs []contender, results map[string][]sample) {
	col := func(key string, f func(sample) float64) []float64 {
		var out []float64
		for _, s := range results[key] {
			out = append(out, f(s))
		}
		return out
	}
	rps := func(s sample) float64 { return s.good.RPS() }
	perCPU := func(s sample) float64 { return s.perCPUSecond() }
	baseRPS, baseCPU := median(col("a", rps)), median(col("a", perCPU))
	verdict := func(target string, ratio float64) string {
		if target == "" {
			return ""
		}
		want, _ := strconv.ParseFloat(strings.TrimPrefix(target, "≥ "), 64)
		if ratio >= want {
			return target + " met"
		}
		return target + " **missed**"
	}
	fmt.Println("## Load (the good client's req/s; medians over rounds)")
	fmt.Println()
	fmt.Println("| case | contender | req/s | (min–max) | p50 | p99 | ratio to (a) | target | Caddy's share of its core | req per Caddy CPU-s | ratio per CPU-s | attacker req/s |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
	for _, ct := range cs {
		r := col(ct.key, rps)
		ratio := median(r) / baseRPS
		cpuRatio := median(col(ct.key, perCPU)) / baseCPU
		atk := "–"
		if ct.attackUser != "" {
			atk = fmt.Sprintf("%.0f", median(col(ct.key, func(s sample) float64 { return s.attack.RPS() })))
		}
		fmt.Printf("| (%s) | %s | %.0f | %.0f–%.0f | %s | %s | %.3f | %s | %.2f | %.0f | %.3f | %s |\n",
			ct.key, ct.name, median(r), slices.Min(r), slices.Max(r),
			fmtDur(time.Duration(median(col(ct.key, func(s sample) float64 { return float64(s.good.P50) })))),
			fmtDur(time.Duration(median(col(ct.key, func(s sample) float64 { return float64(s.good.P99) })))),
			ratio, verdict(ct.target, ratio), median(col(ct.key, sample.cpuShare)),
			median(col(ct.key, perCPU)), cpuRatio, atk)
	}
	fmt.Println()
	fmt.Println("ratio to (a): median req/s of the case ÷ median req/s of (a). Caddy's share: CPU time Caddy used ÷ wall time of the run")
	fmt.Println("(1.00 = it had its core to itself). req per Caddy CPU-s: the good client's requests ÷ Caddy's CPU time, which")
	fmt.Println("does not move when other processes take part of the core; in the attack rows that CPU also served the attacker.")
	fmt.Println("Latencies are wrk's (p50/p99 of each run), medians over rounds.")
	fmt.Println()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%d µs", d/time.Microsecond)
	}
}
