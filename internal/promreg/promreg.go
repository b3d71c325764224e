// Package promreg puts both halves' collectors on a Caddy config's metrics
// registry. Caddy builds a new registry per config, so the collectors live
// in package variables (their counts survive a reload) and are registered
// on each config's registry at Provision.
package promreg

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Register puts cs on ctx's registry, if it has one. A collector already
// there, as a second site in the same config finds it, is no error.
func Register(ctx caddy.Context, cs ...prometheus.Collector) error {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
			return err
		}
	}
	return nil
}
