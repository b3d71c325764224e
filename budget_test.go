package rotagate

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// budgetHandler is a test handler with a budget of 3 failures per minute
// (one every 20s) and a counter of the digests it computes.
func budgetHandler(t *testing.T) (*Handler, *int) {
	t.Helper()
	h := newTestHandler(t, nil, func(h *Handler) {
		h.FailureBudget = &FailureBudget{Failures: 3, Per: caddy.Duration(time.Minute)}
	})
	sums := new(int)
	sum := h.verifier.sum
	h.verifier.sum = func(b []byte) *[sha256.Size]byte { *sums++; return sum(b) }
	return h, sums
}

func from(ip string, r *http.Request) *http.Request {
	r.RemoteAddr = ip + ":40000"
	return r
}

// expectThrottled checks a 429 that computed nothing.
func expectThrottled(t *testing.T, h *Handler, sums *int, r *http.Request, retryAfter string) *httptest.ResponseRecorder {
	t.Helper()
	before := *sums
	w, up := serve(t, h, r)
	if w.Code != http.StatusTooManyRequests || up.called {
		t.Fatalf("status %d (upstream called: %v), want 429", w.Code, up.called)
	}
	if *sums != before {
		t.Fatalf("%d digests computed for a throttled request", *sums-before)
	}
	if got := w.Body.String(); got != `{"error":"invalid_client","error_description":"too many failed attempts"}` {
		t.Fatalf("body %s", got)
	}
	if w.Header().Get("Retry-After") != retryAfter || w.Header().Get("Connection") != "close" {
		t.Fatalf("Retry-After %q (want %q), Connection %q", w.Header().Get("Retry-After"), retryAfter, w.Header().Get("Connection"))
	}
	checkErrorHeaders(t, w)
	return w
}

func TestFailureBudgetPerClientAndIP(t *testing.T) {
	h, sums := budgetHandler(t)
	throttledBefore := testutil.ToFloat64(edgeMetrics.authBy[outcomeThrottled])
	for i := range 3 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
			t.Fatalf("failure %d: status %d", i+1, w.Code)
		}
	}
	// Over budget: refused before any digest, the right secret too (the
	// caller shares its bucket with whoever tries this client from there).
	expectThrottled(t, h, sums, from("127.0.0.2", basicRequest("app", "wrong again")), "20")
	expectThrottled(t, h, sums, from("127.0.0.2", basicRequest("app", appSecret)), "20")
	if got := testutil.ToFloat64(edgeMetrics.authBy[outcomeThrottled]) - throttledBefore; got != 2 {
		t.Fatalf("throttled outcomes counted %v, want 2", got)
	}
	// Another caller of the same client, and another client from the same
	// caller, have budgets of their own.
	if w, up := serve(t, h, from("127.0.0.1", basicRequest("app", appSecret))); w.Code != 200 || up.secretID != "sec_app1" {
		t.Fatalf("good caller: status %d", w.Code)
	}
	if w, _ := serve(t, h, from("127.0.0.2", basicRequest("expiry", "wrong"))); w.Code != 401 {
		t.Fatalf("another client from the throttled caller: status %d", w.Code)
	}
	// One failure's worth of budget comes back every 20s.
	h.now = func() time.Time { return testNow.Add(20 * time.Second) }
	if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
		t.Fatalf("after 20s: status %d, want one more try", w.Code)
	}
	expectThrottled(t, h, sums, from("127.0.0.2", basicRequest("app", "wrong")), "20")
	h.now = func() time.Time { return testNow.Add(90 * time.Second) }
	h.feed.snapshots.confirm(testNow.Add(90 * time.Second))
	if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", appSecret))); w.Code != 200 {
		t.Fatalf("after the period: status %d", w.Code)
	}
}

func TestFailureBudgetUnknownClientsPerIP(t *testing.T) {
	h, sums := budgetHandler(t)
	for _, id := range []string{"nobody-1", "nobody-2", "nobody-3"} {
		if w, _ := serve(t, h, from("127.0.0.2", postForm(id, "wrong"))); w.Code != 401 {
			t.Fatalf("%s: status %d", id, w.Code)
		}
	}
	unknown := expectThrottled(t, h, sums, from("127.0.0.2", postForm("nobody-4", "wrong")), "20")
	// A known client's bucket is apart; its over-budget answer is the same
	// bytes, so a 429 tells nothing about whether an id exists.
	for range 3 {
		serve(t, h, from("127.0.0.2", postForm("app", "wrong")))
	}
	known := expectThrottled(t, h, sums, from("127.0.0.2", postForm("app", "wrong")), "20")
	if known.Body.String() != unknown.Body.String() {
		t.Fatal("over-budget answers differ for known and unknown clients")
	}
}

func TestFailureBudgetSuccessSpendsNothing(t *testing.T) {
	h, _ := budgetHandler(t)
	for range 50 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", appSecret))); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	}
	for range 3 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
			t.Fatalf("a failure after 50 successes: status %d", w.Code)
		}
	}
}

func TestFailureBudgetOff(t *testing.T) {
	h := newTestHandler(t, nil, func(h *Handler) { h.FailureBudget = &FailureBudget{Off: true} })
	for range 30 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
			t.Fatalf("budget off: status %d", w.Code)
		}
	}
}

// TestFailureBudgetBeforeSlowHash: a flood of wrong secrets against an
// imported bcrypt secret costs at most the budget in bcrypt checks.
func TestFailureBudgetBeforeSlowHash(t *testing.T) {
	h, sums := budgetHandler(t)
	for range 3 {
		serve(t, h, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong")))
	}
	for range 10 {
		expectThrottled(t, h, sums, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong")), "20")
	}
}
