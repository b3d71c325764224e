package rules

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// rulesEnv is a Service on a SQLite store, for the tests of the rules'
// inside; the tests of the rules through the API are in package
// controlplane.
type rulesEnv struct {
	t     *testing.T
	st    *store.SQL
	svc   *Service
	admin Actor
}

func newRulesEnv(t *testing.T, hooks ...webhook.Config) *rulesEnv {
	t.Helper()
	st, _ := storetest.SQLite(t)
	svc, err := NewService(context.Background(), st, ServiceOptions{Webhooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	return &rulesEnv{t: t, st: st, svc: svc, admin: Actor{TokenID: "test", Admin: true}}
}

// events lists the events, oldest first.
func (e *rulesEnv) events() []store.EventRecord {
	e.t.Helper()
	evs, err := e.svc.ListEvents(context.Background(), e.admin, MaxPageSize)
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Reverse(evs)
	return evs
}

// revision reads the store's revision.
func (e *rulesEnv) revision() int64 {
	e.t.Helper()
	return storetest.Revision(e.t, e.st)
}

func TestEnqueueRefusesUnknownType(t *testing.T) {
	e := newRulesEnv(t)
	_, err := update(context.Background(), e.svc, func(tx store.Tx) (nothing, error) {
		return nothing{}, e.svc.enqueue(context.Background(), tx, Event{Type: "secret.created"})
	})
	if err == nil || !strings.Contains(err.Error(), "unknown event type") {
		t.Fatalf("err = %v", err)
	}
}

// TestEnqueueForLaterEvents is the outbox API the leak loop's events use
// (presented_after_revoke, leak_reported): one call inside the change's
// transaction; the event rolls back with it, or commits with its data.
func TestEnqueueForLaterEvents(t *testing.T) {
	secret := webhooktest.Secret(t)
	e := newRulesEnv(t,
		webhook.Config{URL: "https://a.example/", Secret: secret, Events: []string{store.EventSecretLeakReported}},
		webhook.Config{URL: "https://b.example/", Secret: secret, Events: []string{store.EventSecretRevoked}},
	)
	ctx := context.Background()
	if _, err := e.svc.CreateClient(ctx, e.admin, "app", "", nil); err != nil {
		t.Fatal(err)
	}
	ns, err := e.svc.GenerateSecret(ctx, e.admin, "app", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leak := Event{Type: store.EventSecretLeakReported, ClientID: "app", SecretID: ns.Secret.ID, Hint: ns.Secret.Hint,
		Data: map[string]any{"url": "https://github.com/o/r/blob/main/x"}}
	boom := errors.New("the change failed")
	_, err = update(ctx, e.svc, func(tx store.Tx) (nothing, error) {
		if err := e.svc.enqueue(ctx, tx, leak); err != nil {
			return nothing{}, err
		}
		return nothing{}, boom
	})
	if !errors.Is(err, boom) || len(e.events()) != 2 {
		t.Fatalf("a rolled-back change left its event: %v, %d events", err, len(e.events()))
	}
	rev := e.revision()
	for _, typ := range []string{store.EventSecretLeakReported, store.EventSecretPresentedAfterRevoke} {
		leak.Type = typ
		if _, err := update(ctx, e.svc, func(tx store.Tx) (nothing, error) { return nothing{}, e.svc.enqueue(ctx, tx, leak) }); err != nil {
			t.Fatal(err)
		}
	}
	if e.revision() != rev {
		t.Fatal("an event alone moved the revision")
	}
	evs := e.events()
	got := evs[len(evs)-2]
	if got.Type != store.EventSecretLeakReported || len(got.Deliveries) != 1 || got.Deliveries[0].Webhook != "a.example" {
		t.Fatalf("leak event %+v: only the webhook that wants it gets a delivery", got)
	}
	if last := evs[len(evs)-1]; len(last.Deliveries) != 0 {
		t.Fatalf("an event no webhook wants is kept without deliveries: %+v", last)
	}
	if d := storetest.EventData(t, e.st, got.ID); d["url"] != leak.Data["url"] || d["secret_id"] != ns.Secret.ID {
		t.Fatalf("data %v", d)
	}
}
