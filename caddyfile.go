package rotagate

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("client_credentials", parseCaddyfile)
	// After basic_auth and before request_header, so the placeholders it
	// sets are there for request_header and everything after.
	httpcaddyfile.RegisterDirectiveOrder("client_credentials", httpcaddyfile.After, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	client_credentials {
//		control_plane <url> [<url>...] {
//			token <edge_token>
//		}
//		revocation_delay      <duration>
//		max_stale             <duration>|forever
//		usage_flush           <duration>
//		methods               basic|post [basic|post]
//		realm                 <realm>
//		forward_credentials
//		max_body              <size>
//		slow_hash_concurrency <n>
//		max_snapshot_bytes    <size>
//		failure_budget        <n> per <duration> | off
//	}
//
// Defaults and cross-field checks live in Provision and Validate, so JSON
// and Caddyfile configs behave the same.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] {
			return d.Errf("%s given twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "control_plane":
			err = h.unmarshalControlPlane(d)
		case "revocation_delay":
			err = durationArg(d, &h.RevocationDelay)
		case "usage_flush":
			err = durationArg(d, &h.UsageFlush)
		case "max_stale":
			var v string
			if err = oneArg(d, &v); err == nil {
				if h.MaxStale, err = ParseStaleness(v); err != nil {
					err = d.Errf("max_stale: %v", err)
				}
			}
		case "methods":
			h.Methods = d.RemainingArgs()
			if len(h.Methods) == 0 {
				err = d.ArgErr()
			}
		case "realm":
			err = oneArg(d, &h.Realm)
		case "forward_credentials":
			if d.NextArg() {
				err = d.ArgErr()
			}
			h.ForwardCredentials = true
		case "max_body":
			err = sizeArg(d, &h.MaxBody)
		case "max_snapshot_bytes":
			err = sizeArg(d, &h.MaxSnapshotBytes)
		case "slow_hash_concurrency":
			var v string
			if err = oneArg(d, &v); err == nil {
				if h.SlowHashConcurrency, err = strconv.Atoi(v); err != nil || h.SlowHashConcurrency < 1 {
					err = d.Errf("slow_hash_concurrency: want a whole number of at least 1, got %q", v)
				}
			}
		case "failure_budget":
			h.FailureBudget, err = unmarshalFailureBudget(d)
		default:
			return d.Errf("unrecognized client_credentials subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalControlPlane(d *caddyfile.Dispenser) error {
	cp := &ControlPlane{URLs: d.RemainingArgs()}
	if len(cp.URLs) == 0 {
		return d.Errf("control_plane: at least one URL is required")
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("control_plane: %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "token":
			if err := oneArg(d, &cp.Token); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized control_plane subdirective %q", name)
		}
	}
	h.ControlPlane = cp
	return nil
}

// unmarshalFailureBudget reads `<n> per <duration>` or `off`.
func unmarshalFailureBudget(d *caddyfile.Dispenser) (*FailureBudget, error) {
	args := d.RemainingArgs()
	if len(args) == 1 && args[0] == "off" {
		return &FailureBudget{Off: true}, nil
	}
	if len(args) != 3 || args[1] != "per" {
		return nil, d.Errf("failure_budget: want `<n> per <duration>` or `off`")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return nil, d.Errf("failure_budget: want a whole number of failures of at least 1, got %q", args[0])
	}
	per, err := caddy.ParseDuration(args[2])
	if err != nil || per <= 0 {
		return nil, d.Errf("failure_budget: want a positive period such as 1m, got %q", args[2])
	}
	return &FailureBudget{Failures: n, Per: caddy.Duration(per)}, nil
}

func oneArg(d *caddyfile.Dispenser, v *string) error {
	if !d.AllArgs(v) {
		return d.ArgErr()
	}
	return nil
}

func durationArg(d *caddyfile.Dispenser, v *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	if dur <= 0 {
		return d.Errf("%s: must be positive, got %s", name, s)
	}
	*v = caddy.Duration(dur)
	return nil
}

func sizeArg(d *caddyfile.Dispenser, v *int64) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > maxSize {
		return d.Errf("%s: want a size such as 64KiB, got %q", name, s)
	}
	*v = int64(n)
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
