package webhook

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotagate/rotagate/internal/promreg"
)

// Metrics live in package variables, registered on each config's
// registry at Provision: Caddy builds a new registry per config, and the
// counters must survive reloads. The webhook label is the URL's host (a
// URL may hold a token in its path or query); webhooks on one host add
// up.
var Metrics = struct {
	Delivered      *prometheus.CounterVec
	AttemptsFailed *prometheus.CounterVec
	Failed         *prometheus.CounterVec
	Pending        *prometheus.GaugeVec
}{
	Delivered:      counter("webhook_deliveries_delivered_total", "Webhook deliveries the receiver accepted (2xx)."),
	AttemptsFailed: counter("webhook_attempts_failed_total", "Webhook delivery attempts that failed (each retry counts)."),
	Failed:         counter("webhook_deliveries_failed_total", "Webhook deliveries given up: still failing 24h after the event, or answered 410 Gone."),
	Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "rotagate", Subsystem: "control_plane", Name: "webhook_deliveries_pending",
		Help: "Webhook deliveries neither delivered nor failed yet, as the sender last counted them in the store (all replicas').",
	}, []string{"webhook"}),
}

// counter is a webhook counter of the control plane, labelled by webhook.
func counter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rotagate", Subsystem: "control_plane", Name: name, Help: help,
	}, []string{"webhook"})
}

// RegisterMetrics puts the webhook collectors on a config's
// registry; a second site in the same config finds them there already.
func RegisterMetrics(ctx caddy.Context) error {
	m := &Metrics
	return promreg.Register(ctx, m.Delivered, m.AttemptsFailed, m.Failed, m.Pending)
}

// setPending publishes the pending counts of the configured webhooks,
// summed by label.
func setPending(hooks []*Hook, byKey map[string]int) {
	sums := map[string]int{}
	for _, w := range hooks {
		sums[w.label] += byKey[w.key]
	}
	for label, n := range sums {
		Metrics.Pending.WithLabelValues(label).Set(float64(n))
	}
}
