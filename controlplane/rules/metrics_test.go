package rules

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The control plane's counters are registered on every config's registry
// (a reload builds a new one) and go on from where they were.
func TestControlPlaneMetricsSurviveReload(t *testing.T) {
	register := func() (caddy.Context, context.CancelFunc) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		if err := RegisterMetrics(ctx); err != nil {
			t.Fatal(err)
		}
		if err := RegisterMetrics(ctx); err != nil { // a second site in the same config
			t.Fatalf("registering twice: %v", err)
		}
		return ctx, cancel
	}
	_, cancelOld := register()
	before := testutil.ToFloat64(Metrics.PresentedAfterRevoke)
	Metrics.PresentedAfterRevoke.Add(2)
	next, cancelNext := register() // the reload
	defer cancelNext()
	cancelOld()
	Metrics.PresentedAfterRevoke.Add(1)
	families, err := next.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "rotagate_control_plane_presented_after_revoke_total" {
			if got := mf.GetMetric()[0].GetCounter().GetValue() - before; got != 3 {
				t.Fatalf("counted %v across the reload, want 3", got)
			}
			return
		}
	}
	t.Fatal("the new registry lacks rotagate_control_plane_presented_after_revoke_total")
}
