package rules

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotagate/rotagate/internal/promreg"
)

// The rules' metrics live in package variables registered on
// each config's registry at Provision, as the edge's do (metrics.go in
// the root package): Caddy builds a new registry per config, so counters
// held by a module instance would restart at zero on every reload. Labels
// are bounded: no client or secret id is ever one.
var Metrics = struct {
	PresentedAfterRevoke prometheus.Counter
	LeakReports          *prometheus.CounterVec
	SinkDeliveries       *prometheus.CounterVec
}{
	PresentedAfterRevoke: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "rotagate", Subsystem: "control_plane", Name: "presented_after_revoke_total",
		Help: "Requests that presented a revoked or expired secret at an edge, as edges reported them.",
	}),
	LeakReports: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rotagate", Subsystem: "control_plane", Name: "leak_reports_total",
		Help: "Reported leaked tokens, by label (true_positive, false_positive) and action (revoked, flagged, none).",
	}, []string{"label", "action"}),
	SinkDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rotagate", Name: "sink_deliveries_total",
		Help: "New secrets handed to clients' sinks, by kind (webhook, aws_secrets_manager) and outcome (delivered, failed).",
	}, []string{"kind", "outcome"}),
}

// RegisterMetrics puts the control plane's collectors on a config's
// registry; a second site in the same config finds them there already.
func RegisterMetrics(ctx caddy.Context) error {
	return promreg.Register(ctx, Metrics.PresentedAfterRevoke, Metrics.LeakReports, Metrics.SinkDeliveries)
}
