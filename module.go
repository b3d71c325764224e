// Package rotagate is the edge half of rotagate: a Caddy HTTP handler that
// authenticates OAuth 2.0 client credentials (RFC 6749 §2.3.1) against a
// snapshot of active secret hashes pulled from the rotagate control plane,
// and enforces a bound on how long a revoked secret keeps working.
package rotagate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the edge handler (docs/design.md §5–§7).
const (
	defaultRevocationDelay  = 30 * time.Second
	defaultUsageFlush       = 10 * time.Second
	defaultMaxBody          = 64 << 10
	defaultMaxSnapshotBytes = 256 << 20
	defaultRealm            = "api"
	defaultBudgetFailures   = 20
	defaultBudgetPer        = time.Minute
	maxBudgetFailures       = 1_000_000
	maxSize                 = 1 << 40 // bound of the size options, in JSON as in the Caddyfile
)

// Handler authenticates client-credential requests at the edge. A request
// with valid credentials goes on to the next handler with its credentials
// stripped and the placeholders {http.auth.client_id},
// {http.auth.secret_id} and {http.auth.user.id} set; any other request is
// answered here with an RFC 6749 §5.2 error.
type Handler struct {
	// ControlPlane is where the edge pulls its snapshot from and sends its
	// usage stamps to. Required.
	ControlPlane *ControlPlane `json:"control_plane,omitempty"`

	// RevocationDelay bounds how long a secret revoked or expired on the
	// control plane keeps working at this edge. The feed long-polls for a
	// third of it (or of max_stale, when that is shorter); sites sharing a
	// control plane (same URLs and token) share one feed, which polls with
	// the shortest wait among them, and a reload that shortens the wait
	// cuts the poll held for the longer one. Default: 30s.
	RevocationDelay caddy.Duration `json:"revocation_delay,omitempty"`

	// MaxStale is how old the last confirmation of the snapshot may grow
	// before the edge answers 503 instead of trusting it. "forever" never
	// refuses, which suspends the revocation guarantee while the control
	// plane is unreachable. Default: revocation_delay.
	MaxStale Staleness `json:"max_stale,omitempty"`

	// UsageFlush is how often last-used stamps are sent to the control
	// plane. Sites sharing a control plane share one feed, which flushes
	// at the shortest interval among them. Default: 10s.
	UsageFlush caddy.Duration `json:"usage_flush,omitempty"`

	// Methods lists the accepted client authentication methods: "basic"
	// (client_secret_basic), "post" (client_secret_post),
	// "private_key_jwt" (a client assertion signed with a registered key)
	// and "tls_client_auth" (a registered client certificate, with
	// `client_auth { mode request }` on the site). A client can only use
	// the methods it has credentials for. Default: all four.
	Methods []string `json:"methods,omitempty"`

	// Audience lists the values a private_key_jwt assertion's aud may
	// name (one is enough). Default: the URL of the token endpoint the
	// request came to (scheme, host and path), as RFC 7523 §3 suggests.
	Audience []string `json:"audience,omitempty"`

	// Realm is the realm of the WWW-Authenticate challenge. Default: api.
	Realm string `json:"realm,omitempty"`

	// ForwardCredentials passes the credentials on to the next handler
	// instead of stripping them. Default: false.
	ForwardCredentials bool `json:"forward_credentials,omitempty"`

	// MaxBody is the most bytes of a form body read to find credentials;
	// a larger form body is refused with 413. Default: 65536.
	MaxBody int64 `json:"max_body,omitempty"`

	// SlowHashConcurrency bounds how many checks of imported legacy
	// hashes (bcrypt, argon2id, PBKDF2) run at once, so a flood of wrong
	// secrets cannot take every core: the default leaves the proxy one.
	// Default: GOMAXPROCS - 1, at least 1.
	SlowHashConcurrency int `json:"slow_hash_concurrency,omitempty"`

	// FailureBudget throttles callers that keep failing: failed attempts
	// are counted per (client id, caller IP), and per caller IP for client
	// ids the edge does not know. A caller over budget is answered 429
	// without any secret being checked. Default: 20 failures per 1m.
	FailureBudget *FailureBudget `json:"failure_budget,omitempty"`

	// MaxSnapshotBytes is the largest snapshot accepted from the control
	// plane (after decompression). Sites sharing a control plane share one
	// feed, which accepts the largest limit among them.
	// Default: 268435456 (256 MiB).
	MaxSnapshotBytes int64 `json:"max_snapshot_bytes,omitempty"`

	logger   *zap.Logger
	feed     *feed
	verifier *verifier
	budget   *failureBudget // nil: off
	answers  answers
	allowed  methodSet
	keyAuth  *keyAuth
	certAuth *certAuth
	now      func() time.Time // nil: the wall clock (tests set it)
}

// ControlPlane addresses the control plane's edge feed and usage ingest.
type ControlPlane struct {
	// URLs are base URLs of control-plane replicas serving the same store;
	// the edge uses the first that answers. Required.
	URLs []string `json:"urls,omitempty"`

	// Token is the edge token, sent as a Bearer token. Placeholders such as
	// {env.ROTAGATE_EDGE_TOKEN} are resolved at provisioning; an unset one
	// is an error. Required.
	Token string `json:"token,omitempty"`
}

// FailureBudget is how many failed attempts a caller may make: a burst of
// Failures, then one every Per/Failures. The caller is the client IP Caddy
// determined (trusted_proxies honoured).
type FailureBudget struct {
	// Off turns the budget off: every attempt is checked. Default: false.
	Off bool `json:"off,omitempty"`

	// Failures is how many failed attempts a caller may make per Per.
	// Default: 20.
	Failures int `json:"failures,omitempty"`

	// Per is the period Failures are counted over. Default: 1m.
	Per caddy.Duration `json:"per,omitempty"`
}

// validate checks a budget after defaults are applied.
func (b *FailureBudget) validate() error {
	switch {
	case b.Off && (b.Failures != 0 || b.Per != 0):
		return errors.New("failure_budget: off takes no failures or period")
	case b.Off:
		return nil
	case b.Failures < 1 || b.Failures > maxBudgetFailures:
		return fmt.Errorf("failure_budget: failures must be between 1 and %d, got %d", maxBudgetFailures, b.Failures)
	case b.Per < caddy.Duration(time.Second) || b.Per > caddy.Duration(24*time.Hour):
		return fmt.Errorf("failure_budget: the period must be between 1s and 24h, got %s", time.Duration(b.Per))
	}
	return nil
}

// Staleness is a duration that may also be "forever" (stored as a negative
// value), written in JSON as a duration string, nanoseconds or "forever".
type Staleness time.Duration

// Forever is the Staleness that never expires.
const Forever = Staleness(-1)

// UnmarshalJSON accepts "forever", a Go duration string or nanoseconds.
func (s *Staleness) UnmarshalJSON(b []byte) error {
	var str string
	if json.Unmarshal(b, &str) == nil && str == "forever" {
		*s = Forever
		return nil
	}
	var d caddy.Duration
	if err := d.UnmarshalJSON(b); err != nil {
		return err
	}
	if d <= 0 {
		return fmt.Errorf("max_stale must be positive or \"forever\", got %s", time.Duration(d))
	}
	*s = Staleness(d)
	return nil
}

// MarshalJSON writes "forever" or nanoseconds.
func (s Staleness) MarshalJSON() ([]byte, error) {
	if s < 0 {
		return []byte(`"forever"`), nil
	}
	return json.Marshal(int64(s))
}

// ParseStaleness reads a Caddyfile value: "forever" or a duration.
func ParseStaleness(v string) (Staleness, error) {
	if v == "forever" {
		return Forever, nil
	}
	d, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive or \"forever\", got %s", d)
	}
	return Staleness(d), nil
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.client_credentials",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in defaults, resolves the edge token, and attaches the
// handler to the shared feed for its control plane (starting it on first
// use), waiting for the control plane only when there is nothing to serve
// yet or a reload tightened the wait (see acquireFeed), and for a few
// seconds at most.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.setDefaults()
	if err := h.Validate(); err != nil {
		return err
	}
	token, err := caddy.NewReplacer().ReplaceOrErr(h.ControlPlane.Token, true, true)
	if err != nil {
		return fmt.Errorf("control_plane token: %v", err)
	}
	if err := h.prepare(); err != nil {
		return err
	}
	if err := registerMetrics(ctx); err != nil {
		h.release()
		return err
	}
	h.feed, err = acquireFeed(ctx, h, h.feedConfig(token), h.MaxStale)
	if err != nil {
		h.release()
		return err
	}
	h.keyAuth.verifier = h.feed.assertions
	if err := h.followLifecycle(ctx); err != nil {
		h.release()
		return errors.Join(err, h.feed.release(h))
	}
	return nil
}

// followLifecycle subscribes the handler to Caddy's "started" and
// "stopping" events: once the servers listen, a feed still waiting to
// retry polls at once (its control plane may be one of them); when the
// config stops, the feed flushes its usage stamps while the servers still
// run (feed.stopping). Without an events app (a handler provisioned
// outside a Caddy config) there is nothing to follow.
func (h *Handler) followLifecycle(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("events")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return err
	}
	events := app.(*caddyevents.App)
	if err := events.On("started", lifecycleEvents{h}); err != nil {
		return err
	}
	return events.On("stopping", lifecycleEvents{h})
}

// lifecycleEvents passes Caddy's lifecycle events on to a handler's feed.
type lifecycleEvents struct{ h *Handler }

// Handle implements caddyevents.Handler.
func (l lifecycleEvents) Handle(_ context.Context, e caddy.Event) error {
	switch e.Name() {
	case "started":
		l.h.feed.nudge()
	case "stopping":
		l.h.feed.stopping(l.h)
	}
	return nil
}

// prepare builds the handler's own runtime state from its validated
// configuration: everything but the shared feed.
func (h *Handler) prepare() error {
	h.allowed = newMethodSet(h.Methods)
	h.answers = newAnswers(h.Realm, h.retryAfter())
	h.verifier = newVerifier(h.SlowHashConcurrency, time.Duration(h.RevocationDelay))
	h.keyAuth = &keyAuth{} // its verifier is the feed's (Provision)
	h.certAuth = &certAuth{}
	_, _ = rand.Read(h.certAuth.dummy[:])
	if b := h.FailureBudget; !b.Off {
		var err error
		if h.budget, err = newFailureBudget(b.Failures, time.Duration(b.Per)); err != nil {
			return err
		}
	}
	return nil
}

// release frees what prepare built.
func (h *Handler) release() {
	if h.budget != nil {
		h.budget.close()
	}
}

func (h *Handler) feedConfig(token string) feedConfig {
	return feedConfig{
		urls:     h.ControlPlane.URLs,
		token:    token,
		wait:     h.pollWait(),
		maxBytes: h.MaxSnapshotBytes,
		flush:    time.Duration(h.UsageFlush),
	}
}

func (h *Handler) setDefaults() {
	if h.RevocationDelay == 0 {
		h.RevocationDelay = caddy.Duration(defaultRevocationDelay)
	}
	if h.MaxStale == 0 {
		h.MaxStale = Staleness(h.RevocationDelay)
	}
	if h.UsageFlush == 0 {
		h.UsageFlush = caddy.Duration(defaultUsageFlush)
	}
	if len(h.Methods) == 0 {
		h.Methods = slices.Clone(methodNames[:])
	}
	if h.Realm == "" {
		h.Realm = defaultRealm
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	if h.SlowHashConcurrency == 0 {
		h.SlowHashConcurrency = max(1, runtime.GOMAXPROCS(0)-1)
	}
	if h.FailureBudget == nil {
		h.FailureBudget = &FailureBudget{}
	}
	if b := h.FailureBudget; !b.Off {
		if b.Failures == 0 {
			b.Failures = defaultBudgetFailures
		}
		if b.Per == 0 {
			b.Per = caddy.Duration(defaultBudgetPer)
		}
	}
	if h.MaxSnapshotBytes == 0 {
		h.MaxSnapshotBytes = defaultMaxSnapshotBytes
	}
}

// Validate checks the configuration after defaults are applied.
func (h *Handler) Validate() error {
	if h.ControlPlane == nil || len(h.ControlPlane.URLs) == 0 {
		return errors.New("control_plane: at least one URL is required")
	}
	for _, u := range h.ControlPlane.URLs {
		if err := checkBaseURL(u); err != nil {
			return fmt.Errorf("control_plane: %v", err)
		}
	}
	if h.ControlPlane.Token == "" {
		return errors.New("control_plane: token is required")
	}
	switch {
	case h.RevocationDelay < caddy.Duration(time.Second):
		return fmt.Errorf("revocation_delay must be at least 1s, got %s", time.Duration(h.RevocationDelay))
	case h.MaxStale == 0 || (h.MaxStale < 0 && h.MaxStale != Forever):
		return errors.New("max_stale must be positive or \"forever\"")
	case h.UsageFlush <= 0:
		return errors.New("usage_flush must be positive")
	case h.MaxBody <= 0 || h.MaxBody > maxSize:
		return errors.New("max_body must be positive and at most 1 TiB")
	case h.SlowHashConcurrency < 1:
		return errors.New("slow_hash_concurrency must be at least 1")
	case h.MaxSnapshotBytes <= 0 || h.MaxSnapshotBytes > maxSize:
		return errors.New("max_snapshot_bytes must be positive and at most 1 TiB")
	}
	if h.FailureBudget != nil {
		if err := h.FailureBudget.validate(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, m := range h.Methods {
		if !slices.Contains(methodNames[:], m) {
			return fmt.Errorf("methods: unknown method %q (want %s)", m, strings.Join(methodNames[:], ", "))
		}
		if seen[m] {
			return fmt.Errorf("methods: %q listed twice", m)
		}
		seen[m] = true
	}
	for _, aud := range h.Audience {
		if aud == "" {
			return errors.New("audience: an empty value")
		}
	}
	if strings.ContainsFunc(h.Realm, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == 0x7f }) {
		return errors.New("realm must not contain quotes, backslashes or control characters")
	}
	return nil
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL %q: %v", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bad URL %q: want http(s)://host[:port]", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("bad URL %q: no user info, query or fragment", raw)
	}
	return nil
}

// pollWait is how long one long-poll of the feed is held: a third of the
// revocation delay (docs/design.md §5), so a lost answer still leaves two more tries
// inside the bound.
func pollWait(delay time.Duration) time.Duration {
	return (delay / 3).Truncate(time.Millisecond)
}

// pollWait is the handler's poll wait: pollWait of the revocation delay,
// or of max_stale when that is shorter. A 304 confirms the snapshot as of
// when its poll was sent, a whole wait earlier, so a wait as long as
// max_stale would leave a healthy edge answering 503.
func (h *Handler) pollWait() time.Duration {
	d := time.Duration(h.RevocationDelay)
	if h.MaxStale > 0 {
		d = min(d, time.Duration(h.MaxStale))
	}
	return pollWait(d)
}

// retryAfter is the Retry-After of a 503, in whole seconds.
func (h *Handler) retryAfter() int {
	s := int((h.pollWait() + time.Second - 1) / time.Second)
	return max(s, 1)
}

// Cleanup releases the handler's hold on the shared feed; the feed stops
// (after a last usage flush) when no handler holds it any more.
func (h *Handler) Cleanup() error {
	h.release()
	if h.feed != nil {
		return h.feed.release(h)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ json.Marshaler              = Staleness(0)
	_ json.Unmarshaler            = (*Staleness)(nil)
	_ caddyevents.Handler         = lifecycleEvents{}
)
