package rotagate

import (
	"encoding/binary"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Benchmarks of the handler alone (targets: ≤ 3 µs and ≤ 10
// allocations per verified request). The request is prepared once, as
// Caddy's server would, and its Authorization header restored between
// iterations, so only ServeHTTP is measured.

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

var nextOK = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })

func benchmarkBasic(b *testing.B, id, secret string, wantOK bool, budget *FailureBudget) {
	h := newTestHandler(b, nil, func(h *Handler) { h.FailureBudget = budget })
	h.MaxStale = Forever
	auth := []string{basicHeader(id, secret)}
	w := &discardWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/resource", nil)
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
	status := 0
	check := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { status = 200; return nil })
	r.Header["Authorization"] = auth
	if err := h.ServeHTTP(w, r, check); err != nil || (status == 200) != wantOK {
		b.Fatalf("first request: ok=%v err=%v, want ok=%v", status == 200, err, wantOK)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Header["Authorization"] = auth
		_ = h.ServeHTTP(w, r, nextOK)
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
		budget.spend(failureKey("", netip.AddrFrom4(ip).String(), false), now)
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
