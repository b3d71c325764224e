package store

import (
	"context"
	"database/sql"
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
	sqlCutoverColumns   = `cutover_auto, cutover_quiet, cutover_lookback, cutover_deadline, cutover_on_deadline`
	sqlCutoverPolicy    = `SELECT ` + sqlCutoverColumns + ` FROM clients WHERE client_id = $1`
	sqlSetCutoverPolicy = `UPDATE clients SET cutover_auto = $1, cutover_quiet = $2, cutover_lookback = $3,
		cutover_deadline = $4, cutover_on_deadline = $5 WHERE client_id = $6`
	// sqlEnterRotation puts a client in the set when it has two or more
	// secrets active at $2.
	sqlEnterRotation = `INSERT INTO rotations (client_id) SELECT CAST($1 AS TEXT)
		WHERE (SELECT COUNT(*) FROM secrets WHERE client_id = CAST($1 AS TEXT) AND revoked_at IS NULL
			AND (expires_at IS NULL OR expires_at > $2)) >= 2
		ON CONFLICT (client_id) DO NOTHING`
	sqlEndRotation       = `DELETE FROM rotations WHERE client_id = $1`
	sqlRotationsPolicies = `SELECT c.client_id, c.cutover_auto, c.cutover_quiet, c.cutover_lookback, c.cutover_deadline, c.cutover_on_deadline
		FROM rotations r JOIN clients c ON c.client_id = r.client_id ORDER BY c.client_id`
	sqlActiveInRotation = `client_id IN (SELECT client_id FROM rotations) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)`
	sqlRotationsSecrets = `SELECT ` + sqlSecretColumns + ` FROM secrets WHERE ` + sqlActiveInRotation + `
		ORDER BY client_id, created_at, secret_id`
	sqlRotationsCallers = `SELECT secret_id, ip, first_seen, last_seen, requests, refused FROM secret_callers
		WHERE last_seen >= $2 AND secret_id IN (SELECT secret_id FROM secrets WHERE ` + sqlActiveInRotation + `)
		ORDER BY secret_id, last_seen DESC, ip`
	// sqlMarkStalled records a secret's deadline notice, once.
	sqlMarkStalled = `UPDATE secrets SET cutover_stalled_at = $1 WHERE secret_id = $2 AND cutover_stalled_at IS NULL`
)

// CutoverPolicy implements Store.
func (s *SQL) CutoverPolicy(ctx context.Context, clientID string) (CutoverPolicy, error) {
	return read(ctx, s, func(q querier) (CutoverPolicy, error) {
		p, err := scanCutoverPolicy(q.queryRow(ctx, sqlCutoverPolicy, clientID))
		return p, notFound(err)
	})
}

// Rotations implements Store: three reads in one consistent view, each
// bounded by the clients in the set.
func (s *SQL) Rotations(ctx context.Context, now, callersSince time.Time) ([]Rotation, error) {
	return read(ctx, s, func(q querier) ([]Rotation, error) {
		out, err := queryAll(ctx, q, func(r Row) (Rotation, error) {
			rot := Rotation{Callers: map[string][]Caller{}}
			var err error
			rot.Policy, err = scanCutoverPolicy(r, &rot.ClientID)
			return rot, err
		}, sqlRotationsPolicies)
		if err != nil {
			return nil, err
		}
		at := make(map[string]int, len(out))
		for i := range out {
			at[out[i].ClientID] = i
		}
		secrets, err := queryAll(ctx, q, scanSecret, sqlRotationsSecrets, now.UnixMilli())
		if err != nil {
			return nil, err
		}
		client := make(map[string]int, len(secrets))
		for _, sec := range secrets {
			if i, ok := at[sec.ClientID]; ok {
				out[i].Secrets = append(out[i].Secrets, sec)
				client[sec.ID] = i
			}
		}
		crs, err := q.query(ctx, sqlRotationsCallers, now.UnixMilli(), callersSince.UnixMilli())
		if err != nil {
			return nil, err
		}
		defer crs.Close()
		for crs.Next() {
			var secretID string
			var c Caller
			var first, last int64
			if err := crs.Scan(&secretID, &c.IP, &first, &last, &c.Requests, &c.Refused); err != nil {
				return nil, err
			}
			c.FirstSeen, c.LastSeen = millisTime(first), millisTime(last)
			if i, ok := client[secretID]; ok {
				out[i].Callers[secretID] = append(out[i].Callers[secretID], c)
			}
		}
		return out, crs.Err()
	})
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

// scanCutoverPolicy reads a row of sqlCutoverColumns, after the columns
// before them into lead.
func scanCutoverPolicy(r Row, lead ...any) (CutoverPolicy, error) {
	var p CutoverPolicy
	var auto, quiet, lookback, deadline sql.NullInt64
	var onDeadline sql.NullString
	if err := r.Scan(append(lead, &auto, &quiet, &lookback, &deadline, &onDeadline)...); err != nil {
		return CutoverPolicy{}, err
	}
	if auto.Valid {
		on := auto.Int64 != 0
		p.Auto = &on
	}
	p.Quiet, p.Lookback, p.Deadline = millisDuration(quiet), millisDuration(lookback), millisDuration(deadline)
	p.OnDeadline = onDeadline.String
	return p, nil
}

func durationMillis(d *time.Duration) sql.NullInt64 {
	if d == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: d.Milliseconds(), Valid: true}
}

func millisDuration(v sql.NullInt64) *time.Duration {
	if !v.Valid {
		return nil
	}
	d := time.Duration(v.Int64) * time.Millisecond
	return &d
}
