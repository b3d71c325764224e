package rotagate

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/rotagate/rotagate/internal/directive"
)

func init() {
	// After basic_auth and before request_header, so the placeholders it
	// sets are there for request_header and everything after.
	directive.Register[Handler]("client_credentials", httpcaddyfile.After, "basic_auth")
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
	return directive.Section(d, map[string]directive.Reader{
		"control_plane":         h.unmarshalControlPlane,
		"revocation_delay":      directive.Duration(&h.RevocationDelay),
		"usage_flush":           directive.Duration(&h.UsageFlush),
		"max_stale":             directive.Parsed(&h.MaxStale, ParseStaleness),
		"methods":               directive.Strings(&h.Methods),
		"audience":              directive.Strings(&h.Audience),
		"realm":                 directive.String(&h.Realm),
		"forward_credentials":   directive.Flag(&h.ForwardCredentials),
		"max_body":              directive.Size(&h.MaxBody),
		"max_snapshot_bytes":    directive.Size(&h.MaxSnapshotBytes),
		"slow_hash_concurrency": directive.Int(&h.SlowHashConcurrency),
		"failure_budget":        h.unmarshalFailureBudget,
	})
}

// unmarshalControlPlane reads `control_plane <url>… { token <t> }`.
func (h *Handler) unmarshalControlPlane(d *caddyfile.Dispenser) error {
	cp := &ControlPlane{URLs: d.RemainingArgs()}
	if len(cp.URLs) == 0 {
		return d.Errf("control_plane: at least one URL is required")
	}
	h.ControlPlane = cp
	return directive.Block(d, "control_plane", map[string]directive.Reader{
		"token": directive.String(&cp.Token),
	})
}

// unmarshalFailureBudget reads `<n> per <duration>` or `off`. Ranges are
// checked in Validate.
func (h *Handler) unmarshalFailureBudget(d *caddyfile.Dispenser) error {
	const name = "failure_budget"
	var first string
	if err := directive.NextArg(d, name, &first); err != nil {
		return err
	}
	if first == "off" {
		h.FailureBudget = &FailureBudget{Off: true}
		return directive.End(d, name)
	}
	var per, period string
	if err := directive.NextArg(d, name, &per); err != nil {
		return err
	}
	if err := directive.NextArg(d, name, &period); err != nil {
		return err
	}
	if per != "per" {
		return d.Errf("%s: want `<n> per <duration>` or `off`", name)
	}
	n, err := directive.ParseInt(first)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	dur, err := directive.ParseDuration(period)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	h.FailureBudget = &FailureBudget{Failures: n, Per: dur}
	return directive.End(d, name)
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
