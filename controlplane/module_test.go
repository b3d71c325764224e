package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// provision unmarshals a JSON config and provisions it, as Caddy would.
func provision(t *testing.T, config string) (*Handler, error) {
	t.Helper()
	var h Handler
	if err := json.Unmarshal([]byte(config), &h); err != nil {
		t.Fatalf("config does not unmarshal: %v", err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := h.Provision(ctx)
	if err != nil {
		h.Cleanup() // as Caddy does after a failed Provision
		return nil, err
	}
	t.Cleanup(func() { h.Cleanup() })
	return &h, nil
}

func sqliteConfig(t *testing.T, path, extra string) string {
	t.Helper()
	p, _ := json.Marshal(path)
	return `{"store":{"sqlite":{"path":` + string(p) + `}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"` + extra + `}`
}

func setTokens(t *testing.T) {
	t.Setenv("TEST_CP_ADMIN", cptest.AdminToken)
	t.Setenv("TEST_CP_EDGE", cptest.EdgeToken)
}

func TestProvisionDefaults(t *testing.T) {
	setTokens(t)
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	h, err := provision(t, `{"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`)
	if err != nil {
		t.Fatal(err)
	}
	if h.MaxActiveSecrets != 2 || h.SecretPrefix != "rgs_" || h.MaxWait != caddy.Duration(api.DefaultMaxWait) {
		t.Fatalf("defaults: %d %q %v", h.MaxActiveSecrets, h.SecretPrefix, h.MaxWait)
	}
	if h.TombstoneWindow == nil || *h.TombstoneWindow != caddy.Duration(rules.DefaultTombstoneWindow) || h.LeakAction != rules.LeakRevoke {
		t.Fatalf("leak loop defaults: tombstone_window %v, leak_action %q", h.TombstoneWindow, h.LeakAction)
	}
	if h.API().Service().TombstoneWindow() != 720*time.Hour {
		t.Fatalf("the service's tombstone window is %v", h.API().Service().TombstoneWindow())
	}
	want := "sqlite:" + filepath.Join(data, "caddy", "rotagate", "rotagate.db")
	if h.poolKey != want {
		t.Fatalf("default store %q, want %q", h.poolKey, want)
	}
	// The tokens resolved from the environment are the ones enforced.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/clients", nil)
	req.Header.Set("Authorization", "Bearer "+cptest.AdminToken)
	if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != 200 {
		t.Fatalf("admin request: %d (%v)", rec.Code, err)
	}
}

func TestProvisionErrors(t *testing.T) {
	setTokens(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "x.db")
	cases := map[string]struct{ config, want string }{
		"missing admin token": {`{"edge_token":"{env.TEST_CP_EDGE}"}`, "admin_token is required"},
		"missing edge token":  {`{"admin_token":"{env.TEST_CP_ADMIN}"}`, "edge_token is required"},
		"unset env": {`{"admin_token":"{env.TEST_CP_UNSET_VAR}","edge_token":"{env.TEST_CP_EDGE}"}`,
			"admin_token: environment variable TEST_CP_UNSET_VAR is not set or empty"},
		"unknown placeholder": {`{"admin_token":"pre{nope.x}post","edge_token":"{env.TEST_CP_EDGE}"}`, "admin_token: a placeholder in it is unknown"},
		"same tokens":         {`{"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_ADMIN}"}`, "must differ"},
		"postgres down": {`{"store":{"postgres":{"dsn":"postgres://u:s3cretpw@127.0.0.1:1/db"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`,
			"postgres store (user u, 127.0.0.1:1, database db)"},
		"postgres bad dsn": {`{"store":{"postgres":{"dsn":"postgres://u:s3cretpw@h:notaport/db"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`,
			"DSN is not a valid connection string"},
		"postgres unset dsn": {`{"store":{"postgres":{"dsn":"{env.TEST_CP_UNSET_DSN}"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`,
			"store postgres dsn: environment variable TEST_CP_UNSET_DSN is not set or empty"},
		"two stores":                {`{"store":{"sqlite":{},"postgres":{"dsn":"x"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`, "not both"},
		"empty store":               {`{"store":{},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`, "set sqlite or postgres"},
		"bad prefix":                {sqliteConfig(t, db, `,"secret_prefix":"Bad-"`), "secret prefix"},
		"bad max active":            {sqliteConfig(t, db, `,"max_active_secrets":-1`), "max_active_secrets must be at least 1"},
		"bad max wait":              {sqliteConfig(t, db, `,"max_wait":-5`), "max_wait"},
		"user_id not a placeholder": {sqliteConfig(t, db, `,"user_id":"alice"`), "user_id must be one placeholder"},
		"user_id from the client":   {sqliteConfig(t, db, `,"user_id":"{http.request.Header.X-User}"`), "set by the client itself"},
		"empty admin":               {sqliteConfig(t, db, `,"admins":[""]`), "admins: a user id must be"},
		"unset path env":            {`{"store":{"sqlite":{"path":"{env.TEST_CP_UNSET_PATH}"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`, "store sqlite path"},
		"webhook unset secret env": {sqliteConfig(t, db, `,"webhooks":[{"url":"https://h.example/","secret":"{env.TEST_CP_UNSET_HOOK}"}]`),
			"webhook 0 secret: environment variable TEST_CP_UNSET_HOOK is not set or empty"},
		"webhook raw secret": {sqliteConfig(t, db, `,"webhooks":[{"url":"https://h.example/","secret":"`+cptest.AdminToken+`"}]`),
			"webhook 0 secret: must start with whsec_"},
		"webhook bad scheme": {sqliteConfig(t, db, `,"webhooks":[{"url":"ftp://h.example/","secret":"`+hookSecret+`"}]`),
			"webhook 0: url must be an absolute http or https URL"},
		"webhook unknown event": {sqliteConfig(t, db, `,"webhooks":[{"url":"https://h.example/","secret":"`+hookSecret+`","events":["secret.leaked"]}]`),
			`webhook 0: unknown event type "secret.leaked"`},
		"webhook timeout": {sqliteConfig(t, db, `,"webhooks":[{"url":"https://h.example/","secret":"`+hookSecret+`","timeout":3600000000000}]`),
			"webhook 0: timeout must be between 1s and 1m0s"},
		"webhooks same url": {sqliteConfig(t, db, `,"webhooks":[{"url":"https://h.example/","secret":"`+hookSecret+`"},{"url":"https://h.example/","secret":"`+hookSecret+`"}]`),
			"webhook 1: same url as webhook 0"},
		"reminder negative": {sqliteConfig(t, db, `,"expiry_reminders":[-1]`), "expiry_reminders"},
	}
	for name, tc := range cases {
		_, err := provision(t, tc.config)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), cptest.AdminToken) || strings.Contains(err.Error(), "s3cretpw") || strings.Contains(err.Error(), hookSecret) {
			t.Errorf("%s: the error quotes a secret", name)
		}
	}
	if n := countPooled(); n != 0 {
		t.Fatalf("%d stores left open after failed provisioning", n)
	}
}

func countPooled() int {
	n := 0
	stores.Range(func(_, _ any) bool { n++; return true })
	return n
}

// Sites and reloads using one path share one open store; the last to go
// closes it.
func TestStoreSharedAcrossHandlers(t *testing.T) {
	setTokens(t)
	db := filepath.Join(t.TempDir(), "shared.db")
	h1, err := provision(t, sqliteConfig(t, db, ""))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := provision(t, sqliteConfig(t, db, `,"max_active_secrets":5`))
	if err != nil {
		t.Fatal(err)
	}
	if h1.api.Service().Store() != h2.api.Service().Store() || h1.api.Service().Notifier() != h2.api.Service().Notifier() {
		t.Fatal("two handlers on one path opened two stores")
	}
	if refs, _ := stores.References(h1.poolKey); refs != 2 {
		t.Fatalf("%d references, want 2", refs)
	}
	// A change through one wakes feed waiters of the other.
	_, _, changed := h2.api.Service().Notifier().Current()
	if _, err := h1.api.Service().CreateClient(context.Background(), cptest.Who, "c", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a change through one handler did not reach the other's notifier")
	}
	store := h1.api.Service().Store()
	h1.Cleanup() // as after a reload: h2 is the new config
	if err := store.Ping(context.Background()); err != nil {
		t.Fatalf("store closed while still in use: %v", err)
	}
	h2.Cleanup()
	if err := store.Ping(context.Background()); err == nil {
		t.Fatal("store left open after the last handler went")
	}
	h2.Cleanup() // a second Cleanup is harmless
}

func TestServeHTTPPassesOtherPaths(t *testing.T) {
	setTokens(t)
	h, err := provision(t, sqliteConfig(t, filepath.Join(t.TempDir(), "x.db"), ""))
	if err != nil {
		t.Fatal(err)
	}
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	for path, api := range map[string]bool{"/": false, "/index.html": false, "/v1/other": false, "/healthz": true, "/v1/clients": true} {
		called = false
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil), next); err != nil {
			t.Fatal(err)
		}
		if called == api {
			t.Errorf("%s: next called %v", path, called)
		}
	}
}

func TestModuleInfo(t *testing.T) {
	mi := Handler{}.CaddyModule()
	if mi.ID != "http.handlers.client_credentials_control_plane" {
		t.Fatalf("module id %s", mi.ID)
	}
	if _, ok := mi.New().(*Handler); !ok {
		t.Fatal("New does not return *Handler")
	}
}

// The handler takes the user from the placeholder it is told to read: the
// default one that basic_auth sets, or another such as forward_auth's
// copied cptest.Response header.
func TestProvisionUserPlaceholder(t *testing.T) {
	setTokens(t)
	dir := t.TempDir()
	for _, tc := range []struct{ extra, placeholder string }{
		{``, "http.auth.user.id"},
		{`,"user_id":"{http.reverse_proxy.Header.Remote-User}"`, "http.reverse_proxy.Header.Remote-User"},
	} {
		h, err := provision(t, sqliteConfig(t, filepath.Join(dir, "u.db"), `,"admins":["alice"]`+tc.extra))
		if err != nil {
			t.Fatal(err)
		}
		for user, want := range map[string]int{"alice": 201, "olive": 403} {
			req := httptest.NewRequest("POST", "/v1/clients", strings.NewReader(`{}`))
			repl := caddy.NewReplacer()
			repl.Set(tc.placeholder, user)
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != want {
				t.Errorf("%s via %s: %d (%v), want %d", user, tc.placeholder, rec.Code, err, want)
			}
		}
	}
}

// Validate holds the checks NewService and api.New apply, and Provision
// runs it before the store is opened: a bad option next to an unreachable
// database is reported as itself, without a connection attempt.
func TestValidateBeforeTheStoreOpens(t *testing.T) {
	setTokens(t)
	down := `"store":{"postgres":{"dsn":"postgres://u:pw@127.0.0.1:1/db"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"`
	for extra, want := range map[string]string{
		`,"max_active_secrets":-1`:            "max_active_secrets must be at least 1",
		`,"secret_prefix":"Bad-"`:             "secret prefix",
		`,"max_wait":-5`:                      "max_wait must not be negative",
		`,"tombstone_window":-1`:              "tombstone_window must not be negative",
		`,"leak_action":"delete"`:             "leak_action must be revoke or flag",
		`,"leak_token":"{env.TEST_CP_ADMIN}"`: "leak_token must differ",
		`,"cutover":{"quiet":-1}`:             "cutover: quiet must not be negative",
		`,"cutover":{"on_deadline":"delete"}`: `cutover: on_deadline must be "keep" or "revoke"`,
	} {
		_, err := provision(t, "{"+down+extra+"}")
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "postgres store") {
			t.Errorf("%s: %v, want %q before any connection", extra, err, want)
		}
	}
	if n := countPooled(); n != 0 {
		t.Fatalf("%d stores opened for invalid configs", n)
	}
	// After Provision, as Caddy calls it, Validate passes on what
	// Provision accepted.
	h, err := provision(t, sqliteConfig(t, filepath.Join(t.TempDir(), "x.db"), `,"max_active_secrets":3`))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate after Provision: %v", err)
	}
}

// NewStore is the one constructor from a store config.
func TestNewStore(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	st, err := store.New(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := os.Stat(filepath.Join(data, "caddy", "rotagate", "rotagate.db")); err != nil {
		t.Fatalf("the default store is not under Caddy's data directory: %v", err)
	}
	for name, tc := range map[string]struct {
		cfg  *store.Config
		want string
	}{
		"empty":       {&store.Config{}, "set sqlite or postgres"},
		"both":        {&store.Config{SQLite: &store.SQLiteConfig{}, Postgres: &store.PostgresConfig{DSN: "x"}}, "not both"},
		"no dsn":      {&store.Config{Postgres: &store.PostgresConfig{}}, "dsn is required"},
		"unreachable": {&store.Config{Postgres: &store.PostgresConfig{DSN: "postgres://u:s3cretpw@127.0.0.1:1/db"}}, "postgres store (user u, 127.0.0.1:1, database db)"},
	} {
		_, err := store.New(ctx, tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// hookSecret is a valid webhook secret for configs under test.
const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestProvisionStartsTheSender: a provisioned handler with a webhook
// delivers the events of its API's actions, signed, without anything
// else started; its sender stops with the config's context.
func TestProvisionStartsTheSender(t *testing.T) {
	setTokens(t)
	secret := webhooktest.Secret(t)
	t.Setenv("TEST_CP_HOOK", secret)
	rcv := webhooktest.NewReceiver(t, secret)
	h, err := provision(t, sqliteConfig(t, filepath.Join(t.TempDir(), "h.db"),
		`,"webhooks":[{"url":"`+rcv.URL+`","secret":"{env.TEST_CP_HOOK}","events":["client.created"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/clients", strings.NewReader(`{"client_id":"hooked"}`))
	req.Header.Set("Authorization", "Bearer "+cptest.AdminToken)
	if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != http.StatusCreated {
		t.Fatalf("create: %d %v", rec.Code, err)
	}
	cptest.WaitFor(t, 5*time.Second, "the event is delivered", func() bool { return len(rcv.Events()) == 1 })
	if got := rcv.Events()[0].Body; !strings.Contains(got, `"type":"client.created"`) || !strings.Contains(got, `"client_id":"hooked"`) {
		t.Fatalf("body %s", got)
	}
}

// TestWebhookMetricsAcrossReload: the counters are registered on each
// config's registry (a second handler, as a reload makes, finds them
// there) and go on counting across it; labels are the URL's host.
func TestWebhookMetricsAcrossReload(t *testing.T) {
	setTokens(t)
	secret := webhooktest.Secret(t)
	t.Setenv("TEST_CP_HOOK", secret)
	rcv := webhooktest.NewReceiver(t, secret)
	host := strings.TrimPrefix(rcv.URL, "http://")
	delivered := webhook.Metrics.Delivered.WithLabelValues(host)
	before := testutil.ToFloat64(delivered)
	db := filepath.Join(t.TempDir(), "m.db")
	cfg := sqliteConfig(t, db, `,"webhooks":[{"url":"`+rcv.URL+`/hook?token=secret-in-url","secret":"{env.TEST_CP_HOOK}"}]`)
	create := func(h *Handler, id string) {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/clients", strings.NewReader(`{"client_id":"`+id+`"}`))
		req.Header.Set("Authorization", "Bearer "+cptest.AdminToken)
		if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != http.StatusCreated {
			t.Fatalf("create: %d %v", rec.Code, err)
		}
	}
	first, err := provision(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	create(first, "one")
	cptest.WaitFor(t, 5*time.Second, "the first event is counted", func() bool { return testutil.ToFloat64(delivered) == before+1 })
	second, err := provision(t, cfg) // the reload: provisioned before the old one is cleaned up
	if err != nil {
		t.Fatalf("a second registration failed: %v", err)
	}
	first.Cleanup()
	create(second, "two")
	cptest.WaitFor(t, 5*time.Second, "the second event is counted", func() bool { return testutil.ToFloat64(delivered) == before+2 })
	cptest.WaitFor(t, 5*time.Second, "nothing pending", func() bool {
		return testutil.ToFloat64(webhook.Metrics.Pending.WithLabelValues(host)) == 0
	})
	var b strings.Builder
	for _, c := range []prometheus.Collector{webhook.Metrics.Delivered, webhook.Metrics.Pending} {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			b.WriteString(mf.String())
		}
	}
	if strings.Contains(b.String(), "token") || strings.Contains(b.String(), "/hook") {
		t.Fatalf("a metric label holds the URL: %s", b.String())
	}
}
