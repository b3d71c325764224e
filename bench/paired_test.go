package main

import (
	"math"
	"slices"
	"testing"
)

func TestMedianOfPairRatios(t *testing.T) {
	base := []float64{100, 200, 50, 80}
	cand := []float64{97, 190, 50, 88}
	rs := ratios(cand, base)
	if !slices.Equal(rs, []float64{0.97, 0.95, 1, 1.1}) {
		t.Fatalf("ratios %v", rs)
	}
	// Even count: the mean of 0.97 and 1.
	if m := median(rs); math.Abs(m-0.985) > 1e-12 {
		t.Fatalf("median of ratios %v, want 0.985", m)
	}
	// The median of ratios is not the ratio of medians (here 92.5/90).
	if m := median(rs); math.Abs(m-median(cand)/median(base)) < 1e-3 {
		t.Fatalf("median of ratios %v equals the ratio of medians", m)
	}
}

func TestQuantileNearestRank(t *testing.T) {
	sorted := make([]float64, 2000)
	for i := range sorted {
		sorted[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{{0.025, 50}, {0.975, 1950}, {0.5, 1000}, {0, 1}, {1, 2000}} {
		if got := quantileNR(sorted, c.p); got != c.want {
			t.Errorf("quantile %v of 1..2000: %v, want %v", c.p, got, c.want)
		}
	}
}

// For a sample of 11 distinct values x1 < … < x11, the median of a
// resample is ≤ xk when at least 6 of its 11 draws are, so
// P(median ≤ xk) = P(Binomial(11, k/11) ≥ 6): 0.0072 for x2, 0.0512 for
// x3, 0.9488 for x8, 0.9928 for x9. The exact 95 % percentile interval is
// therefore [x3, x9], and with 2,000 resamples the empirical quantiles sit
// more than 6 standard errors away from the neighbouring values.
func TestBootstrapMedianCIKnownSample(t *testing.T) {
	sample := []float64{1.04, 0.91, 0.99, 0.93, 1.10, 0.97, 0.95, 1.01, 0.90, 1.02, 0.98} // x3 = 0.93, x9 = 1.02
	for seed := uint64(1); seed <= 5; seed++ {
		lo, hi := bootstrapMedianCI(sample, 2000, 0.95, seed)
		if lo != 0.93 || hi != 1.02 {
			t.Errorf("seed %d: interval [%v, %v], want [0.93, 1.02]", seed, lo, hi)
		}
	}
	// Resampling must not reorder the caller's data.
	if sample[0] != 1.04 || sample[10] != 0.98 {
		t.Fatalf("the sample was modified: %v", sample)
	}
}

func TestBootstrapMedianCISeeded(t *testing.T) {
	sample := make([]float64, 30)
	for i := range sample {
		sample[i] = 0.9 + 0.2*math.Mod(float64(i)*0.618034, 1)
	}
	lo1, hi1 := bootstrapMedianCI(sample, 2000, 0.95, 7)
	lo2, hi2 := bootstrapMedianCI(sample, 2000, 0.95, 7)
	if lo1 != lo2 || hi1 != hi2 {
		t.Fatalf("same seed, different intervals: [%v, %v] and [%v, %v]", lo1, hi1, lo2, hi2)
	}
	m := median(sample)
	if !(lo1 < m && m < hi1) || lo1 < slices.Min(sample) || hi1 > slices.Max(sample) {
		t.Fatalf("interval [%v, %v] should hold the median %v and lie in the sample's range", lo1, hi1, m)
	}
	// A constant sample has no spread at all.
	if lo, hi := bootstrapMedianCI([]float64{0.97, 0.97, 0.97}, 2000, 0.95, 1); lo != 0.97 || hi != 0.97 {
		t.Fatalf("constant sample: [%v, %v]", lo, hi)
	}
	if lo, hi := bootstrapMedianCI(nil, 2000, 0.95, 1); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Fatalf("empty sample: [%v, %v], want NaN", lo, hi)
	}
}

func TestVerdictCI(t *testing.T) {
	for _, c := range []struct {
		m, lo float64
		want  string
	}{{0.98, 0.975, "≥ 0.97 clearly met"}, {0.98, 0.96, "≥ 0.97 met"}, {0.96, 0.95, "≥ 0.97 **missed**"}} {
		if got := verdictCI("≥ 0.97", c.m, c.lo); got != c.want {
			t.Errorf("verdictCI(%v, %v) = %q, want %q", c.m, c.lo, got, c.want)
		}
	}
	if got := verdictCI("", 1, 1); got != "" {
		t.Errorf("no target: %q", got)
	}
}

// -paired-cases: a case pairs with (a), an attack row with its unattacked
// row, and x/y with case y, under the pair's own target.
func TestPairedCase(t *testing.T) {
	byKey := map[string]contender{}
	for _, ct := range []contender{{key: "a"}, {key: "c", target: "≥ 0.97"}, {key: "d", target: "≥ 0.95"}, {key: "f-d", unattacked: "d"}} {
		byKey[ct.key] = ct
	}
	for _, tc := range []struct{ in, ct, base, target string }{
		{"c", "c", "a", "≥ 0.97"},
		{"f-d", "f-d", "d", ""},
		{"d/c", "d", "c", "≥ 0.98"},
		{"c/d", "c", "d", ""},
	} {
		ct, base, err := pairedCase(byKey, tc.in)
		if err != nil || ct.key != tc.ct || base.key != tc.base || ct.target != tc.target {
			t.Errorf("%s: (%s) ÷ (%s) target %q, %v; want (%s) ÷ (%s) target %q", tc.in, ct.key, base.key, ct.target, err, tc.ct, tc.base, tc.target)
		}
	}
	for _, bad := range []string{"a", "x", "d/d", "d/x", "x/c"} {
		if _, _, err := pairedCase(byKey, bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
