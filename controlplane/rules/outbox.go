package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"

	"github.com/rotagate/rotagate/internal/base62"
)

// The transactional outbox (docs/design.md §10), the rules' side. A change
// and the event that tells of it commit together: the Service writes the
// event, and one delivery row per webhook that wants it, inside the
// change's store transaction (Service.enqueue). The sender
// (webhook.Sender) then delivers them, and runs ScanExpiries for the
// expiry notices.
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

// Expiry notices.
const (
	// expiredLookback bounds how long after its expiry a secret still
	// gets secret.expired: a control plane down for longer, or upgraded
	// over old data, does not announce ancient expiries.
	expiredLookback = 7 * 24 * time.Hour
	// stageExpired is the notice stage of secret.expired; reminder
	// stages are their offsets in milliseconds.
	stageExpired = 0
)

// DefaultExpiryReminders are the offsets before a secret's expires_at at
// which a secret.expiring event fires.
var DefaultExpiryReminders = []time.Duration{720 * time.Hour, 168 * time.Hour, 24 * time.Hour}

// validateReminders checks expiry reminder offsets: positive, distinct,
// and at most a year.
func validateReminders(ds []time.Duration) error {
	seen := map[time.Duration]bool{}
	for _, d := range ds {
		if d <= 0 || d > 366*24*time.Hour {
			return fmt.Errorf("expiry_reminders: %s is not between 0 and 366 days", d)
		}
		if seen[d] {
			return fmt.Errorf("expiry_reminders: %s given twice", d)
		}
		seen[d] = true
	}
	return nil
}

// enqueue writes ev to the outbox inside tx, with a delivery for each
// configured webhook that wants its type; the event is kept (for `events
// list`) even when none does. It must be called inside the fn of a store
// transaction: the event then commits with the change or not at all. It
// does not move the store revision. See the comment at the top of this
// file.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, ev Event) error {
	if !slices.Contains(store.EventTypes, ev.Type) {
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
		if w.Wants(ev.Type) {
			hooks = append(hooks, w.Key())
		}
	}
	return tx.InsertEvent(ctx, store.OutboxEvent{
		ID: "evt_" + id, Type: ev.Type, ClientID: ev.ClientID, SecretID: ev.SecretID,
		Payload: payload, CreatedAt: now,
	}, hooks)
}

// Committed is signalled after each change this Service commits, so that
// the webhook sender (webhook.Sender) sends its events at once.
func (s *Service) Committed() <-chan struct{} { return s.wake }

// wakeOutbox tells the sender that a change committed, so that its events
// go out now rather than at the next poll.
func (s *Service) wakeOutbox() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ScanExpiries enqueues secret.expiring for each reminder offset a secret
// has crossed and secret.expired for each secret that has expired, once
// per (secret, stage): the stage recorded per secret (Tx.AdvanceNotice)
// only moves forward, in the same transaction as the event, so restarts
// and replicas do not repeat a notice. A secret that crossed several
// offsets since the last scan (a control plane that was down, a rotation
// that set a near expiry) gets only the nearest one.
func (s *Service) ScanExpiries(ctx context.Context) error {
	ob, ok := s.store.(store.OutboxStore)
	if !ok {
		return nil
	}
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
			ev.Type = store.EventSecretExpired
		} else {
			ev.Type = store.EventSecretExpiring
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
