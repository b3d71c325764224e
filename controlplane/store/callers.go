package store

import (
	"context"
	"time"
)

// Caller is one caller IP of a secret as the store keeps it: every request
// in which the secret verified from IP between FirstSeen and LastSeen, and
// how many of them came from outside the client's allowed networks. The
// caller with IP "" stands for the requests an edge counted without
// listing their IPs (more than 64 IPs for one secret in one flush).
type Caller struct {
	IP        string
	FirstSeen time.Time
	LastSeen  time.Time
	Requests  int64
	Refused   int64
}

// CallerUse is one (secret, caller IP) of a usage batch, to be added to
// what the store keeps.
type CallerUse struct {
	ClientID string
	SecretID string
	Caller
}

// The callers of secrets (migration 6).
const (
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
	return `SELECT secret_id, ip, first_seen, last_seen, requests, refused FROM secret_callers WHERE last_seen >= $1 AND secret_id IN (` +
		placeholders(2, n) + `) ORDER BY secret_id, last_seen DESC, ip`
}

// ApplyCallers implements Store: every statement in one batch, in one
// transaction. Counts are added, not merged: a commit whose outcome is
// unknown is never run again (driver.write).
func (s *SQL) ApplyCallers(ctx context.Context, uses []CallerUse, keep int) error {
	if len(uses) == 0 {
		return nil
	}
	batch := make([]stmt, 0, len(uses)+1)
	for _, u := range uses {
		batch = append(batch, stmt{sqlApplyCaller, callerArgs(u)})
	}
	for _, id := range trimmedSecrets(uses) {
		batch = append(batch, stmt{sqlTrimCallers, []any{id, keep}})
	}
	_, err := write(ctx, s, func(q querier) ([]int64, error) { return q.batch(ctx, batch) })
	return err
}

// Callers implements Store.
func (s *SQL) Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	return read(ctx, s, func(q querier) (map[string][]Caller, error) { return readCallers(ctx, q, secretIDs, since) })
}

// PruneCallers implements Store.
func (s *SQL) PruneCallers(ctx context.Context, before time.Time) (int64, error) {
	return write(ctx, s, func(q querier) (int64, error) { return q.exec(ctx, sqlPruneCallers, before.UnixMilli()) })
}

// readCallers reads the callers of secretIDs last seen at or after since,
// by secret id, the most recently seen first.
func readCallers(ctx context.Context, q querier, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	out := make(map[string][]Caller, len(secretIDs))
	if len(secretIDs) == 0 {
		return out, nil
	}
	rs, err := q.query(ctx, sqlCallersIn(len(secretIDs)), inArgs(secretIDs, since.UnixMilli())...)
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
		c.FirstSeen, c.LastSeen = millisTime(first), millisTime(last)
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
