package webhook

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// TestWebhookSignatureSpecVector signs the test vector the Standard
// Webhooks project publishes with its libraries (the same values in its
// Go, Java, C# and Python tests), through our resolved webhook.
func TestWebhookSignatureSpecVector(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	w, err := Config{URL: srv.URL, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}.build(0)
	if err != nil {
		t.Fatal(err)
	}
	res := w.deliver(context.Background(), newClient(), "msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0))
	if !res.ok {
		t.Fatalf("delivery: %+v", res)
	}
	for h, want := range map[string]string{
		"webhook-id":        "msg_p5jXN8AQM9LWM0D4loKWxJek",
		"webhook-timestamp": "1614265330",
		"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		"content-type":      "application/json",
	} {
		if got.Get(h) != want {
			t.Errorf("%s = %q, want %q", h, got.Get(h), want)
		}
	}
}

func TestConfigResolve(t *testing.T) {
	secret := webhooktest.Secret(t)
	resolve := func(c Config, i int) (*Hook, error) {
		return c.build(i)
	}
	w, err := resolve(Config{URL: "https://hooks.example:8443/in?k=v", Secret: secret, Events: []string{store.EventSecretRevoked}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w.timeout != DefaultTimeout || w.label != "hooks.example:8443" || !strings.HasPrefix(w.key, "wh_") {
		t.Fatalf("resolved %+v", w)
	}
	if !w.Wants(store.EventSecretRevoked) || w.Wants(store.EventSecretGenerated) {
		t.Fatal("event filter not applied")
	}
	all, err := resolve(Config{URL: "http://127.0.0.1:1/", Secret: secret}, 0)
	if err != nil || !all.Wants(store.EventClientDeleted) {
		t.Fatalf("no events should mean all: %v", err)
	}

	short := webhookSecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no url", Config{Secret: secret}, "url is required"},
		{"ftp", Config{URL: "ftp://x/", Secret: secret}, "http or https"},
		{"relative", Config{URL: "/hook", Secret: secret}, "http or https"},
		{"userinfo", Config{URL: "https://u:p@x/", Secret: secret}, "user info"},
		{"no secret", Config{URL: "https://x/"}, "secret is required"},
		{"raw secret", Config{URL: "https://x/", Secret: "hunter2hunter2hunter2hunter2"}, "must start with whsec_"},
		{"bad base64", Config{URL: "https://x/", Secret: "whsec_!!!!"}, "not standard base64"},
		{"short key", Config{URL: "https://x/", Secret: short}, "got 16"},
		{"unknown event", Config{URL: "https://x/", Secret: secret, Events: []string{"secret.created"}}, `unknown event type "secret.created"`},
		{"timeout low", Config{URL: "https://x/", Secret: secret, Timeout: caddy.Duration(time.Millisecond)}, "timeout must be between"},
		{"timeout high", Config{URL: "https://x/", Secret: secret, Timeout: caddy.Duration(time.Hour)}, "timeout must be between"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolve(tc.cfg, 3)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "webhook 3") {
				t.Fatalf("err = %v, want one starting with webhook 3 and containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error quotes the secret: %v", err)
			}
		})
	}

	if _, err := Build([]Config{{URL: "https://x/", Secret: secret}, {URL: "https://x/", Secret: webhooktest.Secret(t)}}); err == nil ||
		!strings.Contains(err.Error(), "same url as webhook 0") {
		t.Fatalf("duplicate url: %v", err)
	}
}

func TestWebhookDeliver(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	w, err := Config{URL: rcv.URL + "/hook?token=abc", Secret: secret}.build(0)
	if err != nil {
		t.Fatal(err)
	}
	client := newClient()
	ctx := context.Background()
	body := []byte(`{"type":"secret.revoked"}`)

	if res := w.deliver(ctx, client, "evt_1", body, time.Now()); !res.ok || res.err != "" {
		t.Fatalf("first delivery: %+v", res)
	}
	if got := rcv.Events(); len(got) != 1 || got[0].ID != "evt_1" || got[0].Body != string(body) {
		t.Fatalf("received %+v", got)
	}
	// A timestamp far off is refused by a verifying receiver: the header
	// carries the attempt's time, which the signature covers.
	if res := w.deliver(ctx, client, "evt_2", body, time.Now().Add(-time.Hour)); res.ok || res.err != "400 Bad Request" {
		t.Fatalf("stale delivery: %+v", res)
	}

	// Other answers, each from a server of its own.
	answer := func(h http.HandlerFunc) attemptResult {
		srv := httptest.NewServer(h)
		defer srv.Close()
		other, err := Config{URL: srv.URL, Secret: secret}.build(0)
		if err != nil {
			t.Fatal(err)
		}
		return other.deliver(ctx, client, "evt_x", body, time.Now())
	}
	if res := answer(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	}); res.ok || res.final || res.retryAfter != 2*time.Minute || res.err != "503 Service Unavailable" {
		t.Fatalf("503 with Retry-After: %+v", res)
	}
	if res := answer(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
	}); res.ok || res.err != "302 Found" {
		t.Fatalf("redirect must fail, not be followed: %+v", res)
	}
	if res := answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }); res.ok || !res.final {
		t.Fatalf("410 must be final: %+v", res)
	}

	// A receiver that is down: the error names neither the URL nor its
	// token.
	rcv.Close()
	res := w.deliver(ctx, client, "evt_6", body, time.Now())
	if res.ok || res.err == "" || strings.Contains(res.err, "token=abc") || strings.Contains(res.err, rcv.URL) {
		t.Fatalf("down receiver: %+v", res)
	}
}

func TestWebhookTimeout(t *testing.T) {
	secret := webhooktest.Secret(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w, err := Config{URL: srv.URL, Secret: secret, Timeout: caddy.Duration(time.Second)}.build(0)
	if err != nil {
		t.Fatal(err)
	}
	res := w.deliver(context.Background(), newClient(), "evt_1", []byte(`{}`), time.Now())
	if res.ok || !strings.Contains(res.err, "deadline exceeded") {
		t.Fatalf("slow receiver: %+v", res)
	}
}

func TestBackoffSchedule(t *testing.T) {
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second}
	for i, d := range want {
		if got := Backoff(i + 1); got != d {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, d)
		}
	}
	if got := Backoff(12); got != maxRetry {
		t.Errorf("Backoff(12) = %s, want the cap %s", got, maxRetry)
	}
	if got := Backoff(1000); got != maxRetry {
		t.Errorf("Backoff(1000) = %s", got)
	}

	created := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	// Jitter stays within a fifth above the schedule.
	for n := 1; n < 15; n++ {
		now := created.Add(time.Minute)
		at, ok := nextAttempt(n, now, created, 0)
		if !ok || at.Before(now.Add(Backoff(n))) || at.After(now.Add(Backoff(n)+Backoff(n)/5)) {
			t.Fatalf("attempt %d: next at %s (ok %v)", n, at.Sub(now), ok)
		}
	}
	// Retry-After longer than the backoff wins.
	now := created.Add(time.Minute)
	if at, _ := nextAttempt(1, now, created, time.Hour); at != now.Add(time.Hour) {
		t.Fatalf("Retry-After ignored: %s", at.Sub(now))
	}
	// The last attempt is at the end of the window; after it, failed.
	late := created.Add(DeliveryWindow - time.Minute)
	if at, ok := nextAttempt(20, late, created, 0); !ok || !at.Equal(created.Add(DeliveryWindow)) {
		t.Fatalf("near the end: %s %v", at, ok)
	}
	if _, ok := nextAttempt(21, created.Add(DeliveryWindow), created, 0); ok {
		t.Fatal("past the window must fail the delivery")
	}
	// A receiver that is down for a whole day gets a bounded number of
	// attempts.
	attempts, t0 := 1, created
	for {
		at, ok := nextAttempt(attempts, t0, created, 0)
		if !ok {
			break
		}
		attempts++
		t0 = at
	}
	if attempts < 15 || attempts > 30 {
		t.Fatalf("%d attempts in the window", attempts)
	}
}
