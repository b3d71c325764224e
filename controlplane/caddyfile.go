package controlplane

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/directive"
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
//		tombstone_window <duration>
//		leak_token <token>
//		leak_report_keys <file>
//		leak_action revoke|flag
//		webhook <url> {
//			secret <secret>
//			events <type>...
//			timeout <duration>
//		}
//		expiry_reminders <duration>...
//		revocation_delay <duration>
//		cutover {
//			auto on|off
//			quiet <duration>
//			lookback <duration>
//			deadline <duration>
//			on_deadline keep|revoke
//		}
//	}
//
// Each subdirective may appear once, except webhook. Mistakes are worded as in the edge's
// directive (internal/directive); defaults and checks live in Provision
// and Validate.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if err := directive.NoArgs(d, d.Val()); err != nil {
		return err
	}
	return directive.Block(d, func(name string) error {
		switch name {
		case "store":
			return h.unmarshalStore(d)
		case "admins":
			var err error
			h.Admins, err = directive.Args(d)
			return err
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
			return directive.End(d, "console")
		case "user_id":
			return directive.OneArg(d, &h.UserID)
		case "admin_token":
			return directive.OneArg(d, &h.AdminToken)
		case "edge_token":
			return directive.OneArg(d, &h.EdgeToken)
		case "max_active_secrets":
			return directive.Int(d, &h.MaxActiveSecrets)
		case "secret_prefix":
			return directive.OneArg(d, &h.SecretPrefix)
		case "max_wait":
			return directive.Duration(d, &h.MaxWait)
		case "revocation_delay":
			return directive.Duration(d, &h.RevocationDelay)
		case "tombstone_window":
			h.TombstoneWindow = new(caddy.Duration)
			return directive.Duration(d, h.TombstoneWindow)
		case "leak_token":
			return directive.OneArg(d, &h.LeakToken)
		case "leak_report_keys":
			return directive.OneArg(d, &h.LeakReportKeys)
		case "leak_action":
			return directive.OneArg(d, &h.LeakAction)
		case "webhook":
			return h.unmarshalWebhook(d)
		case "cutover":
			return h.unmarshalCutover(d)
		case "expiry_reminders":
			args, err := directive.Args(d)
			if err != nil {
				return err
			}
			for _, a := range args {
				dur, err := caddy.ParseDuration(a)
				if err != nil {
					return d.Errf("expiry_reminders: %v", err)
				}
				h.ExpiryReminders = append(h.ExpiryReminders, caddy.Duration(dur))
			}
			return nil
		}
		return directive.Unknown(d, "client_credentials_control_plane")
	}, "webhook")
}

// unmarshalWebhook reads `webhook <url> { secret …; events …; timeout … }`.
func (h *Handler) unmarshalWebhook(d *caddyfile.Dispenser) error {
	const name = "webhook"
	var w webhook.Config
	if err := directive.NextArg(d, name, &w.URL); err != nil {
		return err
	}
	if d.NextArg() {
		return d.Errf("%s: too many arguments", name)
	}
	err := directive.Block(d, func(sub string) error {
		switch sub {
		case "secret":
			return directive.OneArg(d, &w.Secret)
		case "events":
			var err error
			w.Events, err = directive.Args(d)
			return err
		case "timeout":
			return directive.Duration(d, &w.Timeout)
		}
		return directive.Unknown(d, name)
	})
	if err != nil {
		return err
	}
	h.Webhooks = append(h.Webhooks, w)
	return nil
}

// unmarshalCutover reads `cutover { auto on|off; quiet …; lookback …;
// deadline …; on_deadline keep|revoke }`.
func (h *Handler) unmarshalCutover(d *caddyfile.Dispenser) error {
	const name = "cutover"
	if err := directive.NoArgs(d, name); err != nil {
		return err
	}
	c := new(CutoverConfig)
	err := directive.Block(d, func(sub string) error {
		var word string
		switch sub {
		case "auto":
			if err := directive.OneArg(d, &word); err != nil {
				return err
			}
			if word != "on" && word != "off" {
				return d.Errf("%s %s: %q is neither on nor off", name, sub, word)
			}
			on := word == "on"
			c.Auto = &on
			return nil
		case "quiet":
			c.Quiet = new(caddy.Duration)
			return directive.Duration(d, c.Quiet)
		case "lookback":
			c.Lookback = new(caddy.Duration)
			return directive.Duration(d, c.Lookback)
		case "deadline":
			c.Deadline = new(caddy.Duration)
			return directive.Duration(d, c.Deadline)
		case "on_deadline":
			if err := directive.OneArg(d, &word); err != nil {
				return err
			}
			if word != "keep" && word != "revoke" {
				return d.Errf("%s %s: %q is neither keep nor revoke", name, sub, word)
			}
			c.OnDeadline = word
			return nil
		}
		return directive.Unknown(d, name)
	})
	if err != nil {
		return err
	}
	h.Cutover = c
	return nil
}

// unmarshalStore reads `store sqlite [<path>]` or `store postgres <dsn>`.
func (h *Handler) unmarshalStore(d *caddyfile.Dispenser) error {
	const name = "store"
	var kind string
	if err := directive.NextArg(d, name, &kind); err != nil {
		return err
	}
	switch kind {
	case "sqlite":
		cfg := new(store.SQLiteConfig)
		if d.NextArg() {
			cfg.Path = d.Val()
		}
		h.Store = &store.Config{SQLite: cfg}
	case "postgres":
		cfg := new(store.PostgresConfig)
		if err := directive.NextArg(d, name, &cfg.DSN); err != nil {
			return err
		}
		h.Store = &store.Config{Postgres: cfg}
	default:
		return d.Errf("%s: unknown kind %q (want sqlite or postgres)", name, kind)
	}
	return directive.End(d, name)
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
