package rotagate

import (
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotagate/rotagate/internal/promreg"
)

// Metrics live in package variables, created once and registered on each
// config's registry at Provision: Caddy builds a new registry per config, so
// counters held by a module instance would restart at zero on every reload.
// Labels are bounded: outcomes are a fixed set, and control planes are the
// configured URL lists. No client id is ever a label.
const metricsNamespace, metricsSubsystem = "rotagate", "edge"

var edgeMetrics = struct {
	auth                 *prometheus.CounterVec
	authBy               map[outcome]prometheus.Counter
	verify               prometheus.Histogram
	syncErrors           *prometheus.CounterVec
	stampsSent           *prometheus.CounterVec
	stampsFailed         *prometheus.CounterVec
	stampsDropped        *prometheus.CounterVec
	presentedAfterRevoke prometheus.Counter
	feeds                feedCollector
}{
	auth: prometheus.NewCounterVec(counterOpts("auth_total", "Client authentication results at the edge, by outcome."), []string{"outcome"}),
	verify: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "verify_seconds",
		Help:    "Time spent checking a presented secret against the client's hashes.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 4, 11), // 1µs … ~1s
	}),
	syncErrors:    controlPlaneCounter("sync_errors_total", "Failed or rejected polls of the control plane's snapshot feed."),
	stampsSent:    controlPlaneCounter("usage_stamps_flushed_total", "Last-used stamps delivered to the control plane."),
	stampsFailed:  controlPlaneCounter("usage_stamps_failed_total", "Last-used stamps whose delivery failed and that are kept to be retried (counted at each failed try)."),
	stampsDropped: controlPlaneCounter("usage_stamps_dropped_total", "Last-used stamps dropped because the control plane refused their batch as malformed or too large (400, 413)."),
	presentedAfterRevoke: prometheus.NewCounter(counterOpts("presented_after_revoke_total",
		"Requests refused because they presented a revoked or expired secret (a tombstone of the client).")),
}

// counterOpts names a counter of the edge.
func counterOpts(name, help string) prometheus.CounterOpts {
	return prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
}

// controlPlaneCounter is a counter of the edge labelled by control plane.
func controlPlaneCounter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(counterOpts(name, help), []string{"control_plane"})
}

func init() {
	m := &edgeMetrics
	m.authBy = make(map[outcome]prometheus.Counter)
	for _, o := range []outcome{outcomeAuthenticated, outcomeNoCredentials, outcomeMalformed, outcomeTooLarge,
		outcomeMethodRefused, outcomeUnavailable, outcomeInvalidClient, outcomeThrottled, outcomeInternalFault,
		outcomeNetworkRefused, outcomeNetworkReported} {
		m.authBy[o] = m.auth.WithLabelValues(string(o))
	}
}

// registerMetrics puts the edge's collectors on a config's registry; a
// second site in the same config finds them there already.
func registerMetrics(ctx caddy.Context) error {
	m := &edgeMetrics
	return promreg.Register(ctx, m.auth, m.verify, m.syncErrors, m.stampsSent, m.stampsFailed, m.stampsDropped, m.presentedAfterRevoke, m.feeds)
}

func countOutcome(o outcome) { edgeMetrics.authBy[o].Inc() }

func controlPlaneLabel(urls []string) string { return strings.Join(urls, ",") }

// feedCollector reports the state of every running feed at scrape time:
// snapshot revision and age (time since the last confirmation), and stamps
// waiting to be sent.
type feedCollector struct{}

var (
	descRevision = controlPlaneGauge("snapshot_revision", "Revision of the snapshot the edge holds.")
	descAge      = controlPlaneGauge("snapshot_age_seconds", "Seconds since the control plane last confirmed the snapshot (the edge answers 503 past max_stale).")
	descPending  = controlPlaneGauge("usage_stamps_pending", "Last-used stamps waiting to be sent (one per secret used since the last flush, with its callers).")
)

// controlPlaneGauge describes a gauge of the edge labelled by control
// plane, which feedCollector reports.
func controlPlaneGauge(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, name), help, []string{"control_plane"}, nil)
}

func (feedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRevision
	ch <- descAge
	ch <- descPending
}

func (feedCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	feeds.Range(func(_, v any) bool {
		f := v.(*feed)
		label := f.client.label
		snap, confirmed := f.snapshots.current()
		if snap != nil {
			ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(snap.revision), label)
			ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, now.Sub(confirmed).Seconds(), label)
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(f.usage.pendingCount()), label)
		return true
	})
}
