package controlplane

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
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

	sqlSelectClient = `SELECT client_id, name, created_at, allowed_cidrs, networks_report_only FROM clients WHERE client_id = $1`
	sqlListClients  = `SELECT client_id, name, created_at, allowed_cidrs, networks_report_only FROM clients WHERE client_id > $1 ORDER BY client_id LIMIT $2`
	sqlSelectMeta   = `SELECT epoch, revision FROM meta WHERE id = 1`
	sqlRevision     = `SELECT revision FROM meta WHERE id = 1`
	sqlBumpRevision = `UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision`
	sqlCreateMeta   = `INSERT INTO meta (id, epoch, revision) VALUES (1, $1, 0) ON CONFLICT (id) DO NOTHING`
	sqlPing         = `SELECT 1 FROM meta WHERE id = 1`
	// sqlSnapshot selects the secrets active at $1 (alive = 1) and the
	// tombstones: generated (sha256) secrets dead at $1 that were still
	// alive at $2, now minus tombstone_window (alive = 0). Dead at t means
	// revoked, or expires_at <= t.
	// Each row carries its client's allowed networks, which the feed lists
	// with the client.
	sqlFeedColumns = `SELECT s.client_id, s.secret_id, s.hash, s.expires_at,
			CASE WHEN s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1) THEN 1 ELSE 0 END,
			c.allowed_cidrs, c.networks_report_only
		FROM secrets s JOIN clients c ON c.client_id = s.client_id`
	sqlFeedRows = `((s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1))
			OR (s.hash LIKE 'sha256:%' AND (s.revoked_at IS NULL OR s.revoked_at > $2) AND (s.expires_at IS NULL OR s.expires_at > $2)))`
	sqlSnapshot      = sqlFeedColumns + ` WHERE ` + sqlFeedRows + ` ORDER BY s.client_id, s.secret_id`
	sqlSecretColumns = `secret_id, client_id, hash, hint, created_at, expires_at, revoked_at, last_used_at, last_used_from, first_used_at,
		presented_after_revoke_count, last_presented_after_revoke_at, last_presented_after_revoke_from, leak_reported_at`
	sqlSecrets      = `SELECT ` + sqlSecretColumns + ` FROM secrets WHERE client_id = $1 ORDER BY created_at, secret_id`
	sqlSecretByHash = `SELECT ` + sqlSecretColumns + ` FROM secrets WHERE hash = $1 ORDER BY secret_id LIMIT 1`
	// sqlRevokedUse adds a presented-after-revoke report to a dead secret
	// ($2 is the report's time: an expired secret counts when it had
	// expired by then): the count grows by $1, and the last time and
	// caller follow the newest report. SET expressions read the row as
	// it was, on both databases.
	sqlRevokedUse = `UPDATE secrets SET
			presented_after_revoke_count = presented_after_revoke_count + $1,
			last_presented_after_revoke_from = CASE WHEN last_presented_after_revoke_at IS NULL OR last_presented_after_revoke_at < $2
				THEN $3 ELSE last_presented_after_revoke_from END,
			last_presented_after_revoke_at = CASE WHEN last_presented_after_revoke_at IS NULL OR last_presented_after_revoke_at < $2
				THEN $2 ELSE last_presented_after_revoke_at END
		WHERE secret_id = $4 AND client_id = $5 AND (revoked_at IS NOT NULL OR expires_at <= $2)
		RETURNING hint, presented_after_revoke_count`
	sqlFlagLeak = `UPDATE secrets SET leak_reported_at = $1 WHERE secret_id = $2 AND leak_reported_at IS NULL`
	// sqlApplyUsage is last_used_at = max(stored, reported), and
	// first_used_at is set by the first stamp applied: a stamp no
	// newer than the stored one touches nothing, so replaying a batch, or
	// two control planes applying stamps in any order, ends the same.
	sqlApplyUsage = `UPDATE secrets SET last_used_at = $1, last_used_from = $2, first_used_at = COALESCE(first_used_at, $1)
		WHERE secret_id = $3 AND client_id = $4 AND (last_used_at IS NULL OR last_used_at < $1)`
	sqlInsertClient = `INSERT INTO clients (client_id, name, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (client_id) DO NOTHING`
	sqlDeleteSecretsOf = `DELETE FROM secrets WHERE client_id = $1`
	sqlDeleteCallersOf = `DELETE FROM secret_callers WHERE secret_id IN (SELECT secret_id FROM secrets WHERE client_id = $1)`
	sqlDeleteClient    = `DELETE FROM clients WHERE client_id = $1`
	sqlInsertSecret    = `INSERT INTO secrets (secret_id, client_id, hash, hint, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)`
	sqlSetExpiry = `UPDATE secrets SET expires_at = $1 WHERE secret_id = $2 RETURNING client_id`
	sqlRevoke    = `UPDATE secrets SET revoked_at = $1 WHERE secret_id = $2 RETURNING client_id`

	// The change log (migration 3).
	sqlLogChange      = `INSERT INTO changes (revision, client_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	sqlChangesFrom    = `SELECT epoch, revision, changes_from FROM meta WHERE id = 1`
	sqlChangedSince   = `SELECT DISTINCT client_id FROM changes WHERE revision > $1 AND client_id <> '' ORDER BY client_id LIMIT $2`
	sqlLoggedSince    = `SELECT COUNT(DISTINCT revision) FROM changes WHERE revision > $1`
	sqlPruneChanges   = `DELETE FROM changes WHERE revision <= $1`
	sqlOldestByAge    = `SELECT COALESCE(MAX(revision), 0) FROM changes WHERE at < $1`
	sqlRaiseChangesTo = `UPDATE meta SET changes_from = $1 WHERE id = 1 AND changes_from < $1`

	// Owners and the audit trail (migration 2).
	sqlListOwnedClients = `SELECT c.client_id, c.name, c.created_at, c.allowed_cidrs, c.networks_report_only FROM clients c
		JOIN client_owners o ON o.client_id = c.client_id
		WHERE o.user_id = $1 AND c.client_id > $2 ORDER BY c.client_id LIMIT $3`
	sqlOwnersOf       = `SELECT user_id FROM client_owners WHERE client_id = $1 ORDER BY user_id`
	sqlInsertOwner    = `INSERT INTO client_owners (client_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	sqlDeleteOwnersOf = `DELETE FROM client_owners WHERE client_id = $1`
	sqlInsertAudit    = `INSERT INTO audit_log (at, who, remote_ip, action, client_id, secret_id, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`
	sqlAudit = `SELECT at, who, remote_ip, action, client_id, secret_id, detail
		FROM audit_log WHERE client_id = $1 ORDER BY id DESC LIMIT $2`

	// Allowed networks and callers (migration 6). A client's networks are
	// its canonical CIDR list, space-separated.
	sqlSetNetworks = `UPDATE clients SET allowed_cidrs = $1, networks_report_only = $2 WHERE client_id = $3`
	// sqlApplyCaller adds one (secret, caller IP) of a usage batch: first
	// seen the earlier, last seen the later, counts added. A secret that
	// does not exist, or is not the named client's, takes nothing. The
	// casts give PostgreSQL the parameter types an INSERT … SELECT does
	// not infer.
	sqlApplyCaller = `INSERT INTO secret_callers (secret_id, ip, first_seen, last_seen, requests, refused)
		SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), CAST($4 AS BIGINT), CAST($5 AS BIGINT), CAST($6 AS BIGINT)
		WHERE EXISTS (SELECT 1 FROM secrets WHERE secret_id = CAST($1 AS TEXT) AND client_id = CAST($7 AS TEXT))
		ON CONFLICT (secret_id, ip) DO UPDATE SET
			first_seen = CASE WHEN excluded.first_seen < secret_callers.first_seen THEN excluded.first_seen ELSE secret_callers.first_seen END,
			last_seen  = CASE WHEN excluded.last_seen > secret_callers.last_seen THEN excluded.last_seen ELSE secret_callers.last_seen END,
			requests   = secret_callers.requests + excluded.requests,
			refused    = secret_callers.refused + excluded.refused`
	// sqlTrimCallers keeps a secret's $2 most recently seen callers (ties
	// broken by IP) and deletes the rest; the row of unlisted requests
	// (ip '') is not counted and stays.
	sqlTrimCallers = `DELETE FROM secret_callers WHERE secret_id = $1 AND ip <> '' AND (last_seen, ip) <= (
		SELECT last_seen, ip FROM secret_callers WHERE secret_id = $1 AND ip <> ''
		ORDER BY last_seen DESC, ip DESC LIMIT 1 OFFSET $2)`
	sqlPruneCallers = `DELETE FROM secret_callers WHERE last_seen < $1`
)

// sqlCallersIn selects the callers of n secrets, named by $2…$n+1, last
// seen at or after $1.
func sqlCallersIn(n int) string {
	var b strings.Builder
	b.WriteString(`SELECT secret_id, ip, first_seen, last_seen, requests, refused FROM secret_callers WHERE last_seen >= $1 AND secret_id IN (`)
	for i := 2; i <= n+1; i++ {
		if i > 2 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	b.WriteString(`) ORDER BY secret_id, last_seen DESC, ip`)
	return b.String()
}

// readCallers reads the callers of secretIDs last seen at or after since,
// by secret id, the most recently seen first.
func readCallers(ctx context.Context, d driverTx, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	out := make(map[string][]Caller, len(secretIDs))
	if len(secretIDs) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(secretIDs)+1)
	args = append(args, since.UnixMilli())
	for _, id := range secretIDs {
		args = append(args, id)
	}
	rs, err := d.query(ctx, sqlCallersIn(len(secretIDs)), args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	for rs.Next() {
		var secretID string
		var c Caller
		var first, last int64
		if err := rs.Scan(&secretID, &c.IP, &first, &last, &c.Requests, &c.Refused); err != nil {
			return nil, err
		}
		c.FirstSeen, c.LastSeen = time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC()
		out[secretID] = append(out[secretID], c)
	}
	return out, rs.Err()
}

// callerArgs are the arguments of sqlApplyCaller for one use.
func callerArgs(u CallerUse) []any {
	return []any{u.SecretID, u.IP, u.FirstSeen.UnixMilli(), u.LastSeen.UnixMilli(), u.Requests, u.Refused, u.ClientID}
}

// trimmedSecrets lists the secrets of a batch of uses once each, in order.
func trimmedSecrets(uses []CallerUse) []string {
	var ids []string
	for i, u := range uses {
		if i == 0 || uses[i-1].SecretID != u.SecretID {
			ids = append(ids, u.SecretID)
		}
	}
	return ids
}

// migrations are the schema versions of both stores, in order: entry i
// brings the schema from version i to i+1. Released entries are never
// edited; a change is a new entry. Times are BIGINT unix milliseconds
// (UTC), which compare and index the same way on both. The text is
// written once; each store's dialect (sqliteDialect, postgresDialect)
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
}

// How long the change log reaches back: a revision leaves it once it is
// changeLogRevisions behind the newest, or older than changeLogAge. The
// log is pruned every changePruneEvery revisions.
const (
	changeLogRevisions = 10_000
	changeLogAge       = time.Hour
	changePruneEvery   = 64
	// maxChangedClients is the most clients a change answer lists; past
	// it the feed answers with a full snapshot.
	maxChangedClients = 10_000
)

// logChanges records, in the writing transaction, which clients revision
// rev touched — a row with an empty client id when it touched none, so
// that every revision has a row and one written by a control plane that
// keeps no log (an older replica during an upgrade) shows as a gap — and
// prunes the log now and then.
func logChanges(ctx context.Context, d driverTx, rev int64, touched []string, now time.Time) error {
	if len(touched) == 0 {
		touched = []string{""}
	}
	for _, id := range touched {
		if _, err := d.exec(ctx, sqlLogChange, rev, id, now.UnixMilli()); err != nil {
			return fmt.Errorf("logging the change: %w", err)
		}
	}
	if rev%changePruneEvery != 0 {
		return nil
	}
	floor := rev - changeLogRevisions
	var old int64
	if err := d.queryRow(ctx, sqlOldestByAge, now.Add(-changeLogAge).UnixMilli()).Scan(&old); err != nil {
		return fmt.Errorf("pruning the change log: %w", err)
	}
	floor = max(floor, old)
	if floor <= 0 {
		return nil
	}
	if _, err := d.exec(ctx, sqlPruneChanges, floor); err != nil {
		return fmt.Errorf("pruning the change log: %w", err)
	}
	if _, err := d.exec(ctx, sqlRaiseChangesTo, floor); err != nil {
		return fmt.Errorf("pruning the change log: %w", err)
	}
	return nil
}

// readChanges reads, inside one read transaction of the caller's, the
// epoch, the revision and the changes since since: every client the log
// names after it, with its secrets active at now and its tombstones (as in
// readSnapshot), or as removed when it has neither (as a full snapshot
// would not list it). ok is false when the log does not reach back to
// since, misses a revision after it, since is ahead of the store, or more
// than maxChangedClients changed: the caller answers in full.
func readChanges(ctx context.Context, d driverTx, since int64, now time.Time, tombstoneWindow time.Duration) (wire.Delta, bool, error) {
	var delta wire.Delta
	var from int64
	if err := d.queryRow(ctx, sqlChangesFrom).Scan(&delta.Epoch, &delta.Revision, &from); err != nil {
		return wire.Delta{}, false, err
	}
	if since < from || since > delta.Revision {
		return delta, false, nil
	}
	var logged int64
	if err := d.queryRow(ctx, sqlLoggedSince, since).Scan(&logged); err != nil {
		return wire.Delta{}, false, err
	}
	if logged != delta.Revision-since { // a revision written without its log
		return delta, false, nil
	}
	delta.Since = since
	ids, err := readStrings(ctx, d, sqlChangedSince, since, maxChangedClients+1)
	if err != nil {
		return wire.Delta{}, false, err
	}
	if len(ids) > maxChangedClients {
		return delta, false, nil
	}
	delta.Changed, delta.Removed = []wire.Client{}, []string{}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		args := make([]any, 0, len(batch)+2)
		args = append(args, now.UnixMilli(), tombstonesSince(now, tombstoneWindow))
		for _, id := range batch {
			args = append(args, id)
		}
		rs, err := d.query(ctx, sqlFeedRowsOf(len(batch)), args...)
		if err != nil {
			return wire.Delta{}, false, err
		}
		clients, err := scanSnapshot(rs)
		rs.Close()
		if err != nil {
			return wire.Delta{}, false, err
		}
		i := 0
		for _, id := range batch { // both sorted by client id
			if i < len(clients) && clients[i].ClientID == id {
				i++
				continue
			}
			delta.Removed = append(delta.Removed, id)
		}
		delta.Changed = append(delta.Changed, clients...)
	}
	return delta, true, nil
}

// sqlFeedRowsOf selects the rows of sqlSnapshot for n clients, named by
// $3…$n+2 ($1 is now, $2 the tombstones' cutoff).
func sqlFeedRowsOf(n int) string {
	var b strings.Builder
	b.WriteString(sqlFeedColumns + ` WHERE ` + sqlFeedRows + ` AND s.client_id IN (`)
	for i := 3; i <= n+2; i++ {
		if i > 3 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	b.WriteString(`) ORDER BY s.client_id, s.secret_id`)
	return b.String()
}

// sqlOwnersIn selects the owners of n clients, named by $1…$n.
func sqlOwnersIn(n int) string {
	var b strings.Builder
	b.WriteString(`SELECT client_id, user_id FROM client_owners WHERE client_id IN (`)
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	b.WriteString(`) ORDER BY client_id, user_id`)
	return b.String()
}

// clientIDs returns the ids of clients as query arguments.
func clientIDs(clients []Client) []any {
	ids := make([]any, len(clients))
	for i, c := range clients {
		ids[i] = c.ID
	}
	return ids
}

// attachOwners reads rows of sqlOwnersIn into the clients' Owners.
func attachOwners(clients []Client, rows rows) error {
	at := make(map[string]int, len(clients))
	for i := range clients {
		clients[i].Owners = []string{}
		at[clients[i].ID] = i
	}
	for rows.Next() {
		var clientID, user string
		if err := rows.Scan(&clientID, &user); err != nil {
			return err
		}
		if i, ok := at[clientID]; ok {
			clients[i].Owners = append(clients[i].Owners, user)
		}
	}
	return rows.Err()
}

// readStrings runs a query that selects one text column.
func readStrings(ctx context.Context, d driverTx, query string, args ...any) ([]string, error) {
	rs, err := d.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	return scanAll(rs, func(row rowScanner) (string, error) {
		var v string
		err := row.Scan(&v)
		return v, err
	})
}

// scanAudit reads one row of sqlAudit.
func scanAudit(row rowScanner) (AuditEntry, error) {
	var e AuditEntry
	var at int64
	if err := row.Scan(&at, &e.Who, &e.RemoteIP, &e.Action, &e.ClientID, &e.SecretID, &e.Detail); err != nil {
		return AuditEntry{}, err
	}
	e.At = time.UnixMilli(at).UTC()
	return e, nil
}

// scanSecret reads one row of sqlSecretColumns.
func scanSecret(row rowScanner) (Secret, error) {
	var s Secret
	var created int64
	var expires, revoked, used, firstUsed, deadUsed, leak sql.NullInt64
	if err := row.Scan(&s.ID, &s.ClientID, &s.Hash, &s.Hint, &created, &expires, &revoked, &used, &s.LastUsedFrom, &firstUsed,
		&s.PresentedAfterRevoke, &deadUsed, &s.LastPresentedAfterRevokeFrom, &leak); err != nil {
		return Secret{}, err
	}
	s.CreatedAt = time.UnixMilli(created).UTC()
	s.ExpiresAt, s.RevokedAt, s.LastUsedAt, s.FirstUsedAt = fromMillis(expires), fromMillis(revoked), fromMillis(used), fromMillis(firstUsed)
	s.LastPresentedAfterRevokeAt, s.LeakReportedAt = fromMillis(deadUsed), fromMillis(leak)
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
	// touched are the clients whose feed entry the transaction may have
	// changed, for the change log: every method that changes what the
	// feed lists of a client (its secrets, its tombstones, whatever it
	// carries) must touch it.
	touched []string
}

// touch records that the feed entry of clientID may have changed.
func (t *storeTx) touch(clientID string) {
	t.changed = true
	if !slices.Contains(t.touched, clientID) {
		t.touched = append(t.touched, clientID)
	}
}

func (t *storeTx) LockClient(ctx context.Context, id string) (Client, error) {
	c, err := scanClient(t.d.queryRow(ctx, sqlSelectClient+t.lockSuffix, id))
	if err != nil {
		return Client{}, err
	}
	c.Owners, err = readStrings(ctx, t.d, sqlOwnersOf, id)
	return c, err
}

func (t *storeTx) InsertClient(ctx context.Context, c Client) error {
	n, err := t.d.exec(ctx, sqlInsertClient, c.ID, c.Name, c.CreatedAt.UnixMilli())
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrClientExists
	}
	t.touch(c.ID)
	return t.insertOwners(ctx, c.ID, c.Owners)
}

func (t *storeTx) insertOwners(ctx context.Context, clientID string, owners []string) error {
	for _, o := range owners {
		if _, err := t.d.exec(ctx, sqlInsertOwner, clientID, o); err != nil {
			return err
		}
	}
	return nil
}

func (t *storeTx) DeleteClient(ctx context.Context, id string) error {
	if _, err := t.d.exec(ctx, sqlDeleteCallersOf, id); err != nil {
		return err
	}
	if _, err := t.d.exec(ctx, sqlDeleteSecretsOf, id); err != nil {
		return err
	}
	if _, err := t.d.exec(ctx, sqlDeleteOwnersOf, id); err != nil {
		return err
	}
	if err := t.execOne(ctx, sqlDeleteClient, id); err != nil {
		return err
	}
	t.touch(id)
	return nil
}

func (t *storeTx) SetOwners(ctx context.Context, clientID string, owners []string) error {
	if _, err := t.d.exec(ctx, sqlDeleteOwnersOf, clientID); err != nil {
		return err
	}
	t.changed = true
	return t.insertOwners(ctx, clientID, owners)
}

func (t *storeTx) SetNetworks(ctx context.Context, clientID string, cidrs []string, reportOnly bool) error {
	ro := 0
	if reportOnly {
		ro = 1
	}
	if err := t.execOne(ctx, sqlSetNetworks, strings.Join(cidrs, " "), ro, clientID); err != nil {
		return err
	}
	t.touch(clientID) // the feed lists a client's networks
	return nil
}

func (t *storeTx) AppendAudit(ctx context.Context, e AuditEntry) error {
	_, err := t.d.exec(ctx, sqlInsertAudit, e.At.UnixMilli(), e.Who, e.RemoteIP, e.Action, e.ClientID, e.SecretID, e.Detail)
	return err
}

func (t *storeTx) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	return readSecrets(ctx, t.d, clientID)
}

func (t *storeTx) InsertSecret(ctx context.Context, s Secret) error {
	if _, err := t.d.exec(ctx, sqlInsertSecret, s.ID, s.ClientID, s.Hash, s.Hint, s.CreatedAt.UnixMilli(), toMillis(s.ExpiresAt)); err != nil {
		return err
	}
	t.touch(s.ClientID)
	return nil
}

func (t *storeTx) SetExpiry(ctx context.Context, secretID string, at time.Time) error {
	return t.updateSecret(ctx, sqlSetExpiry, at.UnixMilli(), secretID)
}

func (t *storeTx) Revoke(ctx context.Context, secretID string, at time.Time) error {
	return t.updateSecret(ctx, sqlRevoke, at.UnixMilli(), secretID)
}

// updateSecret runs an UPDATE … RETURNING client_id of one secret and
// touches its client; ErrNotFound when there is no such secret.
func (t *storeTx) updateSecret(ctx context.Context, query string, args ...any) error {
	var clientID string
	if err := t.d.queryRow(ctx, query, args...).Scan(&clientID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	t.touch(clientID)
	return nil
}

func (t *storeTx) RecordRevokedUse(ctx context.Context, u wire.RevokedUse) (RecordedRevokedUse, error) {
	r := RecordedRevokedUse{ClientID: u.ClientID, SecretID: u.SecretID, Count: u.Count, LastAt: u.LastAt, From: u.From}
	err := t.d.queryRow(ctx, sqlRevokedUse, u.Count, u.LastAt.UnixMilli(), u.From, u.SecretID, u.ClientID).Scan(&r.Hint, &r.Total)
	if errors.Is(err, sql.ErrNoRows) { // pgx's ErrNoRows is sql.ErrNoRows too
		return RecordedRevokedUse{}, ErrNotFound
	}
	return r, err
}

func (t *storeTx) FlagLeak(ctx context.Context, secretID string, at time.Time) error {
	_, err := t.d.exec(ctx, sqlFlagLeak, at.UnixMilli(), secretID)
	return err
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

// readSnapshot reads the epoch, the revision, every secret active at now
// and the tombstones of generated secrets dead within tombstoneWindow
// before now (none when it is 0), inside one read transaction of the
// caller's.
func readSnapshot(ctx context.Context, d driverTx, now time.Time, tombstoneWindow time.Duration) (wire.Snapshot, error) {
	var snap wire.Snapshot
	if err := d.queryRow(ctx, sqlSelectMeta).Scan(&snap.Epoch, &snap.Revision); err != nil {
		return wire.Snapshot{}, err
	}
	rs, err := d.query(ctx, sqlSnapshot, now.UnixMilli(), tombstonesSince(now, tombstoneWindow))
	if err != nil {
		return wire.Snapshot{}, err
	}
	defer rs.Close()
	if snap.Clients, err = scanSnapshot(rs); err != nil {
		return wire.Snapshot{}, err
	}
	return snap, nil
}

// tombstonesSince is the cutoff of sqlSnapshot's $2: a generated secret
// dead at now and still alive at this time is a tombstone. With no window,
// a time no secret died after.
func tombstonesSince(now time.Time, window time.Duration) int64 {
	if window <= 0 {
		return math.MaxInt64
	}
	return now.Add(-window).UnixMilli()
}

// scanAll reads every row with scan: the loop of every listing, written
// once for both stores.
func scanAll[T any](rs rows, scan func(rowScanner) (T, error)) ([]T, error) {
	out := []T{} // an empty listing is [] in JSON, not null
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
// clients with their secrets and tombstones; none is an empty list, not
// nil. A client with tombstones only is listed with no secrets, so that
// an edge tells its dead secrets from wrong ones too.
func scanSnapshot(rs rows) ([]wire.Client, error) {
	clients := []wire.Client{}
	for rs.Next() {
		var clientID, cidrs string
		var sec wire.Secret
		var expires sql.NullInt64
		var alive int
		var reportOnly int64
		if err := rs.Scan(&clientID, &sec.ID, &sec.Hash, &expires, &alive, &cidrs, &reportOnly); err != nil {
			return nil, err
		}
		if n := len(clients); n == 0 || clients[n-1].ClientID != clientID {
			c := wire.Client{ClientID: clientID, Secrets: []wire.Secret{}, AllowedCIDRs: splitCIDRs(cidrs)}
			c.NetworksReportOnly = len(c.AllowedCIDRs) > 0 && reportOnly != 0
			clients = append(clients, c)
		}
		c := &clients[len(clients)-1]
		if alive == 0 {
			c.Tombstones = append(c.Tombstones, wire.Tombstone{ID: sec.ID, Hash: sec.Hash})
			continue
		}
		sec.ExpiresAt = fromMillis(expires)
		c.Secrets = append(c.Secrets, sec)
	}
	return clients, rs.Err()
}

// applyMigrations brings the schema up to len(list) (the migrations), each statement
// spelled in the store's dialect, recording the version, and creates the
// epoch when the database has none. It runs inside the caller's
// transaction.
func applyMigrations(ctx context.Context, tx driverTx, dialect *strings.Replacer, list [][]string) error {
	if _, err := tx.exec(ctx, sqlCreateSchemaVersion); err != nil {
		return err
	}
	var version int
	if err := tx.queryRow(ctx, sqlSchemaVersion).Scan(&version); err != nil {
		return err
	}
	if version > len(list) {
		return fmt.Errorf("database schema version %d is newer than this build supports (%d)", version, len(list))
	}
	for i := version; i < len(list); i++ {
		for _, stmt := range list[i] {
			if _, err := tx.exec(ctx, dialect.Replace(stmt)); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
	}
	if version < len(list) {
		if _, err := tx.exec(ctx, sqlClearSchemaVersion); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, sqlSetSchemaVersion, len(list)); err != nil {
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

// splitCIDRs reads a stored list of networks; nil when there are none.
func splitCIDRs(stored string) []string {
	if stored == "" {
		return nil
	}
	return strings.Fields(stored)
}
