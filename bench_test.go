package rotagate

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Benchmarks of the handler alone (SPEC §5 targets: ≤ 3 µs and ≤ 10
// allocations per verified request). The request is prepared once, as
// Caddy's server would, and its Authorization header restored between
// iterations, so only ServeHTTP is measured.

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

var nextOK = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })

func benchmarkBasic(b *testing.B, id, secret string, wantOK bool) {
	h := newTestHandler(b, nil, nil)
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

func BenchmarkVerifiedBasicSHA256(b *testing.B) { benchmarkBasic(b, "app", appSecret, true) }
func BenchmarkWrongSecret(b *testing.B)         { benchmarkBasic(b, "app", appSecret+"x", false) }
func BenchmarkUnknownClient(b *testing.B)       { benchmarkBasic(b, "nobody", appSecret, false) }
func BenchmarkBcryptCacheHit(b *testing.B)      { benchmarkBasic(b, "legacy-bcrypt", legacySecret, true) }
