package rotagate

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/internal/caddyhome"
	"github.com/rotagate/rotagate/internal/clientassertion"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// Test secrets. They exist only in tests.
const (
	appSecret     = "rgs_testSecretForTheAppClient0123456789abcdefgh000000"
	appSecret2    = "rgs_secondSecretForTheAppClient0123456789abcdef000000"
	legacySecret  = "legacy secret: 100% +ok"
	expiredSecret = "rgs_thisOneExpiredAnHourAgo"
	expiringSoon  = "rgs_thisOneExpiresInAnHour"
)

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// TestMain keeps what Caddy writes (the saved snapshot) in a temporary
// home.
func TestMain(m *testing.M) {
	os.Exit(caddyhome.Run(m, "rotagate-test-"))
}

// testSnapshot is the feed answer the handler tests run against.
func testSnapshot(t testing.TB) *wire.Snapshot {
	t.Helper()
	bc, err := bcrypt.GenerateFromPassword([]byte(legacySecret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	argon, err := secrethash.NewArgon2id(legacySecret)
	if err != nil {
		t.Fatal(err)
	}
	past, future := testNow.Add(-time.Hour), testNow.Add(time.Hour)
	return &wire.Snapshot{
		Epoch: "e1", Revision: 7, GeneratedAt: testNow,
		Clients: []wire.Client{
			{ClientID: "app", Secrets: []wire.Secret{
				{ID: "sec_app1", Hash: secrethash.NewSHA256(appSecret)},
				{ID: "sec_app2", Hash: secrethash.NewSHA256(appSecret2)},
			}},
			{ClientID: "legacy-bcrypt", Secrets: []wire.Secret{{ID: "sec_bcrypt", Hash: string(bc)}}},
			{ClientID: "legacy-argon", Secrets: []wire.Secret{{ID: "sec_argon", Hash: argon}}},
			{ClientID: "mixed", Secrets: []wire.Secret{
				{ID: "sec_mixed_bcrypt", Hash: string(bc)},
				{ID: "sec_mixed_new", Hash: secrethash.NewSHA256(appSecret)},
			}},
			{ClientID: "expiry", Secrets: []wire.Secret{
				{ID: "sec_expired", Hash: secrethash.NewSHA256(expiredSecret), ExpiresAt: &past},
				{ID: "sec_expiring", Hash: secrethash.NewSHA256(expiringSoon), ExpiresAt: &future},
			}},
			{ClientID: "a b%c+d", Secrets: []wire.Secret{{ID: "sec_odd", Hash: secrethash.NewSHA256("p: a%20+b c")}}},
		},
	}
}

// testContext is a Caddy context for one test, cancelled when the test
// ends.
func testContext(t testing.TB) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// mustAcquireFeed acquires the feed of cfg for h, or ends the test.
func mustAcquireFeed(t testing.TB, ctx caddy.Context, h *Handler, cfg feedConfig, maxStale Staleness) *feed {
	t.Helper()
	f, err := acquireFeed(ctx, h, cfg, maxStale)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// newTestHandler builds a handler with the given options and the test
// snapshot, confirmed at testNow, without any background work.
func newTestHandler(t testing.TB, logger *zap.Logger, configure func(*Handler)) *Handler {
	t.Helper()
	h := &Handler{ControlPlane: &ControlPlane{URLs: []string{"http://127.0.0.1:9"}, Token: "edge-token"}}
	if configure != nil {
		configure(h)
	}
	h.setDefaults()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	h.logger = logger
	h.now = func() time.Time { return testNow }
	if err := h.prepare(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.release)
	if h.budget != nil {
		h.budget.hold = 0 // no test waits for a held answer
	}
	h.feed = newFeed(h.feedConfig("edge-token"), logger, nil)
	assertions, err := clientassertion.New(clientassertion.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h.feed.assertions, h.keyAuth.verifier = assertions, assertions
	snap, err := newSnapshot(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
	h.feed.snapshots.confirm(testNow)
	return h
}

// upstream records what the next handler received.
type upstream struct {
	called   bool
	header   http.Header
	body     string
	length   int64
	clientID string
	secretID string
	userID   string
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.called = true
	u.header = r.Header.Clone()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	u.body, u.length = string(b), r.ContentLength
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	u.clientID, _ = repl.GetString(placeholderClientID)
	u.secretID, _ = repl.GetString(placeholderSecretID)
	u.userID, _ = repl.GetString(placeholderUserID)
	w.WriteHeader(http.StatusOK)
	return nil
}

// serve runs one request through the handler as Caddy would.
func serve(t testing.TB, h *Handler, r *http.Request) (*httptest.ResponseRecorder, *upstream) {
	t.Helper()
	w := httptest.NewRecorder()
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
	up := &upstream{}
	if err := h.ServeHTTP(w, r, up); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w, up
}

// countWork makes the handler's verifier count its work from now on.
func countWork(h *Handler) *verifyWork {
	h.verifier.work = new(verifyWork)
	h.certAuth.work = h.verifier.work
	return h.verifier.work
}

// of reads a kind of work counted so far.
func (w *verifyWork) of(kind int) int { return int(w[kind].Load()) }

func basicHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

func basicRequest(id, secret string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("grant_type=client_credentials"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Authorization", basicHeader(id, secret))
	return r
}

func formRequest(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func postForm(id, secret string) *http.Request {
	return formRequest(url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}.Encode())
}
