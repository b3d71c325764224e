package controlplane

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("client_credentials_control_plane", parseCaddyfile)
	// Ahead of handle/route blocks and terminal handlers, so that a
	// catch-all `handle` or `respond` does not swallow the API paths; after
	// the auth and header directives, which may guard or decorate it.
	httpcaddyfile.RegisterDirectiveOrder("client_credentials_control_plane", httpcaddyfile.Before, "invoke")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	cp := new(Handler)
	if err := cp.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return cp, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	client_credentials_control_plane [<matcher>] {
//		store sqlite [<path>]
//		store postgres <dsn>
//		admin_token <token>
//		edge_token <token>
//		max_active_secrets <n>
//		secret_prefix <prefix>
//		max_wait <duration>
//		admins <user_id>...
//		user_id <placeholder>
//		console [on|off]
//	}
//
// Each subdirective may appear once. Defaults are set in Provision.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s: given more than once", opt)
		}
		seen[opt] = true
		switch opt {
		case "store":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch kind := d.Val(); kind {
			case "sqlite":
				cfg := new(SQLiteConfig)
				if d.NextArg() {
					cfg.Path = d.Val()
				}
				h.Store = &StoreConfig{SQLite: cfg}
			case "postgres":
				var dsn string
				if !d.Args(&dsn) {
					return d.ArgErr()
				}
				h.Store = &StoreConfig{Postgres: &PostgresConfig{DSN: dsn}}
			default:
				return d.Errf("store: unknown kind %q (want sqlite or postgres)", kind)
			}
		case "admins":
			h.Admins = d.RemainingArgs()
			if len(h.Admins) == 0 {
				return d.ArgErr()
			}
		case "console":
			on := true
			if d.NextArg() {
				switch d.Val() {
				case "on":
				case "off":
					on = false
				default:
					return d.Errf("console: %q is neither on nor off", d.Val())
				}
			}
			h.Console = &on
		case "user_id":
			if !d.Args(&h.UserID) {
				return d.ArgErr()
			}
		case "admin_token":
			if !d.Args(&h.AdminToken) {
				return d.ArgErr()
			}
		case "edge_token":
			if !d.Args(&h.EdgeToken) {
				return d.ArgErr()
			}
		case "max_active_secrets":
			var v string
			if !d.Args(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return d.Errf("max_active_secrets: %q is not a whole number", v)
			}
			h.MaxActiveSecrets = n
		case "secret_prefix":
			if !d.Args(&h.SecretPrefix) {
				return d.ArgErr()
			}
		case "max_wait":
			var v string
			if !d.Args(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("max_wait: %v", err)
			}
			h.MaxWait = caddy.Duration(dur)
		default:
			return d.Errf("unknown subdirective %q", opt)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		if d.NextBlock(d.Nesting()) {
			return d.Errf("%s: takes no block", opt)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
