package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
` + reportDone

// reportDone is the Lua of wrk's summary line, shared by the scripts.
const reportDone = `
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
	// unattacked is the row an attack row is compared with (the same
	// good client without the attack); empty for the rows without attack.
	unattacked string
	// target is the target for the ratio to (a), or for an attack
	// row the ratio to its unattacked row; empty when there is none.
	target string
	// signer makes the good client's assertions (case (k)); nil: it
	// sends auth.
	signer *assertionSigner
}

type sample struct {
	good   wrkResult
	attack attackTally
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
	ports, err := freePorts(8)
	if err != nil {
		return err
	}
	adminPort, upPort, pA, pB, pC, pD, cpPort, pK := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7]
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
	if e.s.budgetOff {
		edge["failure_budget"] = map[string]any{"off": true}
	}
	// (k) verifies assertions made for a fixed audience (its token
	// endpoint's URL would do as well).
	edgeK := maps.Clone(edge)
	edgeK["audience"] = []string{benchAudience}
	cfg := map[string]any{
		"logging": logging(dir, false),
		"apps": httpConfig(map[string]any{
			"upstream":     server(upPort, staticOK()),
			"a_proxy":      server(pA, reverseProxy(upPort)),
			"b_basic_auth": server(pB, basicAuthHandler, reverseProxy(upPort)),
			"c_rotagate":   server(pC, edge, reverseProxy(upPort)),
			"d_rotagate":   server(pD, edge, reverseProxy(upPort)),
			"k_rotagate":   server(pK, edgeK, reverseProxy(upPort)),
			"control":      server(cpPort, controlPlaneHandler(filepath.Join(dir, "rotagate.db"), adminTok, edgeTok)),
		}),
	}
	c, cp, err := e.startControlPlane("load", adminPort, cfg, cpURL, adminTok)
	if err != nil {
		return err
	}
	defer c.stop(10 * time.Second)

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

	signer, err := newAssertionSigner(assertionClients, benchAudience)
	if err != nil {
		return err
	}
	if err := signer.register(e.ctx, cp); err != nil {
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
		{key: "d", name: "rotagate, imported bcrypt (cache hit)", url: url(pD), auth: bcryptGood, target: "≥ 0.96"},
		{key: "k", name: "rotagate, private_key_jwt ES256 (issue 22's row (e))", url: url(pK), signer: signer},
		{key: "e", name: "good client on (b) during attack on (b)", url: url(pB), auth: basicGood, attackUser: "bench", attackURL: url(pB), unattacked: "b"},
		{key: "f-c", name: "good client on (c) during attack on (c)", url: url(pC), auth: shaGood, attackUser: "bench-sha256", attackURL: url(pC), unattacked: "c", target: "≥ 0.95"},
		{key: "f-d", name: "good client on (d) during attack on (d)", url: url(pD), auth: bcryptGood, attackUser: "bench-bcrypt", attackURL: url(pD), unattacked: "d", target: "≥ 0.90"},
	}
	// Every contender must answer its good client 200 (the edge has
	// synced the seeded secrets) and the attacker (from its own address,
	// so that the good client's failure budget stays untouched) 401 before
	// measuring.
	for _, ct := range cs {
		if ct.signer != nil {
			if err := ct.signer.waitAssertion(e.ctx, ct.url, 20*time.Second); err != nil {
				return fmt.Errorf("(%s) not ready: %w", ct.key, err)
			}
			continue
		}
		if err := waitStatus(e.ctx, ct.url, ct.auth, 200, 20*time.Second); err != nil {
			return fmt.Errorf("(%s) not ready: %w", ct.key, err)
		}
		if ct.attackUser != "" {
			if code, err := probeAttack(e.ctx, ct.attackURL, ct.attackUser); err != nil || code != 401 {
				return fmt.Errorf("(%s) the attacker's probe from %s: %d %v, want 401", ct.key, attackerIP, code, err)
			}
		}
	}

	report := filepath.Join(e.dir, "report.lua")
	if err := os.WriteFile(report, []byte(reportLua), 0o600); err != nil {
		return err
	}
	assertions := filepath.Join(e.dir, "assertion.lua")
	if err := os.WriteFile(assertions, []byte(assertionLua), 0o600); err != nil {
		return err
	}
	lr := &loadRun{env: e, caddyPID: c.cmd.Process.Pid, admin: c.admin, report: report, assertions: assertions}

	fmt.Printf("warm-up: %s per contender\n", e.s.warmup)
	if e.s.warmup >= time.Second {
		for _, ct := range cs {
			if _, err := lr.runCase(ct, e.s.warmup); err != nil {
				return err
			}
		}
	}
	if e.s.profile != "" {
		if err := lr.profileCases(cs); err != nil {
			return err
		}
	}
	if e.s.rounds > 0 {
		results := make(map[string][]sample)
		for round := 1; round <= e.s.rounds; round++ {
			fmt.Printf("round %d/%d (req/s, Caddy's share of its core; attacker's answers):", round, e.s.rounds)
			// Each round starts one contender further on, so that no
			// contender always runs right after the same one.
			order := append(slices.Clone(cs[round%len(cs):]), cs[:round%len(cs)]...)
			for _, ct := range order {
				s, err := lr.runCase(ct, e.s.duration)
				if err != nil {
					return err
				}
				results[ct.key] = append(results[ct.key], s)
				fmt.Printf(" %s=%.0f(%.2f", ct.key, s.good.RPS(), s.cpuShare())
				if ct.attackUser != "" {
					fmt.Printf("; %s", s.attack)
				}
				fmt.Print(")")
			}
			fmt.Println()
		}
		fmt.Println()
		printLoadTable(cs, results)
	}
	if e.s.paired {
		return lr.runPaired(cs)
	}
	return nil
}

// loadRun runs the good client (wrk) and the attacker against the load
// Caddy.
type loadRun struct {
	*env
	caddyPID   int
	admin      string // Caddy's admin endpoint
	report     string // the good client's Lua script
	assertions string // its Lua script for case (k)
}

// runCase runs the good client on ct for d, under ct's attack if it has
// one (started a second before, stopped when the good client is done).
func (lr *loadRun) runCase(ct contender, d time.Duration) (sample, error) {
	return lr.runCaseWith(ct, d, nil)
}

// runCaseWith is runCase, calling started (when not nil) once the good
// client runs.
func (lr *loadRun) runCaseWith(ct contender, d time.Duration, started func()) (sample, error) {
	var s sample
	var atk *attack
	if ct.attackUser != "" {
		var err error
		if atk, err = startAttack(lr.ctx, ct.attackURL, ct.attackUser, lr.s.attackConn); err != nil {
			return s, err
		}
		time.Sleep(time.Second) // the attack is under way before measuring
	}
	script, env, signed := lr.report, "BENCH_AUTH="+ct.auth, 0
	if ct.signer != nil {
		// Signed now, on the load core while Caddy idles, not measured.
		bodies := filepath.Join(lr.dir, "assertions.txt")
		signed = assertionsFor(d, lr.s.conns)
		if err := ct.signer.writeBodies(bodies, signed, d); err != nil {
			return s, err
		}
		script, env = lr.assertions, "BENCH_BODIES="+bodies
	}
	cpu0, wall0 := procCPU(lr.caddyPID), time.Now()
	good, err := lr.startWrk(script, ct.url, lr.s.conns, d, env)
	if err == nil && started != nil {
		started()
	}
	if err == nil {
		s.good, err = good.wait()
		s.cpu, s.wall = procCPU(lr.caddyPID)-cpu0, time.Since(wall0)
	}
	if atk != nil {
		s.attack = atk.stop()
	}
	if err != nil {
		return s, err
	}
	if ct.signer != nil && s.good.Requests+int64(lr.s.conns) > int64(signed) {
		return s, fmt.Errorf("(%s) %d requests for %d signed assertions: some may have been sent twice (raise assertionRate)", ct.key, s.good.Requests, signed)
	}
	if s.good.Status > 0 || s.good.Connect+s.good.Read+s.good.Write+s.good.Timeout > 0 {
		return s, fmt.Errorf("(%s) good client saw errors: %+v", ct.key, s.good)
	}
	// An attacker held to no answer at all in a short slice (a failure
	// budget may hold its 429s) is fine; one let through is not.
	if s.attack.Accepted > 0 {
		return s, fmt.Errorf("(%s) the attacker's wrong secrets were accepted %d times: %s", ct.key, s.attack.Accepted, s.attack)
	}
	time.Sleep(500 * time.Millisecond) // let the server drain
	return s, nil
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
	fmt.Println("## Load (the good client's req/s; medians over rounds)")
	fmt.Println()
	fmt.Println("| case | contender | req/s | (min–max) | p50 | p99 | ratio to (a) | ratio to unattacked | target | Caddy's share of its core | req per Caddy CPU-s | ratio per CPU-s | attacker answers/s | attacker 401 / 429 / other / no answer |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, ct := range cs {
		r := col(ct.key, rps)
		ratio := median(r) / baseRPS
		cpuRatio := median(col(ct.key, perCPU)) / baseCPU
		unattacked, atkRate, atkTally := "–", "–", "–"
		target := ratio
		if ct.attackUser != "" {
			target = median(r) / median(col(ct.unattacked, rps))
			unattacked = fmt.Sprintf("%.3f (of (%s))", target, ct.unattacked)
			atkRate = fmt.Sprintf("%.0f", median(col(ct.key, func(s sample) float64 { return s.attack.RPS() })))
			var sum attackTally
			for _, s := range results[ct.key] {
				sum = sum.add(s.attack)
			}
			atkTally = fmt.Sprintf("%d / %d / %d / %d", sum.Unauthorized, sum.TooMany, sum.Other, sum.Errors)
		}
		fmt.Printf("| (%s) | %s | %.0f | %.0f–%.0f | %s | %s | %.3f | %s | %s | %.2f | %.0f | %.3f | %s | %s |\n",
			ct.key, ct.name, median(r), slices.Min(r), slices.Max(r),
			fmtDur(time.Duration(median(col(ct.key, func(s sample) float64 { return float64(s.good.P50) })))),
			fmtDur(time.Duration(median(col(ct.key, func(s sample) float64 { return float64(s.good.P99) })))),
			ratio, unattacked, verdict(ct.target, target), median(col(ct.key, sample.cpuShare)),
			median(col(ct.key, perCPU)), cpuRatio, atkRate, atkTally)
	}
	fmt.Println()
	fmt.Println("ratio to (a): median req/s of the case ÷ median req/s of (a); ratio to unattacked (attack rows): ÷ the median")
	fmt.Println("of the same good client without the attack; the target applies to the latter in attack rows. Caddy's share: CPU")
	fmt.Println("time Caddy used ÷ wall time of the run (1.00 = it had its core to itself). req per Caddy CPU-s: the good client's")
	fmt.Println("requests ÷ Caddy's CPU time, which does not move when other processes take part of the core; in the attack rows")
	fmt.Println("that CPU also served the attacker. Latencies are wrk's (p50/p99 of each run), medians over rounds. Attacker")
	fmt.Println("(from " + attackerIP.String() + "): answers of any status per second, median over rounds; then its answers by status,")
	fmt.Println("summed over the rounds (no answer: the connection was closed or timed out before one came; it reconnects).")
	fmt.Println()
}

// verdict says whether ratio meets a target written "≥ x"; empty without
// a target.
func verdict(target string, ratio float64) string {
	if target == "" {
		return ""
	}
	want, _ := strconv.ParseFloat(strings.TrimPrefix(target, "≥ "), 64)
	if ratio >= want {
		return target + " met"
	}
	return target + " **missed**"
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
