package rotagate

import (
	"encoding/binary"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rotagate/rotagate/internal/wire"
)

// Benchmarks of the handler alone (targets: ≤ 1 µs; ≤ 3 allocations per
// verified sha256 request, ≤ 4 per cached bcrypt hit, which
// TestHotPathAllocations holds). The request is prepared once, as Caddy's
// server would, and its Authorization header restored between
// iterations, so only ServeHTTP is measured.

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

var nextOK = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })

// basicRound prepares a handler and a Basic request for id and secret,
// checks the first answer, and returns one more round of the same
// request.
func basicRound(tb testing.TB, id, secret string, wantOK bool, budget *FailureBudget) func() {
	h := newTestHandler(tb, nil, func(h *Handler) { h.FailureBudget = budget })
	h.MaxStale = Forever
	auth := []string{basicHeader(id, secret)}
	w := &discardWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/resource", nil)
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
	status := 0
	check := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { status = 200; return nil })
	r.Header["Authorization"] = auth
	if err := h.ServeHTTP(w, r, check); err != nil || (status == 200) != wantOK {
		tb.Fatalf("first request: ok=%v err=%v, want ok=%v", status == 200, err, wantOK)
	}
	return func() {
		r.Header["Authorization"] = auth
		_ = h.ServeHTTP(w, r, nextOK)
	}
}

func benchmarkBasic(b *testing.B, id, secret string, wantOK bool, budget *FailureBudget) {
	round := basicRound(b, id, secret, wantOK, budget)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		round()
	}
}

// TestHotPathAllocations holds the allocations of a verified request
// where they are, under issue 23's targets (≤ 3 for sha256, ≤ 4 for a
// cached bcrypt hit): the placeholders' two values are all a sha256
// request allocates, and a cached bcrypt hit allocates no more.
func TestHotPathAllocations(t *testing.T) {
	for _, tc := range []struct {
		name, id, secret string
		max              float64
	}{
		{"verified sha256", "app", appSecret, 2},
		{"cached bcrypt hit", "legacy-bcrypt", legacySecret, 2},
	} {
		if got := testing.AllocsPerRun(1000, basicRound(t, tc.id, tc.secret, true, nil)); got > tc.max {
			t.Errorf("%s: %v allocations per request, want at most %v", tc.name, got, tc.max)
		}
	}
}

// The failure budget is on (the default) for successes, which look their
// bucket up, and off for failures, so that these measure the check and
// not the 429 that the 21st failure gets.
var budgetOff = &FailureBudget{Off: true}

func BenchmarkVerifiedBasicSHA256(b *testing.B) { benchmarkBasic(b, "app", appSecret, true, nil) }
func BenchmarkWrongSecret(b *testing.B)         { benchmarkBasic(b, "app", appSecret+"x", false, budgetOff) }
func BenchmarkUnknownClient(b *testing.B)       { benchmarkBasic(b, "nobody", appSecret, false, budgetOff) }
func BenchmarkBcryptCacheHit(b *testing.B) {
	benchmarkBasic(b, "legacy-bcrypt", legacySecret, true, nil)
}

// BenchmarkThrottled is a caller over its failure budget (the answer is
// not held here).
func BenchmarkThrottled(b *testing.B) { benchmarkBasic(b, "app", appSecret+"x", false, nil) }

// BenchmarkFailureBudgetSpray spends one failure from each of b.N caller
// addresses and reports the heap the budget holds per bucket kept, and in
// all: an attacker spraying addresses cannot grow it past budgetBuckets.
func BenchmarkFailureBudgetSpray(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	budget, err := newFailureBudget(20, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	defer budget.close()
	now := time.Now()
	var ip [4]byte
	for i := range b.N {
		binary.BigEndian.PutUint32(ip[:], uint32(i)+1<<24)
		budget.spend(budget.failureKey("", netip.AddrFrom4(ip).String(), false), now)
	}
	b.StopTimer()
	budget.buckets.wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportMetric(heap/(1<<20), "MiB-held")
	b.ReportMetric(heap/float64(min(b.N, budgetBuckets)), "B/bucket")
	runtime.KeepAlive(budget)
}

// BenchmarkUsageRecorderSpray records b.N requests, each from a new
// caller address, spread over usageSpraySecrets secrets (an attacker
// holding valid secrets and spraying source addresses), and reports the
// heap the recorder holds: at most wire.MaxCallersPerSecret caller
// entries per secret until the next flush, whatever b.N.
func BenchmarkUsageRecorderSpray(b *testing.B) {
	const usageSpraySecrets = 100
	ids := make([]string, usageSpraySecrets)
	for i := range ids {
		ids[i] = "sec_" + strconv.Itoa(i)
	}
	ips := make([]string, 1<<16) // addresses made up front, so only the recorder's heap is measured
	var ip [4]byte
	for i := range ips {
		binary.BigEndian.PutUint32(ip[:], uint32(i)+10<<24)
		ips[i] = netip.AddrFrom4(ip).String()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	u := newUsageRecorder(nil, nil)
	now := time.Now()
	i := 0
	for b.Loop() {
		u.record("app", ids[i%usageSpraySecrets], ips[i%len(ips)], now, useAccepted)
		i++
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	entries := 0
	for _, su := range u.pending {
		entries += len(su.callers)
	}
	if entries > usageSpraySecrets*wire.MaxCallersPerSecret {
		b.Fatalf("%d caller entries held, bound %d", entries, usageSpraySecrets*wire.MaxCallersPerSecret)
	}
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportMetric(heap/(1<<10), "KiB-held")
	b.ReportMetric(float64(entries), "callers-held")
	b.ReportMetric(heap/float64(max(entries, 1)), "B/caller")
	runtime.KeepAlive(u)
	runtime.KeepAlive(ips)
}
