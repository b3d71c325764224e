package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/base62"
)

// The transactional outbox (SPEC §12). A change and the event that tells
// of it commit together: the Service writes the event, and one delivery
// row per webhook that wants it, inside the change's store transaction
// (Service.enqueue). A sender loop (Service.RunOutbox) then claims due
// deliveries, POSTs them signed, and records the outcome, retrying with
// backoff until DeliveryWindow after the event. All state is in the
// store, so a restart loses nothing and resends at most what was in
// flight; claims are leases written in their own transaction (on
// PostgreSQL with FOR UPDATE SKIP LOCKED), so replicas on one database
// send each event once per webhook.
//
// Code that adds an event type (tombstones, leak reports) calls, inside
// the fn of its store transaction:
//
//	err := s.enqueue(ctx, tx, Event{
//		Type: EventSecretLeakReported, ClientID: c, SecretID: id, Hint: hint,
//		Data: map[string]any{"url": reportURL},
//	})
//
// and nothing else: the event commits or rolls back with the change, and
// the sender is woken after the commit by the Service's update.

// Event is one change, as webhooks hear of it. It never holds a secret:
// ids, hints and times only.
type Event struct {
	// Type is one of EventTypes.
	Type string
	// ClientID is the client the event is about.
	ClientID string
	// SecretID and Hint name the secret, for secret.* events.
	SecretID string
	Hint     string
	// Data holds the type's other fields; values must encode to JSON.
	Data map[string]any
}

// Outbox timing.
const (
	// DefaultOutboxPoll is how often the sender looks for due deliveries
	// (it is also woken by every change this process commits).
	DefaultOutboxPoll = 2 * time.Second
	// DefaultExpiryScan is how often expiry reminders are looked for.
	DefaultExpiryScan = time.Minute
	// EventRetention is how long events are kept for `events list`.
	EventRetention = 30 * 24 * time.Hour
	// expiredLookback bounds how long after its expiry a secret still
	// gets secret.expired: a control plane down for longer, or upgraded
	// over old data, does not announce ancient expiries.
	expiredLookback = 7 * 24 * time.Hour
	// claimBatch is how many deliveries of one webhook a claim takes.
	claimBatch = 10
	// maxBatchesPerPass bounds one pass of the sender per webhook.
	maxBatchesPerPass = 100
	// leaseMargin is added to a batch's worst-case sending time.
	leaseMargin = 30 * time.Second
	// stageExpired is the notice stage of secret.expired; reminder
	// stages are their offsets in milliseconds.
	stageExpired = 0
)

// enqueue writes ev to the outbox inside tx, with a delivery for each
// configured webhook that wants its type; the event is kept (for `events
// list`) even when none does. It must be called inside the fn of a store
// transaction: the event then commits with the change or not at all. It
// does not move the store revision. See the comment at the top of this
// file.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, ev Event) error {
	if !slices.Contains(EventTypes, ev.Type) {
		return fmt.Errorf("enqueue: unknown event type %q", ev.Type)
	}
	id, err := base62.Random(idRandLen)
	if err != nil {
		return err
	}
	now := s.Now()
	data := map[string]any{"client_id": ev.ClientID}
	if ev.SecretID != "" {
		data["secret_id"] = ev.SecretID
		data["hint"] = ev.Hint
	}
	for k, v := range ev.Data {
		data[k] = v
	}
	payload, err := json.Marshal(struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}{ev.Type, now, data})
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", ev.Type, err)
	}
	var hooks []string
	for _, w := range s.hooks {
		if w.wants(ev.Type) {
			hooks = append(hooks, w.key)
		}
	}
	return tx.InsertEvent(ctx, store.OutboxEvent{
		ID: "evt_" + id, Type: ev.Type, ClientID: ev.ClientID, SecretID: ev.SecretID,
		Payload: payload, CreatedAt: now,
	}, hooks)
}

// wakeOutbox tells the sender that a change committed, so that its events
// go out now rather than at the next poll.
func (s *Service) wakeOutbox() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RunOutbox runs the sender until ctx ends: at once, then every poll
// interval and whenever this process commits a change, it delivers what
// is due; every expiry-scan interval it enqueues expiry reminders and
// secret.expired, and prunes old events. A panic is logged with its stack
// and the loop goes on. Several loops on one store (config reloads,
// replicas) share the work without sending twice.
func (s *Service) RunOutbox(ctx context.Context) {
	ob, ok := s.store.(store.OutboxStore)
	if !ok {
		s.logger.Warn("the store keeps no outbox: webhooks and expiry reminders are off")
		return
	}
	poll := time.NewTicker(s.outboxPoll)
	defer poll.Stop()
	var lastScan time.Time
	for {
		if now := s.now(); now.Sub(lastScan) >= s.expiryScan || now.Before(lastScan) {
			lastScan = now
			s.outboxStep(ctx, "expiry scan", func() error { return s.scanExpiries(ctx, ob) })
			s.outboxStep(ctx, "pruning events", func() error {
				_, err := ob.PruneEvents(ctx, s.Now().Add(-EventRetention))
				return err
			})
		}
		s.outboxStep(ctx, "delivering events", func() error { return s.deliverDue(ctx, ob) })
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-s.wake:
		}
	}
}

// outboxStep runs one step of the sender, logging its error or panic.
func (s *Service) outboxStep(ctx context.Context, what string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("panic in the webhook outbox", zap.String("step", what),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	if err := fn(); err != nil && ctx.Err() == nil {
		s.logger.Warn("webhook outbox step failed", zap.String("step", what), zap.Error(err))
	}
}

// deliverDue sends every due delivery, each webhook in a goroutine of its
// own (a slow receiver does not hold up the others), its deliveries in
// order. It then refreshes the pending gauge.
func (s *Service) deliverDue(ctx context.Context, ob store.OutboxStore) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.hooks))
	for i, w := range s.hooks {
		wg.Go(func() { errs[i] = s.deliverTo(ctx, ob, w) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if len(s.hooks) == 0 {
		return nil
	}
	pending, err := ob.PendingDeliveries(ctx)
	if err != nil {
		return err
	}
	setPending(s.hooks, pending)
	return nil
}

// deliverTo claims and sends the due deliveries of one webhook, batch by
// batch.
func (s *Service) deliverTo(ctx context.Context, ob store.OutboxStore, w *webhook) error {
	for range maxBatchesPerPass {
		now := s.now()
		lease := now.Add(claimBatch*w.timeout + leaseMargin)
		batch, err := ob.ClaimDeliveries(ctx, w.key, now, lease, claimBatch)
		if err != nil {
			return err
		}
		for _, d := range batch {
			if ctx.Err() != nil {
				return nil // the lease runs out; the next loop resends
			}
			if err := s.attempt(ctx, ob, w, d); err != nil {
				return err
			}
		}
		if len(batch) < claimBatch {
			return nil
		}
	}
	return nil
}

// attempt makes one delivery attempt and records its outcome.
func (s *Service) attempt(ctx context.Context, ob store.OutboxStore, w *webhook, d store.Delivery) error {
	res := w.deliver(ctx, s.httpClient, d.EventID, d.Payload, s.now())
	out := store.DeliveryOutcome{At: s.now(), Delivered: res.ok, Error: res.err}
	switch {
	case res.ok:
		webhookMetrics.delivered.WithLabelValues(w.label).Inc()
	case res.final:
		out.Failed = true
	default:
		next, ok := nextAttempt(d.Attempts, out.At, d.CreatedAt, res.retryAfter)
		out.Failed, out.Next = !ok, next
	}
	if !res.ok {
		webhookMetrics.attemptsFailed.WithLabelValues(w.label).Inc()
		if ce := s.logger.Check(zap.InfoLevel, "webhook delivery attempt failed"); ce != nil {
			ce.Write(zap.String("webhook", w.label), zap.String("event_id", d.EventID),
				zap.Int("attempt", d.Attempts), zap.Bool("final", out.Failed), zap.String("error", res.err))
		}
	}
	if out.Failed {
		webhookMetrics.failed.WithLabelValues(w.label).Inc()
		s.logger.Warn("webhook delivery failed for good", zap.String("webhook", w.label),
			zap.String("event_id", d.EventID), zap.Int("attempts", d.Attempts), zap.String("error", res.err))
	}
	// Record even when ctx ended: the attempt happened.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return ob.FinishDelivery(fctx, d, out)
}

// scanExpiries enqueues secret.expiring for each reminder offset a secret
// has crossed and secret.expired for each secret that has expired, once
// per (secret, stage): the stage recorded per secret (Tx.AdvanceNotice)
// only moves forward, in the same transaction as the event, so restarts
// and replicas do not repeat a notice. A secret that crossed several
// offsets since the last scan (a control plane that was down, a rotation
// that set a near expiry) gets only the nearest one.
func (s *Service) scanExpiries(ctx context.Context, ob store.OutboxStore) error {
	now := s.Now()
	var reach time.Duration
	for _, r := range s.reminders {
		reach = max(reach, r)
	}
	cands, err := ob.ExpiryCandidates(ctx, now.Add(-expiredLookback), now.Add(reach))
	if err != nil {
		return err
	}
	for _, c := range cands {
		stage, ok := noticeStage(s.reminders, *c.ExpiresAt, now)
		if !ok || (c.Stage >= 0 && c.Stage <= stage) {
			continue
		}
		ev := Event{ClientID: c.ClientID, SecretID: c.ID, Hint: c.Hint,
			Data: map[string]any{"expires_at": c.ExpiresAt.UTC()}}
		if stage == stageExpired {
			ev.Type = EventSecretExpired
		} else {
			ev.Type = EventSecretExpiring
			ev.Data["reminder"] = formatOffset(time.Duration(stage) * time.Millisecond)
		}
		_, err := update(ctx, s, func(tx store.Tx) (nothing, error) {
			advanced, err := tx.AdvanceNotice(ctx, c.ID, stage)
			if err != nil || !advanced {
				return nothing{}, err
			}
			return nothing{}, s.enqueue(ctx, tx, ev)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// noticeStage is the notice due for a secret expiring at exp, at now:
// stageExpired once it has expired, else the smallest reminder offset
// already crossed (in milliseconds); ok is false when none is due.
func noticeStage(reminders []time.Duration, exp, now time.Time) (stage int64, ok bool) {
	if !exp.After(now) {
		return stageExpired, true
	}
	left := exp.Sub(now)
	best := time.Duration(-1)
	for _, r := range reminders {
		if left <= r && (best < 0 || r < best) {
			best = r
		}
	}
	if best < 0 {
		return 0, false
	}
	return best.Milliseconds(), true
}

// formatOffset writes a reminder offset the way it is configured: whole
// hours as 24h, else Go's form.
func formatOffset(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}
