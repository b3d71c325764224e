// Package cptest is the control plane's shared test harness: the rules on
// a real store with a fake clock and an observed audit log, requests to
// the handler under test (the API, with the console when mounted), and
// assertions that never print a secret. It imports no HTTP layer, so the
// api package's own tests can use it.
package cptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/wire"
)

// The tokens of the API under test.
const (
	AdminToken = "admin-token-0123456789abcdef"
	EdgeToken  = "edge-token-0123456789abcdef"
)

// Clock is a settable clock for the rules.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at 2030-01-02T03:04:05Z.
func NewClock() *Clock {
	return &Clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Env is a control plane's rules on a real store, with a fake clock and
// an observed audit log, and the handler that Do sends requests to.
type Env struct {
	T     *testing.T
	Store store.Store
	// Path is the SQLite file, "" for another store.
	Path  string
	Clock *Clock
	Svc   *rules.Service
	// Audit observes the audit log and the service's other log lines.
	Audit *observer.ObservedLogs
	// Handler answers Do; the package under test sets it.
	Handler http.Handler
}

// New returns an Env on a new SQLite store.
func New(t *testing.T, opts func(*rules.ServiceOptions)) *Env {
	t.Helper()
	st, path := storetest.SQLite(t)
	return NewOn(t, st, path, opts)
}

// NewOn returns an Env on st, whose SQLite file is path ("" for none),
// with the service options that opts sets.
func NewOn(t *testing.T, st store.Store, path string, opts func(*rules.ServiceOptions)) *Env {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	e := &Env{T: t, Store: st, Path: path, Clock: NewClock(), Audit: logs}
	so := rules.ServiceOptions{Now: e.Clock.Now, AuditLog: zap.New(core), Logger: zap.New(core)}
	opts(&so)
	var err error
	if e.Svc, err = rules.NewService(context.Background(), st, so); err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return e
}

// Response is an answer of the handler under test.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map.
func (r Response) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("answer is not a JSON object (status %d): %v", r.Status, err)
	}
	return m
}

// Decode decodes the body into v.
func (r Response) Decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding answer (status %d): %v", r.Status, err)
	}
}

// Do sends one request to the handler in process. body is a string (sent
// as is) or a value (sent as JSON); header is name, value pairs.
func (e *Env) Do(method, path, token string, body any, header ...string) Response {
	e.T.Helper()
	return e.DoAs("", method, path, token, body, header...)
}

// WithUser returns r as a Caddy authentication handler in front would
// pass it on: with user as {http.auth.user.id} in its replacer.
func WithUser(r *http.Request, user string) *http.Request {
	repl := caddy.NewReplacer()
	repl.Set("http.auth.user.id", user)
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
}

// DoAs is Do for a request that an authentication handler in front has
// vouched for as user ("" for none).
func (e *Env) DoAs(user, method, path, token string, body any, header ...string) Response {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.T.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req := httptest.NewRequest(method, path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if user != "" {
		req = WithUser(req, user)
	}
	rec := httptest.NewRecorder()
	e.Handler.ServeHTTP(rec, req)
	return Response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// Admin sends a request with the admin token.
func (e *Env) Admin(method, path string, body any) Response {
	e.T.Helper()
	return e.Do(method, path, AdminToken, body)
}

// MustStatus fails the test unless r has the status. The body is shown
// with any secret redacted.
func MustStatus(t *testing.T, r Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body: %s", r.Status, want, Redact(r.Body))
	}
}

// MustError fails the test unless r has the status and its JSON body the
// error code. The body is shown with any secret redacted.
func MustError(t *testing.T, r Response, status int, code string) {
	t.Helper()
	MustStatus(t, r, status)
	if got := r.JSON(t)["error"]; got != code {
		t.Fatalf("error %v, want %s; body: %s", got, code, Redact(r.Body))
	}
}

var secretLike = regexp.MustCompile(`[a-z0-9_]{1,16}[0-9A-Za-z]{49}`)

// Redact hides anything shaped like a generated secret, so that failing
// tests never print one.
func Redact(b []byte) string {
	return secretLike.ReplaceAllString(string(b), "[redacted]")
}

// Revision reads the store's revision.
func (e *Env) Revision() int64 {
	e.T.Helper()
	return storetest.Revision(e.T, e.Store)
}

// Root is the actor of the helpers: an admin token. Who is an admin
// token from a known address.
var (
	Root = rules.Actor{TokenID: "test", Admin: true}
	Who  = rules.Actor{TokenID: "test", Admin: true, RemoteIP: "192.0.2.9"}
)

// MustClient creates a client through the rules.
func (e *Env) MustClient(id string) {
	e.T.Helper()
	if _, err := e.Svc.CreateClient(context.Background(), Root, id, "", nil); err != nil {
		e.T.Fatalf("CreateClient: %v", err)
	}
}

// MustGenerate adds a generated secret through the rules.
func (e *Env) MustGenerate(clientID string) rules.CreatedSecret {
	e.T.Helper()
	ns, err := e.Svc.GenerateSecret(context.Background(), Root, clientID, rules.GenerateOptions{})
	if err != nil {
		e.T.Fatalf("GenerateSecret: %v", err)
	}
	return ns
}

// ActiveCount counts a client's active secrets in the store.
func (e *Env) ActiveCount(clientID string) int {
	e.T.Helper()
	secrets, err := e.Store.Secrets(context.Background(), clientID)
	if err != nil {
		e.T.Fatal(err)
	}
	n := 0
	for i := range secrets {
		if secrets[i].Active(e.Clock.Now()) {
			n++
		}
	}
	return n
}

// IndexOfSecret is the index of the secret id in secrets, or -1.
func IndexOfSecret(secrets []store.Secret, id string) int {
	for i := range secrets {
		if secrets[i].ID == id {
			return i
		}
	}
	return -1
}

// WaitFor polls cond until it holds or the deadline passes: for effects
// that cross process boundaries, where no in-process signal exists.
func WaitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// Outbox returns the Env's store as an OutboxStore.
func (e *Env) Outbox() store.OutboxStore {
	e.T.Helper()
	ob, ok := e.Store.(store.OutboxStore)
	if !ok {
		e.T.Fatalf("%T keeps no outbox", e.Store)
	}
	return ob
}

// Sender returns a webhook sender over the Env's store and Service, as
// the module starts one, polling every poll (0: the default).
func (e *Env) Sender(poll time.Duration) *webhook.Sender {
	return webhook.NewSender(e.Outbox(), e.Svc.Webhooks(), webhook.Options{
		Now: e.Svc.Now, Wake: e.Svc.Committed(), Notices: e.Svc.ScanExpiries, Poll: poll,
	})
}

// PresentedAfterRevoke revokes a secret and reports, as an edge's usage
// batch would, that it was presented count times since, last a minute
// ago from the address from.
func (e *Env) PresentedAfterRevoke(clientID, secretID, from string, count int64) {
	e.T.Helper()
	ctx := context.Background()
	if _, err := e.Svc.RevokeSecret(ctx, Root, clientID, secretID); err != nil {
		e.T.Fatal(err)
	}
	at := e.Clock.Now().Add(-time.Minute)
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Edge: "e", RevokedUses: []wire.RevokedUse{
		{ClientID: clientID, SecretID: secretID, LastAt: at, From: from, Count: count},
	}}); err != nil {
		e.T.Fatal(err)
	}
}

// ReportLeak reports a secret leaked, as the leak token would.
func (e *Env) ReportLeak(plaintext string) {
	e.T.Helper()
	if _, err := e.Svc.ReportLeak(context.Background(), rules.Actor{TokenID: "leak-token", Leak: true}, rules.LeakReport{Token: plaintext}); err != nil {
		e.T.Fatal(err)
	}
}
