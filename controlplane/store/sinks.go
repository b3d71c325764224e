package store

import (
	"context"
	"database/sql"
	"time"
)

// Sink is a client's delivery sink as stored (SPEC §15): its kind, its
// configuration as the management API took it (JSON, never a credential:
// AWS credentials come from the control plane's environment), and the
// webhook sink's signing secret, which the control plane needs to sign
// every event and so keeps as it keeps its configured webhook secrets:
// usable, and never shown again after the answer that made it.
type Sink struct {
	ClientID string
	Kind     string
	// Config is the sink's configuration, as JSON.
	Config []byte
	// SigningSecret signs the webhook sink's events (whsec_…); empty for
	// other kinds.
	SigningSecret string
	// RotateEvery is the period of scheduled rotation; 0 for none.
	RotateEvery time.Duration
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Stages of a secret a sink carried (SinkSecret.Stage), in AWS's terms.
const (
	SinkStagePending  = "pending"
	SinkStageCurrent  = "current"
	SinkStagePrevious = "previous"
	// SinkStageDropped: revoked before it was promoted; the sink never
	// makes it current.
	SinkStageDropped = "dropped"
)

// SinkSecret is a secret a sink carried, and where it stands: pending
// until promoted (at PromoteAt, once delivered), then current, then
// previous when a newer one is promoted.
type SinkSecret struct {
	SecretID string
	ClientID string
	Kind     string
	// Version is the AWS sink's version id of the secret's value.
	Version string
	Stage   string
	// Grace, when set, is the grace of the rotation that made the secret,
	// applied to the client's other secrets once the sink acknowledges
	// it (a webhook sink's delivery), so that a sink that is down never
	// leaves a client rotated half-way.
	Grace       *time.Duration
	DeliveredAt *time.Time
	PromoteAt   time.Time
	PromotedAt  *time.Time
}

// ScheduledSink is a client whose sink rotates on a schedule, with the
// creation time of its newest active secret (nil when it has none).
type ScheduledSink struct {
	ClientID    string
	Kind        string
	RotateEvery time.Duration
	NewestAt    *time.Time
}

// SinkDeliveries is the outbox's webhook key of the deliveries to webhook
// sinks: each such delivery goes to the sink of its event's client.
const SinkDeliveries = "sink"

// EventSinkDelivery is the outbox type of an event bound for a client's
// webhook sink: its payload is the sink's body (sink.Event), the secret in
// it only as a JWE to the sink's key.
const EventSinkDelivery = "sink.delivery"

const (
	sqlSinkColumns = `client_id, kind, config, signing_secret, rotate_every, created_at, updated_at`
	sqlSelectSink  = `SELECT ` + sqlSinkColumns + ` FROM client_sinks WHERE client_id = $1`
	sqlUpsertSink  = `INSERT INTO client_sinks (` + sqlSinkColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (client_id) DO UPDATE SET kind = excluded.kind, config = excluded.config,
		signing_secret = excluded.signing_secret, rotate_every = excluded.rotate_every, updated_at = excluded.updated_at`
	sqlDeleteSink          = `DELETE FROM client_sinks WHERE client_id = $1`
	sqlDeleteSinkSecretsOf = `DELETE FROM sink_secrets WHERE client_id = $1`

	sqlSinkSecretColumns = `secret_id, client_id, kind, version, stage, grace, delivered_at, promote_at, promoted_at`
	sqlInsertSinkSecret  = `INSERT INTO sink_secrets (` + sqlSinkSecretColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	sqlSelectSinkSecret  = `SELECT ` + sqlSinkSecretColumns + ` FROM sink_secrets WHERE secret_id = $1`
	sqlSinkDelivered     = `UPDATE sink_secrets SET delivered_at = $1 WHERE secret_id = $2 AND delivered_at IS NULL`
	sqlSinkPromotionsDue = `SELECT ` + sqlSinkSecretColumns + ` FROM sink_secrets
		WHERE promoted_at IS NULL AND delivered_at IS NOT NULL AND promote_at <= $1 ORDER BY promote_at, secret_id LIMIT $2`
	sqlSinkCurrentOf = `SELECT secret_id FROM sink_secrets WHERE client_id = $1 AND stage = 'current' AND secret_id <> $2`
	sqlSinkClientOf  = `SELECT client_id FROM sink_secrets WHERE secret_id = $1`
	sqlSinkSetStage  = `UPDATE sink_secrets SET stage = $1 WHERE secret_id = $2`
	sqlSinkPromote   = `UPDATE sink_secrets SET stage = 'current', promoted_at = $1 WHERE secret_id = $2 AND promoted_at IS NULL`
	sqlSinkDrop      = `UPDATE sink_secrets SET stage = 'dropped', promoted_at = $1 WHERE secret_id = $2 AND promoted_at IS NULL`
	sqlScheduledSink = `SELECT k.client_id, k.kind, k.rotate_every,
		(SELECT MAX(s.created_at) FROM secrets s WHERE s.client_id = k.client_id
			AND s.revoked_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > $1))
		FROM client_sinks k WHERE k.rotate_every > 0 ORDER BY k.client_id`
)

func scanSink(r Row) (Sink, error) {
	var k Sink
	var config string
	var every, created, updated int64
	err := r.Scan(&k.ClientID, &k.Kind, &config, &k.SigningSecret, &every, &created, &updated)
	k.Config, k.RotateEvery = []byte(config), time.Duration(every)*time.Millisecond
	k.CreatedAt, k.UpdatedAt = millisTime(created), millisTime(updated)
	return k, notFound(err)
}

func scanSinkSecret(r Row) (SinkSecret, error) {
	var s SinkSecret
	var grace, delivered, promoted sql.NullInt64
	var promoteAt int64
	err := r.Scan(&s.SecretID, &s.ClientID, &s.Kind, &s.Version, &s.Stage, &grace, &delivered, &promoteAt, &promoted)
	if grace.Valid {
		g := time.Duration(grace.Int64) * time.Millisecond
		s.Grace = &g
	}
	s.DeliveredAt, s.PromoteAt, s.PromotedAt = fromMillis(delivered), millisTime(promoteAt), fromMillis(promoted)
	return s, notFound(err)
}

// Sink implements Tx.
func (t *sqlTx) Sink(ctx context.Context, clientID string) (Sink, error) {
	return scanSink(t.q.queryRow(ctx, sqlSelectSink, clientID))
}

// SetSink implements Tx.
func (t *sqlTx) SetSink(ctx context.Context, k Sink) error {
	_, err := t.q.exec(ctx, sqlUpsertSink, k.ClientID, k.Kind, string(k.Config), k.SigningSecret,
		k.RotateEvery.Milliseconds(), k.UpdatedAt.UnixMilli())
	return err
}

// DeleteSink implements Tx.
func (t *sqlTx) DeleteSink(ctx context.Context, clientID string) error {
	n, err := t.q.exec(ctx, sqlDeleteSink, clientID)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return err
}

// InsertSinkSecret implements Tx.
func (t *sqlTx) InsertSinkSecret(ctx context.Context, s SinkSecret) error {
	var grace sql.NullInt64
	if s.Grace != nil {
		grace = sql.NullInt64{Int64: s.Grace.Milliseconds(), Valid: true}
	}
	_, err := t.q.exec(ctx, sqlInsertSinkSecret, s.SecretID, s.ClientID, s.Kind, s.Version, s.Stage, grace,
		toMillis(s.DeliveredAt), s.PromoteAt.UnixMilli(), toMillis(s.PromotedAt))
	return err
}

// SinkSecret implements Tx.
func (t *sqlTx) SinkSecret(ctx context.Context, secretID string) (SinkSecret, error) {
	return scanSinkSecret(t.q.queryRow(ctx, sqlSelectSinkSecret, secretID))
}

// MarkSinkDelivered implements Tx.
func (t *sqlTx) MarkSinkDelivered(ctx context.Context, secretID string, at time.Time) (bool, error) {
	n, err := t.q.exec(ctx, sqlSinkDelivered, at.UnixMilli(), secretID)
	return n == 1, err
}

// PromoteSinkSecret implements Tx.
func (t *sqlTx) PromoteSinkSecret(ctx context.Context, secretID string, at time.Time) ([]string, bool, error) {
	n, err := t.q.exec(ctx, sqlSinkPromote, at.UnixMilli(), secretID)
	if err != nil || n == 0 {
		return nil, false, err
	}
	var clientID string
	if err := t.q.queryRow(ctx, sqlSinkClientOf, secretID).Scan(&clientID); err != nil {
		return nil, false, err
	}
	prev, err := queryAll(ctx, t.q, func(r Row) (string, error) {
		var id string
		return id, r.Scan(&id)
	}, sqlSinkCurrentOf, clientID, secretID)
	if err != nil {
		return nil, false, err
	}
	for _, id := range prev {
		if _, err := t.q.exec(ctx, sqlSinkSetStage, SinkStagePrevious, id); err != nil {
			return nil, false, err
		}
	}
	return prev, true, nil
}

// DropSinkSecret implements Tx.
func (t *sqlTx) DropSinkSecret(ctx context.Context, secretID string, at time.Time) error {
	_, err := t.q.exec(ctx, sqlSinkDrop, at.UnixMilli(), secretID)
	return err
}

// Sink implements SinkStore.
func (s *SQL) Sink(ctx context.Context, clientID string) (Sink, error) {
	return read(ctx, s, func(q querier) (Sink, error) { return scanSink(q.queryRow(ctx, sqlSelectSink, clientID)) })
}

// SinkSecret implements SinkStore.
func (s *SQL) SinkSecret(ctx context.Context, secretID string) (SinkSecret, error) {
	return read(ctx, s, func(q querier) (SinkSecret, error) {
		return scanSinkSecret(q.queryRow(ctx, sqlSelectSinkSecret, secretID))
	})
}

// SinkPromotionsDue implements SinkStore.
func (s *SQL) SinkPromotionsDue(ctx context.Context, now time.Time, limit int) ([]SinkSecret, error) {
	return read(ctx, s, func(q querier) ([]SinkSecret, error) {
		return queryAll(ctx, q, scanSinkSecret, sqlSinkPromotionsDue, now.UnixMilli(), limit)
	})
}

// ScheduledSinks implements SinkStore.
func (s *SQL) ScheduledSinks(ctx context.Context, now time.Time) ([]ScheduledSink, error) {
	return read(ctx, s, func(q querier) ([]ScheduledSink, error) {
		return queryAll(ctx, q, func(r Row) (ScheduledSink, error) {
			var k ScheduledSink
			var every int64
			var newest sql.NullInt64
			err := r.Scan(&k.ClientID, &k.Kind, &every, &newest)
			k.RotateEvery, k.NewestAt = time.Duration(every)*time.Millisecond, fromMillis(newest)
			return k, err
		}, sqlScheduledSink, now.UnixMilli())
	})
}
