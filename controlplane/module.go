// Package controlplane is rotagate's control plane (SPEC §1–§4, §8, §9):
// it owns clients and the hashes of their secrets, enforces the rotation
// rules, and serves the management API, the edge feed and the usage
// ingest, as the Caddy module http.handlers.client_credentials_control_plane
// or, outside Caddy, as a Server. It also adds the `caddy
// client-credentials` command.
package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
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
	Store *StoreConfig `json:"store,omitempty"`

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

	api     *API
	poolKey string
	logger  *zap.Logger
}

// StoreConfig selects a store; set exactly one field.
type StoreConfig struct {
	// SQLite is the embedded store. Default: used when no store is set.
	SQLite *SQLiteConfig `json:"sqlite,omitempty"`
	// Postgres is the store for fleets: several control planes (replicas)
	// on one PostgreSQL database serve the same clients, and a change
	// through one wakes the edges waiting on any other. Default: none.
	Postgres *PostgresConfig `json:"postgres,omitempty"`
}

// SQLiteConfig configures the SQLite store.
type SQLiteConfig struct {
	// Path of the database file, relative to Caddy's working directory
	// unless absolute. Several sites and config reloads using one path
	// share one open store. Default: `rotagate/rotagate.db` under Caddy's
	// data directory.
	Path string `json:"path,omitempty"`
}

// PostgresConfig configures the PostgreSQL store.
type PostgresConfig struct {
	// DSN is the connection string, a `postgres://user:password@host/db`
	// URL or `key=value` pairs, resolved through placeholders like the
	// tokens (`{env.DATABASE_URL}`); an unset placeholder is an error.
	// Control planes with the same DSN in one process share one store.
	// Required. Default: none.
	DSN string `json:"dsn,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.client_credentials_control_plane",
		New: func() caddy.Module { return new(Handler) },
	}
}

// stores shares open stores, keyed by kind and path, across sites and
// config reloads; the last user to let go closes the store.
var stores = caddy.NewUsagePool()

// pooledStore is a store with the notifier of its changes.
type pooledStore struct {
	store    Store
	notifier *Notifier
}

// Destruct implements caddy.Destructor.
func (p *pooledStore) Destruct() error { return p.store.Close() }

// Provision sets defaults, resolves the tokens and opens (or shares) the
// store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	repl := caddy.NewReplacer()

	admin, err := resolveSecret(repl, "admin_token", h.AdminToken)
	if err != nil {
		return err
	}
	edge, err := resolveSecret(repl, "edge_token", h.EdgeToken)
	if err != nil {
		return err
	}
	if admin == edge {
		return errors.New("admin_token and edge_token must differ")
	}
	for name, tok := range map[string]string{"admin_token": admin, "edge_token": edge} {
		if len(tok) < 16 {
			h.logger.Warn("token is short; use at least 32 random characters", zap.String("option", name))
		}
	}
	if h.MaxActiveSecrets == 0 {
		h.MaxActiveSecrets = DefaultMaxActiveSecrets
	}
	if h.MaxActiveSecrets < 1 {
		return fmt.Errorf("max_active_secrets must be at least 1, got %d", h.MaxActiveSecrets)
	}
	if h.SecretPrefix == "" {
		h.SecretPrefix = DefaultSecretPrefix
	}
	if err := ValidatePrefix(h.SecretPrefix); err != nil {
		return err
	}
	if h.MaxWait == 0 {
		h.MaxWait = caddy.Duration(DefaultMaxWait)
	}
	if h.MaxWait < 0 {
		return fmt.Errorf("max_wait must be positive")
	}
	if h.UserID == "" {
		h.UserID = DefaultUserID
	}
	if !onePlaceholder.MatchString(h.UserID) {
		return fmt.Errorf("user_id must be one placeholder such as %s, got %q", DefaultUserID, h.UserID)
	}
	if strings.HasPrefix(h.UserID, "{http.request.") {
		return fmt.Errorf("user_id %s is set by the client itself: name the placeholder an authentication handler sets", h.UserID)
	}
	for _, u := range h.Admins {
		if err := ValidateUserID(u); err != nil {
			return fmt.Errorf("admins: %v", err)
		}
	}

	pooled, err := h.openStore(ctx, repl)
	if err != nil {
		return err
	}
	svc, err := NewService(ctx, pooled.store, ServiceOptions{
		MaxActiveSecrets: h.MaxActiveSecrets,
		SecretPrefix:     h.SecretPrefix,
		AuditLog:         h.logger.Named("audit"),
		Notifier:         pooled.notifier,
	})
	if err != nil {
		return err
	}
	h.api, err = NewAPI(svc, APIOptions{
		AdminToken: admin,
		EdgeToken:  edge,
		MaxWait:    time.Duration(h.MaxWait),
		Logger:     h.logger,
		Admins:     h.Admins,
		User:       h.user,
		Console:    h.consoleOn(),
	})
	if err != nil {
		return err
	}
	// Long polls would otherwise hold a graceful shutdown for max_wait.
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterOnShutdown(h.api.Close)
	}
	return nil
}

// openStore takes the configured store from the pool, opening it on first
// use.
func (h *Handler) openStore(ctx caddy.Context, repl *caddy.Replacer) (*pooledStore, error) {
	cfg := h.Store
	if cfg == nil {
		cfg = &StoreConfig{SQLite: &SQLiteConfig{}}
	}
	switch {
	case cfg.SQLite != nil && cfg.Postgres != nil:
		return nil, errors.New("store: set sqlite or postgres, not both")
	case cfg.Postgres != nil:
		return h.openPostgres(ctx, repl, cfg.Postgres)
	case cfg.SQLite == nil:
		return nil, errors.New("store: set sqlite or postgres")
	}
	path, err := repl.ReplaceOrErr(cfg.SQLite.Path, true, true)
	if err != nil {
		return nil, fmt.Errorf("store sqlite path: %v", err)
	}
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "rotagate", "rotagate.db")
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("store sqlite path: %v", err)
	}
	key := "sqlite:" + path
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		st, err := OpenSQLite(ctx, path)
		if err != nil {
			return nil, err
		}
		return &pooledStore{store: st, notifier: NewNotifier()}, nil
	})
	if err != nil {
		return nil, err
	}
	h.poolKey = key
	h.logger.Info("control plane store ready", zap.String("store", "sqlite"), zap.String("path", path))
	return val.(*pooledStore), nil
}

// openPostgres takes the PostgreSQL store for the DSN from the pool,
// connecting on first use. The store outlives config reloads, so its
// LISTEN connection and revision check run until the last user lets go,
// not until this handler's context ends.
func (h *Handler) openPostgres(ctx caddy.Context, repl *caddy.Replacer, cfg *PostgresConfig) (*pooledStore, error) {
	dsn, err := resolveSecret(repl, "store postgres dsn", cfg.DSN)
	if err != nil {
		return nil, err
	}
	pgCfg, err := ParsePostgresDSN(dsn)
	if err != nil {
		return nil, err
	}
	target := describeTarget(pgCfg.ConnConfig)
	sum := sha256.Sum256([]byte(dsn))
	key := "postgres:" + hex.EncodeToString(sum[:])
	val, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		octx, cancel := context.WithTimeout(ctx, postgresStartTimeout)
		defer cancel()
		notifier := NewNotifier()
		st, err := OpenPostgres(octx, dsn, PostgresOptions{Notifier: notifier, Logger: h.logger.Named("store")})
		if err != nil {
			return nil, err
		}
		return &pooledStore{store: st, notifier: notifier}, nil
	})
	if err != nil {
		return nil, err
	}
	h.poolKey = key
	h.logger.Info("control plane store ready", zap.String("store", "postgres"), zap.String("database", target))
	return val.(*pooledStore), nil
}

// DefaultUserID is the placeholder of the authenticated user that Caddy's
// authentication handler sets.
const DefaultUserID = "{http.auth.user.id}"

var onePlaceholder = regexp.MustCompile(`^\{[A-Za-z0-9_.\-]+\}$`)

// consoleOn reports whether the console is served.
func (h *Handler) consoleOn() bool {
	if h.Console != nil {
		return *h.Console
	}
	return len(h.Admins) > 0
}

// user reads the authenticated user's id from the request's replacer.
func (h *Handler) user(r *http.Request) string { return placeholderValue(r, h.UserID) }

// postgresStartTimeout bounds connecting to PostgreSQL and migrating at
// provisioning.
const postgresStartTimeout = 15 * time.Second

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

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.api.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	h.api.ServeHTTP(w, r)
	return nil
}

// Cleanup answers waiting feed requests and lets go of the store.
func (h *Handler) Cleanup() error {
	if h.api != nil {
		h.api.Close()
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
func (h *Handler) API() *API { return h.api }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
