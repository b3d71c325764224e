package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/store"
)

// Sender timing.
const (
	// DefaultPoll is how often the sender looks for due deliveries (it is
	// also woken by every change this process commits).
	DefaultPoll = 2 * time.Second
	// DefaultNoticeScan is how often the expiry notices are looked for.
	DefaultNoticeScan = time.Minute
	// EventRetention is how long events are kept for `events list`.
	EventRetention = 30 * 24 * time.Hour
	// claimBatch is how many deliveries of one webhook a claim takes.
	claimBatch = 10
	// maxBatchesPerPass bounds one pass of the sender per webhook.
	maxBatchesPerPass = 100
	// leaseMargin is added to a batch's worst-case sending time.
	leaseMargin = 30 * time.Second
)

// Options configure a Sender.
type Options struct {
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger receives the sender's warnings and failed attempts.
	// Default: none.
	Logger *zap.Logger
	// Wake tells the sender that a change committed, so that its events
	// go out now rather than at the next poll. Default: none.
	Wake <-chan struct{}
	// Notices enqueues the due expiry notices, every NoticeScan. Default:
	// none.
	Notices func(context.Context) error
	// Poll is how often the sender looks for due deliveries. Default: 2s.
	Poll time.Duration
	// NoticeScan is how often Notices runs. Default: 1m.
	NoticeScan time.Duration
	// Sinks deliver the events bound for clients' webhook sinks.
	// Default: none (they stay queued).
	Sinks *Sinks
}

// Sinks are the Service's side of the deliveries to clients' webhook
// sinks (rules/sinks.go): the outbox holds them under the key
// store.SinkDeliveries, each for its event's client.
type Sinks struct {
	// Target returns the URL and signing secret of a client's webhook
	// sink; store.ErrNotFound when it has none any more (the delivery
	// then fails for good).
	Target func(ctx context.Context, clientID string) (url, signingSecret string, err error)
	// Done is told when a delivery ended: delivered, or failed for good
	// with the last attempt's error.
	Done func(ctx context.Context, d store.Delivery, delivered bool, reason string) error
	// Pass runs the sinks' periodic work (promotions, scheduled
	// rotation) once per poll.
	Pass func(ctx context.Context) error
}

// Sender delivers the outbox's events to the webhooks (a transactional
// outbox: a change and the event that tells of it commit together, in
// the store). It claims due deliveries, POSTs them signed and records the
// outcome, retrying with backoff until DeliveryWindow after the event.
// All state is in the store, so a restart loses nothing and resends at
// most what was in flight; claims are leases written in their own
// transaction (on PostgreSQL with FOR UPDATE SKIP LOCKED), so replicas on
// one database send each event once per webhook.
type Sender struct {
	outbox store.OutboxStore
	hooks  []*Hook
	opts   Options
	client *http.Client
}

// NewSender returns the sender of hooks' deliveries from outbox.
func NewSender(outbox store.OutboxStore, hooks []*Hook, opts Options) *Sender {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	if opts.NoticeScan <= 0 {
		opts.NoticeScan = DefaultNoticeScan
	}
	return &Sender{outbox: outbox, hooks: hooks, opts: opts, client: newClient()}
}

// Run sends until ctx ends: at once, then every poll interval and
// whenever woken, it delivers what is due; every notice-scan interval it
// enqueues the expiry notices, and prunes old events. A panic is logged
// with its stack and the loop goes on. Several senders on one store
// (config reloads, replicas) share the work without sending twice.
func (s *Sender) Run(ctx context.Context) {
	poll := time.NewTicker(s.opts.Poll)
	defer poll.Stop()
	var lastScan time.Time
	for {
		if now := s.opts.Now(); now.Sub(lastScan) >= s.opts.NoticeScan || now.Before(lastScan) {
			lastScan = now
			if s.opts.Notices != nil {
				s.step(ctx, "expiry scan", func() error { return s.opts.Notices(ctx) })
			}
			s.step(ctx, "pruning events", func() error {
				_, err := s.outbox.PruneEvents(ctx, now.Add(-EventRetention))
				return err
			})
		}
		s.step(ctx, "delivering events", func() error { return s.DeliverDue(ctx) })
		if s.opts.Sinks != nil {
			s.step(ctx, "delivering to sinks", func() error { return s.DeliverSinks(ctx) })
			s.step(ctx, "sink schedule", func() error { return s.opts.Sinks.Pass(ctx) })
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-s.opts.Wake:
		}
	}
}

// step runs one step of the sender, logging its error or panic.
func (s *Sender) step(ctx context.Context, what string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Error("panic in the webhook outbox", zap.String("step", what),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	if err := fn(); err != nil && ctx.Err() == nil {
		s.opts.Logger.Warn("webhook outbox step failed", zap.String("step", what), zap.Error(err))
	}
}

// DeliverDue sends every due delivery, each webhook in a goroutine of its
// own (a slow receiver does not hold up the others), its deliveries in
// order. It then refreshes the pending gauge.
func (s *Sender) DeliverDue(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.hooks))
	for i, w := range s.hooks {
		wg.Go(func() { errs[i] = s.deliverTo(ctx, w) })
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
	pending, err := s.outbox.PendingDeliveries(ctx)
	if err != nil {
		return err
	}
	setPending(s.hooks, pending)
	return nil
}

// deliverTo claims and sends the due deliveries of one webhook, batch by
// batch.
func (s *Sender) deliverTo(ctx context.Context, w *Hook) error {
	for range maxBatchesPerPass {
		now := s.opts.Now()
		lease := now.Add(claimBatch*w.timeout + leaseMargin)
		batch, err := s.outbox.ClaimDeliveries(ctx, w.key, now, lease, claimBatch)
		if err != nil {
			return err
		}
		for _, d := range batch {
			if ctx.Err() != nil {
				return nil // the lease runs out; the next loop resends
			}
			if _, err := s.attempt(ctx, w, d); err != nil {
				return err
			}
		}
		if len(batch) < claimBatch {
			return nil
		}
	}
	return nil
}

// sinkLabel names every sink delivery in metrics and logs: clients' sink
// URLs would make the label set unbounded.
const sinkLabel = "sink"

// DeliverSinks sends the due deliveries to clients' webhook sinks, batch
// by batch, each to the sink of its event's client, and tells the
// Service of each that ended (Sinks.Done).
func (s *Sender) DeliverSinks(ctx context.Context) error {
	sk := s.opts.Sinks
	for range maxBatchesPerPass {
		now := s.opts.Now()
		batch, err := s.outbox.ClaimDeliveries(ctx, store.SinkDeliveries, now, now.Add(claimBatch*DefaultTimeout+leaseMargin), claimBatch)
		if err != nil {
			return err
		}
		for _, d := range batch {
			if ctx.Err() != nil {
				return nil // the lease runs out; the next loop resends
			}
			var out store.DeliveryOutcome
			url, secret, err := sk.Target(ctx, d.ClientID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				out = store.DeliveryOutcome{At: s.opts.Now(), Failed: true, Error: "the client has no webhook sink any more"}
				err = s.finish(ctx, d, out)
			case err != nil:
				return err
			default:
				w, berr := Config{URL: url, Secret: secret}.build(0)
				if berr != nil {
					return fmt.Errorf("sink of %s: %w", d.ClientID, berr)
				}
				w.label = sinkLabel
				out, err = s.attempt(ctx, w, d)
			}
			if err != nil {
				return err
			}
			if out.Delivered || out.Failed {
				if err := sk.Done(context.WithoutCancel(ctx), d, out.Delivered, out.Error); err != nil {
					return err
				}
			}
		}
		if len(batch) < claimBatch {
			return nil
		}
	}
	return nil
}

// attempt makes one delivery attempt and records its outcome.
func (s *Sender) attempt(ctx context.Context, w *Hook, d store.Delivery) (store.DeliveryOutcome, error) {
	res := w.deliver(ctx, s.client, d.EventID, d.Payload, s.opts.Now())
	out := store.DeliveryOutcome{At: s.opts.Now(), Delivered: res.ok, Error: res.err}
	switch {
	case res.ok:
		Metrics.Delivered.WithLabelValues(w.label).Inc()
	case res.final:
		out.Failed = true
	default:
		next, ok := nextAttempt(d.Attempts, out.At, d.CreatedAt, res.retryAfter)
		out.Failed, out.Next = !ok, next
	}
	log := s.opts.Logger
	if !res.ok {
		Metrics.AttemptsFailed.WithLabelValues(w.label).Inc()
		if ce := log.Check(zap.InfoLevel, "webhook delivery attempt failed"); ce != nil {
			ce.Write(zap.String("webhook", w.label), zap.String("event_id", d.EventID),
				zap.Int("attempt", d.Attempts), zap.Bool("final", out.Failed), zap.String("error", res.err))
		}
	}
	if out.Failed {
		Metrics.Failed.WithLabelValues(w.label).Inc()
		log.Warn("webhook delivery failed for good", zap.String("webhook", w.label),
			zap.String("event_id", d.EventID), zap.Int("attempts", d.Attempts), zap.String("error", res.err))
	}
	return out, s.finish(ctx, d, out)
}

// finish records an attempt's outcome, even when ctx ended: the attempt
// happened.
func (s *Sender) finish(ctx context.Context, d store.Delivery, out store.DeliveryOutcome) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return s.outbox.FinishDelivery(fctx, d, out)
}
