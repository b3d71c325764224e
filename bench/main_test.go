package main

import (
	"testing"
	"time"
)

// These tests need neither wrk nor Caddy: they check the parsing of the
// line the Lua scripts print and the snapshot the scale feed serves.

func TestParseWrk(t *testing.T) {
	out := "Running 8s test @ http://127.0.0.1:1/\n" +
		"RESULT requests=40000 duration_us=8000000 connect=0 read=1 write=0 status=3 timeout=0 p50_us=2500 p99_us=12000\n"
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 40000 || r.RPS() != 5000 || r.Read != 1 || r.Status != 3 ||
		r.P50 != 2500*time.Microsecond || r.P99 != 12*time.Millisecond {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := parseWrk("no result"); err == nil {
		t.Fatal("want an error without a RESULT line")
	}
}

func TestBuildSnapshot(t *testing.T) {
	s, err := buildSnapshot("e", 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	if s.clients != 100 || s.secrets != 200 || s.etag != `"e.2"` || len(s.gz) == 0 || len(s.gz) >= len(s.plain) {
		t.Fatalf("snapshot %d clients, %d secrets, etag %s, %d/%d bytes", s.clients, s.secrets, s.etag, len(s.plain), len(s.gz))
	}
	if scaleSecret(99, 1, 100, 2) == scaleSecret(99, 1, 100, 3) || scaleSecret(5, 1, 100, 2) != scaleSecret(5, 1, 100, 3) {
		t.Fatal("only the last client's second secret may change with the revision")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatal(m)
	}
}
