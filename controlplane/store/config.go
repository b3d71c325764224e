package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Config selects a store; set exactly one field.
type Config struct {
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

// postgresStartTimeout bounds connecting to PostgreSQL and migrating when
// New opens a PostgreSQL store.
const postgresStartTimeout = 15 * time.Second

// New opens the store cfg describes, the one constructor from
// configuration: a nil cfg is the default SQLite store, at
// rotagate/rotagate.db under Caddy's data directory. Placeholders must be
// resolved already. log receives the background work's warnings (nil:
// none).
func New(ctx context.Context, cfg *Config, log *zap.Logger) (*SQL, error) {
	c, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Postgres != nil {
		octx, cancel := context.WithTimeout(ctx, postgresStartTimeout)
		defer cancel()
		return OpenPostgres(octx, c.Postgres.DSN, PostgresOptions{Logger: log})
	}
	return OpenSQLite(ctx, c.SQLite.Path)
}

// WithDefaults returns the config with its defaults: nil is SQLite, an
// empty SQLite path is rotagate/rotagate.db under Caddy's data directory,
// and a SQLite path is made absolute (it names the store in the pool).
func (c *Config) WithDefaults() (Config, error) {
	if c == nil {
		c = &Config{SQLite: &SQLiteConfig{}}
	}
	out := *c
	if out.SQLite != nil {
		path := out.SQLite.Path
		if path == "" {
			path = filepath.Join(caddy.AppDataDir(), "rotagate", "rotagate.db")
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return out, fmt.Errorf("store sqlite path: %v", err)
		}
		out.SQLite = &SQLiteConfig{Path: abs}
	}
	return out, nil
}

// Validate checks that the config names exactly one store, completely.
func (c Config) Validate() error {
	switch {
	case c.SQLite != nil && c.Postgres != nil:
		return errors.New("store: set sqlite or postgres, not both")
	case c.Postgres != nil && c.Postgres.DSN == "":
		return errors.New("store postgres: dsn is required")
	case c.SQLite == nil && c.Postgres == nil:
		return errors.New("store: set sqlite or postgres")
	}
	return nil
}

// Key names the store in the pool of open stores: the kind and the
// absolute path, or a digest of the DSN (it holds a password).
func (c Config) Key() string {
	if c.Postgres != nil {
		sum := sha256.Sum256([]byte(c.Postgres.DSN))
		return "postgres:" + hex.EncodeToString(sum[:])
	}
	if c.SQLite != nil {
		return "sqlite:" + c.SQLite.Path
	}
	return ""
}

// LogFields name the store for the log, never with a password.
func (c Config) LogFields() []zap.Field {
	if c.Postgres != nil {
		where := "(a DSN that does not parse)"
		if pg, err := ParsePostgresDSN(c.Postgres.DSN); err == nil {
			where = describeTarget(pg.ConnConfig)
		}
		return []zap.Field{zap.String("store", "postgres"), zap.String("database", where)}
	}
	return []zap.Field{zap.String("store", "sqlite"), zap.String("path", c.SQLite.Path)}
}
