package rotagate

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// budgetHandler is a test handler with a budget of 3 failures per minute
// (one every 20s) that counts the work of its checks.
func budgetHandler(t *testing.T) (*Handler, *verifyWork) {
	t.Helper()
	h := newTestHandler(t, nil, func(h *Handler) {
		h.FailureBudget = &FailureBudget{Failures: 3, Per: caddy.Duration(time.Minute)}
	})
	return h, countWork(h)
}

func from(ip string, r *http.Request) *http.Request {
	r.RemoteAddr = ip + ":40000"
	return r
}

// expectThrottled checks a 429 that computed nothing.
func expectThrottled(t *testing.T, h *Handler, work *verifyWork, r *http.Request, retryAfter string) *httptest.ResponseRecorder {
	t.Helper()
	var before [workKinds]int
	for kind := range workKinds {
		before[kind] = work.of(kind)
	}
	w, up := serve(t, h, r)
	if w.Code != http.StatusTooManyRequests || up.called {
		t.Fatalf("status %d (upstream called: %v), want 429", w.Code, up.called)
	}
	for kind := range workKinds {
		if n := work.of(kind) - before[kind]; n != 0 {
			t.Fatalf("a throttled request did work (%d of kind %d)", n, kind)
		}
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
	h, work := budgetHandler(t)
	throttledBefore := testutil.ToFloat64(edgeMetrics.authBy[outcomeThrottled])
	for i := range 3 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", "wrong"))); w.Code != 401 {
			t.Fatalf("failure %d: status %d", i+1, w.Code)
		}
	}
	// Over budget: refused before any digest, the right secret too (the
	// caller shares its bucket with whoever tries this client from there).
	expectThrottled(t, h, work, from("127.0.0.2", basicRequest("app", "wrong again")), "20")
	expectThrottled(t, h, work, from("127.0.0.2", basicRequest("app", appSecret)), "20")
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
	expectThrottled(t, h, work, from("127.0.0.2", basicRequest("app", "wrong")), "20")
	h.now = func() time.Time { return testNow.Add(90 * time.Second) }
	h.feed.snapshots.confirm(testNow.Add(90 * time.Second))
	if w, _ := serve(t, h, from("127.0.0.2", basicRequest("app", appSecret))); w.Code != 200 {
		t.Fatalf("after the period: status %d", w.Code)
	}
}

func TestFailureBudgetUnknownClientsPerIP(t *testing.T) {
	h, work := budgetHandler(t)
	for _, id := range []string{"nobody-1", "nobody-2", "nobody-3"} {
		if w, _ := serve(t, h, from("127.0.0.2", postForm(id, "wrong"))); w.Code != 401 {
			t.Fatalf("%s: status %d", id, w.Code)
		}
	}
	unknown := expectThrottled(t, h, work, from("127.0.0.2", postForm("nobody-4", "wrong")), "20")
	// A known client's bucket is apart; its over-budget answer is the same
	// bytes, so a 429 tells nothing about whether an id exists.
	for range 3 {
		serve(t, h, from("127.0.0.2", postForm("app", "wrong")))
	}
	known := expectThrottled(t, h, work, from("127.0.0.2", postForm("app", "wrong")), "20")
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
	h, work := budgetHandler(t)
	for range 3 {
		serve(t, h, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong")))
	}
	for range 10 {
		expectThrottled(t, h, work, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong")), "20")
	}
}

// TestParallelWrongTriesAgainstSlowHash: thirty wrong tries at once from
// one caller against an imported bcrypt secret. The budget is reserved
// before each hash, so at most the budget's worth are hashed (and answered
// 401); the others are answered 429 while those hashes still wait for a
// slot.
func TestParallelWrongTriesAgainstSlowHash(t *testing.T) {
	h, work := budgetHandler(t)
	slots := h.verifier.slots
	for range cap(slots) {
		slots <- struct{}{} // every slow-hash slot busy
	}
	const tries, budget = 30, 3
	answers := make(chan int, tries)
	for i := range tries {
		r := from("127.0.0.70", basicRequest("legacy-bcrypt", "wrong"+strconv.Itoa(i)))
		go func() {
			w := httptest.NewRecorder()
			r := caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
			_ = h.ServeHTTP(w, r, &upstream{})
			answers <- w.Code
		}()
	}
	codes := map[int]int{}
	// Those over budget are answered while the slots are still busy. The
	// bound only ends a failing run: on the old code all thirty waited for
	// a slot, and after slotWait got 503.
	bound := time.After(time.Minute)
	for range tries - budget {
		select {
		case code := <-answers:
			codes[code]++
		case <-bound:
			t.Fatalf("only %v answered while the slots were busy: more than %d tries are waiting for a hash", codes, budget)
		}
	}
	for range cap(slots) {
		<-slots
	}
	for range budget {
		codes[<-answers]++
	}
	if codes[http.StatusUnauthorized] != budget || codes[http.StatusTooManyRequests] != tries-budget {
		t.Fatalf("answers %v, want %d × 401 and %d × 429", codes, budget, tries-budget)
	}
	if n := work.of(workSlowHash); n != budget {
		t.Fatalf("%d bcrypt checks for %d parallel wrong tries, want at most the budget, %d", n, tries, budget)
	}
}

// TestSlowHashSuccessRefunds: a failure reserved before a slow hash is
// given back when the secret verifies, so a client that keeps verifying
// its bcrypt secret (here with nothing cached) is never throttled.
func TestSlowHashSuccessRefunds(t *testing.T) {
	h, work := budgetHandler(t)
	h.verifier.ttl = 0 // nothing verified is taken again: every success computes bcrypt
	for range 2 {
		if w, _ := serve(t, h, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong"))); w.Code != 401 {
			t.Fatalf("wrong secret: status %d", w.Code)
		}
	}
	for i := range 5 {
		if w, up := serve(t, h, from("127.0.0.2", basicRequest("legacy-bcrypt", legacySecret))); w.Code != 200 || up.secretID != "sec_bcrypt" {
			t.Fatalf("success %d after two failures: status %d", i+1, w.Code)
		}
	}
	if n := work.of(workSlowHash); n != 7 {
		t.Fatalf("%d bcrypt checks, want 7", n)
	}
	// The third failure is still in the budget; the fourth is not.
	if w, _ := serve(t, h, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong"))); w.Code != 401 {
		t.Fatalf("third failure: status %d", w.Code)
	}
	expectThrottled(t, h, work, from("127.0.0.2", basicRequest("legacy-bcrypt", "wrong")), "20")
}

// TestBudgetBoundBeforeLookup: a caller is looked up in the cache only
// while its slot's bound could put it over budget: not before any
// failure, not after fewer failures than the budget, not after a failure
// reserved before a slow hash and given back (the first check of a bcrypt
// client); and once it is over, the bound says so.
func TestBudgetBoundBeforeLookup(t *testing.T) {
	b, err := newFailureBudget(3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	key := b.failureKey("app", "192.0.2.7", true)
	if b.mayBeOver(key, testNow) {
		t.Fatal("looked up before any failure")
	}
	bucket, _, ok := b.reserve(key, testNow)
	if !ok {
		t.Fatal("first reservation refused")
	}
	b.refund(bucket)
	if b.mayBeOver(key, testNow) {
		t.Fatal("looked up after a reservation given back")
	}
	b.spend(key, testNow)
	b.spend(key, testNow)
	if b.mayBeOver(key, testNow) {
		t.Fatal("looked up after two failures of a budget of three")
	}
	if _, over := b.over(key, testNow); over {
		t.Fatal("two failures of a budget of three: over")
	}
	b.spend(key, testNow)
	if !b.mayBeOver(key, testNow) {
		t.Fatal("three failures of a budget of three: the bound lets the caller by")
	}
	if _, over := b.over(key, testNow); !over {
		t.Fatal("three failures of a budget of three: not over")
	}
	// A full period later every failure is paid back.
	if b.mayBeOver(key, testNow.Add(time.Minute)) {
		t.Fatal("looked up a period after the last failure")
	}
}
