package rotagate

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rotagate/rotagate/internal/directive"
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
//		methods               basic|post|private_key_jwt|tls_client_auth [...]
//		audience              <url> [<url>...]
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
	if err := directive.NoArgs(d, d.Val()); err != nil {
		return err
	}
	return directive.Block(d, func(name string) error {
		switch name {
		case "control_plane":
			return h.unmarshalControlPlane(d)
		case "revocation_delay":
			return directive.Duration(d, &h.RevocationDelay)
		case "usage_flush":
			return directive.Duration(d, &h.UsageFlush)
		case "max_stale":
			var v string
			if err := directive.OneArg(d, &v); err != nil {
				return err
			}
			var err error
			if h.MaxStale, err = ParseStaleness(v); err != nil {
				return d.Errf("max_stale: %v", err)
			}
			return nil
		case "methods":
			var err error
			h.Methods, err = directive.Args(d)
			return err
		case "audience":
			var err error
			h.Audience, err = directive.Args(d)
			return err
		case "realm":
			return directive.OneArg(d, &h.Realm)
		case "forward_credentials":
			h.ForwardCredentials = true
			return directive.Flag(d)
		case "max_body":
			return directive.Size(d, &h.MaxBody)
		case "max_snapshot_bytes":
			return directive.Size(d, &h.MaxSnapshotBytes)
		case "slow_hash_concurrency":
			return directive.Int(d, &h.SlowHashConcurrency)
		case "failure_budget":
			var err error
			h.FailureBudget, err = unmarshalFailureBudget(d)
			return err
		}
		return directive.Unknown(d, "client_credentials")
	})
}

// unmarshalControlPlane reads `control_plane <url>… { token <t> }`.
func (h *Handler) unmarshalControlPlane(d *caddyfile.Dispenser) error {
	cp := &ControlPlane{URLs: d.RemainingArgs()}
	if len(cp.URLs) == 0 {
		return d.Errf("control_plane: at least one URL is required")
	}
	h.ControlPlane = cp
	return directive.Block(d, func(name string) error {
		if name == "token" {
			return directive.OneArg(d, &cp.Token)
		}
		return directive.Unknown(d, "control_plane")
	})
}

// unmarshalFailureBudget reads `<n> per <duration>` or `off`. Ranges are
// checked in Validate.
func unmarshalFailureBudget(d *caddyfile.Dispenser) (*FailureBudget, error) {
	const name = "failure_budget"
	var first string
	if err := directive.NextArg(d, name, &first); err != nil {
		return nil, err
	}
	if first == "off" {
		return &FailureBudget{Off: true}, directive.End(d, name)
	}
	var per, period string
	if err := directive.NextArg(d, name, &per); err != nil {
		return nil, err
	}
	if err := directive.NextArg(d, name, &period); err != nil {
		return nil, err
	}
	if per != "per" {
		return nil, d.Errf("%s: want `<n> per <duration>` or `off`", name)
	}
	n, err := strconv.Atoi(first)
	if err != nil {
		return nil, d.Errf("%s: %q is not a whole number", name, first)
	}
	dur, err := caddy.ParseDuration(period)
	if err != nil {
		return nil, d.Errf("%s: %v", name, err)
	}
	return &FailureBudget{Failures: n, Per: caddy.Duration(dur)}, directive.End(d, name)
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
