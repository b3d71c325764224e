package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// withWebhooks configures webhooks on the env's Service.
func withWebhooks(hooks ...webhook.Config) envOption {
	return func(s *rules.ServiceOptions, _ *Options) { s.Webhooks = hooks }
}

// withClock has the Service read c instead of the env's own clock.
func withClock(c *cptest.Clock) envOption {
	return func(s *rules.ServiceOptions, _ *Options) { s.Now = c.Now }
}

// withReminders sets the expiry reminder offsets.
func withReminders(ds ...time.Duration) envOption {
	return func(s *rules.ServiceOptions, _ *Options) { s.ExpiryReminders = ds }
}

var admin = cptest.Root

// events lists the newest events, oldest first.
func (e *env) events() []store.EventRecord {
	e.T.Helper()
	evs, err := e.Svc.ListEvents(context.Background(), admin, rules.MaxPageSize)
	if err != nil {
		e.T.Fatal(err)
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

func eventTypes(evs []store.EventRecord) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

// storedPayloads reads every stored payload straight from the store.
func storedPayloads(t *testing.T, st store.Store) []string {
	t.Helper()
	var out []string
	_, err := st.Update(context.Background(), func(tx store.Tx) error {
		out = nil
		rs, err := tx.(store.RawTx).Query(context.Background(), `SELECT payload FROM events ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var p string
			if err := rs.Scan(&p); err != nil {
				return err
			}
			out = append(out, p)
		}
		return rs.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testEventsCommitWithTheChange: every action writes its event in the
// change's transaction, a refused action writes none, the events never
// move the revision, and no payload holds a secret.
func testEventsCommitWithTheChange(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	ctx := context.Background()
	e.MustClient("app")
	rev := e.Revision()
	ns := e.MustGenerate("app")
	if e.Revision() != rev+1 {
		t.Fatalf("revision moved by %d for one change", e.Revision()-rev)
	}
	at := e.MustGenerate("app") // at max_active_secrets (2) now
	if _, err := e.Svc.GenerateSecret(ctx, admin, "app", rules.GenerateOptions{}); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatalf("third secret: %v", err)
	}
	rot, err := e.Svc.RotateSecret(ctx, admin, "app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.RevokeSecret(ctx, admin, "app", rot.Secret.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Svc.DeleteClient(ctx, admin, "app"); err != nil {
		t.Fatal(err)
	}
	want := []string{store.EventClientCreated, store.EventSecretGenerated, store.EventSecretGenerated,
		store.EventSecretRotated, store.EventSecretRevoked, store.EventSecretRevoked, store.EventSecretRevoked, store.EventClientDeleted}
	evs := e.events()
	if got := eventTypes(evs); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", got, want)
	}
	if evs[1].SecretID != ns.Secret.ID || evs[3].SecretID != rot.Secret.ID || evs[0].ClientID != "app" {
		t.Fatalf("events name the wrong things: %+v", evs)
	}
	revoked := map[string]bool{evs[4].SecretID: true, evs[5].SecretID: true}
	if !revoked[ns.Secret.ID] || !revoked[at.Secret.ID] || evs[6].SecretID != rot.Secret.ID {
		t.Fatalf("a rotation without grace announces each revoked secret: %+v", evs[4:7])
	}
	payloads := storedPayloads(t, e.Store)
	for _, p := range payloads {
		for _, plain := range []string{ns.Plaintext, at.Plaintext, rot.Plaintext} {
			if strings.Contains(p, plain) || strings.Contains(p, plain[len(plain)-20:]) {
				t.Fatalf("a payload holds a secret: %s", cptest.Redact([]byte(p)))
			}
		}
		var body struct {
			Type      string         `json:"type"`
			Timestamp time.Time      `json:"timestamp"`
			Data      map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(p), &body); err != nil || body.Type == "" || body.Timestamp.IsZero() || body.Data["client_id"] != "app" {
			t.Fatalf("payload %s: %v", p, err)
		}
	}
	var gen map[string]any
	json.Unmarshal([]byte(payloads[1]), &gen)
	if d := gen["data"].(map[string]any); d["secret_id"] != ns.Secret.ID || d["hint"] != ns.Secret.Hint {
		t.Fatalf("secret.generated data: %v", d)
	}
}

// testClaimsAreExclusive: a claimed delivery is leased; another handle
// (a replica) gets nothing until the lease runs out; a finish from a lost
// claim changes nothing.
func testClaimsAreExclusive(t *testing.T, k storeKit) {
	st, other := k.open(t)
	e := newEnvOn(t, st, "", withWebhooks(webhook.Config{URL: "https://hooks.example/in", Secret: webhooktest.Secret(t)}))
	ctx := context.Background()
	e.MustClient("app")
	key := e.Svc.Webhooks()[0].Key()
	now := e.Clock.Now()
	a, b := st.(store.OutboxStore), other(t).(store.OutboxStore)

	got, err := a.ClaimDeliveries(ctx, key, now, now.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].Attempts != 1 || !strings.Contains(string(got[0].Payload), store.EventClientCreated) {
		t.Fatalf("first claim: %+v %v", got, err)
	}
	if again, err := b.ClaimDeliveries(ctx, key, now, now.Add(time.Minute), 10); err != nil || len(again) != 0 {
		t.Fatalf("a leased delivery was claimed again: %+v %v", again, err)
	}
	if none, _ := a.ClaimDeliveries(ctx, "wh_other", now, now.Add(time.Minute), 10); len(none) != 0 {
		t.Fatal("a claim for another webhook got this one's delivery")
	}
	later := now.Add(time.Minute)
	stolen, err := b.ClaimDeliveries(ctx, key, later, later.Add(time.Minute), 10)
	if err != nil || len(stolen) != 1 || stolen[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v %v", stolen, err)
	}
	// The first claimer finishes late: its claim is lost, nothing changes.
	if err := a.FinishDelivery(ctx, got[0], store.DeliveryOutcome{At: later, Failed: true, Error: "late"}); err != nil {
		t.Fatal(err)
	}
	if err := b.FinishDelivery(ctx, stolen[0], store.DeliveryOutcome{At: later, Delivered: true}); err != nil {
		t.Fatal(err)
	}
	evs := e.events()
	if d := evs[0].Deliveries; len(d) != 1 || d[0].State() != "delivered" || d[0].Attempts != 2 || d[0].LastError != "" {
		t.Fatalf("delivery state: %+v", d)
	}
	pending, err := a.PendingDeliveries(ctx)
	if err != nil || pending[key] != 0 {
		t.Fatalf("pending %v %v", pending, err)
	}
}

// testDeliveredOncePerFleet: two replicas (two handles on one database,
// two Services) run their senders at once against one receiver; every
// event arrives, and none twice.
func testDeliveredOncePerFleet(t *testing.T, k storeKit) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	rcv.IgnoreTime = true // the env's clock is fake
	hook := withWebhooks(webhook.Config{URL: rcv.URL, Secret: secret})
	st, other := k.open(t)
	a := newEnvOn(t, st, "", hook)
	b := newEnvOn(t, other(t), "", hook)
	const n = 20
	for i := range n {
		e := a
		if i%2 == 1 {
			e = b
		}
		e.MustClient(fmt.Sprintf("app%02d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, e := range []*env{a, b} {
		wg.Go(func() { e.Sender(fastPoll).Run(ctx) })
	}
	// The receiver counts an event before it answers, so the wait is on
	// the store: cancelling while the answer is in flight would fail the
	// attempt the receiver already counted.
	cptest.WaitFor(t, 10*time.Second, "every event delivered", func() bool {
		evs := a.events()
		for _, ev := range evs {
			if d := ev.Deliveries; len(d) != 1 || d[0].State() != "delivered" {
				return false
			}
		}
		return len(evs) == n
	})
	cancel()
	wg.Wait()
	if raw := rcv.RawCount(); raw != n {
		t.Fatalf("%d deliveries for %d events: some were sent twice", raw, n)
	}
	for _, ev := range a.events() {
		if d := ev.Deliveries; len(d) != 1 || d[0].State() != "delivered" || d[0].Attempts != 1 {
			t.Fatalf("event %s: %+v", ev.ID, d)
		}
	}
}

// fastPoll makes the sender poll often, for tests that run it.
const fastPoll = 20 * time.Millisecond

// testExpiryRemindersOnce: reminders fire at each configured offset and
// secret.expired at the expiry, each once, whichever replica scans, and
// a secret that crossed several offsets at once gets the nearest only.
func testExpiryRemindersOnce(t *testing.T, k storeKit) {
	st, other := k.open(t)
	a := newEnvOn(t, st, "", withReminders(72*time.Hour, 24*time.Hour))
	b := newEnvOn(t, other(t), "", withReminders(72*time.Hour, 24*time.Hour), withClock(a.Clock))
	b.Clock = a.Clock
	ctx := context.Background()
	a.MustClient("app")
	long, err := a.Svc.GenerateSecret(ctx, admin, "app", rules.GenerateOptions{ExpiresIn: 100 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	short, err := a.Svc.GenerateSecret(ctx, admin, "app", rules.GenerateOptions{ExpiresIn: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	scan := func() {
		t.Helper()
		for _, e := range []*env{a, b} {
			if err := e.Svc.ScanExpiries(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	reminders := func() []string {
		var out []string
		for _, ev := range a.events() {
			if ev.Type == store.EventSecretExpiring || ev.Type == store.EventSecretExpired {
				p := storetest.EventData(t, a.Store, ev.ID)
				r, _ := p["reminder"].(string)
				out = append(out, fmt.Sprintf("%s %s %s", ev.Type, ev.SecretID[:8], r))
				if p["expires_at"] == nil {
					t.Fatalf("%s without expires_at", ev.Type)
				}
			}
		}
		return out
	}
	check := func(want ...string) {
		t.Helper()
		got := reminders()
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("notices %q, want %q", got, want)
		}
	}
	l, s := long.Secret.ID[:8], short.Secret.ID[:8]
	scan()
	// short: 10h left: past both offsets, only the nearest (24h) fires.
	check("secret.expiring " + s + " 24h")
	a.Clock.Add(27 * time.Hour) // long: 73h left
	scan()
	check("secret.expiring "+s+" 24h", "secret.expired "+s+" ")
	a.Clock.Add(2 * time.Hour) // long: 71h left
	scan()
	scan()
	check("secret.expiring "+s+" 24h", "secret.expired "+s+" ", "secret.expiring "+l+" 72h")
	a.Clock.Add(48 * time.Hour) // long: 23h left
	scan()
	a.Clock.Add(24 * time.Hour) // long: expired
	scan()
	scan()
	check("secret.expiring "+s+" 24h", "secret.expired "+s+" ", "secret.expiring "+l+" 72h",
		"secret.expiring "+l+" 24h", "secret.expired "+l+" ")

	// A revoked secret gets no reminder.
	rv, err := a.Svc.GenerateSecret(ctx, admin, "app", rules.GenerateOptions{ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Svc.RevokeSecret(ctx, admin, "app", rv.Secret.ID); err != nil {
		t.Fatal(err)
	}
	before := len(reminders())
	scan()
	if len(reminders()) != before {
		t.Fatal("a revoked secret got a reminder")
	}
}

// TestOutboxRetriesThenDelivers: a receiver that fails gets the event
// again after the backoff (the fake clock moves; nothing sleeps), and
// the listing shows the attempts and the last error.
func TestOutboxRetriesThenDelivers(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	rcv.IgnoreTime = true
	rcv.SetStatus(http.StatusServiceUnavailable)
	e := newEnv(t, withWebhooks(webhook.Config{URL: rcv.URL + "/hook?token=abc", Secret: secret}))
	ctx := context.Background()
	e.MustClient("app")
	deliver := func() {
		t.Helper()
		if err := e.Sender(0).DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deliver()
	d := e.events()[0].Deliveries[0]
	if d.State() != "pending" || d.Attempts != 1 || d.LastError != "503 Service Unavailable" || d.Webhook != e.Svc.Webhooks()[0].Label() {
		t.Fatalf("after a 503: %+v", d)
	}
	if wait := d.NextAttemptAt.Sub(e.Clock.Now()); wait < webhook.Backoff(1) || wait > webhook.Backoff(1)*6/5 {
		t.Fatalf("next attempt in %s", wait)
	}
	deliver() // not due yet: no attempt
	if d := e.events()[0].Deliveries[0]; d.Attempts != 1 {
		t.Fatalf("attempted before due: %+v", d)
	}
	rcv.SetStatus(0)
	e.Clock.Add(webhook.Backoff(1) * 6 / 5)
	deliver()
	if d := e.events()[0].Deliveries[0]; d.State() != "delivered" || d.Attempts != 2 || d.LastError != "" {
		t.Fatalf("after the retry: %+v", d)
	}
	if got := rcv.Events(); len(got) != 1 || got[0].ID != e.events()[0].ID {
		t.Fatalf("received %+v", got)
	}
}

// TestOutboxGivesUpAfterWindow: a receiver that never answers 2xx gets
// retries for DeliveryWindow after the event, then the delivery is
// failed; other events are not held up.
func TestOutboxGivesUpAfterWindow(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	rcv.IgnoreTime = true
	rcv.SetStatus(http.StatusInternalServerError)
	e := newEnv(t, withWebhooks(webhook.Config{URL: rcv.URL, Secret: secret}))
	ctx := context.Background()
	e.MustClient("app")
	start := e.Clock.Now()
	for i := 0; ; i++ {
		if err := e.Sender(0).DeliverDue(ctx); err != nil {
			t.Fatal(err)
		}
		d := e.events()[0].Deliveries[0]
		if d.State() == "failed" {
			if e.Clock.Now().Sub(start) < webhook.DeliveryWindow || d.Attempts < 15 || d.LastError != "500 Internal Server Error" {
				t.Fatalf("failed after %s and %d attempts: %+v", e.Clock.Now().Sub(start), d.Attempts, d)
			}
			break
		}
		if i > 100 {
			t.Fatalf("still %s after %d passes: %+v", d.State(), i, d)
		}
		e.Clock.Add(d.NextAttemptAt.Sub(e.Clock.Now()))
	}
	e.Sender(0).DeliverDue(ctx)
	if d := e.events()[0].Deliveries[0]; d.State() != "failed" {
		t.Fatalf("a failed delivery was tried again: %+v", d)
	}
}

func TestEventsAPI(t *testing.T) {
	e := newEnv(t, withWebhooks(webhook.Config{URL: "https://hooks.example/in", Secret: webhooktest.Secret(t)}))
	e.MustClient("app")
	ns := e.MustGenerate("app")
	r := e.Admin("GET", "/v1/events?limit=1", nil)
	cptest.MustStatus(t, r, http.StatusOK)
	var out EventList
	r.Decode(t, &out)
	if len(out.Events) != 1 || out.Events[0].Type != store.EventSecretGenerated || out.Events[0].SecretID != ns.Secret.ID {
		t.Fatalf("events: %+v", out)
	}
	if d := out.Events[0].Deliveries; len(d) != 1 || d[0].Webhook != "hooks.example" || d[0].State != "pending" || d[0].NextAttemptAt == nil {
		t.Fatalf("deliveries: %+v", d)
	}
	cptest.MustStatus(t, e.Admin("GET", "/v1/events?limit=0", nil), http.StatusBadRequest)
	cptest.MustStatus(t, e.Admin("GET", "/v1/events?limit=100000", nil), http.StatusBadRequest)
	cptest.MustStatus(t, e.Do("GET", "/v1/events", cptest.EdgeToken, nil), http.StatusForbidden)
	cptest.MustStatus(t, e.Do("GET", "/v1/events", "", nil), http.StatusUnauthorized)
	cptest.MustStatus(t, e.Admin("POST", "/v1/events", nil), http.StatusMethodNotAllowed)
}
