package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// seedStore creates the control plane's SQLite store at path with n
// clients of two generated secrets each (the secrets of scaleSecret at
// revision 0), written straight into the tables in one transaction: the
// management API would take hours for a million. It returns the epoch and
// the revision.
func seedStore(ctx context.Context, path string, n int) (string, int64, error) {
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return "", 0, err
	}
	st.Close()
	db, err := sql.Open("sqlite", store.SQLiteDSN(path))
	if err != nil {
		return "", 0, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", 0, err
	}
	defer tx.Rollback()
	insClient, err := tx.PrepareContext(ctx, `INSERT INTO clients (client_id, name, created_at) VALUES ($1, '', $2)`)
	if err != nil {
		return "", 0, err
	}
	insSecret, err := tx.PrepareContext(ctx, `INSERT INTO secrets (secret_id, client_id, hash, hint, created_at) VALUES ($1, $2, $3, 'bench', $4)`)
	if err != nil {
		return "", 0, err
	}
	now := time.Now().UnixMilli()
	for i := range n {
		id := scaleClientID(i)
		if _, err := insClient.ExecContext(ctx, id, now); err != nil {
			return "", 0, err
		}
		for j := range 2 {
			if _, err := insSecret.ExecContext(ctx, scaleSecretID(i, j), id, secrethash.NewSHA256(scaleSecret(i, j, n, 0)), now); err != nil {
				return "", 0, err
			}
		}
	}
	// The seed is revision 1; the change log starts after it.
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET revision = 1, changes_from = 1`); err != nil {
		return "", 0, err
	}
	var epoch string
	if err := tx.QueryRowContext(ctx, `SELECT epoch FROM meta`).Scan(&epoch); err != nil {
		return "", 0, err
	}
	return epoch, 1, tx.Commit()
}

// repollPause is how long a stand-in edge waits after a change before it
// polls again.
const repollPause = 200 * time.Millisecond

func scaleSecretID(i, j int) string { return fmt.Sprintf("sec_%020d", 2*i+j) }

// pollerSet is many stand-in edges, each long-polling the feed with
// since=<what it holds> as a real edge does, and noting when each
// revision reached it and how many bytes the answer took on the wire.
type pollerSet struct {
	url, token string
	client     *http.Client
	cancel     context.CancelFunc
	done       sync.WaitGroup

	mu       sync.Mutex
	arrivals map[int64][]time.Duration // revision → arrival times since start
	bytes    map[int64][]int           // revision → answer sizes
	full     int                       // answers that were full snapshots
	errs     int
	start    time.Time
}

func startPollers(parent context.Context, base, token, epoch string, rev int64, n int) *pollerSet {
	ctx, cancel := context.WithCancel(parent)
	tr := &http.Transport{MaxIdleConnsPerHost: n + 10, MaxIdleConns: n + 10, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	p := &pollerSet{url: base + wire.SnapshotPath, token: token, client: &http.Client{Transport: tr}, cancel: cancel,
		arrivals: map[int64][]time.Duration{}, bytes: map[int64][]int{}, start: time.Now()}
	for range n {
		p.done.Add(1)
		go p.poll(ctx, epoch, rev)
	}
	return p
}

func (p *pollerSet) stop() {
	p.cancel()
	p.done.Wait()
	p.client.Transport.(*http.Transport).CloseIdleConnections()
}

// poll is one stand-in edge.
func (p *pollerSet) poll(ctx context.Context, epoch string, rev int64) {
	defer p.done.Done()
	for ctx.Err() == nil {
		u := p.url + "?wait=20s&" + wire.SinceParam + "=" + url.QueryEscape(wire.FormatSince(epoch, rev))
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+p.token)
		req.Header.Set("If-None-Match", wire.ETag(epoch, rev))
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := p.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				p.mu.Lock()
				p.errs++
				p.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		at := time.Since(p.start)
		if err != nil || resp.StatusCode == http.StatusNotModified {
			continue
		}
		if resp.StatusCode != http.StatusOK {
			p.mu.Lock()
			p.errs++
			p.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var hdr strings.Builder
		resp.Header.Write(&hdr)
		size := len(raw) + hdr.Len() + len("HTTP/1.1 200 OK\r\n\r\n")
		tagEpoch, tagRev, ok := wire.ParseETag(resp.Header.Get("ETag"))
		if !ok {
			continue
		}
		p.mu.Lock()
		// A full snapshot of the sizes measured here is hundreds of KiB
		// compressed; a change, a few hundred bytes. Telling them apart by
		// size spares the harness core a gunzip per answer, which would
		// delay the next stand-in edge's read.
		if len(raw) > 64<<10 {
			p.full++
		}
		p.arrivals[tagRev] = append(p.arrivals[tagRev], at)
		p.bytes[tagRev] = append(p.bytes[tagRev], size)
		p.mu.Unlock()
		epoch, rev = tagEpoch, tagRev
		// A real edge polls again at once; a thousand stand-ins doing so
		// on the harness's one core would measure the harness, delaying
		// the reads of the edges not yet served. They pause instead.
		time.Sleep(repollPause)
	}
}

// latest returns, for revision rev, how many pollers have it, the last
// arrival, and the answer sizes.
func (p *pollerSet) got(rev int64) (int, time.Duration, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.arrivals[rev]
	if len(a) == 0 {
		return 0, 0, nil
	}
	return len(a), slices.Max(a), slices.Clone(p.bytes[rev])
}

// waitAll waits until n pollers hold rev, for at most limit.
func (p *pollerSet) waitAll(ctx context.Context, rev int64, n int, limit time.Duration) (time.Duration, []int, error) {
	deadline := time.Now().Add(limit)
	for {
		if k, last, sizes := p.got(rev); k >= n {
			return last, sizes, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			k, _, _ := p.got(rev)
			return 0, nil, fmt.Errorf("revision %d reached %d of %d stand-in edges within %s", rev, k, n, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// deltaResult is one size's measurements.
type deltaResult struct {
	clients               int
	seed                  time.Duration
	coldFirst, coldSecond time.Duration
	fromDisk              time.Duration
	// CPU the control plane and the edge spent in the timed cold syncs
	// and restart: on a shared core, what the wall times are made of.
	coldFirstCP, coldFirstEdge time.Duration
	coldSecondEdge, diskEdge   time.Duration
	// settled is how long both processes took to go idle after the
	// restart, before the revocations.
	settled                    time.Duration
	edgeLive, edgePeak         uint64
	edgeRSS                    uint64
	cpRSS                      uint64
	fullGz                     int
	revBytes                   []int
	refused, reached           []time.Duration
	cpCPU                      time.Duration
	fanout, fanoutAck          []time.Duration
	fanoutEdges, pollersFull   int
	pollerErrs, revocationsRun int
}

// scaleDeltas runs the real control plane (SQLite, seeded with n clients)
// and a real edge in separate Caddy processes on the server core: a cold
// full sync, a restart from disk, revocations reaching the edge while many
// stand-in edges long-poll with since, and one change fanned out to many.
func scaleDeltas(e *env, n int) (*deltaResult, error) {
	res := &deltaResult{clients: n}
	dir := filepath.Join(e.dir, fmt.Sprintf("delta-%d", n))
	db := filepath.Join(dir, "rotagate.db")
	t0 := time.Now()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	epoch, rev, err := seedStore(e.ctx, db, n)
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	res.seed = time.Since(t0)

	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	adminTok, edgeTok := randToken(), randToken()
	cpCfg := map[string]any{
		"logging": logging(filepath.Join(dir, "cp"), false),
		"apps":    httpConfig(map[string]any{"control": server(ports[1], controlPlaneHandler(db, adminTok, edgeTok))}),
	}
	cpc, cp, err := e.startControlPlane(fmt.Sprintf("delta-%d-cp", n), ports[0], cpCfg, fmt.Sprintf("http://127.0.0.1:%d", ports[1]), adminTok)
	if err != nil {
		return nil, err
	}
	defer cpc.stop(15 * time.Second)

	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", ports[3])
	edgeCfg := func() map[string]any {
		h := edgeHandler(cp.base, edgeTok, 10*time.Second)
		h["revocation_delay"] = "30s"
		h["failure_budget"] = map[string]any{"off": true}
		return map[string]any{
			"logging": logging(filepath.Join(dir, "edge"), false),
			"apps":    httpConfig(map[string]any{"edge": server(ports[3], h, staticOK())}),
		}
	}
	probe := func(i, j int) string { return basicAuth(scaleClientID(i), scaleSecret(i, j, n, 0)) }
	// startEdge also returns the edge's CPU until it accepted the probe.
	startEdge := func(name string) (*caddy, time.Duration, uint64, time.Duration, error) {
		start := time.Now()
		c, err := e.startCaddy(name, ports[2], edgeCfg())
		if err != nil {
			return nil, 0, 0, 0, err
		}
		stopPeak := make(chan struct{})
		peakc := c.heapPeak(e.ctx, stopPeak)
		err = waitStatus(e.ctx, edgeURL, probe(n-1, 1), 200, 120*time.Second)
		took := time.Since(start)
		cpu := procCPU(c.cmd.Process.Pid)
		close(stopPeak)
		return c, took, <-peakc, cpu, err
	}

	// Cold: the control plane builds its first snapshot for this edge.
	cp0 := procCPU(cpc.cmd.Process.Pid)
	edge, took, _, cpu, err := startEdge(fmt.Sprintf("delta-%d-edge-a", n))
	if err != nil {
		return nil, fmt.Errorf("cold edge: %w", err)
	}
	res.coldFirst, res.coldFirstEdge, res.coldFirstCP = took, cpu, procCPU(cpc.cmd.Process.Pid)-cp0
	edge.stop(15 * time.Second)
	// Cold again, the control plane's snapshot built: the edge's part.
	edge, took, peak, cpu, err := startEdge(fmt.Sprintf("delta-%d-edge-b", n))
	if err != nil {
		return nil, fmt.Errorf("second cold edge: %w", err)
	}
	res.coldSecond, res.edgePeak, res.coldSecondEdge = took, peak, cpu
	// The disk copy is written after the swap; the restart below must find it.
	if err := edge.waitSavedCopy(e.ctx, wire.ETag(epoch, rev), 60*time.Second); err != nil {
		return nil, err
	}
	m, err := edge.mem(e.ctx)
	if err != nil {
		return nil, err
	}
	res.edgeLive, res.edgeRSS = m.HeapAlloc, m.RSS
	if code, body, err := httpDo(e.ctx, http.MethodGet, cp.base+wire.SnapshotPath, map[string]string{"Authorization": "Bearer " + edgeTok, "Accept-Encoding": "gzip"}, nil); err == nil && code == 200 {
		res.fullGz = len(body)
	}
	// Restart from disk: the same data directory.
	edge.stop(15 * time.Second)
	edge, took, _, cpu, err = startEdge(fmt.Sprintf("delta-%d-edge-b", n))
	if err != nil {
		return nil, fmt.Errorf("edge restarted from disk: %w", err)
	}
	res.fromDisk, res.diskEdge = took, cpu
	defer edge.stop(15 * time.Second)
	if cm, err := cpc.mem(e.ctx); err == nil {
		res.cpRSS = cm.RSS
	}

	// Revocations with stand-in edges long-polling, timed once both
	// processes are idle: the collection a restart leaves to run while
	// the edge serves, and the control plane's after its builds, are not
	// the revocations' cost.
	res.settled = settle(e.ctx, 15*time.Second, cpc.cmd.Process.Pid, edge.cmd.Process.Pid)
	pollers := startPollers(e.ctx, cp.base, edgeTok, epoch, rev, e.s.deltaEdges)
	defer func() { pollers.stop() }()
	time.Sleep(time.Second) // every stand-in edge holds its poll
	cpu0 := procCPU(cpc.cmd.Process.Pid)
	for k := range e.s.revocations {
		i := (k*7919 + 11) % n
		time.Sleep(repollPause + 100*time.Millisecond) // every stand-in edge is waiting again
		if err := waitStatus(e.ctx, edgeURL, probe(i, 1), 200, 10*time.Second); err != nil {
			return nil, fmt.Errorf("before revocation %d: %w", k, err)
		}
		start := time.Now()
		startAt := time.Since(pollers.start)
		if _, err := cp.call(e.ctx, http.MethodDelete, "/v1/clients/"+url.PathEscape(scaleClientID(i))+"/secrets/"+scaleSecretID(i, 1), nil, http.StatusOK); err != nil {
			return nil, err
		}
		rev++
		if err := waitStatusEvery(e.ctx, edgeURL, probe(i, 1), 401, 30*time.Second, time.Millisecond); err != nil {
			return nil, fmt.Errorf("revocation %d: %w", k, err)
		}
		res.refused = append(res.refused, time.Since(start))
		last, sizes, err := pollers.waitAll(e.ctx, rev, e.s.deltaEdges, 10*time.Second)
		if err != nil {
			return nil, err
		}
		res.reached = append(res.reached, last-startAt)
		res.revBytes = append(res.revBytes, sizes...)
	}
	res.cpCPU = (procCPU(cpc.cmd.Process.Pid) - cpu0) / time.Duration(max(e.s.revocations, 1))
	res.revocationsRun = e.s.revocations
	pollers.stop()

	// Fan-out: many stand-in edges, one change at a time.
	res.fanoutEdges = e.s.scaleEdges
	pollers = startPollers(e.ctx, cp.base, edgeTok, epoch, rev, e.s.scaleEdges)
	time.Sleep(3 * time.Second)
	for k := range 5 {
		i := (k*104729 + 5) % n
		startAt := time.Since(pollers.start)
		if _, err := cp.call(e.ctx, http.MethodDelete, "/v1/clients/"+url.PathEscape(scaleClientID(i))+"/secrets/"+scaleSecretID(i, 0), nil, http.StatusOK); err != nil {
			return nil, err
		}
		ackAt := time.Since(pollers.start)
		rev++
		last, _, err := pollers.waitAll(e.ctx, rev, e.s.scaleEdges, 20*time.Second)
		if err != nil {
			return nil, err
		}
		res.fanout = append(res.fanout, last-startAt)
		res.fanoutAck = append(res.fanoutAck, last-ackAt)
		time.Sleep(500 * time.Millisecond)
	}
	pollers.mu.Lock()
	res.pollersFull, res.pollerErrs = pollers.full, pollers.errs
	pollers.mu.Unlock()
	return res, nil
}

// settle waits, for at most limit, until the processes pids spend less
// than 2 % of a core each over 500 ms, and returns how long it waited.
func settle(ctx context.Context, limit time.Duration, pids ...int) time.Duration {
	start := time.Now()
	const window = 500 * time.Millisecond
	for time.Since(start) < limit && ctx.Err() == nil {
		before := make([]time.Duration, len(pids))
		for i, pid := range pids {
			before[i] = procCPU(pid)
		}
		time.Sleep(window)
		idle := true
		for i, pid := range pids {
			idle = idle && procCPU(pid)-before[i] < window/50
		}
		if idle {
			break
		}
	}
	return time.Since(start)
}

// waitSavedCopy waits, for at most limit, until the edge has saved the
// snapshot tagged etag to its data directory: the confirmation file,
// written after the snapshot itself, names it.
func (c *caddy) waitSavedCopy(ctx context.Context, etag string, limit time.Duration) error {
	pattern := filepath.Join(c.dir, "data", "caddy", "rotagate", "edge", "*.confirmed")
	deadline := time.Now().Add(limit)
	for {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if raw, err := os.ReadFile(p); err == nil && strings.HasSuffix(string(raw), " "+etag) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the edge saved no copy of %s within %s (%s)", etag, limit, pattern)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// runDeltas measures every size asked and prints the tables.
func runDeltas(e *env) error {
	var results []*deltaResult
	for _, f := range strings.Split(e.s.deltaClients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1000 {
			return fmt.Errorf("-scale-delta-clients: %q", f)
		}
		fmt.Printf("(delta scale at %d clients; load %s)\n", n, loadAvg())
		r, err := scaleDeltas(e, n)
		if err != nil {
			return fmt.Errorf("%d clients: %w", n, err)
		}
		results = append(results, r)
	}
	fmt.Printf("### Changes since a revision: the real control plane (SQLite) and a real edge, separate Caddy processes on the server core\n\n")
	fmt.Println("| clients / secrets | seed (harness) | cold full sync + swap, control plane building | cold full sync + swap, built | restart from disk | full snapshot gzip | edge live heap (GC'd) | edge peak heap during the sync | edge RSS | control plane RSS |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %d / %d | %s | %s | **%s** | %s | %s | **%s** | %s | %s | %s |\n", r.clients, 2*r.clients, fmtDur(r.seed), fmtDur(r.coldFirst), fmtDur(r.coldSecond),
			fmtDur(r.fromDisk), mib(uint64(r.fullGz)), mib(r.edgeLive), mib(r.edgePeak), mib(r.edgeRSS), mib(r.cpRSS))
	}
	fmt.Println()
	fmt.Println("CPU spent (from /proc, both processes on the server core) until the edge accepted the probe:")
	fmt.Println()
	fmt.Println("| clients | cold, CP building: control plane / edge | cold, built: edge | restart from disk: edge |")
	fmt.Println("|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %d | %s / %s | %s | %s |\n", r.clients, fmtDur(r.coldFirstCP), fmtDur(r.coldFirstEdge), fmtDur(r.coldSecondEdge), fmtDur(r.diskEdge))
	}
	fmt.Println()
	for _, r := range results {
		fmt.Printf("At %d clients both processes went idle %s after the restart; the revocations below start then.\n", r.clients, fmtDur(r.settled))
	}
	fmt.Println()
	fmt.Println("| clients | revocations | stand-in edges | bytes per edge per revocation (median / max) | refused at the edge p50 / p99 / max | every stand-in edge has it p50 / p99 / max | control plane CPU per revocation | fan-out: every one of N edges has the change, max of 5, from the revoke request / from its answer | full answers to stand-in edges | poll errors |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		sizes := slices.Clone(r.revBytes)
		slices.Sort(sizes)
		med, mx := 0, 0
		if len(sizes) > 0 {
			med, mx = sizes[len(sizes)/2], sizes[len(sizes)-1]
		}
		fmt.Printf("| %d | %d | %d | %d / %d B | %s / **%s** / %s | %s / %s / %s | **%s** | %d edges: %s / **%s** | %d | %d |\n", r.clients, r.revocationsRun, e.s.deltaEdges, med, mx,
			fmtDur(quantile(r.refused, 0.5)), fmtDur(quantile(r.refused, 0.99)), fmtDur(slices.Max(r.refused)),
			fmtDur(quantile(r.reached, 0.5)), fmtDur(quantile(r.reached, 0.99)), fmtDur(slices.Max(r.reached)),
			fmtDur(r.cpCPU), r.fanoutEdges, fmtDur(slices.Max(r.fanout)), fmtDur(slices.Max(r.fanoutAck)), r.pollersFull, r.pollerErrs)
	}
	fmt.Println()
	return nil
}
