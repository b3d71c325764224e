// Package controlplane is rotagate's control plane as a Caddy module
// (docs/design.md §1–§4, §11): http.handlers.client_credentials_control_plane
// or, outside Caddy, a Server. It mounts the management API, the edge feed
// and the usage ingest (package api) and the console (package console)
// over the rules (package rules), and adds the `caddy client-credentials`
// command (package cli).
package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/api"
	_ "github.com/rotagate/rotagate/controlplane/cli" // the `caddy client-credentials` command registers itself
	"github.com/rotagate/rotagate/controlplane/console"
	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the rotagate control plane as a Caddy HTTP handler
// (`http.handlers.client_credentials_control_plane`). It owns clients and
// the hashes of their secrets, enforces the rotation rules, and serves the
// management API, the edge feed, the usage ingest and /healthz. Requests
// for other paths go to the next handler.
type Handler struct {
	// Store says where clients and secret hashes live. Default: SQLite at
	// `rotagate/rotagate.db` under Caddy's data directory.
	Store *store.Config `json:"store,omitempty"`

	// AdminToken is the bearer token of the management API. Placeholders
	// such as `{env.ROTAGATE_ADMIN_TOKEN}` are resolved at provisioning;
	// an unset one is an error. Required. Default: none.
	AdminToken string `json:"admin_token,omitempty"`

	// EdgeToken is the bearer token of the edge feed and usage ingest,
	// resolved like AdminToken and different from it. Required. Default:
	// none.
	EdgeToken string `json:"edge_token,omitempty"`

	// MaxActiveSecrets is the most active (not revoked, not expired)
	// secrets a client may have. Default: 2.
	MaxActiveSecrets int `json:"max_active_secrets,omitempty"`

	// SecretPrefix starts every generated secret: 1 to 16 characters of
	// [a-z0-9_]. Default: rgs_.
	SecretPrefix string `json:"secret_prefix,omitempty"`

	// MaxWait caps how long a feed request may wait for a change. Keep it
	// below the server's write timeout. Default: 60s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// Admins are user ids with the admin token's powers when a Caddy
	// authentication handler in front (basic_auth, forward_auth…) has
	// vouched for them. Other authenticated users manage only the clients
	// that list them as owners. Default: none.
	Admins []string `json:"admins,omitempty"`

	// UserID is the placeholder holding the id of the user that an
	// authentication handler before this one on the route has
	// authenticated. basic_auth and other caddyauth providers set
	// {http.auth.user.id}; behind forward_auth, use the header the auth
	// server answers with, such as
	// {http.reverse_proxy.header.Remote-User}. Never a placeholder the
	// client controls (a request header). Default: {http.auth.user.id}.
	UserID string `json:"user_id,omitempty"`

	// Console serves the web console under /console/ on this site: My
	// clients, each client's OAuth secrets with Generate new secret,
	// Rotate… and Revoke, and for admins client creation, owners, the
	// audit log and deletion. It needs an authentication handler in
	// front (see UserID). Default: on when Admins is set, else off.
	Console *bool `json:"console,omitempty"`

	// TombstoneWindow is how long the feed keeps carrying a generated
	// secret after it was revoked or expired, as a tombstone (its id and
	// sha256 hash) by which edges tell a dead secret from a wrong one and
	// report it; 0 turns tombstones off. It is also how long the control
	// plane remembers a secret's callers after they were last seen
	// (GET …/secrets/{id}/callers, POST …/networks/suggest); 0 keeps none.
	// Default: 720h.
	TombstoneWindow *caddy.Duration `json:"tombstone_window,omitempty"`

	// LeakToken is a third bearer token, resolved like AdminToken and
	// different from both others, that may only report leaked secrets
	// (POST /v1/leaks): for a scanner or a security team's tooling.
	// Default: none.
	LeakToken string `json:"leak_token,omitempty"`

	// LeakReportKeys is the path of a JSON file of verification keys in
	// GitHub's published key-list format (what
	// https://api.github.com/meta/public_keys/secret_scanning answers),
	// read again whenever it changes. It turns on POST /v1/leaks/github,
	// GitHub's secret scanning partner endpoint. Default: none (the
	// endpoint answers 404).
	LeakReportKeys string `json:"leak_report_keys,omitempty"`

	// LeakAction is what a leak report of an active secret does: "revoke"
	// it at once, or "flag" it (recorded and audited, left working).
	// Default: revoke.
	LeakAction string `json:"leak_action,omitempty"`

	// Webhooks receive the control plane's events (secret.generated,
	// secret.revoked, secret.expiring…), signed per Standard Webhooks,
	// from a transactional outbox in the store: delivered at least once,
	// retried with backoff for 24h. Default: none.
	Webhooks []webhook.Config `json:"webhooks,omitempty"`

	// ExpiryReminders are the offsets before a secret's expires_at at
	// which a secret.expiring event fires, each once. Default: 720h, 168h,
	// 24h.
	ExpiryReminders []caddy.Duration `json:"expiry_reminders,omitempty"`

	// RevocationDelay is the edges' revocation_delay: a secret delivered
	// to a client's sink becomes current there (AWS: AWSCURRENT) this long
	// after it was stored, when every edge accepts it. Default: 30s.
	RevocationDelay caddy.Duration `json:"revocation_delay,omitempty"`
	// Cutover is the cut-over policy of clients that set none of their
	// own (docs/cutover.md): when an older secret may be revoked because
	// every caller has moved to the newest one. Default: auto off, quiet
	// 1h, lookback 14d, deadline 7d, on_deadline keep.
	Cutover *CutoverConfig `json:"cutover,omitempty"`

	// Resolved by Provision: the tokens, the store config with its
	// defaults, and the webhooks' URLs and secrets.
	adminToken, edgeToken, leakToken string
	storeCfg                         store.Config
	webhooks                         []webhook.Config

	api     *api.API
	poolKey string
	logger  *zap.Logger

	// stopSender ends the webhook sender and the cut-over loop, which
	// close senderDone and cutoverDone when they have returned.
	stopSender  context.CancelFunc
	senderDone  chan struct{}
	cutoverDone chan struct{}
}

// CutoverConfig is the control plane's default cut-over policy; each
// field left out keeps its default.
type CutoverConfig struct {
	// Auto revokes an older secret once every caller has moved to the
	// newest one and it has been quiet; off, the state is only shown.
	// Default: off.
	Auto *bool `json:"auto,omitempty"`
	// Quiet is how long the older secret must go without an accepted use.
	// Default: 1h.
	Quiet *caddy.Duration `json:"quiet,omitempty"`
	// Lookback is how far before the newest secret's first use a caller
	// of the older one counts as one that must move. Default: 14d.
	Lookback *caddy.Duration `json:"lookback,omitempty"`
	// Deadline, from the newest secret's creation, is when an unfinished
	// rotation is reported stalled; 0 never. Default: 7d.
	Deadline *caddy.Duration `json:"deadline,omitempty"`
	// OnDeadline is what a stalled rotation does to the older secret:
	// "keep" or "revoke". Default: keep.
	OnDeadline string `json:"on_deadline,omitempty"`
}

// policy returns the policy c describes, over cutover.Default.
func (c *CutoverConfig) policy() *cutover.Policy {
	p := cutover.Default
	if c == nil {
		return &p
	}
	if c.Auto != nil {
		p.Auto = *c.Auto
	}
	for _, f := range []struct {
		set *caddy.Duration
		to  *time.Duration
	}{{c.Quiet, &p.Quiet}, {c.Lookback, &p.Lookback}, {c.Deadline, &p.Deadline}} {
		if f.set != nil {
			*f.to = time.Duration(*f.set)
		}
	}
	if c.OnDeadline != "" {
		p.OnDeadline = cutover.OnDeadline(c.OnDeadline)
	}
	return &p
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.client_credentials_control_plane",
		New: func() caddy.Module { return new(Handler) },
	}
}

// stores shares open stores, keyed by kind and path (StoreConfig.key),
// across sites and config reloads; the last user to let go closes the
// store. A store owns the notifier of its changes, so the handlers sharing
// it wake each other's feed requests.
var stores = caddy.NewUsagePool()

// pooledStore is an open store in the pool.
type pooledStore struct{ store.Store }

// Destruct implements caddy.Destructor.
func (p pooledStore) Destruct() error { return p.Close() }

// Provision resolves the placeholders in the tokens and the store config,
// sets defaults, checks the result (Validate: before the store is opened,
// so that a mistake costs no database connection) and opens, or shares,
// the store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	var err error
	if h.adminToken, err = resolveSecret(repl, "admin_token", h.AdminToken); err != nil {
		return err
	}
	if h.edgeToken, err = resolveSecret(repl, "edge_token", h.EdgeToken); err != nil {
		return err
	}
	if h.LeakToken != "" {
		if h.leakToken, err = resolveSecret(repl, "leak_token", h.LeakToken); err != nil {
			return err
		}
	}
	if h.LeakReportKeys != "" {
		if h.LeakReportKeys, err = repl.ReplaceOrErr(h.LeakReportKeys, true, true); err != nil {
			return fmt.Errorf("leak_report_keys: %v", err)
		}
	}
	if h.storeCfg, err = h.resolveStore(repl); err != nil {
		return err
	}
	h.webhooks = make([]webhook.Config, len(h.Webhooks))
	for i, w := range h.Webhooks {
		if h.webhooks[i], err = resolveWebhook(repl, w, i); err != nil {
			return err
		}
	}
	if h.UserID == "" {
		h.UserID = api.DefaultUserID
	}
	so, ao := h.serviceOptions().WithDefaults(), h.apiOptions().WithDefaults()
	h.MaxActiveSecrets, h.SecretPrefix, h.MaxWait = so.MaxActiveSecrets, so.SecretPrefix, caddy.Duration(ao.MaxWait)
	window := caddy.Duration(*so.TombstoneWindow)
	h.TombstoneWindow, h.LeakAction = &window, so.LeakAction
	if err := h.Validate(); err != nil {
		return err
	}
	if err := rules.RegisterMetrics(ctx); err != nil {
		return err
	}
	for name, tok := range map[string]string{"admin_token": h.adminToken, "edge_token": h.edgeToken, "leak_token": h.leakToken} {
		if tok != "" && len(tok) < 16 {
			h.logger.Warn("token is short; use at least 32 random characters", zap.String("option", name))
		}
	}

	key := h.storeCfg.Key()
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The store outlives config reloads: a PostgreSQL store's LISTEN
		// connection and revision check run until the last user lets go,
		// not until this handler's context ends.
		st, err := store.New(ctx, &h.storeCfg, h.logger.Named("store"))
		if err != nil {
			return nil, err
		}
		return pooledStore{st}, nil
	})
	if err != nil {
		return err
	}
	h.poolKey = key
	h.logger.Info("control plane store ready", h.storeCfg.LogFields()...)
	so.AuditLog, so.Logger = h.logger.Named("audit"), h.logger
	svc, err := rules.NewService(ctx, val.(pooledStore).Store, so)
	if err != nil {
		return err
	}
	if err := webhook.RegisterMetrics(ctx); err != nil {
		return err
	}
	// The sender and the cut-over loop stop with this config (or at
	// Cleanup, which waits for them, so the store is never closed under
	// them); the next config's take over, and the outbox's leases and the
	// cut-over's row locks keep the two from acting twice.
	sctx, stop := context.WithCancel(ctx)
	h.stopSender, h.senderDone = stop, make(chan struct{})
	go func() {
		defer close(h.senderDone)
		ob, ok := svc.Store().(store.OutboxStore)
		if !ok {
			h.logger.Warn("the store keeps no outbox: webhooks and expiry reminders are off")
			return
		}
		webhook.NewSender(ob, svc.Webhooks(), webhook.Options{
			Now: svc.Now, Logger: h.logger, Wake: svc.Committed(), Notices: svc.ScanExpiries,
			Sinks: &webhook.Sinks{Target: svc.SinkTarget, Done: svc.SinkDelivered, Pass: svc.SinkPass},
		}).Run(sctx)
	}()
	h.cutoverDone = make(chan struct{})
	go func() {
		defer close(h.cutoverDone)
		svc.RunCutoverLoop(sctx)
	}()
	ao.Logger = h.logger
	if h.api, err = api.New(svc, ao); err != nil {
		return err
	}
	if h.consoleOn() {
		c, err := console.New(h.api)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		h.api.Mount(console.Prefix, c)
	}
	// Long polls would otherwise hold a graceful shutdown for max_wait.
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterOnShutdown(h.api.Close)
	}
	return nil
}

// Validate implements caddy.Validator, after Provision (which calls it
// too, before opening the store). The checks are those rules.NewService,
// api.New and store.New apply, written once (rules.ServiceOptions,
// api.Options and store.Config), so that Caddy and programmatic use
// agree.
func (h *Handler) Validate() error {
	if err := h.serviceOptions().WithDefaults().Validate(); err != nil {
		return err
	}
	if err := h.apiOptions().WithDefaults().Validate(); err != nil {
		return err
	}
	if !onePlaceholder.MatchString(h.UserID) {
		return fmt.Errorf("user_id must be one placeholder such as %s, got %q", api.DefaultUserID, h.UserID)
	}
	if strings.HasPrefix(h.UserID, "{http.request.") {
		return fmt.Errorf("user_id %s is set by the client itself: name the placeholder an authentication handler sets", h.UserID)
	}
	return h.storeCfg.Validate()
}

// serviceOptions and apiOptions are the handler's options for the Service
// and the API, the tokens as resolved by Provision, without the loggers.
func (h *Handler) serviceOptions() rules.ServiceOptions {
	reminders := make([]time.Duration, len(h.ExpiryReminders))
	for i, d := range h.ExpiryReminders {
		reminders[i] = time.Duration(d)
	}
	o := rules.ServiceOptions{MaxActiveSecrets: h.MaxActiveSecrets, SecretPrefix: h.SecretPrefix, LeakAction: h.LeakAction,
		Webhooks: h.webhooks, ExpiryReminders: reminders, RevocationDelay: time.Duration(h.RevocationDelay),
		Cutover: h.Cutover.policy()}
	if h.TombstoneWindow != nil {
		d := time.Duration(*h.TombstoneWindow)
		o.TombstoneWindow = &d
	}
	return o
}

var onePlaceholder = regexp.MustCompile(`^\{[A-Za-z0-9_.\-]+\}$`)

// consoleOn reports whether the console is served.
func (h *Handler) consoleOn() bool {
	if h.Console != nil {
		return *h.Console
	}
	return len(h.Admins) > 0
}

func (h *Handler) apiOptions() api.Options {
	return api.Options{
		AdminToken: h.adminToken, EdgeToken: h.edgeToken, LeakToken: h.leakToken, LeakReportKeys: h.LeakReportKeys,
		MaxWait: time.Duration(h.MaxWait),
		Admins:  h.Admins, User: api.PlaceholderUser(h.UserID),
	}
}

// resolveStore returns the store config with its placeholders resolved
// and its defaults set (store.Config.WithDefaults).
func (h *Handler) resolveStore(repl *caddy.Replacer) (store.Config, error) {
	if h.Store == nil {
		return (*store.Config)(nil).WithDefaults()
	}
	cfg := *h.Store
	if cfg.SQLite != nil {
		path, err := repl.ReplaceOrErr(cfg.SQLite.Path, true, true)
		if err != nil {
			return cfg, fmt.Errorf("store sqlite path: %v", err)
		}
		cfg.SQLite = &store.SQLiteConfig{Path: path}
	}
	if cfg.Postgres != nil {
		dsn, err := resolveSecret(repl, "store postgres dsn", cfg.Postgres.DSN)
		if err != nil {
			return cfg, err
		}
		cfg.Postgres = &store.PostgresConfig{DSN: dsn}
	}
	return cfg.WithDefaults()
}

// envOnly matches a value that is nothing but one {env.NAME} placeholder.
var envOnly = regexp.MustCompile(`^\{env\.([A-Za-z0-9_]+)\}$`)

// resolveSecret resolves placeholders in a token, failing on an unknown,
// unset or empty one. Errors never contain the value, only the name of the
// environment variable when the value is just {env.NAME}.
func resolveSecret(repl *caddy.Replacer, name, value string) (string, error) {
	if value == "" {
		return "", fmt.Errorf("%s is required", name)
	}
	out, err := repl.ReplaceOrErr(value, true, true)
	if err != nil {
		if m := envOnly.FindStringSubmatch(value); m != nil {
			return "", fmt.Errorf("%s: environment variable %s is not set or empty", name, m[1])
		}
		return "", fmt.Errorf("%s: a placeholder in it is unknown, unset or empty (literal tokens must not contain braces)", name)
	}
	return out, nil
}

// resolveWebhook returns a webhook's config with the placeholders in its
// URL and secret resolved; an unknown, unset or empty one is an error. i
// is the webhook's position, for errors, which never quote the secret
// nor the URL (it may hold a token).
func resolveWebhook(repl *caddy.Replacer, c webhook.Config, i int) (webhook.Config, error) {
	name := fmt.Sprintf("webhook %d", i)
	if c.URL != "" {
		u, err := repl.ReplaceOrErr(c.URL, true, true)
		if err != nil {
			return c, fmt.Errorf("%s: url: a placeholder in it is unknown, unset or empty", name)
		}
		c.URL = u
	}
	if c.Secret != "" {
		secret, err := resolveSecret(repl, name+" secret", c.Secret)
		if err != nil {
			return c, err
		}
		c.Secret = secret
	}
	return c, nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.api.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	h.api.ServeHTTP(w, r)
	return nil
}

// Cleanup answers waiting feed requests, stops the webhook sender (an
// attempt in flight is abandoned, to be retried after its lease) and the
// cut-over loop, and lets go of the store.
func (h *Handler) Cleanup() error {
	if h.api != nil {
		h.api.Close()
	}
	if h.stopSender != nil {
		h.stopSender()
		<-h.senderDone
		<-h.cutoverDone
		h.stopSender = nil
	}
	if h.poolKey != "" {
		key := h.poolKey
		h.poolKey = ""
		if _, err := stores.Delete(key); err != nil {
			return fmt.Errorf("closing store: %w", err)
		}
	}
	return nil
}

// API returns the handler's API once provisioned, e.g. to reach its
// Service.
func (h *Handler) API() *api.API { return h.api }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
