package rotagate

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotagate/rotagate/internal/feedtest"
)

// TestMetricsSurviveReload provisions a handler in one config, serves,
// then provisions its replacement in a new config (a new registry, as a
// reload makes) and cleans up the old one: the counters go on from where
// they were, and the feed's gauges appear on the new registry.
func TestMetricsSurviveReload(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	provision := func() (*Handler, *prometheus.Registry, context.CancelFunc) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		h := &Handler{ControlPlane: &ControlPlane{URLs: []string{fs.URL}, Token: feedtest.Token}, MaxStale: Forever}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h, ctx.GetMetricsRegistry(), cancel
	}
	authenticated := edgeMetrics.authBy[outcomeAuthenticated]
	before := testutil.ToFloat64(authenticated)

	old, _, cancelOld := provision()
	if w, _ := serve(t, old, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	if w, _ := serve(t, old, basicRequest("app", "wrong")); w.Code != 401 {
		t.Fatalf("status %d", w.Code)
	}

	next, reg, cancelNext := provision() // the reload
	defer cancelNext()
	defer next.Cleanup()
	if next.feed != old.feed {
		t.Fatal("the reload started a second feed for the same control plane")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	cancelOld()
	if w, _ := serve(t, next, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("after reload: status %d", w.Code)
	}

	if got := testutil.ToFloat64(authenticated) - before; got != 2 {
		t.Fatalf("authenticated counted %v times across the reload, want 2", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range families {
		found[mf.GetName()] = true
		if mf.GetName() == "rotagate_edge_snapshot_revision" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 7 {
				t.Errorf("snapshot revision %v, want 7", v)
			}
		}
		if strings.HasPrefix(mf.GetName(), "rotagate_") {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == "app" || strings.Contains(l.GetValue(), appSecret) {
						t.Errorf("%s has a client id or secret as a label", mf.GetName())
					}
				}
			}
		}
	}
	for _, name := range []string{"rotagate_edge_auth_total", "rotagate_edge_verify_seconds", "rotagate_edge_snapshot_revision",
		"rotagate_edge_snapshot_age_seconds", "rotagate_edge_usage_stamps_pending"} {
		if !found[name] {
			t.Errorf("metric %s missing from the new registry", name)
		}
	}
}
