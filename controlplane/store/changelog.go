package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// The feed's reads: the snapshot of every active secret, and the change
// log (migration 4) that answers since=<revision> with the clients
// changed since.
const (
	// sqlSnapshot selects the secrets active at $1 (alive = 1) and the
	// tombstones: generated (sha256) secrets dead at $1 that were still
	// alive at $2, now minus tombstone_window (alive = 0). Dead at t means
	// revoked, or expires_at <= t.
	// Each row carries its client's allowed networks, which the feed lists
	// with the client.
	// What most rows lack comes as NULL rather than as an empty value (no
	// networks, the kind and material of a plain secret): the driver
	// reads a NULL column in one call where a text takes three and a
	// string, which at a million clients was a quarter of the build.
	sqlFeedColumns = `SELECT s.client_id, s.secret_id, s.hash, s.expires_at,
			CASE WHEN s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1) THEN 1 ELSE 0 END,
			NULLIF(c.allowed_cidrs, ''), CASE WHEN c.allowed_cidrs <> '' THEN c.networks_report_only END,
			NULLIF(s.kind, 'secret'),
			CASE WHEN s.kind <> 'secret' THEN s.material END, CASE WHEN s.kind <> 'secret' THEN s.thumbprint END
		FROM secrets s JOIN clients c ON c.client_id = s.client_id`
	sqlFeedRows = `((s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1))
			OR (s.hash LIKE 'sha256:%' AND (s.revoked_at IS NULL OR s.revoked_at > $2) AND (s.expires_at IS NULL OR s.expires_at > $2)))`
	sqlSnapshot = sqlFeedColumns + ` WHERE ` + sqlFeedRows + ` ORDER BY s.client_id, s.secret_id`
	// The change log.
	sqlLogChange      = `INSERT INTO changes (revision, client_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	sqlChangesFrom    = `SELECT epoch, revision, changes_from FROM meta WHERE id = 1`
	sqlChangedSince   = `SELECT DISTINCT client_id FROM changes WHERE revision > $1 AND client_id <> '' ORDER BY client_id LIMIT $2`
	sqlLoggedSince    = `SELECT COUNT(DISTINCT revision) FROM changes WHERE revision > $1`
	sqlPruneChanges   = `DELETE FROM changes WHERE revision <= $1`
	sqlOldestByAge    = `SELECT COALESCE(MAX(revision), 0) FROM changes WHERE at < $1`
	sqlRaiseChangesTo = `UPDATE meta SET changes_from = $1 WHERE id = 1 AND changes_from < $1`
)

// How long the change log reaches back: a revision leaves it once it is
// ChangeLogRevisions behind the newest, or older than changeLogAge. The
// log is pruned every ChangePruneEvery revisions.
const (
	// ChangeLogRevisions is how many revisions the log keeps at most.
	ChangeLogRevisions = 10_000
	changeLogAge       = time.Hour
	// ChangePruneEvery is how many revisions pass between prunings.
	ChangePruneEvery = 64
	// maxChangedClients is the most clients a change answer lists; past
	// it the feed answers with a full snapshot.
	maxChangedClients = 10_000
)

// Snapshot implements Store: one query, its rows handed to w as they
// are read.
func (s *SQL) Snapshot(ctx context.Context, now time.Time, tombstoneWindow time.Duration, w SnapshotWriter) error {
	_, err := read(ctx, s, func(q querier) (struct{}, error) {
		return struct{}{}, readSnapshot(ctx, q, now, tombstoneWindow, w)
	})
	return err
}

// Changes implements Store.
func (s *SQL) Changes(ctx context.Context, since int64, now time.Time, tombstoneWindow time.Duration) (wire.Delta, bool, error) {
	type answer struct {
		delta wire.Delta
		ok    bool
	}
	a, err := read(ctx, s, func(q querier) (answer, error) {
		d, ok, err := readChanges(ctx, q, since, now, tombstoneWindow)
		return answer{d, ok}, err
	})
	return a.delta, a.ok, err
}

// readSnapshot reads the epoch, the revision, every secret active at now
// and the tombstones of generated secrets dead within tombstoneWindow
// before now (none when it is 0), inside one read transaction of the
// caller's, and hands them to w.
func readSnapshot(ctx context.Context, q querier, now time.Time, tombstoneWindow time.Duration, w SnapshotWriter) error {
	var head wire.Snapshot
	if err := q.queryRow(ctx, sqlSelectMeta).Scan(&head.Epoch, &head.Revision); err != nil {
		return err
	}
	if err := w.Begin(head); err != nil {
		return err
	}
	rs, err := q.query(ctx, sqlSnapshot, now.UnixMilli(), tombstonesSince(now, tombstoneWindow))
	if err != nil {
		return err
	}
	defer rs.Close()
	return scanSnapshot(rs, w.Client)
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

// scanSnapshot reads the rows of sqlSnapshot (ordered by client id) and
// hands each client, with its secrets and tombstones, to emit as soon as
// its last row is read. A client with tombstones only is listed with no
// secrets, so that an edge tells its dead secrets from wrong ones too.
// One wire.Client is reused for every client: emit must not keep it.
func scanSnapshot(rs Rows, emit func(*wire.Client) error) error {
	var c wire.Client
	secrets := make([]wire.Secret, 0, 4)
	open := false
	for rs.Next() {
		var clientID string
		var sec wire.Secret
		var expires, reportOnly sql.NullInt64
		var alive int
		var cidrs, kindOf, material, thumbprint sql.NullString
		if err := rs.Scan(&clientID, &sec.ID, &sec.Hash, &expires, &alive, &cidrs, &reportOnly, &kindOf, &material, &thumbprint); err != nil {
			return err
		}
		if !open || c.ClientID != clientID {
			if open {
				if err := emit(&c); err != nil {
					return err
				}
				secrets = c.Secrets[:0]
			}
			c = wire.Client{ClientID: clientID, Secrets: secrets, AllowedCIDRs: splitCIDRs(cidrs.String), Tombstones: c.Tombstones[:0]}
			c.NetworksReportOnly = len(c.AllowedCIDRs) > 0 && reportOnly.Int64 != 0
			open = true
		}
		kind := KindSecret
		if kindOf.Valid {
			kind = Kind(kindOf.String)
		}
		if alive == 0 {
			c.Tombstones = append(c.Tombstones, wire.Tombstone{ID: sec.ID, Hash: sec.Hash})
			continue
		}
		sec.ExpiresAt = fromMillis(expires)
		switch kind { // only public material of keys and certificates
		case KindPublicKey:
			c.PublicKeys = append(c.PublicKeys, wire.PublicKey{ID: sec.ID, JWK: json.RawMessage(material.String), ExpiresAt: sec.ExpiresAt})
		case KindCertificate:
			c.Certificates = append(c.Certificates, wire.Certificate{ID: sec.ID, Thumbprint: thumbprint.String, ExpiresAt: sec.ExpiresAt})
		default:
			c.Secrets = append(c.Secrets, sec)
		}
	}
	if err := rs.Err(); err != nil {
		return err
	}
	if open {
		return emit(&c)
	}
	return nil
}

// logChanges records, in the writing transaction, which clients revision
// rev touched — a row with an empty client id when it touched none, so
// that every revision has a row and one written by a control plane that
// keeps no log (an older replica during an upgrade) shows as a gap — and
// prunes the log now and then.
func logChanges(ctx context.Context, q querier, rev int64, touched []string, now time.Time) error {
	if len(touched) == 0 {
		touched = []string{""}
	}
	for _, id := range touched {
		if _, err := q.exec(ctx, sqlLogChange, rev, id, now.UnixMilli()); err != nil {
			return fmt.Errorf("logging the change: %w", err)
		}
	}
	if rev%ChangePruneEvery != 0 {
		return nil
	}
	floor := rev - ChangeLogRevisions
	var old int64
	if err := q.queryRow(ctx, sqlOldestByAge, now.Add(-changeLogAge).UnixMilli()).Scan(&old); err != nil {
		return fmt.Errorf("pruning the change log: %w", err)
	}
	floor = max(floor, old)
	if floor <= 0 {
		return nil
	}
	if _, err := q.exec(ctx, sqlPruneChanges, floor); err != nil {
		return fmt.Errorf("pruning the change log: %w", err)
	}
	if _, err := q.exec(ctx, sqlRaiseChangesTo, floor); err != nil {
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
func readChanges(ctx context.Context, q querier, since int64, now time.Time, tombstoneWindow time.Duration) (wire.Delta, bool, error) {
	var delta wire.Delta
	var from int64
	if err := q.queryRow(ctx, sqlChangesFrom).Scan(&delta.Epoch, &delta.Revision, &from); err != nil {
		return wire.Delta{}, false, err
	}
	if since < from || since > delta.Revision {
		return delta, false, nil
	}
	var logged int64
	if err := q.queryRow(ctx, sqlLoggedSince, since).Scan(&logged); err != nil {
		return wire.Delta{}, false, err
	}
	if logged != delta.Revision-since { // a revision written without its log
		return delta, false, nil
	}
	delta.Since = since
	ids, err := readStrings(ctx, q, sqlChangedSince, since, maxChangedClients+1)
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
		rs, err := q.query(ctx, sqlFeedRowsOf(len(batch)), inArgs(batch, now.UnixMilli(), tombstonesSince(now, tombstoneWindow))...)
		if err != nil {
			return wire.Delta{}, false, err
		}
		var clients []wire.Client
		err = scanSnapshot(rs, func(c *wire.Client) error {
			clients = append(clients, CloneClient(c))
			return nil
		})
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
	return sqlFeedColumns + ` WHERE ` + sqlFeedRows + ` AND s.client_id IN (` + placeholders(3, n) + `) ORDER BY s.client_id, s.secret_id`
}
