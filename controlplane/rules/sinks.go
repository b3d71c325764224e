package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/base62"
)

// Delivery sinks (SPEC §15): a client's new secrets go to its sink, not to
// whoever asked for them, and a sink with rotate_every rotates the client
// on a schedule. The plaintext exists only in this process's memory while
// it is handed over: a webhook sink gets it as a JWE to the receiver's
// key, written to the outbox in the transaction that makes the hash
// active (the webhook sender then delivers it, at least once); an AWS
// sink gets it as an AWSPENDING version before the transaction, and the
// hash is stored only when that put succeeded. Either way a secret
// becomes "current" at the sink once edges accept it (revocation_delay
// after it was stored, SinkPass).

// ErrSinkFailed means the client's sink did not take the new secret;
// nothing was stored, and the client's secrets are as they were.
var ErrSinkFailed = errors.New("sink delivery failed")

// errSinkChanged: the client's sink changed between the AWS put and the
// transaction. Nothing is stored.
var errSinkChanged = invalidError("the client's sink changed while the secret was being delivered; try again")

// errNotDue: a scheduled rotation found a newer secret under the lock
// (another replica rotated first).
var errNotDue = errors.New("rotation not due")

// sinkError is ErrSinkFailed with the sink's reason, which never holds
// the secret (sink.Error withholds what quotes it).
type sinkError struct {
	kind string
	err  error
}

func (e *sinkError) Error() string {
	return fmt.Sprintf("the client's %s sink did not take the new secret, so none was made: %v", e.kind, e.err)
}
func (e *sinkError) Is(target error) bool { return target == ErrSinkFailed }

// stagedPut is a value put at an AWS sink before the transaction: its
// version, and the sink's UpdatedAt, which the transaction checks.
type stagedPut struct {
	version   string
	sinkSetAt time.Time
}

// Sink is a client's sink as the API answers it.
type Sink struct {
	Config    sink.Config
	CreatedAt time.Time
	UpdatedAt time.Time
	// SigningSecret is the webhook sink's new signing secret, only in the
	// answer of the SetSink that made it: it is never shown again.
	SigningSecret string
}

// Scheduled rotation and promotion.
const (
	// DefaultRevocationDelay is how long after a secret is stored edges
	// accept it, unless configured: a sink moves it to current then.
	DefaultRevocationDelay = 30 * time.Second
	// scheduledGrace is the grace of a scheduled rotation (the console's
	// default), at most rotate_every, so the next rotation finds room.
	scheduledGrace = 24 * time.Hour
	// promoteBatch bounds the promotions of one pass.
	promoteBatch = 100
	// retryFirst and retryMax bound the wait before a failed scheduled
	// rotation is tried again.
	retryFirst, retryMax = 10 * time.Second, time.Hour
)

// sinkStore returns the store's sink side, or an error saying there is
// none (both of ours have it).
func (s *Service) sinkStore() (store.SinkStore, error) {
	ss, ok := s.store.(store.SinkStore)
	if !ok {
		return nil, errors.New("the store keeps no sinks")
	}
	return ss, nil
}

// GetSink returns a client's sink (owners and admins); ErrNotFound when
// the client, or its sink, does not exist.
func (s *Service) GetSink(ctx context.Context, who Actor, clientID string) (Sink, error) {
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return Sink{}, err
	}
	ss, err := s.sinkStore()
	if err != nil {
		return Sink{}, err
	}
	k, err := ss.Sink(ctx, clientID)
	if err != nil {
		return Sink{}, err
	}
	return sinkView(k)
}

func sinkView(k store.Sink) (Sink, error) {
	var cfg sink.Config
	if err := json.Unmarshal(k.Config, &cfg); err != nil {
		return Sink{}, fmt.Errorf("stored sink of %s: %w", k.ClientID, err)
	}
	return Sink{Config: cfg, CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt}, nil
}

// SetSink gives a client a sink, or replaces its sink (owners and
// admins; audited as client.sink). A webhook sink gets a new signing
// secret, returned once, unless it replaces a webhook sink with the same
// URL, whose signing secret it keeps.
func (s *Service) SetSink(ctx context.Context, who Actor, clientID string, cfg sink.Config) (out Sink, err error) {
	defer func() { s.log(who, "client.sink", clientID, "", err, zap.String("kind", cfg.Kind)) }()
	if err := ValidateClientID(clientID); err != nil {
		return Sink{}, invalidError(err.Error())
	}
	if err := cfg.Validate(); err != nil {
		var fe *sink.FieldError
		if errors.As(err, &fe) {
			return Sink{}, invalidError(fe.Error())
		}
		return Sink{}, err
	}
	every, _ := cfg.RotationPeriod()
	raw, err := json.Marshal(cfg)
	if err != nil {
		return Sink{}, err
	}
	now := s.Now()
	return update(ctx, s, func(tx store.Tx) (Sink, error) {
		if _, err := lockManaged(ctx, tx, who, clientID); err != nil {
			return Sink{}, err
		}
		old, err := tx.Sink(ctx, clientID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Sink{}, err
		}
		out := Sink{Config: cfg, CreatedAt: now, UpdatedAt: now}
		if err == nil {
			out.CreatedAt = old.CreatedAt
		}
		k := store.Sink{ClientID: clientID, Kind: cfg.Kind, Config: raw, RotateEvery: every, UpdatedAt: now}
		if cfg.Kind == sink.KindWebhook {
			if prev, err := sinkView(old); err == nil && old.Kind == sink.KindWebhook && prev.Config.URL == cfg.URL {
				k.SigningSecret = old.SigningSecret
			} else {
				if k.SigningSecret, err = sink.NewSigningSecret(); err != nil {
					return Sink{}, err
				}
				out.SigningSecret = k.SigningSecret
			}
		}
		if err := tx.SetSink(ctx, k); err != nil {
			return Sink{}, err
		}
		detail := "set " + cfg.Kind
		if every > 0 {
			detail += ", rotate_every " + cfg.RotateEvery
		}
		if out.SigningSecret != "" {
			detail += ", new signing secret"
		}
		return out, s.record(ctx, tx, who, "client.sink", clientID, "", detail)
	})
}

// DeleteSink removes a client's sink (owners and admins; audited as
// client.sink). Its new secrets are shown once again, and scheduled
// rotation stops. Deliveries still queued for it fail.
func (s *Service) DeleteSink(ctx context.Context, who Actor, clientID string) (err error) {
	defer func() { s.log(who, "client.sink", clientID, "", err) }()
	if err := ValidateClientID(clientID); err != nil {
		return invalidError(err.Error())
	}
	_, err = update(ctx, s, func(tx store.Tx) (nothing, error) {
		if _, err := lockManaged(ctx, tx, who, clientID); err != nil {
			return nothing{}, err
		}
		if err := tx.DeleteSink(ctx, clientID); err != nil {
			return nothing{}, err
		}
		return nothing{}, s.record(ctx, tx, who, "client.sink", clientID, "", "removed")
	})
	return err
}

// stageAtSink puts a generated secret at the client's AWS sink as
// AWSPENDING, before the transaction that stores it: a failed put stores
// nothing (ErrSinkFailed, with secret.delivery_failed). For other sinks,
// or none, it does nothing: a webhook sink takes the secret inside the
// transaction (toSink).
//
// A put that the transaction then refuses (a client at
// max_active_secrets) would move AWSPENDING off a secret still waiting
// for its promotion, so the room that addSecret checks (room) is checked
// here first; only a race with another change can still get past it.
func (s *Service) stageAtSink(ctx context.Context, who Actor, ns CreatedSecret, room int) (*stagedPut, error) {
	clientID := ns.Secret.ClientID
	ss, ok := s.store.(store.SinkStore)
	if !ok || ns.Plaintext == "" {
		return nil, nil
	}
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return nil, err
	}
	k, err := ss.Sink(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && k.Kind != sink.KindAWSSecretsManager) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	secrets, err := s.store.Secrets(ctx, clientID)
	if err != nil {
		return nil, err
	}
	now, active := s.Now(), 0
	for _, sec := range secrets {
		if sec.Active(now) {
			active++
		}
	}
	if active >= room {
		return nil, ErrTooManyActive
	}
	view, err := sinkView(k)
	if err != nil {
		return nil, err
	}
	version, err := s.putPending(ctx, view.Config, sink.Value{ClientID: clientID, ClientSecret: ns.Plaintext, SecretID: ns.Secret.ID})
	if err != nil {
		s.deliveryFailed(ctx, clientID, ns.Secret.ID, k.Kind, err.Error())
		return nil, &sinkError{kind: k.Kind, err: err}
	}
	return &stagedPut{version: version, sinkSetAt: k.UpdatedAt}, nil
}

// putPending puts v at the AWS sink cfg as AWSPENDING. Each secret is
// put once (attempt 1): a retry makes a new secret, and so a new token.
func (s *Service) putPending(ctx context.Context, cfg sink.Config, v sink.Value) (string, error) {
	a, err := sink.NewAWS(ctx, cfg)
	if err != nil {
		return "", err
	}
	return a.PutPending(ctx, v, 1)
}

// deliveryFailed records that a sink did not take a secret: the event
// secret.delivery_failed, the metric and a warning, none with the secret.
func (s *Service) deliveryFailed(ctx context.Context, clientID, secretID, kind, reason string) {
	Metrics.SinkDeliveries.WithLabelValues(kind, "failed").Inc()
	s.logger.Warn("sink delivery failed", zap.String("client_id", clientID), zap.String("secret_id", secretID),
		zap.String("kind", kind), zap.String("error", reason))
	_, err := update(ctx, s, func(tx store.Tx) (nothing, error) {
		return nothing{}, s.enqueue(ctx, tx, Event{Type: store.EventSecretDeliveryFailed, ClientID: clientID, SecretID: secretID,
			Data: map[string]any{"kind": kind, "error": reason}})
	})
	if err != nil {
		s.logger.Warn("recording a failed sink delivery", zap.String("client_id", clientID), zap.Error(err))
	}
}

// toSink hands a new secret to the client's sink k inside the
// transaction that stores it, and returns the sink's kind. A webhook sink
// gets the JWE in the outbox (only ciphertext is stored); an AWS sink was
// given the value already (stageAtSink), and the transaction records its
// version. grace, for a webhook sink, is the rotation's, applied when the
// sink acknowledges the secret.
func (s *Service) toSink(ctx context.Context, tx store.Tx, k store.Sink, ns CreatedSecret, grace *time.Duration) (string, error) {
	clientID, secretID, now := ns.Secret.ClientID, ns.Secret.ID, ns.Secret.CreatedAt
	if ns.Plaintext == "" {
		return "", invalidf("client %s hands its secrets to a %s sink, which an import cannot reach: remove the sink to import", clientID, k.Kind)
	}
	view, err := sinkView(k)
	if err != nil {
		return "", err
	}
	rec := store.SinkSecret{SecretID: secretID, ClientID: clientID, Kind: k.Kind, Stage: store.SinkStagePending,
		PromoteAt: now.Add(s.revocationDelay), Grace: grace}
	switch k.Kind {
	case sink.KindWebhook:
		if ns.staged != nil {
			return "", errSinkChanged
		}
		jwe, err := view.Config.Encrypt(ns.Plaintext)
		if err != nil {
			return "", err
		}
		if err := s.sinkEvent(ctx, tx, sink.Event{ClientID: clientID, SecretID: secretID, Stage: sink.StagePending, SecretJWE: jwe}); err != nil {
			return "", err
		}
	case sink.KindAWSSecretsManager:
		if ns.staged == nil || !ns.staged.sinkSetAt.Equal(k.UpdatedAt) {
			return "", errSinkChanged
		}
		rec.Version, rec.DeliveredAt = ns.staged.version, &now
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretDelivered, ClientID: clientID, SecretID: secretID, Hint: ns.Secret.Hint,
			Data: map[string]any{"kind": k.Kind, "stage": sink.StagePending}}); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("stored sink of %s has unknown kind %q", clientID, k.Kind)
	}
	return k.Kind, tx.InsertSinkSecret(ctx, rec)
}

// sinkEvent writes an event for the client's webhook sink to the outbox,
// inside tx; the webhook sender delivers it (SinkTarget, SinkDelivered).
func (s *Service) sinkEvent(ctx context.Context, tx store.Tx, ev sink.Event) error {
	id, err := base62.Random(idRandLen)
	if err != nil {
		return err
	}
	now := s.Now()
	body, err := ev.Body(now)
	if err != nil {
		return err
	}
	return tx.InsertEvent(ctx, store.OutboxEvent{ID: "evt_" + id, Type: store.EventSinkDelivery, ClientID: ev.ClientID,
		SecretID: ev.SecretID, Payload: body, CreatedAt: now}, []string{store.SinkDeliveries})
}

// handedOver is the answer of a committed generate or rotate: without
// the plaintext when a sink took it. An AWS sink's put counts as
// delivered here; a webhook sink's when it acknowledges (SinkDelivered).
func (s *Service) handedOver(ns CreatedSecret, to string) CreatedSecret {
	ns.staged = nil
	if to == "" {
		return ns
	}
	ns.Plaintext, ns.DeliveredTo = "", to
	if to == sink.KindAWSSecretsManager {
		Metrics.SinkDeliveries.WithLabelValues(to, "delivered").Inc()
	}
	return ns
}

// sinkDetail adds where the secret went to an audit detail.
func sinkDetail(detail, to string) string {
	if to == "" {
		return detail
	}
	return strings.TrimPrefix(detail+"; delivered to the "+to+" sink", "; ")
}

// SinkTarget returns where the webhook sender delivers a client's sink
// events: the sink's URL and signing secret. ErrNotFound when the client
// has no webhook sink any more.
func (s *Service) SinkTarget(ctx context.Context, clientID string) (url, signingSecret string, err error) {
	ss, err := s.sinkStore()
	if err != nil {
		return "", "", err
	}
	k, err := ss.Sink(ctx, clientID)
	if err != nil {
		return "", "", err
	}
	if k.Kind != sink.KindWebhook {
		return "", "", store.ErrNotFound
	}
	view, err := sinkView(k)
	if err != nil {
		return "", "", err
	}
	return view.Config.URL, k.SigningSecret, nil
}

// SinkDelivered records the end of a webhook sink event's delivery, as
// the webhook sender reports it. For the event that carried the secret
// (stage pending): delivered, the secret counts as delivered (once,
// whatever the replicas), with secret.delivered, and a rotation's grace
// now applies to the client's other secrets; failed for good, the
// undelivered secret is revoked (nobody holds it), the others are left as
// they were, and secret.delivery_failed tells. Later stage events only
// count in the metric.
func (s *Service) SinkDelivered(ctx context.Context, d store.Delivery, delivered bool, reason string) error {
	var body struct {
		Data sink.Event `json:"data"`
	}
	if err := json.Unmarshal(d.Payload, &body); err != nil {
		return fmt.Errorf("sink event %s: %w", d.EventID, err)
	}
	if body.Data.Stage != sink.StagePending {
		return nil
	}
	if !delivered {
		Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "failed").Inc()
		s.logger.Warn("sink delivery failed", zap.String("client_id", d.ClientID), zap.String("secret_id", d.SecretID),
			zap.String("kind", sink.KindWebhook), zap.String("error", reason))
		_, err := update(ctx, s, func(tx store.Tx) (nothing, error) {
			return nothing{}, s.undelivered(ctx, tx, d.ClientID, d.SecretID, reason)
		})
		return ignoreGone(err)
	}
	marked, err := update(ctx, s, func(tx store.Tx) (bool, error) {
		return s.delivered(ctx, tx, d.ClientID, d.SecretID)
	})
	if marked {
		Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "delivered").Inc()
	}
	return ignoreGone(err)
}

// ignoreGone: a client deleted meanwhile has nothing left to record.
func ignoreGone(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// delivered marks a webhook sink's secret delivered and applies the
// rotation's grace to the client's older active secrets, once.
func (s *Service) delivered(ctx context.Context, tx store.Tx, clientID, secretID string) (bool, error) {
	if _, err := tx.LockClient(ctx, clientID); err != nil {
		return false, err
	}
	now := s.Now()
	marked, err := tx.MarkSinkDelivered(ctx, secretID, now)
	if err != nil || !marked {
		return false, err
	}
	rec, err := tx.SinkSecret(ctx, secretID)
	if err != nil {
		return false, err
	}
	secrets, err := tx.Secrets(ctx, clientID)
	if err != nil {
		return false, err
	}
	var hint string
	var created time.Time
	stillActive := false
	for _, sec := range secrets {
		if sec.ID == secretID {
			hint, created, stillActive = sec.Hint, sec.CreatedAt, sec.Active(now)
		}
	}
	data := map[string]any{"kind": sink.KindWebhook, "stage": sink.StagePending}
	// A secret revoked before its delivery leaves the others as they are.
	if rec.Grace != nil && stillActive {
		var expiring, revoked []string
		until := now.Add(*rec.Grace)
		for _, old := range secrets {
			if old.ID == secretID || !old.Active(now) || !old.CreatedAt.Before(created) {
				continue
			}
			switch {
			case *rec.Grace == 0:
				if err := tx.Revoke(ctx, old.ID, now); err != nil {
					return false, err
				}
				revoked = append(revoked, old.ID)
				if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: old.ID, Hint: old.Hint,
					Data: map[string]any{"revoked_at": now, "reason": "rotation"}}); err != nil {
					return false, err
				}
			case old.ExpiresAt == nil || until.Before(*old.ExpiresAt):
				if err := tx.SetExpiry(ctx, old.ID, until); err != nil {
					return false, err
				}
				expiring = append(expiring, old.ID)
			}
		}
		data["expiring"], data["revoked"] = nonNil(expiring), nonNil(revoked)
	}
	if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretDelivered, ClientID: clientID, SecretID: secretID, Hint: hint,
		Data: data}); err != nil {
		return false, err
	}
	return true, s.record(ctx, tx, Actor{TokenID: "sink"}, "secret.delivered", clientID, secretID, "delivered to the webhook sink")
}

// undelivered revokes a secret its webhook sink never acknowledged, and
// tells with secret.delivery_failed; the client's other secrets stay as
// they were.
func (s *Service) undelivered(ctx context.Context, tx store.Tx, clientID, secretID, reason string) error {
	if _, err := tx.LockClient(ctx, clientID); err != nil {
		return err
	}
	now := s.Now()
	secrets, err := tx.Secrets(ctx, clientID)
	if err != nil {
		return err
	}
	revoked := false
	for _, sec := range secrets {
		if sec.ID != secretID || !sec.Active(now) {
			continue
		}
		if err := tx.Revoke(ctx, secretID, now); err != nil {
			return err
		}
		revoked = true
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: secretID, Hint: sec.Hint,
			Data: map[string]any{"revoked_at": now, "reason": "sink_delivery_failed"}}); err != nil {
			return err
		}
	}
	if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretDeliveryFailed, ClientID: clientID, SecretID: secretID,
		Data: map[string]any{"kind": sink.KindWebhook, "error": reason, "revoked": revoked}}); err != nil {
		return err
	}
	return s.record(ctx, tx, Actor{TokenID: "sink"}, "secret.delivery_failed", clientID, secretID, "undelivered; revoked")
}

// SinkPass does the sinks' periodic work, for the loop the control plane
// runs (every poll of its webhook sender): it promotes delivered secrets
// whose revocation_delay has passed (AWS: AWSCURRENT moves; webhook: the
// current and previous stage events), then rotates the clients whose
// schedule is due.
func (s *Service) SinkPass(ctx context.Context) error {
	ss, err := s.sinkStore()
	if err != nil {
		return nil
	}
	return errors.Join(s.promoteDue(ctx, ss), s.rotateDue(ctx, ss))
}

// promoteDue moves each delivered secret whose promotion time has come
// to current at its sink.
func (s *Service) promoteDue(ctx context.Context, ss store.SinkStore) error {
	due, err := ss.SinkPromotionsDue(ctx, s.Now(), promoteBatch)
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range due {
		errs = append(errs, s.promote(ctx, ss, rec))
	}
	return errors.Join(errs...)
}

func (s *Service) promote(ctx context.Context, ss store.SinkStore, rec store.SinkSecret) error {
	if active, err := s.isActive(ctx, rec.ClientID, rec.SecretID); err != nil || !active {
		if err != nil {
			return ignoreGone(err)
		}
		// Revoked (or expired) before it became current: the sink keeps
		// the secret it has.
		_, err := update(ctx, s, func(tx store.Tx) (nothing, error) {
			return nothing{}, tx.DropSinkSecret(ctx, rec.SecretID, s.Now())
		})
		return err
	}
	k, err := ss.Sink(ctx, rec.ClientID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	same := err == nil && k.Kind == rec.Kind
	if same && rec.Kind == sink.KindAWSSecretsManager {
		view, err := sinkView(k)
		if err != nil {
			return err
		}
		a, err := sink.NewAWS(ctx, view.Config)
		if err != nil {
			return err
		}
		// Idempotent: a replica that promotes too, or a retry after a
		// failure half way, finishes the move.
		if err := a.Promote(ctx, rec.Version); err != nil {
			return fmt.Errorf("promoting %s at its sink: %w", rec.SecretID, err)
		}
	}
	_, err = update(ctx, s, func(tx store.Tx) (nothing, error) {
		prev, ok, err := tx.PromoteSinkSecret(ctx, rec.SecretID, s.Now())
		if err != nil || !ok || !same || rec.Kind != sink.KindWebhook {
			return nothing{}, err
		}
		if err := s.sinkEvent(ctx, tx, sink.Event{ClientID: rec.ClientID, SecretID: rec.SecretID, Stage: sink.StageCurrent}); err != nil {
			return nothing{}, err
		}
		for _, id := range prev {
			if err := s.sinkEvent(ctx, tx, sink.Event{ClientID: rec.ClientID, SecretID: id, Stage: sink.StagePrevious}); err != nil {
				return nothing{}, err
			}
		}
		return nothing{}, nil
	})
	return err
}

// isActive reports whether a client's secret is active now.
func (s *Service) isActive(ctx context.Context, clientID, secretID string) (bool, error) {
	secrets, err := s.store.Secrets(ctx, clientID)
	if err != nil {
		return false, err
	}
	now := s.Now()
	for _, sec := range secrets {
		if sec.ID == secretID {
			return sec.Active(now), nil
		}
	}
	return false, nil
}

// retryState is when a failed scheduled rotation of a client may be
// tried again, and how long the wait after the next failure is.
type retryState struct {
	at   time.Time
	wait time.Duration
}

// rotateDue rotates, through its sink, each client whose newest active
// secret is older than its sink's rotate_every. A failure (a sink that
// is down, a client at max_active_secrets because the last rotation has
// not finished) is retried with backoff, from 10s to 1h.
func (s *Service) rotateDue(ctx context.Context, ss store.SinkStore) error {
	now := s.Now()
	list, err := ss.ScheduledSinks(ctx, now)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range list {
		if k.NewestAt == nil || now.Before(k.NewestAt.Add(k.RotateEvery)) || !s.sched.due(k.ClientID, now) {
			continue
		}
		grace := min(scheduledGrace, k.RotateEvery)
		_, err := s.rotate(ctx, Actor{TokenID: "schedule", Admin: true}, k.ClientID, grace, GenerateOptions{}, now.Add(-k.RotateEvery))
		switch {
		case err == nil, errors.Is(err, errNotDue):
			s.sched.ok(k.ClientID)
		default:
			s.sched.failed(k.ClientID, now)
			if !errors.Is(err, ErrSinkFailed) && !errors.Is(err, ErrTooManyActive) {
				errs = append(errs, fmt.Errorf("scheduled rotation of %s: %w", k.ClientID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// schedule keeps the retry state of failed scheduled rotations, in
// memory: a restart retries at once.
type schedule struct {
	mu    sync.Mutex
	retry map[string]retryState
}

func (c *schedule) due(clientID string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.retry[clientID]
	return !ok || !now.Before(r.at)
}

func (c *schedule) ok(clientID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.retry, clientID)
}

func (c *schedule) failed(clientID string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retry == nil {
		c.retry = map[string]retryState{}
	}
	r := c.retry[clientID]
	r.wait = min(max(r.wait*2, retryFirst), retryMax)
	r.at = now.Add(r.wait)
	c.retry[clientID] = r
}
