package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/clientassertion"
)

// Case (k): the good client authenticates with private_key_jwt (ES256),
// issue 22's load row "(e)" (this harness's (e) was already an attack
// row). Every assertion's jti is accepted once per edge, so wrk cannot
// repeat one request: before each run the harness signs a fresh batch of
// assertions, enough for the run at a rate Caddy cannot reach, spread over
// assertionClients clients (the edge remembers at most 4,096 jtis per
// client, each until its exp), and wrk sends each once (assertionLua).

const (
	// assertionClients is how many clients the assertions are spread over.
	assertionClients = 256
	// assertionRate bounds the requests a second case (k) can be answered:
	// one ES256 verification is ~66 µs of Caddy's one core, so it cannot
	// answer more than ~15,000 a second. A run is signed for this rate.
	assertionRate = 20_000
	// assertionSlack is how long after its run an assertion expires: the
	// edge remembers each jti until its exp (and 30 s of leeway), so a
	// short exp keeps the replay cache small over many runs.
	assertionSlack = 30 * time.Second
	// maxAssertionAhead is the furthest exp the harness signs: what the
	// edge accepts, less a margin.
	maxAssertionAhead = clientassertion.MaxLifetime - 30*time.Second
	// benchAudience is the edge's audience option for (k).
	benchAudience = "https://bench.rotagate.invalid/token"
)

// assertionLua sends, per request, the next line of the file $BENCH_BODIES
// as a form POST, and prints the same summary line as reportLua. The
// bodies are read in init, which only the worker thread runs (wrk's main
// thread runs the script too, for done).
const assertionLua = `
local bodies = {}
local n = 0
init = function(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n - 1) % #bodies + 1])
end
` + reportDone

// keyedClient is one client of case (k), its private key and a signer
// with it.
type keyedClient struct {
	id     string
	key    *ecdsa.PrivateKey
	signer jose.Signer
}

// assertionSigner signs the assertions of case (k).
type assertionSigner struct {
	clients []keyedClient
	aud     string
	jti     uint64 // the last jti used
}

func newAssertionSigner(n int, aud string) (*assertionSigner, error) {
	s := &assertionSigner{aud: aud}
	for i := range n {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return nil, err
		}
		s.clients = append(s.clients, keyedClient{id: fmt.Sprintf("bench-key-%03d", i), key: k, signer: signer})
	}
	return s, nil
}

// register creates the clients in the control plane, each with its
// public key.
func (s *assertionSigner) register(ctx context.Context, cp controlPlane) error {
	for _, c := range s.clients {
		if err := cp.createClient(ctx, c.id); err != nil {
			return err
		}
		jwk, err := jose.JSONWebKey{Key: &c.key.PublicKey}.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := cp.call(ctx, http.MethodPost, "/v1/clients/"+url.PathEscape(c.id)+"/secrets",
			map[string]any{"public_key": json.RawMessage(jwk)}, http.StatusCreated); err != nil {
			return err
		}
	}
	return nil
}

// body is the form body of the next assertion, for client i (mod the
// clients), issued at now and expiring at exp: a compact ES256 JWS.
func (s *assertionSigner) body(i int, now, exp time.Time) (string, error) {
	c := s.clients[i%len(s.clients)]
	s.jti++
	claims, err := json.Marshal(map[string]any{"iss": c.id, "sub": c.id, "aud": s.aud,
		"iat": now.Unix(), "exp": exp.Unix(), "jti": "bench-" + strconv.FormatUint(s.jti, 36)})
	if err != nil {
		return "", err
	}
	signed, err := c.signer.Sign(claims)
	if err != nil {
		return "", err
	}
	jws, err := signed.CompactSerialize()
	if err != nil {
		return "", err
	}
	return "grant_type=client_credentials&client_assertion_type=" + url.QueryEscape(clientassertion.AssertionType) +
		"&client_assertion=" + jws, nil
}

// assertionsFor is how many assertions a run of d with conns connections
// may send: at assertionRate, and one more per connection for the
// requests in flight when it ends.
func assertionsFor(d time.Duration, conns int) int {
	return int(d.Seconds()*assertionRate) + conns
}

// writeBodies signs n assertions, valid from now until d + assertionSlack
// after it, and writes their bodies to path, one a line.
func (s *assertionSigner) writeBodies(path string, n int, d time.Duration) error {
	if d+assertionSlack > maxAssertionAhead {
		return fmt.Errorf("case (k) runs at most %s: its assertions expire at most 5 min ahead", maxAssertionAhead-assertionSlack)
	}
	now := time.Now()
	exp := now.Add(d + assertionSlack)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		b, err := s.body(i, now, exp)
		if err != nil {
			f.Close()
			return err
		}
		w.WriteString(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitAssertion posts fresh assertions to u until one is answered 200
// (the edge has the clients' keys).
func (s *assertionSigner) waitAssertion(ctx context.Context, u string, limit time.Duration) error {
	if err := loopbackOnly(u); err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for i := 0; ; i++ {
		now := time.Now()
		body, err := s.body(i, now, now.Add(time.Minute))
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		code := 0
		resp, err := httpClient.Do(req)
		if err == nil {
			code = resp.StatusCode
			resp.Body.Close()
			if code == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: an assertion still answered %d (err %v) after %s", u, code, err, limit)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
