package rotagate

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
)

// A verified private_key_jwt request (ES256) through the handler
// (targets: ≤ 150 µs, ≤ 60 allocations, which
// TestPrivateKeyJWTAllocations holds). Every request carries a fresh
// assertion (a replayed one is refused): they are signed in batches
// outside the timer, and the request's body is rewound in place, so only
// ServeHTTP is measured.

// rewound is a request body read again from the start each round.
type rewound struct{ *bytes.Reader }

func (rewound) Close() error { return nil }

// assertionRounds prepares a handler with the client "keyed" and returns
// a function that serves one more request with a fresh assertion, and a
// function that signs the next n assertions.
func assertionRounds(tb testing.TB) (round func(), sign func(n int)) {
	h := newTestHandler(tb, nil, nil)
	h.MaxStale = Forever
	k := newKeyedClient(tb)
	withKeyedClients(tb, h, k)
	// The handler's clock stands still: no jti ever leaves the replay
	// cache, so it must hold every round's.
	v, err := clientassertion.New(clientassertion.Config{ReplayPerClient: 1 << 22, ReplayTotal: 1 << 22})
	if err != nil {
		tb.Fatal(err)
	}
	h.keyAuth.verifier = v
	var bodies [][]byte
	next := 0
	sign = func(n int) {
		bodies, next = bodies[:0], 0
		for range n {
			form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {clientassertion.AssertionType},
				"client_assertion": {signed(tb, jose.ES256, k.key, claims())}}
			bodies = append(bodies, []byte(form.Encode()))
		}
	}
	w := &discardWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodPost, tokenURL, nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
	body := rewound{bytes.NewReader(nil)}
	status := 0
	check := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { status = 200; return nil })
	round = func() {
		body.Reset(bodies[next])
		r.Body, r.ContentLength = body, int64(len(bodies[next]))
		next++
		status = 0
		_ = h.ServeHTTP(w, r, check)
	}
	sign(1)
	round()
	if status != 200 {
		tb.Fatal("the first assertion was refused")
	}
	return round, sign
}

func BenchmarkVerifiedPrivateKeyJWT(b *testing.B) {
	round, sign := assertionRounds(b)
	const batch = 1000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			sign(batch)
			b.StartTimer()
		}
		round()
	}
}

// TestPrivateKeyJWTAllocations holds the allocation target of a verified
// private_key_jwt request.
func TestPrivateKeyJWTAllocations(t *testing.T) {
	const runs = 200
	round, sign := assertionRounds(t)
	sign(runs + 1)
	if got := testing.AllocsPerRun(runs, round); got > 60 {
		t.Errorf("%v allocations per verified private_key_jwt request, want at most 60", got)
	}
}
