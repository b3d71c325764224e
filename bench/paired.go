package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Paired mode. The speed of a shared virtual machine drifts by tens of
// percent within minutes, far more than the few percent a contender costs
// next to (a); medians of rounds minutes apart cannot resolve that. Here
// each pair runs the baseline and the contender back to back in short
// slices (the order alternating from pair to pair), so both see nearly
// the same machine, and the statistic is the median of the per-pair
// ratios, with a bootstrap interval over pairs.

const (
	bootstrapResamples = 2000
	bootstrapLevel     = 0.95
	bootstrapSeed      = 1 // fixed: the same slices give the same interval
)

// pairedResult is one contender's pairs: index i of each slice is pair i.
type pairedResult struct {
	ct, base   contender
	xRPS, bRPS []float64 // the good client's req/s on the case and on its baseline
	xCPU, bCPU []float64 // its requests per Caddy CPU-second
	atk        attackTally
}

func (lr *loadRun) runPaired(cs []contender) error {
	byKey := map[string]contender{}
	for _, ct := range cs {
		byKey[ct.key] = ct
	}
	var prs []*pairedResult
	for _, key := range strings.Split(lr.s.pairedCases, ",") {
		ct, base, err := pairedCase(byKey, strings.TrimSpace(key))
		if err != nil {
			return err
		}
		prs = append(prs, &pairedResult{ct: ct, base: base})
	}
	fmt.Printf("## Paired: %d pairs of %s slices per case, order alternating (ratio of the pair; attacker's answers)\n\n", lr.s.pairs, lr.s.slice)
	for i := range lr.s.pairs {
		fmt.Printf("pair %d/%d:", i+1, lr.s.pairs)
		for _, pr := range prs {
			// Even pairs run the baseline first, odd pairs the contender.
			first, second := pr.base, pr.ct
			if i%2 == 1 {
				first, second = second, first
			}
			s1, err := lr.runCase(first, lr.s.slice)
			if err != nil {
				return err
			}
			s2, err := lr.runCase(second, lr.s.slice)
			if err != nil {
				return err
			}
			sb, sx := s1, s2
			if i%2 == 1 {
				sb, sx = s2, s1
			}
			pr.add(sb, sx)
			fmt.Printf(" %s/%s=%.3f", pr.ct.key, pr.base.key, sx.good.RPS()/sb.good.RPS())
			if pr.ct.attackUser != "" {
				fmt.Printf("(%s)", sx.attack)
			}
		}
		fmt.Println()
	}
	fmt.Println()
	printPairedTable(prs)
	return nil
}

// pairTargets are the targets of rows that pair two cases ("x/y"):
// issue 23's "a cached bcrypt hit costs what a sha256 check costs".
var pairTargets = map[string]string{"d/c": "≥ 0.98"}

// pairedCase reads one entry of -paired-cases: a case, paired with (a)
// (an attack row with its unattacked row), or "x/y", case x paired with
// case y as its baseline.
func pairedCase(byKey map[string]contender, key string) (ct, base contender, err error) {
	caseKey, baseKey, two := strings.Cut(key, "/")
	ct, ok := byKey[caseKey]
	if !ok || ct.key == "a" {
		return ct, base, fmt.Errorf("-paired-cases: unknown case %q (one of a+h, b, c, d, k, e, f-c, f-d, or x/y such as d/c or k/c)", key)
	}
	base = byKey["a"]
	if ct.unattacked != "" {
		base = byKey[ct.unattacked]
	}
	if two {
		if base, ok = byKey[baseKey]; !ok || baseKey == caseKey {
			return ct, base, fmt.Errorf("-paired-cases: %q pairs with an unknown or the same case", key)
		}
		ct.target = pairTargets[key]
	}
	return ct, base, nil
}

func (pr *pairedResult) add(b, x sample) {
	pr.bRPS, pr.xRPS = append(pr.bRPS, b.good.RPS()), append(pr.xRPS, x.good.RPS())
	pr.bCPU, pr.xCPU = append(pr.bCPU, b.perCPUSecond()), append(pr.xCPU, x.perCPUSecond())
	pr.atk = pr.atk.add(x.attack)
}

func printPairedTable(prs []*pairedResult) {
	fmt.Printf("| case | ÷ | pairs | median ratio | %.0f %% interval | ratio per CPU-s | %.0f %% interval | req/s (median) | baseline req/s (median) | target | attacker 401 / 429 / other / no answer |\n",
		bootstrapLevel*100, bootstrapLevel*100)
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
	for _, pr := range prs {
		rs, crs := ratios(pr.xRPS, pr.bRPS), ratios(pr.xCPU, pr.bCPU)
		lo, hi := bootstrapMedianCI(rs, bootstrapResamples, bootstrapLevel, bootstrapSeed)
		clo, chi := bootstrapMedianCI(crs, bootstrapResamples, bootstrapLevel, bootstrapSeed)
		m := median(rs)
		atk := "–"
		if pr.ct.attackUser != "" {
			atk = fmt.Sprintf("%d / %d / %d / %d", pr.atk.Unauthorized, pr.atk.TooMany, pr.atk.Other, pr.atk.Errors)
		}
		fmt.Printf("| (%s) | (%s) | %d | %.3f | %.3f–%.3f | %.3f | %.3f–%.3f | %.0f | %.0f | %s | %s |\n",
			pr.ct.key, pr.base.key, len(rs), m, lo, hi, median(crs), clo, chi,
			median(pr.xRPS), median(pr.bRPS), verdictCI(pr.ct.target, m, lo), atk)
	}
	fmt.Println()
	fmt.Println("Each pair ran the case and its baseline ((a), or for an attack row the same good client unattacked) back to")
	fmt.Println("back, one slice each. median ratio: the median over pairs of (case req/s ÷ baseline req/s in that pair); ratio")
	fmt.Println("per CPU-s: the same with the good client's requests per Caddy CPU-second. Interval: percentile bootstrap of the")
	fmt.Printf("median (%d resamples of the pairs with replacement, seed %d). target: met when the median ratio reaches it;\n", bootstrapResamples, bootstrapSeed)
	fmt.Println("\"clearly\" when the whole interval does. Attacker: its answers by status over all the case's slices.")
	fmt.Println()
}

// verdictCI is verdict, adding "clearly" when the interval's low end also
// meets the target.
func verdictCI(target string, m, lo float64) string {
	v := verdict(target, m)
	if target != "" && verdict(target, lo) == target+" met" {
		return target + " clearly met"
	}
	return v
}

// ratios returns num[i] ÷ den[i].
func ratios(num, den []float64) []float64 {
	out := make([]float64, len(num))
	for i := range num {
		out[i] = num[i] / den[i]
	}
	return out
}

// bootstrapMedianCI is the percentile bootstrap interval, at level, of the
// median of xs: resamples times, draw len(xs) values from xs with
// replacement and take their median; the interval is the nearest-rank
// (1−level)/2 and (1+level)/2 quantiles of those medians. The same seed
// gives the same interval.
func bootstrapMedianCI(xs []float64, resamples int, level float64, seed uint64) (lo, hi float64) {
	if len(xs) == 0 || resamples < 1 {
		return math.NaN(), math.NaN()
	}
	rng := rand.New(rand.NewPCG(seed, 0x726f746167617465)) // "rotagate"
	meds := make([]float64, resamples)
	draw := make([]float64, len(xs))
	for r := range meds {
		for i := range draw {
			draw[i] = xs[rng.IntN(len(xs))]
		}
		meds[r] = median(draw)
	}
	slices.Sort(meds)
	return quantileNR(meds, (1-level)/2), quantileNR(meds, (1+level)/2)
}

// quantileNR is the nearest-rank p-quantile of sorted: its k-th smallest
// value with k = ⌈p·n⌉ (at least 1).
func quantileNR(sorted []float64, p float64) float64 {
	n := len(sorted)
	k := int(math.Ceil(p*float64(n) - 1e-9)) // the epsilon keeps 0.025·2000 at 50
	k = min(max(k, 1), n)
	return sorted[k-1]
}

// pairedDuration estimates the paired mode's wall time: each slice, its
// drain pause, and the attack's head start.
func pairedDuration(s settings) time.Duration {
	cases := strings.Split(s.pairedCases, ",")
	per := 2 * (s.slice + 600*time.Millisecond)
	var d time.Duration
	for _, c := range cases {
		d += per
		if strings.HasPrefix(strings.TrimSpace(c), "f-") || strings.TrimSpace(c) == "e" {
			d += time.Second
		}
	}
	return time.Duration(s.pairs) * d
}
