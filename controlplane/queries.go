package controlplane

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// SQL text shared by the SQLite and PostgreSQL stores. Both dialects agree
// on $N placeholders, ON CONFLICT … DO NOTHING and RETURNING, so one text
// serves both and the two stores cannot drift apart. Times are BIGINT unix
// milliseconds (UTC) on both.
const (
	sqlCreateSchemaVersion = `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`
	sqlSchemaVersion       = `SELECT COALESCE(MAX(version), 0) FROM schema_version`
	sqlClearSchemaVersion  = `DELETE FROM schema_version`
	sqlSetSchemaVersion    = `INSERT INTO schema_version (version) VALUES ($1)`

	sqlSelectClient = `SELECT client_id, name, created_at FROM clients WHERE client_id = $1`
	sqlListClients  = `SELECT client_id, name, created_at FROM clients WHERE client_id > $1 ORDER BY client_id LIMIT $2`
	sqlSelectMeta   = `SELECT epoch, revision FROM meta WHERE id = 1`
	sqlRevision     = `SELECT revision FROM meta WHERE id = 1`
	sqlBumpRevision = `UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision`
	sqlCreateMeta   = `INSERT INTO meta (id, epoch, revision) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING`
	sqlPing         = `SELECT 1 FROM meta WHERE id = 1`
	sqlSnapshot     = `SELECT client_id, secret_id, hash, expires_at FROM secrets
		WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
		ORDER BY client_id, secret_id`
	sqlSecrets = `SELECT secret_id, client_id, hash, hint, created_at, expires_at, revoked_at, last_used_at, last_used_from
		FROM secrets WHERE client_id = $1 ORDER BY created_at, secret_id`
	// sqlApplyUsage is last_used_at = max(stored, reported): a stamp no
	// newer than the stored one touches nothing, so replaying a batch, or
	// two control planes applying stamps in any order, ends the same.
	sqlApplyUsage = `UPDATE secrets SET last_used_at = $1, last_used_from = $2
		WHERE secret_id = $3 AND client_id = $4 AND (last_used_at IS NULL OR last_used_at < $1)`
	sqlInsertClient = `INSERT INTO clients (client_id, name, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (client_id) DO NOTHING`
	sqlDeleteSecretsOf = `DELETE FROM secrets WHERE client_id = $1`
	sqlDeleteClient    = `DELETE FROM clients WHERE client_id = $1`
	sqlInsertSecret    = `INSERT INTO secrets (secret_id, client_id, hash, hint, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)`
	sqlSetExpiry = `UPDATE secrets SET expires_at = $1 WHERE secret_id = $2`
	sqlRevoke    = `UPDATE secrets SET revoked_at = $1 WHERE secret_id = $2`
)

// migrations are the schema versions of both stores, in order: entry i
// brings the schema from version i to i+1. Released entries are never
// edited; a change is a new entry. Times are BIGINT unix milliseconds
// (UTC), which compare and index the same way on both. The text is
// written once; each store's dialect (sqliteDialect, postgresDialect)
// spells the words in braces:
//
//	{id}        a text id column that sorts bytewise
//	{revision}  the store revision's column type and constraints
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
}

// scanSecret reads one row of sqlSecrets.
func scanSecret(row rowScanner) (Secret, error) {
	var s Secret
	var created int64
	var expires, revoked, used sql.NullInt64
	if err := row.Scan(&s.ID, &s.ClientID, &s.Hash, &s.Hint, &created, &expires, &revoked, &used, &s.LastUsedFrom); err != nil {
		return Secret{}, err
	}
	s.CreatedAt = time.UnixMilli(created).UTC()
	s.ExpiresAt, s.RevokedAt, s.LastUsedAt = fromMillis(expires), fromMillis(revoked), fromMillis(used)
	return s, nil
}

// driverTx is what the shared transaction code needs of a driver's
// transaction; each store adapts its driver (database/sql, pgx) to it.
type driverTx interface {
	// exec runs a statement and returns the number of rows it touched.
	exec(ctx context.Context, query string, args ...any) (int64, error)
	queryRow(ctx context.Context, query string, args ...any) rowScanner
	// query runs a query; the caller closes the rows.
	query(ctx context.Context, query string, args ...any) (rows, error)
}

type rowScanner interface{ Scan(dest ...any) error }

// storeTx implements Tx for both stores over a driverTx. lockSuffix is
// appended to the client lookup of LockClient: PostgreSQL locks the row
// (FOR UPDATE); SQLite's BEGIN IMMEDIATE already holds the write lock.
type storeTx struct {
	d          driverTx
	lockSuffix string
	changed    bool
}

func (t *storeTx) LockClient(ctx context.Context, id string) (Client, error) {
	return scanClient(t.d.queryRow(ctx, sqlSelectClient+t.lockSuffix, id))
}

func (t *storeTx) InsertClient(ctx context.Context, c Client) error {
	n, err := t.d.exec(ctx, sqlInsertClient, c.ID, c.Name, c.CreatedAt.UnixMilli())
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrClientExists
	}
	t.changed = true
	return nil
}

func (t *storeTx) DeleteClient(ctx context.Context, id string) error {
	if _, err := t.d.exec(ctx, sqlDeleteSecretsOf, id); err != nil {
		return err
	}
	return t.execOne(ctx, sqlDeleteClient, id)
}

func (t *storeTx) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	return readSecrets(ctx, t.d, clientID)
}

func (t *storeTx) InsertSecret(ctx context.Context, s Secret) error {
	if _, err := t.d.exec(ctx, sqlInsertSecret, s.ID, s.ClientID, s.Hash, s.Hint, s.CreatedAt.UnixMilli(), toMillis(s.ExpiresAt)); err != nil {
		return err
	}
	t.changed = true
	return nil
}

func (t *storeTx) SetExpiry(ctx context.Context, secretID string, at time.Time) error {
	return t.execOne(ctx, sqlSetExpiry, at.UnixMilli(), secretID)
}

func (t *storeTx) Revoke(ctx context.Context, secretID string, at time.Time) error {
	return t.execOne(ctx, sqlRevoke, at.UnixMilli(), secretID)
}

// execOne runs a statement that must touch one row: ErrNotFound otherwise.
func (t *storeTx) execOne(ctx context.Context, query string, args ...any) error {
	n, err := t.d.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	t.changed = true
	return nil
}

// rows is what both drivers' result sets offer (pgx.Rows, and
// database/sql's through sqlRows).
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// readSecrets reads every secret of a client, oldest first.
func readSecrets(ctx context.Context, d driverTx, clientID string) ([]Secret, error) {
	rs, err := d.query(ctx, sqlSecrets, clientID)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	return scanAll(rs, scanSecret)
}

// readSnapshot reads the epoch, the revision and every secret active at
// now, inside one read transaction of the caller's.
func readSnapshot(ctx context.Context, d driverTx, now time.Time) (wire.Snapshot, error) {
	var snap wire.Snapshot
	if err := d.queryRow(ctx, sqlSelectMeta).Scan(&snap.Epoch, &snap.Revision); err != nil {
		return wire.Snapshot{}, err
	}
	rs, err := d.query(ctx, sqlSnapshot, now.UnixMilli())
	if err != nil {
		return wire.Snapshot{}, err
	}
	defer rs.Close()
	if snap.Clients, err = scanSnapshot(rs); err != nil {
		return wire.Snapshot{}, err
	}
	return snap, nil
}

// scanAll reads every row with scan: the loop of every listing, written
// once for both stores.
func scanAll[T any](rs rows, scan func(rowScanner) (T, error)) ([]T, error) {
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

// scanSnapshot reads the rows of sqlSnapshot (ordered by client id) into
// clients with their secrets; none is an empty list, not nil.
func scanSnapshot(rs rows) ([]wire.Client, error) {
	clients := []wire.Client{}
	for rs.Next() {
		var clientID string
		var sec wire.Secret
		var expires sql.NullInt64
		if err := rs.Scan(&clientID, &sec.ID, &sec.Hash, &expires); err != nil {
			return nil, err
		}
		sec.ExpiresAt = fromMillis(expires)
		if n := len(clients); n == 0 || clients[n-1].ClientID != clientID {
			clients = append(clients, wire.Client{ClientID: clientID})
		}
		c := &clients[len(clients)-1]
		c.Secrets = append(c.Secrets, sec)
	}
	return clients, rs.Err()
}

// applyMigrations brings the schema up to len(migrations), each statement
// spelled in the store's dialect, recording the version, and creates the
// epoch when the database has none. It runs inside the caller's
// transaction.
func applyMigrations(ctx context.Context, tx driverTx, dialect *strings.Replacer) error {
	if _, err := tx.exec(ctx, sqlCreateSchemaVersion); err != nil {
		return err
	}
	var version int
	if err := tx.queryRow(ctx, sqlSchemaVersion).Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d)", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		for _, stmt := range migrations[i] {
			if _, err := tx.exec(ctx, dialect.Replace(stmt)); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
	}
	if version < len(migrations) {
		if _, err := tx.exec(ctx, sqlClearSchemaVersion); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, sqlSetSchemaVersion, len(migrations)); err != nil {
			return err
		}
	}
	epoch, err := randomBase62(16)
	if err != nil {
		return err
	}
	_, err = tx.exec(ctx, sqlCreateMeta, epoch)
	return err
}
