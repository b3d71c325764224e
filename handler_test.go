package rotagate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

func TestAnswers(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	bigBody := "grant_type=client_credentials&pad=" + strings.Repeat("x", defaultMaxBody)
	tests := []struct {
		name      string
		req       func() *http.Request
		status    int
		code      string
		challenge bool
	}{
		{"no credentials", func() *http.Request { return httptest.NewRequest(http.MethodPost, "/token", nil) }, 401, "invalid_client", true},
		{"form without credentials", func() *http.Request { return formRequest("grant_type=client_credentials") }, 401, "invalid_client", true},
		{"client_id alone is no credential", func() *http.Request { return formRequest("grant_type=client_credentials&client_id=app") }, 401, "invalid_client", true},
		{"bearer is no client credential", func() *http.Request { return authorizationRequest("Bearer abc") }, 401, "invalid_client", true},
		{"unknown client basic", func() *http.Request { return basicRequest("nobody", appSecret) }, 401, "invalid_client", true},
		{"wrong secret basic", func() *http.Request { return basicRequest("app", appSecret+"x") }, 401, "invalid_client", true},
		{"wrong secret post", func() *http.Request { return postForm("app", "nope") }, 401, "invalid_client", false},
		{"unknown client post", func() *http.Request { return postForm("nobody", appSecret) }, 401, "invalid_client", false},
		{"expired secret", func() *http.Request { return basicRequest("expiry", expiredSecret) }, 401, "invalid_client", true},
		{"secret of another client", func() *http.Request { return basicRequest("legacy-argon", appSecret) }, 401, "invalid_client", true},
		{"wrong legacy bcrypt", func() *http.Request { return basicRequest("legacy-bcrypt", "legacy secret") }, 401, "invalid_client", true},
		{"wrong legacy argon2id", func() *http.Request { return postForm("legacy-argon", "legacy secret") }, 401, "invalid_client", false},
		{"empty secret", func() *http.Request { return basicRequest("app", "") }, 401, "invalid_client", true},
		{"basic and body", func() *http.Request {
			return withAuthorization(postForm("app", appSecret), basicHeader("app", appSecret))
		}, 400, "invalid_request", false},
		{"basic and a different body client_id", func() *http.Request {
			return withAuthorization(formRequest("grant_type=client_credentials&client_id=other"), basicHeader("app", appSecret))
		}, 400, "invalid_request", false},
		{"repeated client_id", func() *http.Request {
			return formRequest("client_id=app&client_id=app&client_secret=" + appSecret)
		}, 400, "invalid_request", false},
		{"repeated client_secret", func() *http.Request {
			return formRequest("client_id=app&client_secret=" + appSecret + "&client_secret=" + appSecret)
		}, 400, "invalid_request", false},
		{"repeated grant_type with basic", func() *http.Request {
			return withAuthorization(formRequest("grant_type=client_credentials&grant_type=client_credentials"), basicHeader("app", appSecret))
		}, 400, "invalid_request", false},
		{"escaped repeated name", func() *http.Request {
			return formRequest("client_id=app&client%5Fsecret=a&client_secret=" + appSecret)
		}, 400, "invalid_request", false},
		{"secret without client_id", func() *http.Request { return formRequest("client_secret=" + appSecret) }, 400, "invalid_request", false},
		{"bad base64", func() *http.Request { return authorizationRequest("Basic !!!notbase64") }, 400, "invalid_request", false},
		{"two Authorization headers", func() *http.Request {
			return withAuthorization(postForm("app", appSecret), "Bearer x", basicHeader("other", "y"))
		}, 400, "invalid_request", false},
		{"basic scheme alone", func() *http.Request { return authorizationRequest("Basic") }, 400, "invalid_request", false},
		{"no colon", func() *http.Request { return authorizationRequest(rawBasic("app" + appSecret)) }, 400, "invalid_request", false},
		{"bad escape in basic is a raw secret", func() *http.Request { return authorizationRequest(rawBasic("app:%zz")) }, 401, "invalid_client", true},
		{"client_secret in the query", func() *http.Request {
			r := basicRequest("app", appSecret)
			r.URL.RawQuery = "client_secret=" + appSecret
			return r
		}, 400, "invalid_request", false},
		{"escaped client_secret in the query", func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/token?client_id=app&client%5Fsecret="+appSecret, nil)
		}, 400, "invalid_request", false},
		{"bad escape in body secret", func() *http.Request { return formRequest("client_id=app&client_secret=%g1") }, 400, "invalid_request", false},
		{"body over max_body", func() *http.Request { return formRequest(bigBody) }, 413, "invalid_request", false},
		{"chunked body over max_body", func() *http.Request {
			r := formRequest(bigBody)
			r.ContentLength = -1
			return r
		}, 413, "invalid_request", false},
	}
	unauthorized := ""
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, up := serve(t, h, tt.req())
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if up.called {
				t.Fatal("the next handler was called")
			}
			var body struct{ Error, ErrorDescription string }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != tt.code {
				t.Fatalf("body %s (%v), want error %q", w.Body, err, tt.code)
			}
			checkErrorHeaders(t, w)
			if got := w.Header().Get("WWW-Authenticate"); (got != "") != tt.challenge || (tt.challenge && got != `Basic realm="api"`) {
				t.Fatalf("WWW-Authenticate %q, challenge wanted: %v", got, tt.challenge)
			}
			if tt.status == 401 {
				if unauthorized == "" {
					unauthorized = w.Body.String()
				} else if w.Body.String() != unauthorized {
					t.Fatalf("401 body differs by cause:\n%s\n%s", w.Body, unauthorized)
				}
			}
		})
	}
}

// withAuthorization adds each value to r as an Authorization header.
func withAuthorization(r *http.Request, values ...string) *http.Request {
	for _, v := range values {
		r.Header.Add("Authorization", v)
	}
	return r
}

// authorizationRequest is a GET with no body and only the given
// Authorization headers.
func authorizationRequest(values ...string) *http.Request {
	return withAuthorization(httptest.NewRequest(http.MethodGet, "/", nil), values...)
}

// rawBasic is a Basic Authorization header of userpass as it is: no
// escaping of its parts, no colon added.
func rawBasic(userpass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userpass))
}

// rawBasicRequest is a token request whose Basic header carries id and
// secret unescaped, as some clients send them.
func rawBasicRequest(id, secret string) *http.Request {
	return withAuthorization(formRequest("grant_type=client_credentials"), rawBasic(id+":"+secret))
}

func checkErrorHeaders(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	for k, v := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestMethodsOption(t *testing.T) {
	basicOnly := newTestHandler(t, nil, func(h *Handler) { h.Methods = []string{"basic"} })
	w, _ := serve(t, basicOnly, postForm("app", appSecret))
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("post on a basic-only edge: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if w, _ := serve(t, basicOnly, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("basic on a basic-only edge: %d", w.Code)
	}
	postOnly := newTestHandler(t, nil, func(h *Handler) { h.Methods = []string{"post"}; h.Realm = "tokens" })
	w, _ = serve(t, postOnly, basicRequest("app", appSecret))
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Basic realm="tokens"` {
		t.Fatalf("basic on a post-only edge: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if w, _ := serve(t, postOnly, postForm("app", appSecret)); w.Code != 200 {
		t.Fatalf("post on a post-only edge: %d", w.Code)
	}
}

func TestUnavailable(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.RevocationDelay = 30_000_000_000 })
	h.feed.snapshots.snap.Store(nil)
	w, up := serve(t, h, basicRequest("app", appSecret))
	if w.Code != 503 || up.called || !strings.Contains(w.Body.String(), `"temporarily_unavailable"`) || w.Header().Get("Retry-After") != "10" {
		t.Fatalf("no snapshot: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	checkErrorHeaders(t, w)

	h = newTestHandler(t, nil, nil)
	h.now = func() time.Time { return testNow.Add(30*time.Second + time.Nanosecond) }
	if w, _ := serve(t, h, basicRequest("app", appSecret)); w.Code != 503 {
		t.Fatalf("confirmation older than max_stale: %d", w.Code)
	}
	h.now = func() time.Time { return testNow.Add(30 * time.Second) }
	if w, _ := serve(t, h, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("confirmation exactly max_stale old: %d", w.Code)
	}

	forever := newTestHandler(t, nil, func(h *Handler) { h.MaxStale = Forever })
	forever.now = func() time.Time { return testNow.Add(1000 * time.Hour) }
	if w, _ := serve(t, forever, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("max_stale forever: %d", w.Code)
	}
}

func TestSuccessBasicStripsAndSetsPlaceholders(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	r := basicRequest("app", appSecret2)
	r.Header.Set("X-Other", "kept")
	w, up := serve(t, h, r)
	if w.Code != 200 || !up.called {
		t.Fatalf("status %d, upstream called %v", w.Code, up.called)
	}
	if up.header.Get("Authorization") != "" {
		t.Fatal("the Authorization header reached the upstream")
	}
	if up.header.Get("X-Other") != "kept" || up.body != "grant_type=client_credentials" || up.length != int64(len(up.body)) {
		t.Fatalf("upstream got header %v body %q length %d", up.header, up.body, up.length)
	}
	if up.clientID != "app" || up.secretID != "sec_app2" || up.userID != "app" {
		t.Fatalf("placeholders: %q %q %q", up.clientID, up.secretID, up.userID)
	}
	s, ok := h.feed.usage.pending["sec_app2"]
	if !ok || s.clientID != "app" || !s.last.Equal(testNow) || s.lastFrom != "192.0.2.1" {
		t.Fatalf("usage stamp: %+v %v", s, ok)
	}
	if c := s.callers["192.0.2.1"]; c == nil || c.requests != 1 || c.refused != 0 || len(s.callers) != 1 {
		t.Fatalf("callers: %+v", s.callers)
	}
}

func TestSuccessPostStripsSecretOnly(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	for _, body := range []string{
		"grant_type=client_credentials&client_id=app&client_secret=" + appSecret + "&scope=a+b",
		"client_secret=" + appSecret + "&client_id=app&grant_type=client_credentials",
		"client_id=app&grant_type=client_credentials&client_secret=" + appSecret,
	} {
		w, up := serve(t, h, formRequest(body))
		if w.Code != 200 {
			t.Fatalf("%s: status %d", body, w.Code)
		}
		want := strings.NewReplacer("client_secret="+appSecret+"&", "", "&client_secret="+appSecret, "").Replace(body)
		if up.body != want || up.length != int64(len(want)) || up.header.Get("Content-Length") != strconv.Itoa(len(want)) {
			t.Fatalf("upstream body %q (length %d, header %q), want %q", up.body, up.length, up.header.Get("Content-Length"), want)
		}
		if strings.Contains(up.body, appSecret) || !strings.Contains(up.body, "client_id=app") {
			t.Fatalf("upstream body %q", up.body)
		}
	}
	// The only parameter.
	w, up := serve(t, h, formRequest("client_secret="+appSecret+"&client_id=app"))
	if w.Code != 200 || up.body != "client_id=app" {
		t.Fatalf("status %d body %q", w.Code, up.body)
	}
}

func TestForwardCredentials(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.ForwardCredentials = true })
	body := "grant_type=client_credentials&client_id=app&client_secret=" + appSecret
	w, up := serve(t, h, formRequest(body))
	if w.Code != 200 || up.body != body || up.length != int64(len(body)) {
		t.Fatalf("status %d, upstream body %q length %d", w.Code, up.body, up.length)
	}
	r := basicRequest("app", appSecret)
	auth := r.Header.Get("Authorization")
	w, up = serve(t, h, r)
	if w.Code != 200 || up.header.Get("Authorization") != auth || up.body != "grant_type=client_credentials" {
		t.Fatalf("basic forwarded: %d %q %q", w.Code, up.header.Get("Authorization"), up.body)
	}
}

func TestBasicURLEncoding(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	// Client id and secret with space, %, + and : survive form-urlencoding.
	w, up := serve(t, h, basicRequest("a b%c+d", "p: a%20+b c"))
	if w.Code != 200 || up.secretID != "sec_odd" || up.clientID != "a b%c+d" {
		t.Fatalf("status %d, ids %q %q", w.Code, up.clientID, up.secretID)
	}
	w, _ = serve(t, h, postForm("a b%c+d", "p: a%20+b c"))
	if w.Code != 200 {
		t.Fatalf("post: status %d", w.Code)
	}
	// Unpadded base64 and a lower-case scheme are tolerated.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "basic "+strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("app:"+appSecret)), "="))
	if w, _ := serve(t, h, r); w.Code != 200 {
		t.Fatalf("unpadded: status %d", w.Code)
	}
}

// TestRawBasicPair: clients that skip the form-encoding of Basic
// credentials (authlib, requests-oauthlib) still authenticate, whether
// the raw pair decodes to something else or does not decode at all.
func TestRawBasicPair(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	const plusSecret = "legacy+with+plus"
	w := testSnapshot(t)
	w.Clients = append(w.Clients, wire.Client{ClientID: "plus", Secrets: []wire.Secret{{ID: "sec_plus", Hash: secrethash.NewSHA256(plusSecret)}}})
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
	for _, tc := range []struct{ name, client, secret, secretID string }{
		// "%c+" is no valid escape: only the raw pair stands.
		{"undecodable id and secret", "a b%c+d", "p: a%20+b c", "sec_odd"},
		// "100% +ok" does not decode; a bcrypt hash behind it.
		{"undecodable legacy secret", "legacy-bcrypt", legacySecret, "sec_bcrypt"},
		// The same through the argon2id path.
		{"undecodable argon2id secret", "legacy-argon", legacySecret, "sec_argon"},
		// "+" decodes to a space: the decoded pair fails, the raw one is right.
		{"plus in a secret", "plus", plusSecret, "sec_plus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, up := serve(t, h, rawBasicRequest(tc.client, tc.secret))
			if w.Code != 200 || up.clientID != tc.client || up.secretID != tc.secretID {
				t.Fatalf("status %d, ids %q %q", w.Code, up.clientID, up.secretID)
			}
			if _, ok := up.header["Authorization"]; ok {
				t.Fatal("the raw credentials reached the upstream")
			}
		})
	}
	// A raw '%' that is no escape is a wrong secret, not a malformed request.
	if w, _ := serve(t, h, rawBasicRequest("app", "%zz")); w.Code != 401 {
		t.Fatalf("raw bad escape: status %d, want 401", w.Code)
	}
}

// TestQuerySecretNeverChecked: a client_secret in the URI is refused
// before any digest is computed; a client_id there, or an empty
// client_secret, is the upstream's business.
func TestQuerySecretNeverChecked(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	work := countWork(h)
	r := httptest.NewRequest(http.MethodPost, "/token?client_id=app&client_secret="+appSecret, nil)
	if w, up := serve(t, h, r); w.Code != 400 || up.called || work.of(workDigest) != 0 {
		t.Fatalf("query secret: status %d, upstream called %v, %d digests", w.Code, up.called, work.of(workDigest))
	}
	r = basicRequest("app", appSecret)
	r.URL.RawQuery = "client_id=app&client_secret=&x=1"
	if w, up := serve(t, h, r); w.Code != 200 || up.secretID != "sec_app1" {
		t.Fatalf("empty query secret with Basic: status %d", w.Code)
	}
}

// TestEmptyParametersOmitted: RFC 6749 §3.2, a parameter sent without a
// value is treated as omitted.
func TestEmptyParametersOmitted(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	for _, body := range []string{
		"grant_type=client_credentials&client_secret=",
		"grant_type=client_credentials&client_secret",
		"grant_type=client_credentials&client_id=&client_secret=",
		"grant_type=&grant_type=client_credentials",
	} {
		r := formRequest(body)
		r.Header.Set("Authorization", basicHeader("app", appSecret))
		if w, up := serve(t, h, r); w.Code != 200 || up.secretID != "sec_app1" {
			t.Fatalf("Basic with body %q: status %d", body, w.Code)
		}
	}
}

// TestEmptySecretStripped: a client_secret sent empty authenticates
// nothing, but the upstream never gets it either, beside Basic
// credentials or a real client_secret.
func TestEmptySecretStripped(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	for _, tc := range []struct{ body, basic, want string }{
		{"client_id=app&client_secret=&client_secret=" + appSecret, "", "client_id=app"},
		{"client_secret=&client_id=app&client_secret=" + appSecret + "&scope=a", "", "client_id=app&scope=a"},
		{"grant_type=client_credentials&client_secret=", basicHeader("app", appSecret), "grant_type=client_credentials"},
		{"client_secret&grant_type=client_credentials", basicHeader("app", appSecret), "grant_type=client_credentials"},
		{"grant_type=client_credentials&client%5Fsecret=", basicHeader("app", appSecret), "grant_type=client_credentials"},
	} {
		r := formRequest(tc.body)
		if tc.basic != "" {
			r.Header.Set("Authorization", tc.basic)
		}
		w, up := serve(t, h, r)
		if w.Code != 200 || up.body != tc.want || up.length != int64(len(tc.want)) || up.header.Get("Content-Length") != strconv.Itoa(len(tc.want)) {
			t.Errorf("%q: status %d, upstream body %q length %d (header %q), want %q",
				tc.body, w.Code, up.body, up.length, up.header.Get("Content-Length"), tc.want)
		}
	}
	// With forward_credentials, the body goes as it came.
	h = newTestHandler(t, nil, func(h *Handler) { h.ForwardCredentials = true })
	r := formRequest("grant_type=client_credentials&client_secret=")
	r.Header.Set("Authorization", basicHeader("app", appSecret))
	if w, up := serve(t, h, r); w.Code != 200 || up.body != "grant_type=client_credentials&client_secret=" {
		t.Fatalf("forwarded: status %d, upstream body %q", w.Code, up.body)
	}
}

func TestImportedLegacyHashes(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	for _, tc := range []struct{ client, secretID string }{
		{"legacy-bcrypt", "sec_bcrypt"}, {"legacy-argon", "sec_argon"}, {"mixed", "sec_mixed_bcrypt"},
	} {
		for round := range 2 { // the second round is a cache hit
			w, up := serve(t, h, basicRequest(tc.client, legacySecret))
			if w.Code != 200 || up.secretID != tc.secretID {
				t.Fatalf("%s round %d: status %d secret %q", tc.client, round, w.Code, up.secretID)
			}
		}
	}
	// The generated secret of the mixed client is checked by digest.
	if w, up := serve(t, h, postForm("mixed", appSecret)); w.Code != 200 || up.secretID != "sec_mixed_new" {
		t.Fatalf("mixed generated: %d %q", w.Code, up.secretID)
	}
}

// TestMoreLegacyHashes: PBKDF2 in Kong's and passlib's forms verify at
// the edge through the slow path (the raw Basic pair included), and a
// bcrypt hash never matches a secret over 72 bytes, which bcrypt itself
// would cut.
func TestMoreLegacyHashes(t *testing.T) {
	long := strings.Repeat("B", 72)
	bc, err := bcrypt.GenerateFromPassword([]byte(long), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, nil, nil)
	w := testSnapshot(t)
	w.Clients = append(w.Clients,
		wire.Client{ClientID: "kong", Secrets: []wire.Secret{{ID: "sec_kong", Hash: "$pbkdf2-sha512$i=10000,l=32$YSBsaXR0ZSBiaXQsIGp1c3QgYSBsaXR0bGUgYml0$z6ysNworexAhDELywIDi0ba0B0T7F/MBZ6Ige9lWRYI"}}},
		wire.Client{ClientID: "passlib", Secrets: []wire.Secret{{ID: "sec_passlib", Hash: "$pbkdf2-sha512$25000$MDEyMzQ1Njc4OWFiY2RlZisvP34$pmnRyRxuLoKGQq2tcKsXT5LIDZ5LdUsJEmwj0MpOdAIZLAMb2rPLFdH68RXgeOfdI34Htgo1o/RhRYw3Q8Nm5Q"}}},
		wire.Client{ClientID: "long-bcrypt", Secrets: []wire.Secret{{ID: "sec_long", Hash: string(bc)}}},
	)
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status int
	}{
		{"kong pbkdf2-sha512", basicRequest("kong", "tofu"), 200},
		{"kong pbkdf2-sha512 again (cached)", postForm("kong", "tofu"), 200},
		{"kong, wrong secret", basicRequest("kong", "tofu!"), 401},
		{"passlib pbkdf2-sha512, encoded", basicRequest("passlib", "legacy+secret%20"), 200},
		{"passlib pbkdf2-sha512, raw", rawBasicRequest("passlib", "legacy+secret%20"), 200},
		{"bcrypt, 72 bytes", basicRequest("long-bcrypt", long), 200},
		{"bcrypt, 75 bytes sharing the first 72", basicRequest("long-bcrypt", long+"zzz"), 401},
	} {
		if w, _ := serve(t, h, tc.req); w.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, w.Code, tc.status)
		}
	}
}

func TestSlowCacheKeyedByStoredHash(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	if w, _ := serve(t, h, basicRequest("legacy-bcrypt", legacySecret)); w.Code != 200 {
		t.Fatal(w.Code)
	}
	// The secret is rotated away: the next snapshot lists only a new one.
	w := testSnapshot(t)
	w.Revision++
	w.Clients[1].Secrets[0].ID = "sec_new"
	w.Clients[1].Secrets[0].Hash = "$2a$04$abcdefghijklmnopqrstuuOm1zC3I7Nbb1ST1cqS6hTA3ZfDgs1gi"
	snap, err := newSnapshot(w)
	if err != nil {
		t.Fatal(err)
	}
	h.feed.snapshots.snap.Store(snap)
	if w, _ := serve(t, h, basicRequest("legacy-bcrypt", legacySecret)); w.Code != 401 {
		t.Fatalf("a cached pair outlived its stored hash: %d", w.Code)
	}
}

func TestExpiry(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	if w, up := serve(t, h, basicRequest("expiry", expiringSoon)); w.Code != 200 || up.secretID != "sec_expiring" {
		t.Fatalf("before expiry: %d", w.Code)
	}
	h.now = func() time.Time { return testNow.Add(time.Hour - time.Nanosecond) }
	h.feed.snapshots.confirm(testNow.Add(time.Hour))
	if w, _ := serve(t, h, basicRequest("expiry", expiringSoon)); w.Code != 200 {
		t.Fatalf("just before expiry: %d", w.Code)
	}
	h.now = func() time.Time { return testNow.Add(time.Hour) }
	if w, _ := serve(t, h, basicRequest("expiry", expiringSoon)); w.Code != 401 {
		t.Fatalf("at expiry: %d", w.Code)
	}
}

// TestUnknownClientCostsTheSame counts the digest computations and
// comparisons of the sha256 path.
func TestUnknownClientCostsTheSame(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	count := func(r *http.Request) [2]int {
		work := countWork(h)
		if w, _ := serve(t, h, r); w.Code != 401 {
			t.Fatalf("status %d", w.Code)
		}
		return [2]int{work.of(workDigest), work.of(workCompare)}
	}
	wrong := count(basicRequest("app", "wrong"))
	unknown := count(basicRequest("nobody", "wrong"))
	if wrong != unknown || wrong[0] != 1 || wrong[1] != 2 {
		t.Fatalf("work (digests, comparisons): wrong secret %v, unknown client %v", wrong, unknown)
	}
	// A form-encoded id whose raw form differs is tried twice (decoded and
	// raw), whether the client exists or not.
	oneSecret := count(basicRequest("a b%c+d", "wrong"))
	unknownEncoded := count(basicRequest("x y%z+w", "wrong"))
	if oneSecret != unknownEncoded || oneSecret[0] != 2 || oneSecret[1] != 4 {
		t.Fatalf("work (digests, comparisons): one-secret client %v, unknown client %v", oneSecret, unknownEncoded)
	}
}

// TestSecretsNeverLeak runs successes and failures with a debug logger and
// looks for the secret in logs, answers and what the upstream received.
func TestSecretsNeverLeak(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	h := newTestHandler(t, zap.New(core), nil)
	encoded := strings.TrimPrefix(basicHeader("app", appSecret), "Basic ")
	var seen []string
	for _, r := range []*http.Request{
		basicRequest("app", appSecret), postForm("app", appSecret),
		basicRequest("nobody", appSecret), postForm("legacy-argon", appSecret),
		basicRequest("app", appSecret+"%zz"),
	} {
		w, up := serve(t, h, r)
		seen = append(seen, w.Body.String(), up.body)
		for k, v := range w.Header() {
			seen = append(seen, k+strings.Join(v, ","))
		}
		for k, v := range up.header {
			seen = append(seen, k+strings.Join(v, ","))
		}
	}
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		seen = append(seen, e.Message, string(b))
	}
	if logs.Len() == 0 {
		t.Fatal("nothing was logged: the leak check would prove nothing")
	}
	for _, s := range seen {
		if strings.Contains(s, appSecret) || strings.Contains(s, encoded) || strings.Contains(s, appSecret[4:20]) {
			t.Fatalf("the secret leaked into %q", s)
		}
	}
}

// TestErrorHeadersNotShared: a later handler editing the answer's header
// values in place (as Caddy's deferred header replacements do) must not
// change the next answer.
func TestErrorHeadersNotShared(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	w, _ := serve(t, h, basicRequest("app", "wrong"))
	for _, k := range []string{"Cache-Control", "Content-Type", "Pragma", "Www-Authenticate"} {
		w.Header()[k][0] = "tampered"
	}
	w, _ = serve(t, h, basicRequest("app", "wrong"))
	checkErrorHeaders(t, w)
	if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="api"` {
		t.Fatalf("WWW-Authenticate %q", got)
	}
}

// TestSlowCheckAfterCleanup: a request of an old config still verifying a
// legacy secret when its handler is cleaned up finishes without a panic.
func TestSlowCheckAfterCleanup(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	h.release()
	w, _ := serve(t, h, basicRequest("legacy-bcrypt", legacySecret))
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
}

// TestSharedSlowCheckOutlivesAGivingUpCaller: two requests with the same
// legacy credentials share one bcrypt check; the first giving up while
// waiting for a slot does not fail the second.
func TestSharedSlowCheckOutlivesAGivingUpCaller(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.SlowHashConcurrency = 1 })
	v := h.verifier
	v.slots <- struct{}{} // every slot busy
	snap, _ := h.feed.snapshots.current()
	gaveUp, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := v.verify(gaveUp, snap, "legacy-bcrypt", []byte(legacySecret), testNow, &charge{})
		first <- err
	}()
	second := make(chan bool, 1)
	go func() {
		got, _ := v.verify(context.Background(), snap, "legacy-bcrypt", []byte(legacySecret), testNow, &charge{})
		second <- got.secretID == "sec_bcrypt"
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v", err)
	}
	<-v.slots // a slot frees up
	if !<-second {
		t.Fatal("the second caller's check failed with the first")
	}
}

// TestVerifiedSecretWithinTTL: a legacy secret that passed its check is
// taken again without one for less than the ttl (the revocation delay),
// by every handler sharing the snapshot, and checked again after it or
// when the clock went back; a wrong secret never matches it.
func TestVerifiedSecretWithinTTL(t *testing.T) {
	at := testNow
	h := newTestHandler(t, nil, nil)
	h.now = func() time.Time { return at }
	work := countWork(h)
	other := newTestHandler(t, nil, nil) // another site, the same feed's snapshot
	otherWork := countWork(other)
	snap, _ := h.feed.snapshots.current()
	other.feed.snapshots.snap.Store(snap)
	ttl := time.Duration(h.RevocationDelay)
	for _, step := range []struct {
		name   string
		h      *Handler
		at     time.Time
		secret string
		status int
		hashes int // slow hashes in this step, both handlers; -1: some
	}{
		{"first", h, testNow, legacySecret, 200, 1},
		{"again", h, testNow.Add(ttl - time.Millisecond), legacySecret, 200, 0},
		{"another site", other, testNow, legacySecret, 200, 0},
		{"wrong secret", h, testNow, legacySecret + "x", 401, -1},
		{"past the ttl", h, testNow.Add(ttl), legacySecret, 200, 1},
		{"clock stepped back", h, testNow.Add(-time.Second), legacySecret, 200, 1},
	} {
		at = step.at
		other.now = h.now
		before := work.of(workSlowHash) + otherWork.of(workSlowHash)
		if w, _ := serve(t, step.h, basicRequest("legacy-bcrypt", step.secret)); w.Code != step.status {
			t.Fatalf("%s: status %d, want %d", step.name, w.Code, step.status)
		}
		n := work.of(workSlowHash) + otherWork.of(workSlowHash) - before
		if (step.hashes < 0 && n == 0) || (step.hashes >= 0 && n != step.hashes) {
			t.Fatalf("%s: %d slow hashes, want %d", step.name, n, step.hashes)
		}
	}
}

// TestCachedSlowHitOneDigest: a cached hit of a client with imported
// hashes only computes no digest of the secret (its name is the one
// SHA-256), where the first check computed the digest and bcrypt; a wrong
// secret for it still costs the digest, the comparisons and the tombstone
// lookup of any failed check.
func TestCachedSlowHitOneDigest(t *testing.T) {
	h := newTestHandler(t, nil, nil)
	work := countWork(h)
	for i, want := range [][workKinds]int{
		{workDigest: 1, workCompare: 2, workSlowHash: 1}, // the first check
		{}, // cached
	} {
		before := [workKinds]int{}
		for kind := range workKinds {
			before[kind] = work.of(kind)
		}
		if w, up := serve(t, h, basicRequest("legacy-bcrypt", legacySecret)); w.Code != 200 || up.secretID != "sec_bcrypt" {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
		for kind := range workKinds {
			if got := work.of(kind) - before[kind]; got != want[kind] {
				t.Fatalf("request %d: %d of work kind %d, want %d", i+1, got, kind, want[kind])
			}
		}
	}
	digests, compares, lookups := work.of(workDigest), work.of(workCompare), work.of(workLookup)
	if w, _ := serve(t, h, basicRequest("legacy-bcrypt", "wrong")); w.Code != 401 {
		t.Fatalf("wrong secret: status %d", w.Code)
	}
	if work.of(workDigest)-digests != 1 || work.of(workCompare)-compares != 2 || work.of(workLookup)-lookups != 1 {
		t.Fatal("a wrong secret for a bcrypt client skipped the digest, its comparisons or the tombstone lookup")
	}
}

// TestPresentedNamesApart: a short secret and a long one whose digest it
// is get different names; names are the same for the same secret.
func TestPresentedNamesApart(t *testing.T) {
	long := bytes.Repeat([]byte("x"), nameInline+1)
	digest := sha256.Sum256(long)
	if namePresented(long) == namePresented(digest[:]) {
		t.Fatal("a long secret is named like its digest")
	}
	if namePresented(long) != namePresented(bytes.Clone(long)) || namePresented([]byte(legacySecret)) != namePresented([]byte(legacySecret)) {
		t.Fatal("one secret, two names")
	}
}
