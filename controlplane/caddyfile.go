package controlplane

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/directive"
)

func init() {
	// Ahead of handle/route blocks and terminal handlers, so that a
	// catch-all `handle` or `respond` does not swallow the API paths; after
	// the auth and header directives, which may guard or decorate it.
	directive.Register[Handler]("client_credentials_control_plane", httpcaddyfile.Before, "invoke")
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
	return directive.Section(d, map[string]directive.Reader{
		"store":              h.unmarshalStore,
		"admins":             directive.Strings(&h.Admins),
		"console":            h.unmarshalConsole,
		"user_id":            directive.String(&h.UserID),
		"admin_token":        directive.String(&h.AdminToken),
		"edge_token":         directive.String(&h.EdgeToken),
		"max_active_secrets": directive.Int(&h.MaxActiveSecrets),
		"secret_prefix":      directive.String(&h.SecretPrefix),
		"max_wait":           directive.Duration(&h.MaxWait),
		"revocation_delay":   directive.Duration(&h.RevocationDelay),
		"tombstone_window":   directive.New(&h.TombstoneWindow, directive.Duration),
		"leak_token":         directive.String(&h.LeakToken),
		"leak_report_keys":   directive.String(&h.LeakReportKeys),
		"leak_action":        directive.String(&h.LeakAction),
		"webhook":            h.unmarshalWebhook,
		"cutover":            h.unmarshalCutover,
		"expiry_reminders":   h.unmarshalExpiryReminders,
	}, "webhook")
}

// unmarshalConsole reads `console [on|off]`; alone, it means on.
func (h *Handler) unmarshalConsole(d *caddyfile.Dispenser) error {
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
}

// unmarshalExpiryReminders reads `expiry_reminders <duration>...`.
func (h *Handler) unmarshalExpiryReminders(d *caddyfile.Dispenser) error {
	args, err := directive.Args(d)
	if err != nil {
		return err
	}
	for _, a := range args {
		dur, err := directive.ParseDuration(a)
		if err != nil {
			return d.Errf("expiry_reminders: %v", err)
		}
		h.ExpiryReminders = append(h.ExpiryReminders, dur)
	}
	return nil
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
	err := directive.Block(d, name, map[string]directive.Reader{
		"secret":  directive.String(&w.Secret),
		"events":  directive.Strings(&w.Events),
		"timeout": directive.Duration(&w.Timeout),
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
	c := new(CutoverConfig)
	h.Cutover = c
	return directive.Section(d, map[string]directive.Reader{
		"auto": func(d *caddyfile.Dispenser) error {
			word, err := cutoverChoice(d, "on", "off")
			if err != nil {
				return err
			}
			on := word == "on"
			c.Auto = &on
			return nil
		},
		"quiet":    directive.New(&c.Quiet, directive.Duration),
		"lookback": directive.New(&c.Lookback, directive.Duration),
		"deadline": directive.New(&c.Deadline, directive.Duration),
		"on_deadline": func(d *caddyfile.Dispenser) (err error) {
			c.OnDeadline, err = cutoverChoice(d, "keep", "revoke")
			return err
		},
	})
}

// cutoverChoice reads the cutover subdirective d is on, whose one
// argument is a or b.
func cutoverChoice(d *caddyfile.Dispenser, a, b string) (string, error) {
	sub := d.Val()
	var word string
	if err := directive.OneArg(d, &word); err != nil {
		return "", err
	}
	if word != a && word != b {
		return "", d.Errf("cutover %s: %q is neither %s nor %s", sub, word, a, b)
	}
	return word, nil
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
