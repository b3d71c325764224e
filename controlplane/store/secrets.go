package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// Secret is the stored record of one client credential: a secret (its
// hash, never the secret), a public key or a certificate (public material
// only). Times are UTC, at millisecond precision.
type Secret struct {
	ID       string
	ClientID string
	// Kind is what the credential is: KindSecret, KindPublicKey or
	// KindCertificate.
	Kind Kind
	// Hash is a stored hash string (see internal/secrethash); empty for
	// the other kinds.
	Hash string
	// Material is a public key's canonical public JWK (credkey); empty for
	// the other kinds.
	Material string
	// Thumbprint names a public key (RFC 7638) or a certificate (RFC 8705
	// x5t#S256); empty for secrets.
	Thumbprint string
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
	// Label says which app has the secret, as its owners wrote it; never
	// the secret. Empty: none.
	Label string
	// CutoverStalledAt is when a cut-over pass found the secret not
	// finished at its rotation's deadline and said so (once).
	CutoverStalledAt *time.Time
}

// Kind is the kind of a credential.
type Kind string

// The kinds of credential (SPEC §16).
const (
	KindSecret      Kind = "secret"
	KindPublicKey   Kind = "public_key"
	KindCertificate Kind = "certificate"
)

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

// The secrets.
const (
	sqlSecretColumns = `secret_id, client_id, hash, hint, created_at, expires_at, revoked_at, last_used_at, last_used_from, first_used_at,
		presented_after_revoke_count, last_presented_after_revoke_at, last_presented_after_revoke_from, leak_reported_at,
		kind, material, thumbprint, label, cutover_stalled_at`
	sqlSecrets      = `SELECT ` + sqlSecretColumns + ` FROM secrets WHERE client_id = $1 ORDER BY created_at, secret_id`
	sqlSecretByHash = `SELECT ` + sqlSecretColumns + ` FROM secrets WHERE hash = $1 ORDER BY secret_id LIMIT 1`
	sqlInsertSecret = `INSERT INTO secrets (secret_id, client_id, hash, hint, created_at, expires_at, kind, material, thumbprint)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	sqlSetExpiry = `UPDATE secrets SET expires_at = $1 WHERE secret_id = $2 RETURNING client_id`
	sqlRevoke    = `UPDATE secrets SET revoked_at = $1 WHERE secret_id = $2 RETURNING client_id`
	sqlSetLabel  = `UPDATE secrets SET label = $1 WHERE secret_id = $2 RETURNING client_id`
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
)

// Secrets implements Store.
func (s *SQL) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	return read(ctx, s, func(q querier) ([]Secret, error) {
		if _, err := scanClient(q.queryRow(ctx, sqlSelectClient, clientID)); err != nil {
			return nil, notFound(err)
		}
		return queryAll(ctx, q, scanSecret, sqlSecrets, clientID)
	})
}

// SecretByHash implements Store.
func (s *SQL) SecretByHash(ctx context.Context, hash string) (Secret, error) {
	return read(ctx, s, func(q querier) (Secret, error) {
		sec, err := scanSecret(q.queryRow(ctx, sqlSecretByHash, hash))
		return sec, notFound(err)
	})
}

// ApplyUsage implements Store: the stamps go in one batch, in one
// transaction; being max-merges, they may be applied again safely.
func (s *SQL) ApplyUsage(ctx context.Context, stamps []wire.Stamp) (int, error) {
	if len(stamps) == 0 {
		return 0, nil
	}
	batch := make([]stmt, len(stamps))
	for i, st := range stamps {
		batch[i] = stmt{sqlApplyUsage, []any{st.LastUsedAt.UnixMilli(), st.From, st.SecretID, st.ClientID}}
	}
	return write(ctx, s, func(q querier) (int, error) {
		touched, err := q.batch(ctx, batch)
		updated := 0
		for _, n := range touched {
			updated += int(n)
		}
		return updated, err
	})
}

func (t *sqlTx) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	return queryAll(ctx, t.q, scanSecret, sqlSecrets, clientID)
}

func (t *sqlTx) InsertSecret(ctx context.Context, s Secret) error {
	kind := s.Kind
	if kind == "" {
		kind = KindSecret
	}
	if _, err := t.q.exec(ctx, sqlInsertSecret, s.ID, s.ClientID, s.Hash, s.Hint, s.CreatedAt.UnixMilli(), toMillis(s.ExpiresAt),
		string(kind), s.Material, s.Thumbprint); err != nil {
		return err
	}
	if _, err := t.q.exec(ctx, sqlEnterRotation, s.ClientID, s.CreatedAt.UnixMilli()); err != nil {
		return err
	}
	t.touch(s.ClientID)
	return nil
}

func (t *sqlTx) SetExpiry(ctx context.Context, secretID string, at time.Time) error {
	return t.updateSecret(ctx, sqlSetExpiry, at.UnixMilli(), secretID)
}

func (t *sqlTx) Revoke(ctx context.Context, secretID string, at time.Time) error {
	return t.updateSecret(ctx, sqlRevoke, at.UnixMilli(), secretID)
}

func (t *sqlTx) SetLabel(ctx context.Context, secretID, label string) error {
	return t.updateSecret(ctx, sqlSetLabel, label, secretID)
}

// updateSecret runs an UPDATE … RETURNING client_id of one secret and
// touches its client; ErrNotFound when there is no such secret.
func (t *sqlTx) updateSecret(ctx context.Context, query string, args ...any) error {
	var clientID string
	if err := t.q.queryRow(ctx, query, args...).Scan(&clientID); err != nil {
		return notFound(err)
	}
	t.touch(clientID)
	return nil
}

func (t *sqlTx) RecordRevokedUse(ctx context.Context, u wire.RevokedUse) (RecordedRevokedUse, error) {
	r := RecordedRevokedUse{ClientID: u.ClientID, SecretID: u.SecretID, Count: u.Count, LastAt: u.LastAt, From: u.From}
	err := t.q.queryRow(ctx, sqlRevokedUse, u.Count, u.LastAt.UnixMilli(), u.From, u.SecretID, u.ClientID).Scan(&r.Hint, &r.Total)
	if err != nil {
		return RecordedRevokedUse{}, notFound(err)
	}
	return r, nil
}

func (t *sqlTx) FlagLeak(ctx context.Context, secretID string, at time.Time) error {
	_, err := t.q.exec(ctx, sqlFlagLeak, at.UnixMilli(), secretID)
	return err
}

// scanSecret reads one row of sqlSecretColumns.
func scanSecret(r Row) (Secret, error) {
	var s Secret
	var created int64
	var expires, revoked, used, firstUsed, deadUsed, leak, stalled sql.NullInt64
	if err := r.Scan(&s.ID, &s.ClientID, &s.Hash, &s.Hint, &created, &expires, &revoked, &used, &s.LastUsedFrom, &firstUsed,
		&s.PresentedAfterRevoke, &deadUsed, &s.LastPresentedAfterRevokeFrom, &leak, &s.Kind, &s.Material, &s.Thumbprint, &s.Label, &stalled); err != nil {
		return Secret{}, err
	}
	s.CreatedAt = millisTime(created)
	s.ExpiresAt, s.RevokedAt, s.LastUsedAt, s.FirstUsedAt = fromMillis(expires), fromMillis(revoked), fromMillis(used), fromMillis(firstUsed)
	s.LastPresentedAfterRevokeAt, s.LeakReportedAt, s.CutoverStalledAt = fromMillis(deadUsed), fromMillis(leak), fromMillis(stalled)
	return s, nil
}
