// Package webhook sends the control plane's events to webhooks, signed
// per Standard Webhooks, from the transactional outbox in the store
// (docs/design.md §10): the receivers' configuration, one delivery
// attempt, the retry schedule, and the Sender loop.
package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rotagate/rotagate/controlplane/store"
)

// A webhook secret is webhookSecretPrefix and the standard base64 of a
// key of minWebhookKeyLen to maxWebhookKeyLen bytes (Standard Webhooks).
const (
	webhookSecretPrefix                = "whsec_"
	minWebhookKeyLen, maxWebhookKeyLen = 24, 64
)

// Defaults and bounds of webhook delivery.
const (
	DefaultTimeout    = 10 * time.Second
	minWebhookTimeout = time.Second
	maxWebhookTimeout = time.Minute
	// DeliveryWindow is how long after an event the sender keeps trying;
	// a delivery still failing then is marked failed.
	DeliveryWindow = 24 * time.Hour
	// firstRetry and maxRetry bound the backoff between attempts.
	firstRetry = 10 * time.Second
	maxRetry   = 2 * time.Hour
	// maxErrorLen bounds the last error kept per delivery.
	maxErrorLen = 200
)

// Config is one receiver of the control plane's events, signed per
// the Standard Webhooks specification.
type Config struct {
	// URL receives one POST per event: http or https, no user info.
	// Placeholders are resolved at provisioning. Required. Default: none.
	URL string `json:"url,omitempty"`

	// Secret signs every delivery: `whsec_` followed by the base64 of 24
	// to 64 random bytes (what Standard Webhooks libraries take), usually
	// `{env.NAME}`; an unset placeholder is an error. Required. Default:
	// none.
	Secret string `json:"secret,omitempty"`

	// Events are the types this webhook receives. Default: all of them.
	Events []string `json:"events,omitempty"`

	// Timeout bounds one delivery attempt, from 1s to 1m. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// Hook is a Config resolved and checked: ready to deliver.
type Hook struct {
	url     string
	key     string // names the webhook in the outbox: a digest of the URL
	label   string // names it in metrics and logs: the URL's host
	signer  *standardwebhooks.Webhook
	events  map[string]bool // nil: all
	timeout time.Duration
}

// build checks a config whose placeholders are resolved and returns the
// webhook ready to deliver. i is the webhook's position, for errors.
func (c Config) build(i int) (*Hook, error) {
	name := fmt.Sprintf("webhook %d", i)
	if c.URL == "" {
		return nil, fmt.Errorf("%s: url is required", name)
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: url must be an absolute http or https URL", name)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: url must not hold user info; the signature authenticates deliveries", name)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%s: url must not have a fragment", name)
	}
	if c.Secret == "" {
		return nil, fmt.Errorf("%s: secret is required", name)
	}
	key, err := decodeWebhookSecret(c.Secret)
	if err != nil {
		return nil, fmt.Errorf("%s secret: %v", name, err)
	}
	signer, err := standardwebhooks.NewWebhookRaw(key)
	if err != nil {
		return nil, fmt.Errorf("%s secret: %v", name, err)
	}
	w := &Hook{url: c.URL, label: u.Host, signer: signer, timeout: time.Duration(c.Timeout)}
	sum := sha256.Sum256([]byte(c.URL))
	w.key = "wh_" + hex.EncodeToString(sum[:8])
	if w.timeout == 0 {
		w.timeout = DefaultTimeout
	}
	if w.timeout < minWebhookTimeout || w.timeout > maxWebhookTimeout {
		return nil, fmt.Errorf("%s: timeout must be between %s and %s", name, minWebhookTimeout, maxWebhookTimeout)
	}
	if len(c.Events) > 0 {
		w.events = make(map[string]bool, len(c.Events))
		for _, t := range c.Events {
			if !slices.Contains(store.EventTypes, t) {
				return nil, fmt.Errorf("%s: unknown event type %q (known: %s)", name, t, strings.Join(store.EventTypes, ", "))
			}
			w.events[t] = true
		}
	}
	return w, nil
}

// decodeWebhookSecret returns the HMAC key of a `whsec_` secret.
func decodeWebhookSecret(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, webhookSecretPrefix)
	if !ok {
		return nil, fmt.Errorf("must start with %s (Standard Webhooks format: %s followed by base64 of %d to %d random bytes)",
			webhookSecretPrefix, webhookSecretPrefix, minWebhookKeyLen, maxWebhookKeyLen)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after %s is not standard base64", webhookSecretPrefix)
	}
	if len(key) < minWebhookKeyLen || len(key) > maxWebhookKeyLen {
		return nil, fmt.Errorf("must decode to %d to %d bytes, got %d", minWebhookKeyLen, maxWebhookKeyLen, len(key))
	}
	return key, nil
}

// Wants reports whether the webhook receives events of type t.
func (w *Hook) Wants(t string) bool { return w.events == nil || w.events[t] }

// Key names the webhook in the outbox: a digest of its URL.
func (w *Hook) Key() string { return w.key }

// Label names the webhook in metrics and logs: its URL's host.
func (w *Hook) Label() string { return w.label }

// Build checks and builds every webhook; two with the same URL
// are an error (they would share their deliveries).
func Build(cfgs []Config) ([]*Hook, error) {
	out := make([]*Hook, 0, len(cfgs))
	seen := map[string]int{}
	for i, c := range cfgs {
		w, err := c.build(i)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[w.key]; dup {
			return nil, fmt.Errorf("webhook %d: same url as webhook %d", i, j)
		}
		seen[w.key] = i
		out = append(out, w)
	}
	return out, nil
}

// attemptResult is what one delivery attempt came to.
type attemptResult struct {
	// ok: the receiver answered 2xx.
	ok bool
	// final: do not try again (the receiver answered 410 Gone).
	final bool
	// retryAfter is the receiver's Retry-After, when it sent one.
	retryAfter time.Duration
	// err says what went wrong, without the URL (it may hold a token).
	err string
}

// newClient returns the HTTP client of deliveries: no redirects
// (a 3xx is a failure: fix the URL), no cookies, per-attempt timeouts
// set on the request.
func newClient() *http.Client {
	return &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// deliver makes one attempt: a signed POST of body at now, with id as
// webhook-id.
func (w *Hook) deliver(ctx context.Context, client *http.Client, id string, body []byte, now time.Time) attemptResult {
	sig, err := w.signer.Sign(id, now, body)
	if err != nil {
		return attemptResult{err: "signing: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return attemptResult{err: "building request failed"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rotagate-webhooks")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message quotes the URL
		}
		return attemptResult{err: truncate(err.Error(), maxErrorLen)}
	}
	// Drain a little so the connection can be reused; ignore the rest.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return attemptResult{ok: true}
	case resp.StatusCode == http.StatusGone:
		return attemptResult{final: true, err: "410 Gone: the receiver wants no more deliveries"}
	}
	res := attemptResult{err: resp.Status}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil && secs > 0 {
			res.retryAfter = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(s); err == nil && at.After(now) {
			res.retryAfter = at.Sub(now)
		}
	}
	return res
}

// Backoff is the wait after the n-th failed attempt (n ≥ 1): 10s doubling
// to at most 2h, before jitter.
func Backoff(n int) time.Duration {
	d := firstRetry
	for i := 1; i < n && d < maxRetry; i++ {
		d *= 2
	}
	return min(d, maxRetry)
}

// nextAttempt is when to try again after the n-th failed attempt at now,
// for an event created at created; ok is false when the delivery window
// has closed and the delivery is failed. A Retry-After of the receiver
// is honoured when it asks for longer. Jitter of up to a fifth spreads
// retries of many deliveries that failed together; the last attempt is
// made at the end of the window.
func nextAttempt(n int, now, created time.Time, retryAfter time.Duration) (time.Time, bool) {
	deadline := created.Add(DeliveryWindow)
	if !now.Before(deadline) {
		return time.Time{}, false
	}
	d := Backoff(n)
	d += rand.N(d/5 + 1)
	at := now.Add(max(d, retryAfter))
	if at.After(deadline) {
		at = deadline
	}
	return at, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
