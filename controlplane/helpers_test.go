package controlplane

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

const (
	testAdminToken = "admin-token-0123456789abcdef"
	testEdgeToken  = "edge-token-0123456789abcdef"
)

// fakeClock is a settable clock for the rules.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingStore counts the calls that reach the store's read side.
type countingStore struct {
	store.Store
	snapshots atomic.Int64
	revisions atomic.Int64
	lookups   atomic.Int64
}

func (c *countingStore) Snapshot(ctx context.Context, now time.Time, window time.Duration, w store.SnapshotWriter) error {
	c.snapshots.Add(1)
	return c.Store.Snapshot(ctx, now, window, w)
}

// storeSnapshot reads a store's snapshot whole.
func storeSnapshot(ctx context.Context, st store.Store, now time.Time, window time.Duration) (wire.Snapshot, error) {
	var c store.Collect
	err := st.Snapshot(ctx, now, window, &c)
	return c.Snapshot, err
}

func (c *countingStore) SecretByHash(ctx context.Context, hash string) (store.Secret, error) {
	c.lookups.Add(1)
	return c.Store.SecretByHash(ctx, hash)
}

func (c *countingStore) Revision(ctx context.Context) (string, int64, error) {
	c.revisions.Add(1)
	return c.Store.Revision(ctx)
}

func (c *countingStore) queries() int64 { return c.snapshots.Load() + c.revisions.Load() }

// env is a control plane on a real SQLite file, with a fake clock and an
// observed audit log.
type env struct {
	t     *testing.T
	store store.Store
	path  string
	clock *fakeClock
	svc   *rules.Service
	api   *API
	// audit observes the audit log and the service's other log lines.
	audit *observer.ObservedLogs
}

type envOption func(*rules.ServiceOptions, *APIOptions)

// withAdmins names admin users.
func withAdmins(users ...string) envOption {
	return func(_ *rules.ServiceOptions, a *APIOptions) { a.Admins = users }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	st, path := storetest.SQLite(t)
	return newEnvOn(t, st, path, opts...)
}

func newEnvOn(t *testing.T, st store.Store, path string, opts ...envOption) *env {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	e := &env{t: t, store: st, path: path, clock: newFakeClock(), audit: logs}
	so := rules.ServiceOptions{Now: e.clock.Now, AuditLog: zap.New(core), Logger: zap.New(core)}
	ao := APIOptions{AdminToken: testAdminToken, EdgeToken: testEdgeToken}
	for _, o := range opts {
		o(&so, &ao)
	}
	var err error
	if e.svc, err = rules.NewService(context.Background(), st, so); err != nil {
		t.Fatalf("NewService: %v", err)
	}
	if e.api, err = NewAPI(e.svc, ao); err != nil {
		t.Fatalf("NewAPI: %v", err)
	}
	t.Cleanup(e.api.Close)
	return e
}

// response is an answer of the API under test.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic map.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object (status %d): %v", r.status, err)
	}
	return m
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding answer (status %d): %v", r.status, err)
	}
}

// do sends one request to the API in process. body is a string (sent as
// is) or a value (sent as JSON).
func (e *env) do(method, path, token string, body any, header ...string) response {
	e.t.Helper()
	return e.doAs("", method, path, token, body, header...)
}

// withUser returns r as a Caddy authentication handler in front would
// pass it on: with user as {http.auth.user.id} in its replacer.
func withUser(r *http.Request, user string) *http.Request {
	repl := caddy.NewReplacer()
	repl.Set("http.auth.user.id", user)
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
}

// doAs is do for a request that an authentication handler in front has
// vouched for as user ("" for none).
func (e *env) doAs(user, method, path, token string, body any, header ...string) response {
	e.t.Helper()
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
			e.t.Fatal(err)
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
		req = withUser(req, user)
	}
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (e *env) admin(method, path string, body any) response {
	e.t.Helper()
	return e.do(method, path, testAdminToken, body)
}

// mustStatus fails the test unless r has the status. The body is shown
// with any secret redacted.
func mustStatus(t *testing.T, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body: %s", r.status, want, redact(r.body))
	}
}

var secretLike = regexp.MustCompile(`[a-z0-9_]{1,16}[0-9A-Za-z]{49}`)

// redact hides anything shaped like a generated secret, so that failing
// tests never print one.
func redact(b []byte) string {
	return secretLike.ReplaceAllString(string(b), "[redacted]")
}

// revision reads the store's revision.
func (e *env) revision() int64 {
	e.t.Helper()
	_, rev, err := e.store.Revision(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return rev
}

// mustClient creates a client through the rules.
func (e *env) mustClient(id string) {
	e.t.Helper()
	if _, err := e.svc.CreateClient(context.Background(), rules.Actor{TokenID: "test", Admin: true}, id, "", nil); err != nil {
		e.t.Fatalf("CreateClient: %v", err)
	}
}

// mustGenerate adds a generated secret through the rules.
func (e *env) mustGenerate(clientID string) rules.CreatedSecret {
	e.t.Helper()
	ns, err := e.svc.GenerateSecret(context.Background(), rules.Actor{TokenID: "test", Admin: true}, clientID, rules.GenerateOptions{})
	if err != nil {
		e.t.Fatalf("GenerateSecret: %v", err)
	}
	return ns
}

// activeCount counts a client's active secrets in the store.
func (e *env) activeCount(clientID string) int {
	e.t.Helper()
	secrets, err := e.store.Secrets(context.Background(), clientID)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for i := range secrets {
		if secrets[i].Active(e.clock.Now()) {
			n++
		}
	}
	return n
}

// indexOfSecret is the index of the secret id in secrets, or -1.
func indexOfSecret(secrets []store.Secret, id string) int {
	for i := range secrets {
		if secrets[i].ID == id {
			return i
		}
	}
	return -1
}
