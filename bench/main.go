// Command bench is rotagate's load and scale benchmark harness (issue 6).
//
//	go run ./bench            # load: contenders (a)–(f), interleaved rounds
//	go run ./bench -scale     # scale: 100k-client snapshot, 1,000 waiting edges, usage ingest
//	go run ./bench -all       # both
//	go run ./bench -paired    # load, then the paired mode (ratios with intervals)
//
// It builds the Caddy binary of this module once (go build ./cmd/caddy),
// runs it on 127.0.0.1 only, pinned to one core (-server-cpu) while the load
// generator (wrk, from Debian: apt-get install -y wrk) and this harness run
// on another (-load-cpu). Every process it starts is ended by its PID when
// its step ends, on error, and on Ctrl-C/SIGTERM. See BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type settings struct {
	repo       string
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	conns      int
	attackConn int
	bcryptCost int
	serverCPU  int
	loadCPU    int
	keep       bool
	budgetOff  bool
	load       bool
	scale      bool

	paired      bool
	pairs       int
	slice       time.Duration
	pairedCases string

	profile    string
	profileDir string

	scaleClients int
	scaleEdges   int
	scaleParts   string
	edgeMemLimit string
	deltaClients string
	deltaEdges   int
	revocations  int
	usageReqs    int
	usageSecrets int
}

func main() {
	var s settings
	var all bool
	flag.StringVar(&s.repo, "repo", ".", "root of the rotagate module (holds go.mod and cmd/caddy)")
	flag.IntVar(&s.rounds, "rounds", 3, "interleaved rounds of every load contender (0: none, with -paired or -profile)")
	flag.DurationVar(&s.duration, "duration", 8*time.Second, "measured wrk run per contender per round")
	flag.DurationVar(&s.warmup, "warmup", 2*time.Second, "unmeasured wrk run per contender before the first round")
	flag.IntVar(&s.conns, "conns", 16, "connections of the good client (wrk -c)")
	flag.IntVar(&s.attackConn, "attack-conns", 2, "connections of the attacker, each sending a unique wrong secret per request")
	flag.IntVar(&s.bcryptCost, "bcrypt-cost", 10, "cost of the bcrypt hash shared by basic_auth (b) and the imported secret (d)")
	flag.IntVar(&s.serverCPU, "server-cpu", 0, "core the Caddy binary is pinned to")
	flag.IntVar(&s.loadCPU, "load-cpu", 1, "core wrk and this harness are pinned to")
	flag.BoolVar(&s.budgetOff, "failure-budget-off", false, "run the edges of (c), (d), (k), (f-c), (f-d) with failure_budget off (default: the edge's default budget)")
	flag.BoolVar(&s.keep, "keep", false, "keep the temporary directory (configs, logs, databases)")
	flag.BoolVar(&s.paired, "paired", false, "after the rounds, run the paired mode: each case of -paired-cases against its baseline in alternating short slices")
	flag.IntVar(&s.pairs, "pairs", 30, "pairs per case in the paired mode")
	flag.DurationVar(&s.slice, "slice", 2*time.Second, "wrk run per slice in the paired mode (whole seconds)")
	flag.StringVar(&s.pairedCases, "paired-cases", "c,d,f-c,f-d", "cases of the paired mode, comma-separated; each is paired with (a), an attack row with its unattacked row, and x/y (such as d/c) with case y")
	flag.StringVar(&s.profile, "profile", "", "cases to profile, comma-separated (e.g. a,c,d,k): one -duration run each with Caddy's CPU and allocation profiles, before the rounds")
	flag.StringVar(&s.profileDir, "profile-dir", ".", "where -profile writes caddy-<case>.cpu.pprof and caddy-<case>.allocs.pprof")
	flag.BoolVar(&s.scale, "scale", false, "run the scale measurements instead of the load contenders")
	flag.BoolVar(&all, "all", false, "run the load contenders and the scale measurements")
	flag.IntVar(&s.scaleClients, "scale-clients", 100_000, "clients in the big snapshot (two secrets each)")
	flag.IntVar(&s.scaleEdges, "scale-edges", 1000, "waiting edges (long polls) held against the control plane, and stand-in edges in the change fan-out")
	flag.StringVar(&s.scaleParts, "scale-parts", "snapshot,edges,usage,delta", "scale measurements to run, comma-separated: snapshot, edges, usage, delta")
	flag.StringVar(&s.edgeMemLimit, "scale-memlimit", "", "GOMEMLIMIT of the edge in the snapshot measurement, run a second time with it (\"\": once, without)")
	flag.StringVar(&s.deltaClients, "scale-delta-clients", "100000", "sizes of the change measurement (clients, two secrets each), comma-separated, e.g. 100000,1000000")
	flag.IntVar(&s.deltaEdges, "scale-delta-edges", 100, "stand-in edges long-polling with since during the revocations")
	flag.IntVar(&s.revocations, "scale-revocations", 50, "revocations timed at the edge in the change measurement")
	flag.IntVar(&s.usageReqs, "usage-requests", 60_000, "requests served through the edge in the usage-ingest measurement")
	flag.IntVar(&s.usageSecrets, "usage-secrets", 40, "distinct secrets (20 clients × 2 when 40) used by those requests")
	flag.Parse()
	s.load = !s.scale || all
	s.scale = s.scale || all
	if s.rounds < 0 || (s.rounds == 0 && !s.paired && s.profile == "") || s.duration < time.Second || s.conns < 1 || s.attackConn < 1 || s.usageSecrets < 2 ||
		s.pairs < 1 || s.slice < time.Second || s.slice%time.Second != 0 {
		fmt.Fprintln(os.Stderr, "bench: bad flags: rounds ≥ 1 (or 0 with -paired or -profile), duration ≥ 1s, conns ≥ 1, attack-conns ≥ 1, usage-secrets ≥ 2, pairs ≥ 1, slice whole seconds ≥ 1s")
		os.Exit(2)
	}
	if s.paired && s.pairs < 30 {
		fmt.Fprintf(os.Stderr, "bench: warning: %d pairs; the interval means little below 30\n", s.pairs)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, s)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, s settings) (err error) {
	repo, err := filepath.Abs(s.repo)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(repo, "go.mod")); err != nil {
		return fmt.Errorf("-repo %s: no go.mod there (run from the repository root)", repo)
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("taskset not found (Debian: apt-get install -y util-linux)")
	}
	if s.load {
		if _, err := exec.LookPath("wrk"); err != nil {
			return errors.New("wrk not found: install it with `apt-get update && apt-get install -y wrk` (Debian/Ubuntu)")
		}
	}
	ncpu := runtime.NumCPU() // read before pinning ourselves
	if s.serverCPU == s.loadCPU || s.serverCPU >= ncpu || s.loadCPU >= ncpu {
		return fmt.Errorf("need two distinct cores < %d for -server-cpu and -load-cpu", ncpu)
	}
	// Pin every thread of this harness (and those it starts later) to the
	// load core, so the stand-in feed server and the Go clients of the
	// scale measurements do not compete with Caddy.
	if out, err := exec.CommandContext(ctx, "taskset", "-a", "-p", "-c", strconv.Itoa(s.loadCPU), strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		return fmt.Errorf("pinning the harness: %v: %s", err, out)
	}

	dir, err := os.MkdirTemp("", "rotagate-bench-")
	if err != nil {
		return err
	}
	procs := &procSet{}
	defer func() {
		procs.stopAll()
		if s.keep {
			fmt.Printf("\nkept %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()

	printMachine(ctx, ncpu, s)

	bin := filepath.Join(dir, "caddy")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/caddy")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	fmt.Printf("built %s in %s\n\n", bin, time.Since(start).Round(100*time.Millisecond))

	env := &env{ctx: ctx, s: s, dir: dir, bin: bin, procs: procs}
	if s.load {
		if err := runLoad(env); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	if s.scale {
		if err := runScale(env); err != nil {
			return fmt.Errorf("scale: %w", err)
		}
	}
	fmt.Printf("load average at the end: %s\n", loadAvg())
	return nil
}

// env is what every step needs.
type env struct {
	ctx   context.Context
	s     settings
	dir   string
	bin   string
	procs *procSet
}

func printMachine(ctx context.Context, ncpu int, s settings) {
	fmt.Println("## Machine")
	fmt.Println()
	fmt.Printf("- cores (nproc): %d; CPU: %s\n", ncpu, cpuModel())
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		fmt.Printf("- %s (harness built with %s)\n", strings.TrimSpace(string(out)), runtime.Version())
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		fmt.Printf("- kernel: Linux %s\n", strings.TrimSpace(string(b)))
	}
	if out, err := exec.CommandContext(ctx, "wrk", "--version").CombinedOutput(); err == nil || len(out) > 0 {
		first, _, _ := strings.Cut(string(out), "\n")
		if strings.HasPrefix(first, "wrk") {
			fmt.Printf("- load generator: %s\n", strings.TrimSpace(first))
		}
	}
	fmt.Printf("- load average at start: %s\n", loadAvg())
	fmt.Println()
	fmt.Println("## Settings")
	fmt.Println()
	fmt.Printf("- Caddy pinned to core %d (taskset; its GOMAXPROCS follows the affinity: 1); wrk and the harness to core %d\n", s.serverCPU, s.loadCPU)
	if s.load {
		fmt.Printf("- %d rounds, contenders interleaved in each; %s measured per contender per round after a %s warm-up\n", s.rounds, s.duration, s.warmup)
		fmt.Printf("- good client: wrk -t1 -c%d from 127.0.0.1, GET with keep-alive; attacker: this harness's Go client from %s, %d keep-alive connections, a unique wrong secret per request\n", s.conns, attackerIP, s.attackConn)
		fmt.Printf("- bcrypt cost %d for (b), (d) and their attacks\n", s.bcryptCost)
		if s.budgetOff {
			fmt.Println("- the edges of (c), (d), (k), (f-c), (f-d): failure_budget off")
		} else {
			fmt.Println("- the edges of (c), (d), (k), (f-c), (f-d): the default failure budget")
		}
		if s.paired {
			fmt.Printf("- paired mode: %d pairs of %s slices for %s (about %s)\n", s.pairs, s.slice, s.pairedCases, pairedDuration(s).Round(time.Minute))
		}
	}
	if s.scale {
		fmt.Printf("- scale: %d clients × 2 secrets; %d waiting edges; %d requests over %d secrets for usage ingest\n",
			s.scaleClients, s.scaleEdges, s.usageReqs, s.usageSecrets)
	}
	fmt.Println()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
