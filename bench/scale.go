package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

func runScale(e *env) error {
	fmt.Println("## Scale")
	fmt.Println()
	parts := strings.Split(e.s.scaleParts, ",")
	if slices.Contains(parts, "snapshot") {
		if err := scaleSnapshot(e, ""); err != nil {
			return fmt.Errorf("snapshot sync: %w", err)
		}
		if e.s.edgeMemLimit != "" {
			if err := scaleSnapshot(e, e.s.edgeMemLimit); err != nil {
				return fmt.Errorf("snapshot sync with GOMEMLIMIT: %w", err)
			}
		}
	}
	if slices.Contains(parts, "edges") {
		if err := scaleWaitingEdges(e); err != nil {
			return fmt.Errorf("waiting edges: %w", err)
		}
	}
	if slices.Contains(parts, "usage") {
		if err := scaleUsage(e); err != nil {
			return fmt.Errorf("usage ingest: %w", err)
		}
	}
	if slices.Contains(parts, "delta") {
		if err := runDeltas(e); err != nil {
			return fmt.Errorf("changes: %w", err)
		}
	}
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// scaleSnapshot times an edge taking in a full snapshot of many clients:
// from the moment the feed answers its waiting long-poll with the new
// revision until the edge accepts a secret that exists only in it
// (transfer + parse + swap), and reads the edge's heap.
// With memLimit set, the edge runs with GOMEMLIMIT=memLimit.
func scaleSnapshot(e *env, memLimit string) error {
	n := e.s.scaleClients
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	adminPort, edgePort := ports[0], ports[1]
	token := randToken()
	epoch := "bench-" + randToken()[:8]
	small, err := buildSnapshot(epoch, 1, 1)
	if err != nil {
		return err
	}
	feed, err := newStaticFeed(token, small)
	if err != nil {
		return err
	}
	defer feed.close()
	name := "snapshot"
	var extraEnv []string
	if memLimit != "" {
		name += "-memlimit"
		extraEnv = append(extraEnv, "GOMEMLIMIT="+memLimit)
	}
	dir := filepath.Join(e.dir, name)
	edge := edgeHandler(feed.url, token, 10*time.Second)
	edge["revocation_delay"] = "30s"
	// The probe fails every 2 ms until the new revision is in: with the
	// failure budget on, later swaps would time the budget's throttling.
	edge["failure_budget"] = map[string]any{"off": true}
	cfg := map[string]any{
		"logging": logging(dir, false),
		"apps":    httpConfig(map[string]any{"edge": server(edgePort, edge, staticOK())}),
	}
	c, err := e.startCaddy(name, adminPort, cfg, extraEnv...)
	if err != nil {
		return err
	}
	defer c.stop(10 * time.Second)
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", edgePort)
	if err := waitStatus(e.ctx, edgeURL, basicAuth(scaleClientID(0), scaleSecret(0, 1, 1, 1)), 200, 20*time.Second); err != nil {
		return fmt.Errorf("edge never took the first (1-client) snapshot: %w", err)
	}
	base, err := c.mem(e.ctx)
	if err != nil {
		return err
	}

	type swap struct {
		took, transfer time.Duration
		bytes          int
		gzip           bool
		after          memStats
		peak           uint64
	}
	var swaps []swap
	var plainBytes, gzBytes int
	var genTime time.Duration
	for k := int64(2); k <= 4; k++ {
		big, err := buildSnapshot(epoch, k, n)
		if err != nil {
			return err
		}
		plainBytes, gzBytes, genTime = len(big.plain), len(big.gz), big.generation
		probe := basicAuth(scaleClientID(n-1), scaleSecret(n-1, 1, n, k))
		// The edge is waiting in a long poll on the previous revision;
		// set wakes it and the 200 starts at once.
		stopPeak := make(chan struct{})
		peakc := c.heapPeak(e.ctx, stopPeak)
		t0 := time.Now()
		feed.set(big)
		var t1 time.Time
		deadline := t0.Add(60 * time.Second)
		for {
			code, _, err := httpGet(e.ctx, edgeURL, map[string]string{"Authorization": probe})
			if err == nil && code == 200 {
				t1 = time.Now()
				break
			}
			if time.Now().After(deadline) || e.ctx.Err() != nil {
				return fmt.Errorf("revision %d not accepted within 60s (last %d, %v)", k, code, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		var sent sentSnap
		for _, s := range feed.sends() {
			if s.etag == big.etag {
				sent = s
			}
		}
		time.Sleep(2 * time.Second) // let the edge finish writing its copy to disk
		close(stopPeak)
		peak := <-peakc
		m, err := c.mem(e.ctx)
		if err != nil {
			return err
		}
		swaps = append(swaps, swap{took: t1.Sub(t0), transfer: sent.end.Sub(sent.start), bytes: sent.bytes, gzip: sent.gzip, after: m, peak: peak})
	}

	title := "no GOMEMLIMIT"
	if memLimit != "" {
		title = "edge GOMEMLIMIT=" + memLimit
	}
	fmt.Printf("### Snapshot sync: %d clients / %d secrets, full snapshot (%s)\n\n", n, 2*n, title)
	fmt.Printf("Snapshot: %s JSON, %s gzip (built by the harness in %s, not timed). The edge long-polls a\n", mib(uint64(plainBytes)), mib(uint64(gzBytes)), genTime.Round(time.Millisecond))
	fmt.Println("stand-in feed server (Go, in the harness, on the load core) that answers the waiting poll with the new revision;")
	fmt.Println("\"sync + swap\" runs from that answer until the edge accepts a secret present only in the new revision.")
	fmt.Println()
	fmt.Println("| swap | body sent | feed write | sync + swap (accepting) | peak heap during swap | edge live heap after (GC'd) | peak / live | HeapSys | RSS | peak RSS |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| before (1-client snapshot) | | | | | %s | | %s | %s | %s |\n", mib(base.HeapAlloc), mib(base.HeapSys), mib(base.RSS), mib(base.HWM))
	var tooks []float64
	var peaks []uint64
	for i, s := range swaps {
		enc := "plain"
		if s.gzip {
			enc = "gzip"
		}
		from := "1-client → big"
		if i > 0 {
			from = "big → big"
		}
		tooks = append(tooks, float64(s.took))
		peaks = append(peaks, s.peak)
		fmt.Printf("| %d (%s) | %s %s | %s | **%s** | %s | %s | **%.2f×** | %s | %s | %s |\n", i+1, from, mib(uint64(s.bytes)), enc,
			fmtDur(s.transfer), fmtDur(s.took), mib(s.peak), mib(s.after.HeapAlloc), float64(s.peak)/float64(s.after.HeapAlloc), mib(s.after.HeapSys), mib(s.after.RSS), mib(s.after.HWM))
	}
	last := swaps[len(swaps)-1].after
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	fmt.Println()
	worst := time.Duration(slices.Max(tooks))
	peak := slices.Max(peaks)
	fmt.Println("Peak heap: HeapAlloc (live + not yet collected) sampled from /debug/vars every 20 ms during the swap. HeapSys: heap address space")
	fmt.Println("obtained from the OS so far (it never shrinks; part of it may be released). RSS: whole process, binary included.")
	fmt.Println()
	fmt.Printf("Target < 2 s: worst %s — %s. Target ≤ 150 MB edge heap: live %s after GC (%s of it for the snapshot) — %s; peak during a swap %s (%.0f MB) — %s. Target peak ≤ 1.5× live: worst %.2f× — %s.\n\n",
		fmtDur(worst), verdict(worst < 2*time.Second),
		mib(last.HeapAlloc), mib(last.HeapAlloc-min(last.HeapAlloc, base.HeapAlloc)), verdict(last.HeapAlloc <= 150e6),
		mib(peak), float64(peak)/1e6, verdict(peak <= 150e6), float64(peak)/float64(last.HeapAlloc), verdict(float64(peak) <= 1.5*float64(last.HeapAlloc)))
	return nil
}

// scaleWaitingEdges holds many long polls against the real control plane
// and reads its memory and goroutines, then lets them end with 304 (wait
// passed) and, a second time, with 200 (a change wakes them all).
func scaleWaitingEdges(e *env) error {
	n := e.s.scaleEdges
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	adminPort, cpPort := ports[0], ports[1]
	adminTok, edgeTok := randToken(), randToken()
	dir := filepath.Join(e.dir, "edges")
	cfg := map[string]any{
		"logging": logging(dir, false),
		"apps": httpConfig(map[string]any{
			"control": server(cpPort, controlPlaneHandler(filepath.Join(dir, "rotagate.db"), adminTok, edgeTok)),
		}),
	}
	c, cp, err := e.startControlPlane("edges", adminPort, cfg, fmt.Sprintf("http://127.0.0.1:%d", cpPort), adminTok)
	if err != nil {
		return err
	}
	defer c.stop(15 * time.Second)
	if err := cp.createClient(e.ctx, "seed"); err != nil {
		return err
	}
	if _, _, err := cp.addSecret(e.ctx, "seed", ""); err != nil {
		return err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: n + 10, MaxIdleConns: n + 10, IdleConnTimeout: 90 * time.Second}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 90 * time.Second}
	snapURL := cp.base + wire.SnapshotPath
	get := func(ctx context.Context, wait time.Duration, etag string) (int, string, error) {
		u := snapURL
		if wait > 0 {
			u += "?wait=" + wait.String()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+edgeTok)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("ETag"), nil
	}
	code, etag, err := get(e.ctx, 0, "")
	if err != nil || code != 200 {
		return fmt.Errorf("first snapshot: %d %v", code, err)
	}
	base, err := c.mem(e.ctx)
	if err != nil {
		return err
	}

	type answer struct {
		code int
		at   time.Time
		err  error
	}
	hold := func(wait time.Duration) (chan answer, time.Time) {
		out := make(chan answer, n)
		sent := time.Now()
		for range n {
			go func() {
				code, _, err := get(e.ctx, wait, etag)
				out <- answer{code, time.Now(), err}
			}()
		}
		return out, sent
	}
	// waitHeld waits until Caddy holds every poll (its goroutine count
	// has grown by at least one per poll), at most 15s.
	waitHeld := func() (memStats, error) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			m, err := c.mem(e.ctx)
			if err != nil {
				return m, err
			}
			if m.Goroutines >= base.Goroutines+n || time.Now().After(deadline) {
				time.Sleep(500 * time.Millisecond)
				return c.mem(e.ctx)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	collect := func(out chan answer) (map[int]int, []time.Time, error) {
		codes := map[int]int{}
		var ats []time.Time
		for range n {
			a := <-out
			if a.err != nil {
				return nil, nil, a.err
			}
			codes[a.code]++
			ats = append(ats, a.at)
		}
		return codes, ats, nil
	}

	// 1: polls with wait=10s, left to end with 304.
	const wait304 = 10 * time.Second
	out, sent := hold(wait304)
	held, err := waitHeld()
	if err != nil {
		return err
	}
	codes304, ats, err := collect(out)
	if err != nil {
		return err
	}
	first304, last304 := slices.MinFunc(ats, time.Time.Compare), slices.MaxFunc(ats, time.Time.Compare)
	tr.CloseIdleConnections() // so Caddy's goroutines for idle keep-alives end too
	time.Sleep(500 * time.Millisecond)
	afterHold, err := c.mem(e.ctx)
	if err != nil {
		return err
	}

	// 2: polls with wait=60s, woken by a change.
	out, _ = hold(60 * time.Second)
	if _, err := waitHeld(); err != nil {
		return err
	}
	changeAt := time.Now()
	if err := cp.createClient(e.ctx, "wake-up"); err != nil {
		return err
	}
	codes200, ats200, err := collect(out)
	if err != nil {
		return err
	}
	lastWake := slices.MaxFunc(ats200, time.Time.Compare)

	perEdge := func(a, b uint64) string {
		if a < b {
			return "–"
		}
		return fmt.Sprintf("%.1f KiB", float64(a-b)/float64(n)/1024)
	}
	fmt.Printf("### Control plane holding %d waiting edges (real control plane, SQLite)\n\n", n)
	fmt.Println("| | goroutines | live heap (GC'd) | RSS |")
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| idle | %d | %s | %s |\n", base.Goroutines, mib(base.HeapAlloc), mib(base.RSS))
	fmt.Printf("| %d polls held | %d | %s | %s |\n", n, held.Goroutines, mib(held.HeapAlloc), mib(held.RSS))
	fmt.Printf("| per held poll | %.2f | %s | %s |\n", float64(held.Goroutines-base.Goroutines)/float64(n), perEdge(held.HeapAlloc, base.HeapAlloc), perEdge(held.RSS, base.RSS))
	fmt.Printf("| after they ended | %d | %s | %s (peak %s) |\n", afterHold.Goroutines, mib(afterHold.HeapAlloc), mib(afterHold.RSS), mib(afterHold.HWM))
	fmt.Println()
	fmt.Printf("With wait=%s: answers %v; first %s, last %s after sending (the 304s leave together when wait passes).\n",
		wait304, codes304, fmtDur(first304.Sub(sent)), fmtDur(last304.Sub(sent)))
	fmt.Printf("With wait=60s and a change (a client created): answers %v; the last of the %d edges had its 200 %s after the change was acknowledged.\n\n",
		codes200, n, fmtDur(lastWake.Sub(changeAt)))
	return nil
}

// scaleUsage serves requests through a real edge across a set of secrets
// and reads, from the control plane's debug log, every usage POST it took:
// stamps received and rows the store updated.
func scaleUsage(e *env) error {
	k, reqs := e.s.usageSecrets, e.s.usageReqs
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	adminPort, edgePort, cpPort := ports[0], ports[1], ports[2]
	adminTok, edgeTok := randToken(), randToken()
	cpURL := fmt.Sprintf("http://127.0.0.1:%d", cpPort)
	dir := filepath.Join(e.dir, "usage")
	cfg := map[string]any{
		"logging": logging(dir, true),
		"apps": httpConfig(map[string]any{
			"edge":    server(edgePort, edgeHandler(cpURL, edgeTok, time.Second), staticOK()),
			"control": server(cpPort, controlPlaneHandler(filepath.Join(dir, "rotagate.db"), adminTok, edgeTok)),
		}),
	}
	c, cp, err := e.startControlPlane("usage", adminPort, cfg, cpURL, adminTok)
	if err != nil {
		return err
	}
	defer c.stop(15 * time.Second)
	var auths []string
	var clients []string
	for i := 0; len(auths) < k; i++ {
		id := fmt.Sprintf("usage-%03d", i)
		if err := cp.createClient(e.ctx, id); err != nil {
			return err
		}
		clients = append(clients, id)
		for j := 0; j < 2 && len(auths) < k; j++ {
			_, secret, err := cp.addSecret(e.ctx, id, "")
			if err != nil {
				return err
			}
			auths = append(auths, basicAuth(id, secret))
		}
	}
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d/", edgePort)
	for _, a := range auths {
		if err := waitStatus(e.ctx, edgeURL, a, 200, 20*time.Second); err != nil {
			return err
		}
	}
	time.Sleep(2500 * time.Millisecond) // the readiness checks' stamps get flushed first
	logPath := filepath.Join(dir, "controlplane.log")
	before, err := usageLog(logPath)
	if err != nil {
		return err
	}

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next, bad atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(reqs) || e.ctx.Err() != nil {
					return
				}
				req, _ := http.NewRequestWithContext(e.ctx, http.MethodGet, edgeURL, nil)
				req.Header.Set("Authorization", auths[i%int64(k)])
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	served := time.Since(start)
	if bad.Load() > 0 {
		return fmt.Errorf("%d of %d requests failed", bad.Load(), reqs)
	}
	time.Sleep(2500 * time.Millisecond) // two more flushes
	after, err := usageLog(logPath)
	if err != nil {
		return err
	}
	posts := after[len(before):]
	if len(posts) == 0 {
		return errors.New("no usage POST reached the control plane (is its debug log written?)")
	}
	used := 0
	for _, id := range clients {
		b, err := cp.call(e.ctx, http.MethodGet, "/v1/clients/"+id+"/secrets", nil, 200)
		if err != nil {
			return err
		}
		var ls struct {
			Secrets []struct {
				LastUsedAt *string `json:"last_used_at"`
			} `json:"secrets"`
		}
		if err := json.Unmarshal(b, &ls); err != nil {
			return err
		}
		for _, s := range ls.Secrets {
			if s.LastUsedAt != nil {
				used++
			}
		}
	}
	fmt.Printf("### Usage ingest: %d requests over %d secrets (%d clients), usage_flush 1s, real control plane (SQLite)\n\n", reqs, k, len(clients))
	fmt.Printf("Served in %s (%.0f req/s, Go client, 8 connections). Usage POSTs the control plane took during and after (from its debug log entry \"usage stamps stored\": stamps in the batch, rows its UPDATE changed):\n\n",
		served.Round(time.Millisecond), float64(reqs)/served.Seconds())
	fmt.Println("| POST | stamps (distinct secrets) | rows updated (store writes) |")
	fmt.Println("|---:|---:|---:|")
	totalStamps, totalUpdated := 0, 0
	for i, p := range posts {
		fmt.Printf("| %d | %d | %d |\n", i+1, p.Stamps, p.Updated)
		totalStamps += p.Stamps
		totalUpdated += p.Updated
	}
	fmt.Println()
	maxStamps := slices.MaxFunc(posts, func(a, b usagePost) int { return a.Stamps - b.Stamps }).Stamps
	ok := maxStamps <= k && totalUpdated == totalStamps
	fmt.Printf("Totals: %d requests → %d POSTs, %d stamps, %d rows written (%.4f writes per request); at most %d stamps per POST for %d distinct secrets; %d of %d secrets show a last_used_at in the API. Target (writes per flush = distinct secrets used): %s.\n\n",
		reqs, len(posts), totalStamps, totalUpdated, float64(totalUpdated)/float64(reqs), maxStamps, k, used, k,
		map[bool]string{true: "met", false: "**missed**"}[ok])
	return nil
}

type usagePost struct {
	Stamps  int `json:"stamps"`
	Updated int `json:"updated"`
}

// usageLog reads the control plane's JSON debug log for its "usage stamps
// stored" entries, in order.
func usageLog(path string) ([]usagePost, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []usagePost
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var entry struct {
			Msg string `json:"msg"`
			usagePost
		}
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry.Msg == "usage stamps stored" {
			out = append(out, entry.usagePost)
		}
	}
	return out, sc.Err()
}
