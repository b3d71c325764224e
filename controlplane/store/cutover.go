package store

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"
)

// CutoverPolicy is a client's own cut-over policy (migration 7): each
// field nil, or OnDeadline "", when the client has not set it and the
// control plane's default applies. Auto is three-state on purpose: not
// set differs from off.
type CutoverPolicy struct {
	Auto                      *bool
	Quiet, Lookback, Deadline *time.Duration
	// OnDeadline is "keep", "revoke" or "" (not set).
	OnDeadline string
	// Scheduled: the client's sink rotates it on a schedule (rotate_every),
	// which turns Auto on where the client has not set it (SPEC §15). Read
	// only; SetCutoverPolicy ignores it.
	Scheduled bool
}

// Rotation is a client with a rotation in progress, as a cut-over pass
// reads it: its policy, its secrets active at the pass's time (oldest
// first), and their callers.
type Rotation struct {
	ClientID string
	Policy   CutoverPolicy
	Secrets  []Secret
	// Callers are the callers of Secrets, by secret id, the most recently
	// seen first.
	Callers map[string][]Caller
}

// The cut-over: the policy columns of clients, and the set of clients
// with a rotation in progress (table rotations). A client enters the set
// when a secret is added beside an active one (sqlEnterRotation, in the
// transaction of InsertSecret) and leaves it when a cut-over pass finds it
// with fewer than two active secrets (Tx.EndRotation), so that a pass
// reads the clients in the set only, never all clients.
const (
	sqlCutoverColumns = `cutover_auto, cutover_quiet, cutover_lookback, cutover_deadline, cutover_on_deadline`
	sqlCutoverPolicy  = `SELECT ` + sqlCutoverColumns + `, ` + sqlScheduled + ` FROM clients c WHERE c.client_id = $1`
	// sqlScheduled is a column of a query on clients c: 1 when the client
	// has a sink with rotate_every, else 0 (CutoverPolicy.Scheduled).
	sqlScheduled        = `(SELECT COUNT(*) FROM client_sinks k WHERE k.client_id = c.client_id AND k.rotate_every > 0)`
	sqlSetCutoverPolicy = `UPDATE clients SET cutover_auto = $1, cutover_quiet = $2, cutover_lookback = $3,
		cutover_deadline = $4, cutover_on_deadline = $5 WHERE client_id = $6`
	// sqlEnterRotation puts a client in the set when it has two or more
	// secrets active at $2.
	sqlEnterRotation = `INSERT INTO rotations (client_id) SELECT CAST($1 AS TEXT)
		WHERE (SELECT COUNT(*) FROM secrets WHERE client_id = CAST($1 AS TEXT) AND revoked_at IS NULL
			AND (expires_at IS NULL OR expires_at > $2)) >= 2
		ON CONFLICT (client_id) DO NOTHING`
	sqlEndRotation = `DELETE FROM rotations WHERE client_id = $1`
	sqlRotations   = `SELECT client_id FROM rotations ORDER BY client_id`
	// sqlMarkStalled records a secret's deadline notice, once.
	sqlMarkStalled = `UPDATE secrets SET cutover_stalled_at = $1 WHERE secret_id = $2 AND cutover_stalled_at IS NULL`
)

// rotationsChunk bounds the ids one read of Rotations names.
const rotationsChunk = 500

// sqlRotationsIn selects the policy and the secrets active at $1 of n
// clients, named by $2…$n+1: one row per secret, or one with NULLs for a
// client that has none left; only the columns the cut-over reads.
func sqlRotationsIn(n int) string {
	return `SELECT c.client_id, ` + qualified("c", sqlCutoverColumns) + `, ` + sqlScheduled + `,
			s.secret_id, s.hint, s.created_at, s.expires_at, s.first_used_at, s.last_used_at, s.cutover_stalled_at
		FROM clients c LEFT JOIN secrets s
			ON s.client_id = c.client_id AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1)
		WHERE c.client_id IN (` + placeholders(2, n) + `)
		ORDER BY c.client_id, s.created_at, s.secret_id`
}

// CutoverPolicy implements Store.
func (s *SQL) CutoverPolicy(ctx context.Context, clientID string) (CutoverPolicy, error) {
	return read(ctx, s, func(q querier) (CutoverPolicy, error) {
		p, err := scanCutoverPolicy(q.queryRow(ctx, sqlCutoverPolicy, clientID), nil)
		return p, notFound(err)
	})
}

// Rotations implements Store: in one consistent view, the set, then its
// clients and their callers by id lists of at most rotationsChunk (so
// that each is an index lookup per id on both databases, whatever the
// size of the tables), each bounded by the clients in the set. Their
// secrets carry what the cut-over reads: ids, hint, times.
func (s *SQL) Rotations(ctx context.Context, now, callersSince time.Time) ([]Rotation, error) {
	return read(ctx, s, func(q querier) ([]Rotation, error) {
		ids, err := readStrings(ctx, q, sqlRotations)
		if err != nil {
			return nil, err
		}
		out := make([]Rotation, 0, len(ids))
		var secretIDs []string
		for chunk := range slices.Chunk(ids, rotationsChunk) {
			rs, err := q.query(ctx, sqlRotationsIn(len(chunk)), inArgs(chunk, now.UnixMilli())...)
			if err != nil {
				return nil, err
			}
			for rs.Next() {
				var clientID string
				var secretID, hint sql.NullString
				var created, expires, firstUsed, used, stalled sql.NullInt64
				p, err := scanCutoverPolicy(rs, []any{&clientID}, &secretID, &hint, &created, &expires, &firstUsed, &used, &stalled)
				if err != nil {
					rs.Close()
					return nil, err
				}
				if len(out) == 0 || out[len(out)-1].ClientID != clientID {
					out = append(out, Rotation{ClientID: clientID, Policy: p, Callers: map[string][]Caller{}})
				}
				if secretID.Valid {
					r := &out[len(out)-1]
					r.Secrets = append(r.Secrets, Secret{ID: secretID.String, ClientID: clientID, Hint: hint.String, CreatedAt: millisTime(created.Int64),
						ExpiresAt: fromMillis(expires), FirstUsedAt: fromMillis(firstUsed), LastUsedAt: fromMillis(used), CutoverStalledAt: fromMillis(stalled)})
					secretIDs = append(secretIDs, secretID.String)
				}
			}
			err = rs.Err()
			rs.Close()
			if err != nil {
				return nil, err
			}
		}
		client := make(map[string]int, len(secretIDs))
		for i := range out {
			for _, sec := range out[i].Secrets {
				client[sec.ID] = i
			}
		}
		for chunk := range slices.Chunk(secretIDs, rotationsChunk) {
			callers, err := readCallers(ctx, q, chunk, callersSince)
			if err != nil {
				return nil, err
			}
			for id, cs := range callers {
				out[client[id]].Callers[id] = cs
			}
		}
		return out, nil
	})
}

// qualified names each column of a list as table's.
func qualified(table, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = table + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

func (t *sqlTx) SetCutoverPolicy(ctx context.Context, clientID string, p CutoverPolicy) error {
	auto := sql.NullInt64{}
	if p.Auto != nil {
		auto.Valid = true
		if *p.Auto {
			auto.Int64 = 1
		}
	}
	onDeadline := sql.NullString{String: p.OnDeadline, Valid: p.OnDeadline != ""}
	return t.execOne(ctx, sqlSetCutoverPolicy, auto, durationMillis(p.Quiet), durationMillis(p.Lookback),
		durationMillis(p.Deadline), onDeadline, clientID)
}

func (t *sqlTx) Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	return readCallers(ctx, t.q, secretIDs, since)
}

func (t *sqlTx) EndRotation(ctx context.Context, clientID string) error {
	_, err := t.q.exec(ctx, sqlEndRotation, clientID)
	return err
}

func (t *sqlTx) MarkStalled(ctx context.Context, secretID string, at time.Time) (bool, error) {
	n, err := t.q.exec(ctx, sqlMarkStalled, at.UnixMilli(), secretID)
	return n == 1, err
}

// scanCutoverPolicy reads a row of sqlCutoverColumns and sqlScheduled,
// with the columns before them into lead and those after them into trail.
func scanCutoverPolicy(r Row, lead []any, trail ...any) (CutoverPolicy, error) {
	var p CutoverPolicy
	var auto, quiet, lookback, deadline sql.NullInt64
	var onDeadline sql.NullString
	var scheduled int64
	dest := append(append(lead, &auto, &quiet, &lookback, &deadline, &onDeadline, &scheduled), trail...)
	if err := r.Scan(dest...); err != nil {
		return CutoverPolicy{}, err
	}
	if auto.Valid {
		on := auto.Int64 != 0
		p.Auto = &on
	}
	p.Quiet, p.Lookback, p.Deadline = millisDuration(quiet), millisDuration(lookback), millisDuration(deadline)
	p.OnDeadline = onDeadline.String
	p.Scheduled = scheduled > 0
	return p, nil
}

func durationMillis(d *time.Duration) sql.NullInt64 { return nullMillis(d, time.Duration.Milliseconds) }

func millisDuration(v sql.NullInt64) *time.Duration {
	return fromNullMillis(v, func(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond })
}
