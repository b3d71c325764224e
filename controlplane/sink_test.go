package controlplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/sink/sinktest"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/secrethash"
)

// sinkEvent is one event a test receiver took, verified and decrypted.
type sinkEvent struct {
	id, secretID, stage string
	// plaintext is the decrypted secret of a pending event.
	plaintext string
}

// receiver is a webhook sink on 127.0.0.1:0 with its own P-256 key: it
// verifies each event's Standard Webhooks signature and decrypts the
// secret's JWE, as docs/sinks.md tells receivers to.
type receiver struct {
	t   *testing.T
	key *ecdsa.PrivateKey
	srv *httptest.Server

	mu      sync.Mutex
	signer  *standardwebhooks.Webhook
	events  []sinkEvent
	failing bool
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, key: key}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

// publicJWK is the receiver's public key as a sink config takes it.
func (rc *receiver) publicJWK() json.RawMessage {
	b, err := json.Marshal(jose.JSONWebKey{Key: &rc.key.PublicKey, KeyID: "receiver-1", Use: "enc"})
	if err != nil {
		rc.t.Fatal(err)
	}
	return b
}

func (rc *receiver) config(rotateEvery string) sink.Config {
	return sink.Config{Kind: sink.KindWebhook, URL: rc.srv.URL + "/rotagate", PublicKey: rc.publicJWK(), RotateEvery: rotateEvery}
}

func (rc *receiver) setSigningSecret(secret string) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		rc.t.Fatalf("signing secret: %v", err)
	}
	rc.mu.Lock()
	rc.signer = wh
	rc.mu.Unlock()
}

func (rc *receiver) setFailing(f bool) {
	rc.mu.Lock()
	rc.failing = f
	rc.mu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failing {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	// The tests' clock is not the wall clock: the signature is checked,
	// its timestamp's tolerance is not.
	if rc.signer == nil || rc.signer.VerifyIgnoringTimestamp(body, r.Header) != nil {
		rc.t.Errorf("sink event with a bad signature")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev struct {
		Type string     `json:"type"`
		Data sink.Event `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type != sink.EventDelivered {
		rc.t.Errorf("sink event %s: type %q, %v", body, ev.Type, err)
		return
	}
	got := sinkEvent{id: r.Header.Get("webhook-id"), secretID: ev.Data.SecretID, stage: string(ev.Data.Stage)}
	if ev.Data.Stage == sink.StagePending {
		plain, err := sinktest.OpenSecret(rc.key, ev.Data.SecretJWE)
		if err != nil {
			rc.t.Errorf("the secret's JWE: %v", err)
			return
		}
		got.plaintext = plain
	} else if ev.Data.SecretJWE != "" {
		rc.t.Errorf("a %s event carries a secret", ev.Data.Stage)
	}
	rc.events = append(rc.events, got)
}

// took returns the events received so far.
func (rc *receiver) took() []sinkEvent {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]sinkEvent(nil), rc.events...)
}

// stages returns the stages received for a secret, in order.
func (rc *receiver) stages(secretID string) []string {
	var out []string
	for _, ev := range rc.took() {
		if ev.secretID == secretID {
			out = append(out, ev.stage)
		}
	}
	return out
}

// plaintextOf returns the secret delivered for secretID.
func (rc *receiver) plaintextOf(secretID string) string {
	for _, ev := range rc.took() {
		if ev.secretID == secretID && ev.plaintext != "" {
			return ev.plaintext
		}
	}
	rc.t.Fatalf("no secret delivered for %s", secretID)
	return ""
}

// sinkSender is the webhook sender as the module runs it, delivering the
// sinks' events of e.
func sinkSender(e *env) *webhook.Sender {
	return webhook.NewSender(e.store.(store.OutboxStore), nil, webhook.Options{
		Now:   e.clock.Now,
		Sinks: &webhook.Sinks{Target: e.svc.SinkTarget, Done: e.svc.SinkDelivered, Pass: e.svc.SinkPass},
	})
}

func deliverSinks(t *testing.T, s *webhook.Sender) {
	t.Helper()
	if err := s.DeliverSinks(context.Background()); err != nil {
		t.Fatalf("DeliverSinks: %v", err)
	}
}

func sinkPass(t *testing.T, e *env) {
	t.Helper()
	if err := e.svc.SinkPass(context.Background()); err != nil {
		t.Fatalf("SinkPass: %v", err)
	}
}

// putSink sets c's sink through the API and returns the answer.
func putSink(t *testing.T, e *env, clientID string, cfg sink.Config) map[string]any {
	t.Helper()
	r := e.admin("PUT", "/v1/clients/"+clientID+"/sink", cfg)
	mustStatus(t, r, http.StatusOK)
	return r.json(t)
}

// secretHash returns the stored hash of a secret.
func secretHash(t *testing.T, st store.Store, clientID, secretID string) store.Secret {
	t.Helper()
	secrets, err := st.Secrets(context.Background(), clientID)
	if err != nil {
		t.Fatal(err)
	}
	i := indexOfSecret(secrets, secretID)
	if i < 0 {
		t.Fatalf("no secret %s", secretID)
	}
	return secrets[i]
}

// clientEventTypes returns the types of the stored events of a client, oldest
// first.
func clientEventTypes(t *testing.T, st store.Store, clientID string) []string {
	t.Helper()
	evs, err := st.(store.OutboxStore).Events(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].ClientID == clientID {
			out = append(out, evs[i].Type)
		}
	}
	return out
}

// outboxPayloads returns every payload stored in the outbox.
func outboxPayloads(t *testing.T, st store.Store) string {
	t.Helper()
	var all strings.Builder
	_, err := st.Update(context.Background(), func(tx store.Tx) error {
		rows, err := tx.(store.RawTx).Query(context.Background(), `SELECT payload FROM events`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				return err
			}
			all.WriteString(p)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.String()
}

// auditText is everything the env's loggers wrote.
func auditText(e *env) string {
	var b strings.Builder
	for _, l := range e.audit.All() {
		fmt.Fprintf(&b, "%s %v\n", l.Message, l.ContextMap())
	}
	return b.String()
}

// A webhook sink end to end, on both stores: the generate answer carries
// no secret, the receiver decrypts one whose hash is the stored one, the
// outbox and the logs never hold it; the secret becomes current after
// revocation_delay; a rotation's grace waits for the delivery, then the
// old secret becomes previous.
func testSinkWebhook(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-a")
	ans := putSink(t, e, "svc-a", rc.config(""))
	signing, _ := ans["signing_secret"].(string)
	if !strings.HasPrefix(signing, "whsec_") {
		t.Fatalf("PUT answer has no signing secret: %v", ans["signing_secret"] != nil)
	}
	rc.setSigningSecret(signing)
	got := e.admin("GET", "/v1/clients/svc-a/sink", nil)
	mustStatus(t, got, http.StatusOK)
	if bytes.Contains(got.body, []byte(signing)) || got.json(t)["kind"] != "webhook" {
		t.Fatalf("GET sink shows the signing secret or misses the kind: %s", redact(got.body))
	}

	gen := e.admin("POST", "/v1/clients/svc-a/secrets", nil)
	mustStatus(t, gen, http.StatusCreated)
	g := gen.json(t)
	first, _ := g["id"].(string)
	if _, has := g["secret"]; has || g["delivered_to"] != "webhook" {
		t.Fatalf("generate answer with a sink: %s", redact(gen.body))
	}
	if n := e.activeCount("svc-a"); n != 1 {
		t.Fatalf("%d active secrets after generate, want 1 (active once the JWE is committed)", n)
	}

	s := sinkSender(e)
	deliverSinks(t, s)
	plain := rc.plaintextOf(first)
	if secrethash.NewSHA256(plain) != secretHash(t, e.store, "svc-a", first).Hash {
		t.Fatal("the delivered secret is not the one stored")
	}
	for what, text := range map[string]string{
		"the generate answer": string(gen.body), "the outbox": outboxPayloads(t, e.store), "the logs": auditText(e),
	} {
		if strings.Contains(text, plain) || strings.Contains(text, plain[len(plain)-12:]) {
			t.Errorf("%s holds the secret", what)
		}
	}
	if types := clientEventTypes(t, e.store, "svc-a"); !containsAll(types, store.EventSecretGenerated, store.EventSecretDelivered) {
		t.Errorf("events %v, want secret.generated and secret.delivered", types)
	}

	// Not current before revocation_delay, current after it, once.
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.stages(first); len(st) != 1 {
		t.Fatalf("stages before revocation_delay: %v", st)
	}
	e.clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.stages(first); strings.Join(st, ",") != "pending,current" {
		t.Fatalf("stages of the first secret: %v", st)
	}

	// A rotation: the old secret keeps no expiry until the new one is
	// delivered.
	rot := e.admin("POST", "/v1/clients/svc-a/secrets/rotate", map[string]string{"grace": "1h"})
	mustStatus(t, rot, http.StatusCreated)
	second, _ := rot.json(t)["id"].(string)
	if _, has := rot.json(t)["secret"]; has {
		t.Fatal("rotate answer with a sink holds the secret")
	}
	if old := secretHash(t, e.store, "svc-a", first); old.ExpiresAt != nil {
		t.Fatal("the old secret expires before the new one is delivered")
	}
	deliverSinks(t, s)
	if old := secretHash(t, e.store, "svc-a", first); old.ExpiresAt == nil || !old.ExpiresAt.Equal(e.clock.Now().Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("the old secret's expiry after delivery: %v", old.ExpiresAt)
	}
	e.clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.stages(second); strings.Join(st, ",") != "pending,current" {
		t.Fatalf("stages of the second secret: %v", st)
	}
	if st := rc.stages(first); strings.Join(st, ",") != "pending,current,previous" {
		t.Fatalf("stages of the first secret: %v", st)
	}

	// Deleting the client takes its sink and what it carried along.
	mustStatus(t, e.admin("DELETE", "/v1/clients/svc-a", nil), http.StatusNoContent)
	if _, err := e.store.(store.SinkStore).Sink(context.Background(), "svc-a"); err != store.ErrNotFound {
		t.Fatalf("the sink of a deleted client: %v", err)
	}
	if _, err := e.store.(store.SinkStore).SinkSecret(context.Background(), second); err != store.ErrNotFound {
		t.Fatalf("the sink record of a deleted client's secret: %v", err)
	}
}

func containsAll(list []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, l := range list {
			found = found || l == w
		}
		if !found {
			return false
		}
	}
	return true
}

// The SQLite file and its WAL hold no plaintext of a delivered secret.
func TestSinkDatabaseFileHoldsNoSecret(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-f")
	rc.setSigningSecret(putSink(t, e, "svc-f", rc.config(""))["signing_secret"].(string))
	ns := e.mustGenerate("svc-f")
	if ns.Plaintext != "" || ns.DeliveredTo != sink.KindWebhook {
		t.Fatal("GenerateSecret with a sink returned the plaintext")
	}
	deliverSinks(t, sinkSender(e))
	plain := rc.plaintextOf(ns.Secret.ID)
	for _, p := range []string{e.path, e.path + "-wal"} {
		data, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(plain)) || bytes.Contains(data, []byte(plain[4:20])) {
			t.Errorf("%s holds the secret", p)
		}
	}
}

// A webhook sink that is down: retried, then after the 24 h window the
// undelivered secret is revoked, secret.delivery_failed is sent, and the
// old secret is untouched.
func TestSinkWebhookDown(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-d")
	old, err := e.svc.GenerateSecret(context.Background(), rules.Actor{TokenID: "test", Admin: true}, "svc-d", rules.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc.setSigningSecret(putSink(t, e, "svc-d", rc.config(""))["signing_secret"].(string))
	rc.setFailing(true)
	ns, err := e.svc.RotateSecret(context.Background(), rules.Actor{TokenID: "test", Admin: true}, "svc-d", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := sinkSender(e)
	deliverSinks(t, s)
	e.clock.Add(2 * time.Hour)
	deliverSinks(t, s)
	if o := secretHash(t, e.store, "svc-d", old.Secret.ID); !o.Active(e.clock.Now()) || o.ExpiresAt != nil {
		t.Fatal("the old secret was touched while the sink is down")
	}
	e.clock.Add(webhook.DeliveryWindow)
	deliverSinks(t, s)
	if n := secretHash(t, e.store, "svc-d", ns.Secret.ID); n.RevokedAt == nil {
		t.Fatal("the undelivered secret is still active")
	}
	if o := secretHash(t, e.store, "svc-d", old.Secret.ID); !o.Active(e.clock.Now()) || o.ExpiresAt != nil {
		t.Fatal("the old secret was touched after the delivery failed")
	}
	if types := clientEventTypes(t, e.store, "svc-d"); !containsAll(types, store.EventSecretDeliveryFailed) {
		t.Fatalf("events %v, want secret.delivery_failed", types)
	}
}

// Bad sink configs are 400 invalid_request naming the field; so is an
// import into a client whose secrets go to a sink.
func TestSinkBadInput(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-b")
	priv, _ := json.Marshal(jose.JSONWebKey{Key: rc.key, Use: "enc"})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	wrongCurve, _ := json.Marshal(jose.JSONWebKey{Key: &p384.PublicKey})
	for _, tc := range []struct {
		name, body, field string
	}{
		{"http to a remote host", `{"kind":"webhook","url":"http://example.com/x","public_key":` + string(rc.publicJWK()) + `}`, "url"},
		{"private key", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(priv) + `}`, "public_key"},
		{"wrong curve", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(wrongCurve) + `}`, "public_key"},
		{"X25519", `{"kind":"webhook","url":"https://example.com/x","public_key":{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}}`, "public_key"},
		{"unknown kind", `{"kind":"vault"}`, "kind"},
		{"short schedule", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(rc.publicJWK()) + `,"rotate_every":"10s"}`, "rotate_every"},
	} {
		r := e.admin("PUT", "/v1/clients/svc-b/sink", tc.body)
		mustStatus(t, r, http.StatusBadRequest)
		if m := r.json(t); m["error"] != "invalid_request" || !strings.HasPrefix(m["error_description"].(string), tc.field+":") {
			t.Errorf("%s: %s", tc.name, r.body)
		}
	}
	if r := e.admin("GET", "/v1/clients/svc-b/sink", nil); r.status != http.StatusNotFound {
		t.Fatalf("GET of no sink: %d", r.status)
	}
	putSink(t, e, "svc-b", rc.config("90d"))
	r := e.admin("POST", "/v1/clients/svc-b/secrets", map[string]any{"import": map[string]string{"secret": "legacy-secret-1234"}})
	mustStatus(t, r, http.StatusBadRequest)
	if n := e.activeCount("svc-b"); n != 0 {
		t.Fatalf("%d active secrets after a refused import", n)
	}
	mustStatus(t, e.admin("DELETE", "/v1/clients/svc-b/sink", nil), http.StatusNoContent)
	mustStatus(t, e.admin("GET", "/v1/clients/svc-b/sink", nil), http.StatusNotFound)
	trail := e.admin("GET", "/v1/clients/svc-b/audit", nil)
	if !bytes.Contains(trail.body, []byte("client.sink")) {
		t.Fatalf("no client.sink in the audit trail: %s", trail.body)
	}
}

// Scheduled rotation with an injected clock, on both stores: nothing
// before rotate_every, one rotation through the sink after it, however
// often the loop runs, and (with a second handle on the database, a
// replica) no second one.
func testSinkScheduledRotation(t *testing.T, k storeKit) {
	st, reopen := k.open(t)
	e := newEnvOn(t, st, "")
	rc := newReceiver(t)
	e.mustClient("svc-s")
	first := e.mustGenerate("svc-s")
	rc.setSigningSecret(putSink(t, e, "svc-s", rc.config("2m"))["signing_secret"].(string))
	replicaSvc, err := rules.NewService(context.Background(), reopen(t), rules.ServiceOptions{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	sinkPass(t, e)
	if n := e.activeCount("svc-s"); n != 1 {
		t.Fatalf("%d active secrets before rotate_every", n)
	}
	e.clock.Add(61 * time.Second)
	var wg sync.WaitGroup
	for _, svc := range []*rules.Service{e.svc, replicaSvc, e.svc} {
		wg.Go(func() {
			if err := svc.SinkPass(context.Background()); err != nil {
				t.Errorf("SinkPass: %v", err)
			}
		})
	}
	wg.Wait()
	secrets, err := e.store.Secrets(context.Background(), "svc-s")
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 2 {
		t.Fatalf("%d secrets after the schedule came due, want 2 (one rotation)", len(secrets))
	}
	newest := secrets[1]
	deliverSinks(t, sinkSender(e))
	if secrethash.NewSHA256(rc.plaintextOf(newest.ID)) != newest.Hash {
		t.Fatal("the scheduled secret delivered is not the one stored")
	}
	if o := secretHash(t, e.store, "svc-s", first.Secret.ID); o.ExpiresAt == nil {
		t.Fatal("the old secret got no grace after the delivery")
	}
	sinkPass(t, e)
	if secrets, _ := e.store.Secrets(context.Background(), "svc-s"); len(secrets) != 2 {
		t.Fatalf("%d secrets after another pass", len(secrets))
	}
	// A client rotated on a schedule is cut over automatically unless it
	// sets auto off (SPEC §15); the control plane's default here is off.
	admin := rules.Actor{TokenID: "test", Admin: true}
	if st, err := e.svc.GetCutover(context.Background(), admin, "svc-s"); err != nil || !st.Policy.Auto {
		t.Fatalf("cut-over of a scheduled client: auto %v, %v; want on", st.Policy.Auto, err)
	}
	off := false
	if st, err := e.svc.SetCutover(context.Background(), admin, "svc-s", store.CutoverPolicy{Auto: &off}); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over set off: auto %v, %v", st.Policy.Auto, err)
	}
	if st, err := e.svc.GetCutover(context.Background(), admin, "svc-s"); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over set off, read again: auto %v, %v", st.Policy.Auto, err)
	}
	e.mustClient("svc-plain")
	if st, err := e.svc.GetCutover(context.Background(), admin, "svc-plain"); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over of a client without a schedule: auto %v, %v; want the default, off", st.Policy.Auto, err)
	}
}

// Two replicas on one database deliver each secret to the sink once.
func testSinkReplicasDeliverOnce(t *testing.T, k storeKit) {
	st, reopen := k.open(t)
	e := newEnvOn(t, st, "")
	rc := newReceiver(t)
	e.mustClient("svc-r")
	rc.setSigningSecret(putSink(t, e, "svc-r", rc.config(""))["signing_secret"].(string))
	var ids []string
	for range 2 {
		ids = append(ids, e.mustGenerate("svc-r").Secret.ID)
	}
	other := newEnvOn(t, reopen(t), "")
	other.clock = e.clock
	senders := []*webhook.Sender{sinkSender(e), sinkSender(other), sinkSender(e)}
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() {
			if err := s.DeliverSinks(context.Background()); err != nil {
				t.Errorf("DeliverSinks: %v", err)
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if st := rc.stages(id); len(st) != 1 {
			t.Errorf("secret %s reached the sink %d times", id, len(st))
		}
	}
}

// The AWS sink against moto_server: AWSPENDING before the hash is active,
// AWSCURRENT after revocation_delay, the old value AWSPREVIOUS after a
// rotation; a put that fails leaves nothing active.
func TestSinkAWS(t *testing.T) {
	endpoint := sinktest.StartMoto(t)
	sinktest.AWSEnv(t)
	ctx := context.Background()
	sm := sinktest.AWSClient(t, endpoint)
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("rotagate/svc-w"), SecretString: aws.String(`{"client_id":"svc-w"}`),
	}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.mustClient("svc-w")
	cfg := sink.Config{Kind: sink.KindAWSSecretsManager, SecretID: "rotagate/svc-w", Region: "us-east-1", Endpoint: endpoint}
	if ans := putSink(t, e, "svc-w", cfg); ans["signing_secret"] != nil {
		t.Fatal("an AWS sink got a signing secret")
	}
	read := func(stage string) sink.Value {
		t.Helper()
		out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("rotagate/svc-w"), VersionStage: aws.String(stage)})
		if err != nil {
			t.Fatalf("reading %s: %v", stage, err)
		}
		var v sink.Value
		json.Unmarshal([]byte(aws.ToString(out.SecretString)), &v)
		return v
	}

	gen := e.admin("POST", "/v1/clients/svc-w/secrets", nil)
	mustStatus(t, gen, http.StatusCreated)
	first := gen.json(t)["id"].(string)
	if _, has := gen.json(t)["secret"]; has || gen.json(t)["delivered_to"] != sink.KindAWSSecretsManager {
		t.Fatalf("generate answer: %s", redact(gen.body))
	}
	pending := read(sink.AWSPending)
	if pending.SecretID != first || secrethash.NewSHA256(pending.ClientSecret) != secretHash(t, e.store, "svc-w", first).Hash {
		t.Fatal("AWSPENDING does not hold the stored secret")
	}
	if strings.Contains(auditText(e)+outboxPayloads(t, e.store)+string(gen.body), pending.ClientSecret) {
		t.Fatal("the logs, outbox or answer hold the secret")
	}
	e.clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	if cur := read(sink.AWSCurrent); cur.SecretID != first {
		t.Fatalf("AWSCURRENT is %q after revocation_delay, want %s", cur.SecretID, first)
	}

	rot := e.admin("POST", "/v1/clients/svc-w/secrets/rotate", map[string]string{"grace": "1h"})
	mustStatus(t, rot, http.StatusCreated)
	second := rot.json(t)["id"].(string)
	if old := secretHash(t, e.store, "svc-w", first); old.ExpiresAt == nil {
		t.Fatal("the AWS put succeeded, yet the rotation's grace was not applied")
	}
	e.clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	if cur, prev := read(sink.AWSCurrent), read(sink.AWSPrevious); cur.SecretID != second || prev.SecretID != first {
		t.Fatalf("after the rotation AWSCURRENT is %q and AWSPREVIOUS %q", cur.SecretID, prev.SecretID)
	}

	// At max_active_secrets nothing is put: AWSPENDING would leave a
	// secret the store then refuses.
	versions := func() int {
		d, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("rotagate/svc-w")})
		if err != nil {
			t.Fatal(err)
		}
		return len(d.VersionIdsToStages)
	}
	before := versions()
	mustStatus(t, e.admin("POST", "/v1/clients/svc-w/secrets", nil), http.StatusConflict)
	if after := versions(); after != before {
		t.Fatalf("a refused generate put a version (%d → %d)", before, after)
	}

	// A put that fails: a sink naming a secret that does not exist.
	e.mustClient("svc-x")
	putSink(t, e, "svc-x", sink.Config{Kind: sink.KindAWSSecretsManager, SecretID: "rotagate/missing", Region: "us-east-1", Endpoint: endpoint})
	fail := e.admin("POST", "/v1/clients/svc-x/secrets", nil)
	mustStatus(t, fail, http.StatusBadGateway)
	if e.activeCount("svc-x") != 0 {
		t.Fatal("a failed put left a secret active")
	}
	if types := clientEventTypes(t, e.store, "svc-x"); !containsAll(types, store.EventSecretDeliveryFailed) {
		t.Fatalf("events %v, want secret.delivery_failed", types)
	}
}

// A secret revoked before it became current is never promoted: the sink
// hears of it only as pending, and the metric counts its delivery.
func TestSinkRevokedBeforePromotion(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-v")
	rc.setSigningSecret(putSink(t, e, "svc-v", rc.config(""))["signing_secret"].(string))
	delivered := testutil.ToFloat64(rules.Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "delivered"))
	ns := e.mustGenerate("svc-v")
	s := sinkSender(e)
	deliverSinks(t, s)
	if got := testutil.ToFloat64(rules.Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "delivered")); got < delivered+1 {
		t.Fatalf("rotagate_sink_deliveries_total{kind=webhook,outcome=delivered} went from %v to %v", delivered, got)
	}
	if _, err := e.svc.RevokeSecret(context.Background(), rules.Actor{TokenID: "test", Admin: true}, "svc-v", ns.Secret.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.stages(ns.Secret.ID); strings.Join(st, ",") != "pending" {
		t.Fatalf("stages of a secret revoked before promotion: %v", st)
	}
	rec, err := e.store.(store.SinkStore).SinkSecret(context.Background(), ns.Secret.ID)
	if err != nil || rec.Stage != store.SinkStageDropped {
		t.Fatalf("sink record: %+v, %v", rec, err)
	}
	r := e.admin("DELETE", "/v1/clients/svc-v/sink", nil)
	mustStatus(t, r, http.StatusNoContent)
	r = e.admin("GET", "/v1/clients/svc-v/sink", nil)
	mustStatus(t, r, http.StatusNotFound)
	if !bytes.Contains(r.body, []byte("the client has no sink")) {
		t.Fatalf("GET of no sink: %s", r.body)
	}
}

// A scheduled rotation that fails (the client is at max_active_secrets)
// is tried again with backoff, not on every pass, and succeeds once
// there is room.
func TestSinkScheduleBackoff(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-k")
	old := e.mustGenerate("svc-k")
	e.mustGenerate("svc-k")
	rc.setSigningSecret(putSink(t, e, "svc-k", rc.config("1m"))["signing_secret"].(string))
	attempts := func() int {
		n := 0
		for _, l := range e.audit.All() {
			if l.ContextMap()["action"] == "secret.rotate" && l.ContextMap()["who"] == "schedule" {
				n++
			}
		}
		return n
	}
	e.clock.Add(61 * time.Second)
	sinkPass(t, e)
	sinkPass(t, e)
	if n := attempts(); n != 1 {
		t.Fatalf("%d scheduled rotations tried at max_active_secrets, want 1 then a wait", n)
	}
	e.clock.Add(11 * time.Second)
	sinkPass(t, e)
	if n := attempts(); n != 2 {
		t.Fatalf("%d scheduled rotations tried after the first backoff, want 2", n)
	}
	if _, err := e.svc.RevokeSecret(context.Background(), rules.Actor{TokenID: "test", Admin: true}, "svc-k", old.Secret.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(21 * time.Second)
	sinkPass(t, e)
	if n := e.activeCount("svc-k"); n != 2 {
		t.Fatalf("%d active secrets after the retry with room, want 2", n)
	}
	deliverSinks(t, sinkSender(e))
	if len(rc.took()) != 1 {
		t.Fatalf("the sink got %d events, want the one scheduled secret", len(rc.took()))
	}
}

// A public key registered or rotated to for a client with a webhook sink
// is not delivered (it has no plaintext): it is active at once, the answer
// names no sink, and a rotation's grace applies to the others at once
// rather than waiting for an acknowledgement that never comes.
func TestSinkLeavesKeysAlone(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t)
	e.mustClient("svc-k")
	first := e.mustGenerate("svc-k")
	rc.setSigningSecret(putSink(t, e, "svc-k", rc.config(""))["signing_secret"].(string))
	admin := rules.Actor{TokenID: "test", Admin: true}
	pub, _ := testKeyJWKs(t)
	key, err := e.svc.RotateCredential(context.Background(), admin, "svc-k", time.Hour, rules.GenerateOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if key.DeliveredTo != "" || key.Secret.Kind != store.KindPublicKey {
		t.Fatalf("rotation to a key: delivered to %q, kind %q", key.DeliveredTo, key.Secret.Kind)
	}
	if len(key.Expiring) != 1 || key.Expiring[0] != first.Secret.ID {
		t.Fatalf("rotation to a key left expiring %v, want the old secret at once", key.Expiring)
	}
	if o := secretHash(t, e.store, "svc-k", first.Secret.ID); o.ExpiresAt == nil {
		t.Fatal("the old secret got no grace")
	}
	deliverSinks(t, sinkSender(e))
	for _, ev := range rc.took() {
		if ev.secretID == key.Secret.ID {
			t.Fatalf("the sink got an event for the key: %+v", ev.secretID)
		}
	}
}
