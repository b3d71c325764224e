package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// OutboxEvent is an event as the outbox stores and delivers it.
type OutboxEvent struct {
	// ID is the webhook-id of every delivery: evt_ and 20 base62
	// characters.
	ID       string
	Type     string
	ClientID string
	SecretID string
	// Payload is the exact body delivered and signed.
	Payload   []byte
	CreatedAt time.Time
}

// Delivery is one event owed to one webhook, as a claim returns it.
type Delivery struct {
	EventID string
	// ClientID and SecretID are the event's (a sink delivery goes to its
	// client's sink).
	ClientID, SecretID string
	// Webhook is the webhook's key (a digest of its URL).
	Webhook string
	// Attempts counts the attempts made, this one included.
	Attempts  int
	Payload   []byte
	CreatedAt time.Time
}

// DeliveryState is where a delivery stands.
type DeliveryState struct {
	Webhook       string
	Attempts      int
	NextAttemptAt time.Time
	DeliveredAt   *time.Time
	FailedAt      *time.Time
	LastError     string
}

// State names the delivery's state: delivered, failed or pending.
func (d DeliveryState) State() string {
	switch {
	case d.DeliveredAt != nil:
		return "delivered"
	case d.FailedAt != nil:
		return "failed"
	}
	return "pending"
}

// EventRecord is an event with its deliveries, for listings.
type EventRecord struct {
	OutboxEvent
	Deliveries []DeliveryState
}

// ExpiryCandidate is a secret, not revoked, whose expiry is within the
// reach of a reminder, with the stage of the last notice sent for it
// (see Tx.AdvanceNotice); -1 when none was.
type ExpiryCandidate struct {
	Secret
	Stage int64
}

// DeliveryOutcome is what FinishDelivery records.
type DeliveryOutcome struct {
	// At is when the attempt ended.
	At time.Time
	// Delivered: the receiver answered 2xx.
	Delivered bool
	// Failed: no more attempts.
	Failed bool
	// Next is the next attempt's time, when neither.
	Next time.Time
	// Error is the attempt's failure, without secrets or URLs.
	Error string
}

// The event types (docs/design.md §10). A webhook with no events
// configured receives all of them.
const (
	EventSecretGenerated            = "secret.generated"
	EventSecretRotated              = "secret.rotated"
	EventSecretRevoked              = "secret.revoked"
	EventSecretExpiring             = "secret.expiring"
	EventSecretExpired              = "secret.expired"
	EventSecretPresentedAfterRevoke = "secret.presented_after_revoke"
	EventSecretLeakReported         = "secret.leak_reported"
	EventSecretCutoverCompleted     = "secret.cutover_completed"
	EventSecretCutoverStalled       = "secret.cutover_stalled"
	EventClientCreated              = "client.created"
	EventClientDeleted              = "client.deleted"
	// EventSecretDelivered: a client's sink acknowledged a new secret
	// (SPEC §15); EventSecretDeliveryFailed: it did not, after the
	// retries. Neither carries the secret.
	EventSecretDelivered      = "secret.delivered"
	EventSecretDeliveryFailed = "secret.delivery_failed"
)

// EventTypes lists every event type, in the order of SPEC §12, then the
// cut-over's (§14).
var EventTypes = []string{
	EventSecretGenerated, EventSecretRotated, EventSecretRevoked, EventSecretExpiring, EventSecretExpired,
	EventSecretPresentedAfterRevoke, EventSecretLeakReported, EventClientCreated, EventClientDeleted,
	EventSecretDelivered, EventSecretDeliveryFailed,
	EventSecretCutoverCompleted, EventSecretCutoverStalled,
}

// The webhook outbox's tables (migration 3) and queries. Every statement
// runs in a write transaction, and none marks it as a change: the outbox
// never moves the store revision, so edges do not refetch for it.
const (
	sqlInsertEvent = `INSERT INTO events (event_id, type, client_id, secret_id, payload, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`
	sqlInsertDelivery = `INSERT INTO event_deliveries (event_id, webhook, next_attempt_at) VALUES ($1, $2, $3)`
	// sqlAdvanceNotice moves a secret's notice stage forward only (stages
	// count down to stageExpired), and touches no row otherwise: on
	// PostgreSQL a second replica's identical statement waits for the
	// first to commit, then finds the stage already there.
	sqlAdvanceNotice = `INSERT INTO expiry_notices (secret_id, stage) VALUES ($1, $2)
		ON CONFLICT (secret_id) DO UPDATE SET stage = excluded.stage WHERE expiry_notices.stage > excluded.stage`
	// sqlClaimDue is followed by the dialect's skipClaimed: another
	// replica's claim in progress is skipped, not waited for.
	sqlClaimDue = `SELECT d.event_id, d.attempts, e.payload, e.created_at, e.client_id, e.secret_id
		FROM event_deliveries d JOIN events e ON e.event_id = d.event_id
		WHERE d.webhook = $1 AND d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= $2
		ORDER BY d.next_attempt_at, e.seq LIMIT $3`
	sqlLeaseDelivery = `UPDATE event_deliveries SET attempts = attempts + 1, next_attempt_at = $1
		WHERE event_id = $2 AND webhook = $3`
	sqlFinishDelivery = `UPDATE event_deliveries SET delivered_at = $1, failed_at = $2, next_attempt_at = $3, last_error = $4
		WHERE event_id = $5 AND webhook = $6 AND attempts = $7 AND delivered_at IS NULL AND failed_at IS NULL`
	sqlPendingDeliveries = `SELECT webhook, COUNT(*) FROM event_deliveries
		WHERE delivered_at IS NULL AND failed_at IS NULL GROUP BY webhook`
	sqlRecentEvents     = `SELECT event_id, type, client_id, secret_id, created_at FROM events ORDER BY seq DESC LIMIT $1`
	sqlRecentDeliveries = `SELECT event_id, webhook, attempts, next_attempt_at, delivered_at, failed_at, last_error
		FROM event_deliveries WHERE event_id IN (SELECT event_id FROM events ORDER BY seq DESC LIMIT $1)
		ORDER BY webhook`
	sqlExpiryCandidates = `SELECT s.secret_id, s.client_id, s.hint, s.expires_at, COALESCE(n.stage, -1)
		FROM secrets s LEFT JOIN expiry_notices n ON n.secret_id = s.secret_id
		WHERE s.revoked_at IS NULL AND s.expires_at > $1 AND s.expires_at <= $2 AND (n.stage IS NULL OR n.stage > 0)
		ORDER BY s.expires_at, s.secret_id`
	sqlPruneDeliveries = `DELETE FROM event_deliveries WHERE event_id IN (SELECT event_id FROM events WHERE created_at < $1)`
	sqlPruneEvents     = `DELETE FROM events WHERE created_at < $1`
)

// InsertEvent implements Tx.
func (t *sqlTx) InsertEvent(ctx context.Context, e OutboxEvent, webhooks []string) error {
	if _, err := t.q.exec(ctx, sqlInsertEvent, e.ID, e.Type, e.ClientID, e.SecretID, string(e.Payload), e.CreatedAt.UnixMilli()); err != nil {
		return fmt.Errorf("writing event: %w", err)
	}
	for _, w := range webhooks {
		if _, err := t.q.exec(ctx, sqlInsertDelivery, e.ID, w, e.CreatedAt.UnixMilli()); err != nil {
			return fmt.Errorf("writing delivery: %w", err)
		}
	}
	return nil
}

// AdvanceNotice implements Tx.
func (t *sqlTx) AdvanceNotice(ctx context.Context, secretID string, stage int64) (bool, error) {
	n, err := t.q.exec(ctx, sqlAdvanceNotice, secretID, stage)
	return n == 1, err
}

// ClaimDeliveries implements OutboxStore.
func (s *SQL) ClaimDeliveries(ctx context.Context, webhook string, now, leaseUntil time.Time, limit int) ([]Delivery, error) {
	return write(ctx, s, func(q querier) ([]Delivery, error) {
		due, err := queryAll(ctx, q, func(r Row) (Delivery, error) {
			d := Delivery{Webhook: webhook}
			var payload string
			var created int64
			err := r.Scan(&d.EventID, &d.Attempts, &payload, &created, &d.ClientID, &d.SecretID)
			d.Attempts++
			d.Payload, d.CreatedAt = []byte(payload), millisTime(created)
			return d, err
		}, sqlClaimDue+s.db.dialect().skipClaimed, webhook, now.UnixMilli(), limit)
		if err != nil {
			return nil, err
		}
		for _, d := range due {
			if _, err := q.exec(ctx, sqlLeaseDelivery, leaseUntil.UnixMilli(), d.EventID, webhook); err != nil {
				return nil, err
			}
		}
		return due, nil
	})
}

// FinishDelivery implements OutboxStore.
func (s *SQL) FinishDelivery(ctx context.Context, d Delivery, o DeliveryOutcome) error {
	var delivered, failed sql.NullInt64
	next := o.Next
	switch {
	case o.Delivered:
		delivered = sql.NullInt64{Int64: o.At.UnixMilli(), Valid: true}
		next = o.At
	case o.Failed:
		failed = sql.NullInt64{Int64: o.At.UnixMilli(), Valid: true}
		next = o.At
	}
	msg := strings.ToValidUTF8(o.Error, "?")
	return s.db.write(ctx, func(q querier) error {
		_, err := q.exec(ctx, sqlFinishDelivery, delivered, failed, next.UnixMilli(), msg, d.EventID, d.Webhook, d.Attempts)
		return err
	})
}

// PendingDeliveries implements OutboxStore.
func (s *SQL) PendingDeliveries(ctx context.Context) (map[string]int, error) {
	type count struct {
		webhook string
		n       int
	}
	counts, err := write(ctx, s, func(q querier) ([]count, error) {
		return queryAll(ctx, q, func(r Row) (count, error) {
			var c count
			return c, r.Scan(&c.webhook, &c.n)
		}, sqlPendingDeliveries)
	})
	out := make(map[string]int, len(counts))
	for _, c := range counts {
		out[c.webhook] = c.n
	}
	return out, err
}

// Events implements OutboxStore.
func (s *SQL) Events(ctx context.Context, limit int) ([]EventRecord, error) {
	return write(ctx, s, func(q querier) ([]EventRecord, error) {
		out, err := queryAll(ctx, q, func(r Row) (EventRecord, error) {
			var e EventRecord
			var created int64
			err := r.Scan(&e.ID, &e.Type, &e.ClientID, &e.SecretID, &created)
			e.CreatedAt, e.Deliveries = millisTime(created), []DeliveryState{}
			return e, err
		}, sqlRecentEvents, limit)
		if err != nil {
			return nil, err
		}
		at := make(map[string]int, len(out))
		for i := range out {
			at[out[i].ID] = i
		}
		type delivery struct {
			event string
			DeliveryState
		}
		ds, err := queryAll(ctx, q, func(r Row) (delivery, error) {
			var d delivery
			var next int64
			var delivered, failed sql.NullInt64
			err := r.Scan(&d.event, &d.Webhook, &d.Attempts, &next, &delivered, &failed, &d.LastError)
			d.NextAttemptAt, d.DeliveredAt, d.FailedAt = millisTime(next), fromMillis(delivered), fromMillis(failed)
			return d, err
		}, sqlRecentDeliveries, limit)
		for _, d := range ds {
			if i, ok := at[d.event]; ok {
				out[i].Deliveries = append(out[i].Deliveries, d.DeliveryState)
			}
		}
		return out, err
	})
}

// ExpiryCandidates implements OutboxStore.
func (s *SQL) ExpiryCandidates(ctx context.Context, from, to time.Time) ([]ExpiryCandidate, error) {
	return write(ctx, s, func(q querier) ([]ExpiryCandidate, error) {
		return queryAll(ctx, q, func(r Row) (ExpiryCandidate, error) {
			var c ExpiryCandidate
			var exp int64
			err := r.Scan(&c.ID, &c.ClientID, &c.Hint, &exp, &c.Stage)
			at := millisTime(exp)
			c.ExpiresAt = &at
			return c, err
		}, sqlExpiryCandidates, from.UnixMilli(), to.UnixMilli())
	})
}

// PruneEvents implements OutboxStore.
func (s *SQL) PruneEvents(ctx context.Context, cutoff time.Time) (int, error) {
	var n int64
	err := s.db.write(ctx, func(q querier) error {
		if _, err := q.exec(ctx, sqlPruneDeliveries, cutoff.UnixMilli()); err != nil {
			return err
		}
		var err error
		n, err = q.exec(ctx, sqlPruneEvents, cutoff.UnixMilli())
		return err
	})
	return int(n), err
}
