package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/rotagate/rotagate/internal/base62"
)

// The schema's version and the store's epoch.
const (
	sqlCreateSchemaVersion = `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`
	sqlSchemaVersion       = `SELECT COALESCE(MAX(version), 0) FROM schema_version`
	sqlClearSchemaVersion  = `DELETE FROM schema_version`
	sqlSetSchemaVersion    = `INSERT INTO schema_version (version) VALUES ($1)`
	sqlCreateMeta          = `INSERT INTO meta (id, epoch, revision) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING`
)

// migrations are the schema versions, on both databases, in order: entry i
// brings the schema from version i to i+1. Released entries are never
// edited; a change is a new entry. Times are BIGINT unix milliseconds
// (UTC), which compare and index the same way on both. The text is
// written once; each driver's dialect (sqliteDialect, postgresDialect)
// spells the words in braces:
//
//	{id}        a text id column that sorts bytewise
//	{revision}  the store revision's column type and constraints
//	{serial}    an integer primary key the database numbers
var migrations = [][]string{
	{ // 1: clients, secrets, and the store's epoch and revision.
		`CREATE TABLE meta (
			id       INTEGER PRIMARY KEY CHECK (id = 1),
			epoch    TEXT    NOT NULL,
			revision {revision}
		)`,
		`CREATE TABLE clients (
			client_id  {id} PRIMARY KEY,
			name       TEXT   NOT NULL DEFAULT '',
			created_at BIGINT NOT NULL
		)`,
		`CREATE TABLE secrets (
			secret_id      {id} PRIMARY KEY,
			client_id      {id} NOT NULL REFERENCES clients (client_id),
			hash           TEXT   NOT NULL,
			hint           TEXT   NOT NULL,
			created_at     BIGINT NOT NULL,
			expires_at     BIGINT,
			revoked_at     BIGINT,
			last_used_at   BIGINT,
			last_used_from TEXT   NOT NULL DEFAULT ''
		)`,
		`CREATE INDEX secrets_by_client ON secrets (client_id, created_at)`,
	},
	{ // 2: owners of clients, the audit trail, first uses.
		`CREATE TABLE client_owners (
			client_id {id} NOT NULL REFERENCES clients (client_id),
			user_id   {id} NOT NULL,
			PRIMARY KEY (client_id, user_id)
		)`,
		`CREATE INDEX client_owners_by_user ON client_owners (user_id, client_id)`,
		`CREATE TABLE audit_log (
			id        {serial},
			at        BIGINT NOT NULL,
			who       TEXT   NOT NULL,
			remote_ip TEXT   NOT NULL DEFAULT '',
			action    TEXT   NOT NULL,
			client_id {id}   NOT NULL,
			secret_id TEXT   NOT NULL DEFAULT '',
			detail    TEXT   NOT NULL DEFAULT ''
		)`,
		`CREATE INDEX audit_log_by_client ON audit_log (client_id, id)`,
		`ALTER TABLE secrets ADD COLUMN first_used_at BIGINT`,
	},
	{ // 3: the webhook outbox: events, their deliveries, expiry notices sent (outbox.go).
		`CREATE TABLE events (
			seq        {serial},
			event_id   {id}   NOT NULL UNIQUE,
			type       TEXT   NOT NULL,
			client_id  TEXT   NOT NULL DEFAULT '',
			secret_id  TEXT   NOT NULL DEFAULT '',
			payload    TEXT   NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX events_by_created ON events (created_at)`,
		`CREATE TABLE event_deliveries (
			event_id        {id}    NOT NULL REFERENCES events (event_id),
			webhook         TEXT    NOT NULL,
			attempts        INTEGER NOT NULL DEFAULT 0,
			next_attempt_at BIGINT  NOT NULL,
			delivered_at    BIGINT,
			failed_at       BIGINT,
			last_error      TEXT    NOT NULL DEFAULT '',
			PRIMARY KEY (event_id, webhook)
		)`,
		`CREATE INDEX event_deliveries_due ON event_deliveries (webhook, next_attempt_at)
			WHERE delivered_at IS NULL AND failed_at IS NULL`,
		`CREATE TABLE expiry_notices (
			secret_id {id}   PRIMARY KEY REFERENCES secrets (secret_id) ON DELETE CASCADE,
			stage     BIGINT NOT NULL
		)`,
		`CREATE INDEX secrets_by_expiry ON secrets (expires_at)`,
	},
	{ // 4: the change log the feed answers since=<revision> from. Every
		// revision after meta.changes_from is in it: the clients whose feed
		// entry the revision may have changed.
		`CREATE TABLE changes (
			revision  BIGINT NOT NULL,
			client_id {id}   NOT NULL,
			at        BIGINT NOT NULL,
			PRIMARY KEY (revision, client_id)
		)`,
		`ALTER TABLE meta ADD COLUMN changes_from BIGINT NOT NULL DEFAULT 0`,
		`UPDATE meta SET changes_from = revision`,
	},
	{ // 5: dead secrets presented at the edge, leak reports, lookup by hash.
		`ALTER TABLE secrets ADD COLUMN presented_after_revoke_count BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE secrets ADD COLUMN last_presented_after_revoke_at BIGINT`,
		`ALTER TABLE secrets ADD COLUMN last_presented_after_revoke_from TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE secrets ADD COLUMN leak_reported_at BIGINT`,
		`CREATE INDEX secrets_by_hash ON secrets (hash)`,
	},
	{ // 6: allowed networks of clients; callers of secrets (SPEC §13).
		`ALTER TABLE clients ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE clients ADD COLUMN networks_report_only INTEGER NOT NULL DEFAULT 0`,
		`CREATE TABLE secret_callers (
			secret_id  {id}   NOT NULL REFERENCES secrets (secret_id),
			ip         TEXT   NOT NULL,
			first_seen BIGINT NOT NULL,
			last_seen  BIGINT NOT NULL,
			requests   BIGINT NOT NULL,
			refused    BIGINT NOT NULL DEFAULT 0,
			PRIMARY KEY (secret_id, ip)
		)`,
		`CREATE INDEX secret_callers_by_secret ON secret_callers (secret_id, last_seen)`,
		`CREATE INDEX secret_callers_by_last_seen ON secret_callers (last_seen)`,
	},
	{ // 7: delivery sinks of clients and the secrets they carried (sinks.go).
		`CREATE TABLE client_sinks (
			client_id      {id}   PRIMARY KEY REFERENCES clients (client_id),
			kind           TEXT   NOT NULL,
			config         TEXT   NOT NULL,
			signing_secret TEXT   NOT NULL DEFAULT '',
			rotate_every   BIGINT NOT NULL DEFAULT 0,
			created_at     BIGINT NOT NULL,
			updated_at     BIGINT NOT NULL
		)`,
		`CREATE INDEX client_sinks_scheduled ON client_sinks (rotate_every) WHERE rotate_every > 0`,
		`CREATE TABLE sink_secrets (
			secret_id    {id}   PRIMARY KEY REFERENCES secrets (secret_id),
			client_id    {id}   NOT NULL,
			kind         TEXT   NOT NULL,
			version      TEXT   NOT NULL DEFAULT '',
			stage        TEXT   NOT NULL,
			delivered_at BIGINT,
			grace        BIGINT,
			promote_at   BIGINT NOT NULL,
			promoted_at  BIGINT
		)`,
		`CREATE INDEX sink_secrets_due ON sink_secrets (promote_at) WHERE promoted_at IS NULL`,
		`CREATE INDEX sink_secrets_by_client ON sink_secrets (client_id, stage)`,
	},
	{ // 8: credentials of other kinds beside secrets (SPEC §16): a
		// public key (its JWK) or a certificate (its thumbprint). Rows of
		// earlier versions are secrets.
		`ALTER TABLE secrets ADD COLUMN kind TEXT NOT NULL DEFAULT 'secret'`,
		`ALTER TABLE secrets ADD COLUMN material TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE secrets ADD COLUMN thumbprint TEXT NOT NULL DEFAULT ''`,
	},
	{ // 9: a label per secret: which app has it (issue 19).
		`ALTER TABLE secrets ADD COLUMN label TEXT NOT NULL DEFAULT ''`,
	},
	{ // 10: covering indexes for the feed's snapshot (sqlSnapshot), which then
		// reads secrets in its own order without touching the tables: a
		// million clients' first snapshot reads two indexes, no rows, and
		// sorts nothing. A key's material is a public JWK of at most 4096
		// bits (credkey.MaxRSABits), well within an index entry.
		`CREATE INDEX secrets_for_feed ON secrets (client_id, secret_id, hash, expires_at, revoked_at, kind, material, thumbprint)`,
		`CREATE INDEX clients_for_feed ON clients (client_id, allowed_cidrs, networks_report_only)`,
	},
	{ // 11: the cut-over policy of clients (NULL: the control plane's
		// default), the deadline notice of secrets, and the set of clients
		// with a rotation in progress (cutover.go).
		`ALTER TABLE clients ADD COLUMN cutover_auto INTEGER`,
		`ALTER TABLE clients ADD COLUMN cutover_quiet BIGINT`,
		`ALTER TABLE clients ADD COLUMN cutover_lookback BIGINT`,
		`ALTER TABLE clients ADD COLUMN cutover_deadline BIGINT`,
		`ALTER TABLE clients ADD COLUMN cutover_on_deadline TEXT`,
		`ALTER TABLE secrets ADD COLUMN cutover_stalled_at BIGINT`,
		`CREATE TABLE rotations (
			client_id {id} PRIMARY KEY REFERENCES clients (client_id)
		)`,
		`INSERT INTO rotations (client_id)
			SELECT client_id FROM secrets WHERE revoked_at IS NULL GROUP BY client_id HAVING COUNT(*) >= 2`,
		// The callers of a secret by last seen, wide enough that a
		// cut-over pass reads them from the index alone.
		`DROP INDEX secret_callers_by_secret`,
		`CREATE INDEX secret_callers_by_secret_seen ON secret_callers (secret_id, last_seen, ip, first_seen, requests, refused)`,
	},
}

// applyMigrations brings the schema up to len(list) (the migrations),
// each statement spelled in the driver's words, recording the version, and creates the
// epoch when the database has none. It runs inside the caller's
// transaction.
func applyMigrations(ctx context.Context, q querier, dialect *strings.Replacer, list [][]string) error {
	if _, err := q.exec(ctx, sqlCreateSchemaVersion); err != nil {
		return err
	}
	var version int
	if err := q.queryRow(ctx, sqlSchemaVersion).Scan(&version); err != nil {
		return err
	}
	if version > len(list) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d)", version, len(list))
	}
	for i := version; i < len(list); i++ {
		for _, stmt := range list[i] {
			if _, err := q.exec(ctx, dialect.Replace(stmt)); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
	}
	if version < len(list) {
		if _, err := q.exec(ctx, sqlClearSchemaVersion); err != nil {
			return err
		}
		if _, err := q.exec(ctx, sqlSetSchemaVersion, len(list)); err != nil {
			return err
		}
	}
	epoch, err := base62.Random(16)
	if err != nil {
		return err
	}
	_, err = q.exec(ctx, sqlCreateMeta, epoch)
	return err
}
