package controlplane

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

	"github.com/rotagate/rotagate/internal/wire"
)

// Domain errors. Stores map their own "no rows" and constraint failures to
// these, so the rules and the API never look at driver errors.
var (
	// ErrNotFound means the client or secret does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClientExists means a client with that id already exists.
	ErrClientExists = errors.New("client already exists")
	// ErrTooManyActive means the client already has max_active_secrets
	// active secrets.
	ErrTooManyActive = errors.New("too many active secrets")
)

// Client is a registered OAuth client.
type Client struct {
	ID        string
	Name      string
	CreatedAt time.Time
	// Owners are the ids of the users (as a Caddy authentication handler
	// names them) who may manage the client's secrets, sorted.
	Owners []string
	// AllowedCIDRs are the networks the client may call from, canonical
	// (NormalizeCIDRs); empty means anywhere.
	AllowedCIDRs []string
	// NetworksReportOnly lets calls from outside AllowedCIDRs through, and
	// records them as refused.
	NetworksReportOnly bool
}

// IsOwner reports whether user is one of the client's owners.
func (c *Client) IsOwner(user string) bool {
	for _, o := range c.Owners {
		if o == user {
			return true
		}
	}
	return false
}

// AuditEntry is one change in the audit trail that the store keeps (the
// zap audit log also has refused attempts). It never holds a secret.
type AuditEntry struct {
	At time.Time
	// Who is admin-token or user:<id>.
	Who      string
	RemoteIP string
	// Action is client.create, client.delete, client.owners,
	// secret.generate, secret.import, secret.rotate or secret.revoke.
	Action   string
	ClientID string
	SecretID string
	// Detail says more where the action needs it (a rotation's grace, an
	// owners change), in a few words.
	Detail string
}

// Secret is the stored record of one client secret. It holds the hash, never
// the secret. Times are UTC, at millisecond precision.
type Secret struct {
	ID       string
	ClientID string
	// Hash is a stored hash string (see internal/secrethash).
	Hash string
	// Hint tells secrets apart in listings without revealing them.
	Hint         string
	CreatedAt    time.Time
	ExpiresAt    *time.Time
	RevokedAt    *time.Time
	LastUsedAt   *time.Time
	LastUsedFrom string
	// FirstUsedAt is the time of the first last-used stamp recorded for
	// the secret: its first use, give or take an edge's usage_flush.
	FirstUsedAt *time.Time
	// PresentedAfterRevoke counts the requests that presented the secret
	// at an edge after it was revoked or expired, as edges reported them;
	// LastPresentedAfterRevokeAt and …From are the newest such request
	// and its caller's IP.
	PresentedAfterRevoke         int64
	LastPresentedAfterRevokeAt   *time.Time
	LastPresentedAfterRevokeFrom string
	// LeakReportedAt is when a leak report first named the secret.
	LeakReportedAt *time.Time
}

// RecordedRevokedUse is a presented-after-revoke report as a store
// applied it: the report, the secret's hint, and its count since.
type RecordedRevokedUse struct {
	ClientID, SecretID, Hint string
	Count                    int64
	LastAt                   time.Time
	From                     string
	// Total is the secret's presented_after_revoke_count after the report.
	Total int64
}

// Active reports whether the secret authenticates at now: not revoked and
// not past its expiry.
func (s *Secret) Active(now time.Time) bool {
	return s.RevokedAt == nil && (s.ExpiresAt == nil || s.ExpiresAt.After(now))
}

// Status is how a listing describes a secret at a given time.
type Status string

// The statuses of a secret in listings (docs/design.md §3).
const (
	StatusActive   Status = "active"
	StatusExpiring Status = "expiring"
	StatusExpired  Status = "expired"
	StatusRevoked  Status = "revoked"
)

// Status describes the secret at now.
func (s *Secret) Status(now time.Time) Status {
	switch {
	case s.RevokedAt != nil:
		return StatusRevoked
	case s.ExpiresAt == nil:
		return StatusActive
	case s.ExpiresAt.After(now):
		return StatusExpiring
	}
	return StatusExpired
}

// Store holds clients and the hashes of their secrets. Implementations must
// be safe for concurrent use. Methods that take no transaction see committed
// data only. The SQLite and PostgreSQL stores share their SQL text
// (queries.go) and one test suite, so that they behave the same.
type Store interface {
	// Update runs fn in one write transaction and commits when fn returns
	// nil, rolls back and returns fn's error otherwise. Writers are
	// serialised against each other for the whole transaction (BEGIN
	// IMMEDIATE on SQLite; Tx.LockClient row locks on PostgreSQL), so that
	// a count read inside fn still holds at commit. When fn wrote anything
	// the store revision is bumped by one in the same transaction. It
	// returns the revision after commit. A store may call fn again when
	// the transaction failed before commit for a transient reason (a
	// broken connection, a deadlock), so fn must leave no trace outside
	// the transaction: the Service's update helper has each attempt return
	// its findings, fresh, and keeps those of the attempt that committed.
	Update(ctx context.Context, fn func(Tx) error) (revision int64, err error)

	// Client returns one client with its owners, or ErrNotFound.
	Client(ctx context.Context, id string) (Client, error)

	// Clients returns up to limit clients, with their owners, whose id
	// sorts after the given one ("" for the first page), ordered by id.
	// With a non-empty owner, only the clients that list that user among
	// their owners.
	Clients(ctx context.Context, owner, after string, limit int) ([]Client, error)

	// Audit returns the newest limit entries of a client's audit trail,
	// newest first. A client that never existed has an empty trail.
	Audit(ctx context.Context, clientID string, limit int) ([]AuditEntry, error)

	// Secrets returns every secret of a client, revoked and expired ones
	// included, oldest first; ErrNotFound when the client does not exist.
	Secrets(ctx context.Context, clientID string) ([]Secret, error)

	// Revision returns the store's epoch, a random id fixed when the store
	// was created, and its revision, a counter that every committed change
	// made through Update increases.
	Revision(ctx context.Context) (epoch string, revision int64, err error)

	// Snapshot returns, read in one consistent view, the epoch, the
	// revision and every secret active at now grouped by client, ordered by
	// client id then secret id, with each client's tombstones: its
	// generated (sha256) secrets revoked or expired within tombstoneWindow
	// before now (none when it is 0). A client with tombstones only is
	// listed without secrets. GeneratedAt is left for the caller to set.
	Snapshot(ctx context.Context, now time.Time, tombstoneWindow time.Duration) (wire.Snapshot, error)

	// SecretByHash returns the secret whose stored hash is hash (an
	// indexed lookup), or ErrNotFound.
	SecretByHash(ctx context.Context, hash string) (Secret, error)

	// Changes returns, read in one consistent view, the epoch, the
	// revision and the changes since revision since: every client whose
	// feed entry a revision after since may have changed, with its
	// secrets active at now and its tombstones within tombstoneWindow (as
	// Snapshot lists them), or in Removed when Snapshot would not list it. ok is false when the change log does
	// not reach back to since (pruned, or since is ahead), or too many
	// clients changed: the feed then answers with a full snapshot.
	// Update writes the log in the transaction of each change, so every
	// replica of a store reads the same changes.
	Changes(ctx context.Context, since int64, now time.Time, tombstoneWindow time.Duration) (delta wire.Delta, ok bool, err error)

	// ApplyUsage records last-used stamps: for each secret, last_used_at
	// becomes the later of the stored and the reported time, and
	// last_used_from follows the newest stamp; first_used_at is set by the
	// first stamp applied and kept after that. Stamps for unknown secrets,
	// or naming the wrong client, are ignored. It costs one statement per
	// stamp, is idempotent, and does not change the revision. It returns
	// how many secrets were updated.
	ApplyUsage(ctx context.Context, stamps []wire.Stamp) (updated int, err error)

	// ApplyCallers adds the callers of a usage batch, ordered by secret
	// id, one (secret, IP) pair each: first seen becomes the earlier, last
	// seen the later, the counts add up. Uses of unknown secrets, or naming
	// the wrong client, are ignored. Then each secret touched keeps its
	// keep most recently seen callers (the row of unlisted requests, IP
	// "", aside). It costs one statement per pair and one per secret, and
	// does not change the revision.
	ApplyCallers(ctx context.Context, uses []CallerUse, keep int) error

	// Callers returns the callers of the given secrets last seen at or
	// after since, by secret id, the most recently seen first.
	Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error)

	// PruneCallers deletes the callers last seen before before, and says
	// how many.
	PruneCallers(ctx context.Context, before time.Time) (int64, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error

	// Close releases the store. It is called once, when nothing uses the
	// store any more.
	Close() error
}

// NotifyingStore is a Store that owns the Notifier of its changes (both
// of ours do). A store that other processes write too (PostgreSQL) also
// announces their changes on it, so that feed requests waiting on this
// process wake for a change made through any replica. NewService finds
// the notifier by type assertion: a Service can never be handed a
// notifier other than its store's. A wrapper that embeds the Store
// interface hides the method, and the Service then hears only its own
// changes: wrappers should implement it too.
type NotifyingStore interface {
	Store
	// Notifier returns the store's notifier, the same every call.
	Notifier() *Notifier
}

// Tx is the write side of the store, valid only inside Store.Update. Every
// method that changes data marks the transaction as a change, so the
// revision moves exactly when something was written.
type Tx interface {
	// LockClient returns a client with its owners and keeps its secrets
	// and owners from changing under other transactions until this one
	// ends; ErrNotFound when the client does not exist.
	LockClient(ctx context.Context, id string) (Client, error)

	// InsertClient adds a client and its owners; ErrClientExists when the
	// id is taken.
	InsertClient(ctx context.Context, c Client) error

	// DeleteClient removes a client, its owners and every secret it has
	// (with their callers);
	// ErrNotFound when the client does not exist. Its audit trail stays.
	DeleteClient(ctx context.Context, id string) error

	// SetOwners replaces the owners of an existing client.
	SetOwners(ctx context.Context, clientID string, owners []string) error

	// SetNetworks replaces the allowed networks (canonical) and the
	// report-only mode of a client; ErrNotFound when it does not exist.
	SetNetworks(ctx context.Context, clientID string, cidrs []string, reportOnly bool) error

	// AppendAudit adds an entry to the audit trail, committed with the
	// change it describes. On its own it is no change: it does not move
	// the revision.
	AppendAudit(ctx context.Context, e AuditEntry) error

	// Secrets returns every secret of a client, oldest first.
	Secrets(ctx context.Context, clientID string) ([]Secret, error)

	// InsertSecret adds a secret to an existing client.
	InsertSecret(ctx context.Context, s Secret) error

	// SetExpiry sets a secret's expires_at; ErrNotFound when it does not
	// exist.
	SetExpiry(ctx context.Context, secretID string, at time.Time) error

	// Revoke sets a secret's revoked_at; ErrNotFound when it does not
	// exist.
	Revoke(ctx context.Context, secretID string, at time.Time) error

	// RecordRevokedUse adds a presented-after-revoke report to a secret:
	// the count grows by u.Count, and the last time and caller follow the
	// newest report. ErrNotFound when the secret does not exist, belongs
	// to another client, or was neither revoked nor expired at u.LastAt.
	// One statement; no change: the revision stays.
	RecordRevokedUse(ctx context.Context, u wire.RevokedUse) (RecordedRevokedUse, error)

	// FlagLeak records that a leak report named the secret, unless one
	// did before. No change: the revision stays.
	FlagLeak(ctx context.Context, secretID string, at time.Time) error
	// InsertEvent writes an event to the outbox, with a pending delivery,
	// due at once, for each webhook key given. It does not mark the
	// transaction as a change: events do not move the revision. Call it
	// through Service.enqueue (outbox.go).
	InsertEvent(ctx context.Context, e OutboxEvent, webhooks []string) error

	// AdvanceNotice records that a secret's expiry notice has reached
	// stage (stages count down: reminder offsets in milliseconds, then
	// stageExpired), and reports whether it moved: false when the secret
	// was already at that stage or a later one, so each notice is sent
	// once across restarts and replicas. No revision change either.
	AdvanceNotice(ctx context.Context, secretID string, stage int64) (bool, error)
}

// postgresStartTimeout bounds connecting to PostgreSQL and migrating when
// NewStore opens a PostgreSQL store.
const postgresStartTimeout = 15 * time.Second

// NewStore opens the store cfg describes, the one constructor from
// configuration: a nil cfg is the default SQLite store, at
// rotagate/rotagate.db under Caddy's data directory. Placeholders must be
// resolved already. log receives the background work's warnings (nil:
// none).
func NewStore(ctx context.Context, cfg *StoreConfig, log *zap.Logger) (Store, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.Postgres != nil {
		octx, cancel := context.WithTimeout(ctx, postgresStartTimeout)
		defer cancel()
		return OpenPostgres(octx, c.Postgres.DSN, PostgresOptions{Logger: log})
	}
	return OpenSQLite(ctx, c.SQLite.Path)
}

// withDefaults returns the config with its defaults: nil is SQLite, an
// empty SQLite path is rotagate/rotagate.db under Caddy's data directory,
// and a SQLite path is made absolute (it names the store in the pool).
func (c *StoreConfig) withDefaults() (StoreConfig, error) {
	if c == nil {
		c = &StoreConfig{SQLite: &SQLiteConfig{}}
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

// validate checks that the config names exactly one store, completely.
func (c StoreConfig) validate() error {
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

// key names the store in the pool of open stores: the kind and the
// absolute path, or a digest of the DSN (it holds a password).
func (c StoreConfig) key() string {
	if c.Postgres != nil {
		sum := sha256.Sum256([]byte(c.Postgres.DSN))
		return "postgres:" + hex.EncodeToString(sum[:])
	}
	if c.SQLite != nil {
		return "sqlite:" + c.SQLite.Path
	}
	return ""
}

// describe names the store for the log, never with a password.
func (c StoreConfig) describe() []zap.Field {
	if c.Postgres != nil {
		where := "(a DSN that does not parse)"
		if pg, err := ParsePostgresDSN(c.Postgres.DSN); err == nil {
			where = describeTarget(pg.ConnConfig)
		}
		return []zap.Field{zap.String("store", "postgres"), zap.String("database", where)}
	}
	return []zap.Field{zap.String("store", "sqlite"), zap.String("path", c.SQLite.Path)}
}
