package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

const legacyBudgetSecret = "an imported legacy secret"

// clientFrom is an HTTP client whose connections leave from ip, a
// loopback address of its own, so the edge sees it as another caller.
func clientFrom(ip string) *http.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
}

// edgeMetric reads one sample of the edge's metrics from the /metrics
// route of the test site at edge; a sample not yet written reads 0.
func edgeMetric(t *testing.T, edge, name string) float64 {
	return metricSample(t, edge+"/metrics", name)
}

// metricSample reads one sample of a Prometheus text page; a sample not
// yet written reads 0.
func metricSample(t *testing.T, page, name string) float64 {
	t.Helper()
	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if value, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// attempt posts client credentials from c to the edge at edge and returns
// the status, the headers, and whether the edge closes the connection.
func attempt(t *testing.T, c *http.Client, edge, client, secret string) (int, http.Header, bool) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {client}, "client_secret": {secret}}
	resp, err := c.PostForm(edge+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header, resp.Close
}

// TestFailureBudgetThrottlesAttacker: an attacker at 127.0.0.2 sending
// wrong secrets for a client with an imported bcrypt secret gets 401 for
// its budget (20 a minute by default) and then 429 without any secret
// being checked, while the client itself, calling from 127.0.0.1, keeps
// getting tokens; a spray of unknown client ids is throttled the same way.
func TestFailureBudgetThrottlesAttacker(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte(legacyBudgetSecret), 8)
	if err != nil {
		t.Fatal(err)
	}
	feed := feedtest.New(t, wire.Snapshot{Epoch: "e1", Revision: 1, Clients: []wire.Client{
		{ClientID: "legacy", Secrets: []wire.Secret{{ID: "sec_legacy", Hash: string(bc)}}},
		{ClientID: "billing", Secrets: []wire.Secret{{ID: "sec_billing", Hash: secrethash.NewSHA256(edgeSecret1)}}},
	}})
	up := newTokenUpstream(t)
	edge := startSite(t, `
	handle /metrics {
		metrics
	}
	handle {
		client_credentials {
			control_plane `+feed.URL+` {
				token `+feedtest.Token+`
			}
		}
		request_header X-Client-Id {http.auth.client_id}
		reverse_proxy `+upstreamAddr(up.URL)+`
	}
`)
	ctx := context.Background()
	good := func(client, secret string) {
		t.Helper()
		if err := fetchToken(ctx, edge, client, secret, oauth2.AuthStyleInHeader); err != nil {
			t.Fatalf("the good client %s from 127.0.0.1: %v", client, err)
		}
	}
	attacker := clientFrom("127.0.0.2")
	const verified = "rotagate_edge_verify_seconds_count"
	const throttled = `rotagate_edge_auth_total{outcome="throttled"}`

	// spray sends 25 failures from the attacker: those within the budget
	// one after the other, the 5 over it at once (each is held a second).
	spray := func(what string, secret func(i int) (client, secret string)) {
		t.Helper()
		checksBefore, throttledBefore := edgeMetric(t, edge, verified), edgeMetric(t, edge, throttled)
		for i := range 20 {
			client, s := secret(i)
			if code, _, _ := attempt(t, attacker, edge, client, s); code != http.StatusUnauthorized {
				t.Fatalf("%s: failure %d within the budget answered %d, want 401", what, i+1, code)
			}
			good("legacy", legacyBudgetSecret)
		}
		var wg sync.WaitGroup
		codes := make(chan string, 5)
		for i := 20; i < 25; i++ {
			wg.Go(func() {
				client, s := secret(i)
				code, hdr, closed := attempt(t, clientFrom("127.0.0.2"), edge, client, s)
				// One failure comes back every 3s (20 a minute): the wait
				// is at most that.
				wait, err := strconv.Atoi(hdr.Get("Retry-After"))
				codes <- fmt.Sprintf("%d retry-after-ok=%v closed=%v", code, err == nil && wait >= 1 && wait <= 3, closed)
			})
		}
		good("legacy", legacyBudgetSecret)
		good("billing", edgeSecret1)
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != "429 retry-after-ok=true closed=true" {
				t.Fatalf("%s: over budget answered %q, want 429 with Retry-After 1-3 and the connection closed", what, c)
			}
		}
		// Only the requests within budget reached a check (the good
		// client's cache hits and digests count too: 20+2 of them).
		if got := edgeMetric(t, edge, verified) - checksBefore; got != 20+20+2 {
			t.Fatalf("%s: %v checks, want 42 (20 attacker failures + 22 good requests)", what, got)
		}
		if got := edgeMetric(t, edge, throttled) - throttledBefore; got != 5 {
			t.Fatalf("%s: %v throttled, want 5", what, got)
		}
	}
	spray("wrong secrets", func(i int) (string, string) { return "legacy", fmt.Sprintf("wrong-%d", i) })
	spray("unknown clients", func(i int) (string, string) { return fmt.Sprintf("nobody-%d", i), "wrong" })
}
