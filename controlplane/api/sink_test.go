package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/sink/sinktest"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/secrethash"
)

// sinkSender is the webhook sender as the module runs it, delivering the
// sinks' events of e.
func sinkSender(e *env) *webhook.Sender {
	return webhook.NewSender(e.Store.(store.OutboxStore), nil, webhook.Options{
		Now:   e.Clock.Now,
		Sinks: &webhook.Sinks{Target: e.Svc.SinkTarget, Done: e.Svc.SinkDelivered, Pass: e.Svc.SinkPass},
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
	if err := e.Svc.SinkPass(context.Background()); err != nil {
		t.Fatalf("SinkPass: %v", err)
	}
}

// putSink sets c's sink through the API and returns the answer.
func putSink(t *testing.T, e *env, clientID string, cfg sink.Config) map[string]any {
	t.Helper()
	r := e.Admin("PUT", "/v1/clients/"+clientID+"/sink", cfg)
	cptest.MustStatus(t, r, http.StatusOK)
	return r.JSON(t)
}

// sinkTo points clientID's sink at the webhook receiver rc, with
// rotate_every rotateEvery ("" for none), and gives rc the signing secret
// the answer carries.
func sinkTo(t *testing.T, e *env, rc *cptest.Receiver, clientID, rotateEvery string) {
	t.Helper()
	rc.SetSigningSecret(putSink(t, e, clientID, rc.Config(rotateEvery))["signing_secret"].(string))
}

// sinkClient creates clientID with its secrets going to a new webhook
// receiver (see sinkTo), and returns the receiver.
func sinkClient(t *testing.T, e *env, clientID, rotateEvery string) *cptest.Receiver {
	t.Helper()
	rc := cptest.NewReceiver(t)
	e.MustClient(clientID)
	sinkTo(t, e, rc, clientID, rotateEvery)
	return rc
}

// secretHash returns the stored hash of a secret.
func secretHash(t *testing.T, st store.Store, clientID, secretID string) store.Secret {
	t.Helper()
	secrets, err := st.Secrets(context.Background(), clientID)
	if err != nil {
		t.Fatal(err)
	}
	i := cptest.IndexOfSecret(secrets, secretID)
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

// mustHaveEvents fails the test unless the client's stored events include
// every type in want.
func mustHaveEvents(t *testing.T, st store.Store, clientID string, want ...string) {
	t.Helper()
	types := clientEventTypes(t, st, clientID)
	for _, w := range want {
		if !slices.Contains(types, w) {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
}

// auditText is everything the env's loggers wrote.
func auditText(e *env) string {
	var b strings.Builder
	for _, l := range e.Audit.All() {
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
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-a")
	ans := putSink(t, e, "svc-a", rc.Config(""))
	signing, _ := ans["signing_secret"].(string)
	if !strings.HasPrefix(signing, "whsec_") {
		t.Fatalf("PUT answer has no signing secret: %v", ans["signing_secret"] != nil)
	}
	rc.SetSigningSecret(signing)
	got := e.Admin("GET", "/v1/clients/svc-a/sink", nil)
	cptest.MustStatus(t, got, http.StatusOK)
	if bytes.Contains(got.Body, []byte(signing)) || got.JSON(t)["kind"] != "webhook" {
		t.Fatalf("GET sink shows the signing secret or misses the kind: %s", cptest.Redact(got.Body))
	}

	gen := e.Admin("POST", "/v1/clients/svc-a/secrets", nil)
	cptest.MustStatus(t, gen, http.StatusCreated)
	g := gen.JSON(t)
	first, _ := g["id"].(string)
	if _, has := g["secret"]; has || g["delivered_to"] != "webhook" {
		t.Fatalf("generate answer with a sink: %s", cptest.Redact(gen.Body))
	}
	if n := e.ActiveCount("svc-a"); n != 1 {
		t.Fatalf("%d active secrets after generate, want 1 (active once the JWE is committed)", n)
	}

	s := sinkSender(e)
	deliverSinks(t, s)
	plain := rc.PlaintextOf(first)
	if secrethash.NewSHA256(plain) != secretHash(t, e.Store, "svc-a", first).Hash {
		t.Fatal("the delivered secret is not the one stored")
	}
	for what, text := range map[string]string{
		"the generate answer": string(gen.Body), "the outbox": strings.Join(storedPayloads(t, e.Store), ""), "the logs": auditText(e),
	} {
		if strings.Contains(text, plain) || strings.Contains(text, plain[len(plain)-12:]) {
			t.Errorf("%s holds the secret", what)
		}
	}
	mustHaveEvents(t, e.Store, "svc-a", store.EventSecretGenerated, store.EventSecretDelivered)

	// Not current before revocation_delay, current after it, once.
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.Stages(first); len(st) != 1 {
		t.Fatalf("stages before revocation_delay: %v", st)
	}
	e.Clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.Stages(first); strings.Join(st, ",") != "pending,current" {
		t.Fatalf("stages of the first secret: %v", st)
	}

	// A rotation: the old secret keeps no expiry until the new one is
	// delivered.
	rot := e.Admin("POST", "/v1/clients/svc-a/secrets/rotate", map[string]string{"grace": "1h"})
	cptest.MustStatus(t, rot, http.StatusCreated)
	second, _ := rot.JSON(t)["id"].(string)
	if _, has := rot.JSON(t)["secret"]; has {
		t.Fatal("rotate answer with a sink holds the secret")
	}
	if old := secretHash(t, e.Store, "svc-a", first); old.ExpiresAt != nil {
		t.Fatal("the old secret expires before the new one is delivered")
	}
	deliverSinks(t, s)
	if old := secretHash(t, e.Store, "svc-a", first); old.ExpiresAt == nil || !old.ExpiresAt.Equal(e.Clock.Now().Add(time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("the old secret's expiry after delivery: %v", old.ExpiresAt)
	}
	e.Clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.Stages(second); strings.Join(st, ",") != "pending,current" {
		t.Fatalf("stages of the second secret: %v", st)
	}
	if st := rc.Stages(first); strings.Join(st, ",") != "pending,current,previous" {
		t.Fatalf("stages of the first secret: %v", st)
	}

	// Deleting the client takes its sink and what it carried along.
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/svc-a", nil), http.StatusNoContent)
	if _, err := e.Store.(store.SinkStore).Sink(context.Background(), "svc-a"); err != store.ErrNotFound {
		t.Fatalf("the sink of a deleted client: %v", err)
	}
	if _, err := e.Store.(store.SinkStore).SinkSecret(context.Background(), second); err != store.ErrNotFound {
		t.Fatalf("the sink record of a deleted client's secret: %v", err)
	}
}

// The SQLite file and its WAL hold no plaintext of a delivered secret.
func TestSinkDatabaseFileHoldsNoSecret(t *testing.T) {
	e := newEnv(t)
	rc := sinkClient(t, e, "svc-f", "")
	ns := e.MustGenerate("svc-f")
	if ns.Plaintext != "" || ns.DeliveredTo != sink.KindWebhook {
		t.Fatal("GenerateSecret with a sink returned the plaintext")
	}
	deliverSinks(t, sinkSender(e))
	plain := rc.PlaintextOf(ns.Secret.ID)
	for _, p := range []string{e.Path, e.Path + "-wal"} {
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
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-d")
	old, err := e.Svc.GenerateSecret(context.Background(), cptest.Root, "svc-d", rules.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sinkTo(t, e, rc, "svc-d", "")
	rc.SetFailing(true)
	ns, err := e.Svc.RotateSecret(context.Background(), cptest.Root, "svc-d", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := sinkSender(e)
	deliverSinks(t, s)
	e.Clock.Add(2 * time.Hour)
	deliverSinks(t, s)
	if o := secretHash(t, e.Store, "svc-d", old.Secret.ID); !o.Active(e.Clock.Now()) || o.ExpiresAt != nil {
		t.Fatal("the old secret was touched while the sink is down")
	}
	e.Clock.Add(webhook.DeliveryWindow)
	deliverSinks(t, s)
	if n := secretHash(t, e.Store, "svc-d", ns.Secret.ID); n.RevokedAt == nil {
		t.Fatal("the undelivered secret is still active")
	}
	if o := secretHash(t, e.Store, "svc-d", old.Secret.ID); !o.Active(e.Clock.Now()) || o.ExpiresAt != nil {
		t.Fatal("the old secret was touched after the delivery failed")
	}
	mustHaveEvents(t, e.Store, "svc-d", store.EventSecretDeliveryFailed)
}

// Bad sink configs are 400 invalid_request naming the field; so is an
// import into a client whose secrets go to a sink.
func TestSinkBadInput(t *testing.T) {
	e := newEnv(t)
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-b")
	priv, _ := json.Marshal(jose.JSONWebKey{Key: rc.Key, Use: "enc"})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	wrongCurve, _ := json.Marshal(jose.JSONWebKey{Key: &p384.PublicKey})
	for _, tc := range []struct {
		name, body, field string
	}{
		{"http to a remote host", `{"kind":"webhook","url":"http://example.com/x","public_key":` + string(rc.PublicJWK()) + `}`, "url"},
		{"private key", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(priv) + `}`, "public_key"},
		{"wrong curve", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(wrongCurve) + `}`, "public_key"},
		{"X25519", `{"kind":"webhook","url":"https://example.com/x","public_key":{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}}`, "public_key"},
		{"unknown kind", `{"kind":"vault"}`, "kind"},
		{"short schedule", `{"kind":"webhook","url":"https://example.com/x","public_key":` + string(rc.PublicJWK()) + `,"rotate_every":"10s"}`, "rotate_every"},
	} {
		r := e.Admin("PUT", "/v1/clients/svc-b/sink", tc.body)
		cptest.MustStatus(t, r, http.StatusBadRequest)
		if m := r.JSON(t); m["error"] != "invalid_request" || !strings.HasPrefix(m["error_description"].(string), tc.field+":") {
			t.Errorf("%s: %s", tc.name, r.Body)
		}
	}
	if r := e.Admin("GET", "/v1/clients/svc-b/sink", nil); r.Status != http.StatusNotFound {
		t.Fatalf("GET of no sink: %d", r.Status)
	}
	putSink(t, e, "svc-b", rc.Config("90d"))
	r := e.Admin("POST", "/v1/clients/svc-b/secrets", map[string]any{"import": map[string]string{"secret": "legacy-secret-1234"}})
	cptest.MustStatus(t, r, http.StatusBadRequest)
	if n := e.ActiveCount("svc-b"); n != 0 {
		t.Fatalf("%d active secrets after a refused import", n)
	}
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/svc-b/sink", nil), http.StatusNoContent)
	cptest.MustStatus(t, e.Admin("GET", "/v1/clients/svc-b/sink", nil), http.StatusNotFound)
	trail := e.Admin("GET", "/v1/clients/svc-b/audit", nil)
	if !bytes.Contains(trail.Body, []byte("client.sink")) {
		t.Fatalf("no client.sink in the audit trail: %s", trail.Body)
	}
}

// Scheduled rotation with an injected clock, on both stores: nothing
// before rotate_every, one rotation through the sink after it, however
// often the loop runs, and (with a second handle on the database, a
// replica) no second one.
func testSinkScheduledRotation(t *testing.T, k storeKit) {
	st, reopen := k.open(t)
	e := newEnvOn(t, st, "")
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-s")
	first := e.MustGenerate("svc-s")
	sinkTo(t, e, rc, "svc-s", "2m")
	replicaSvc, err := rules.NewService(context.Background(), reopen(t), rules.ServiceOptions{Now: e.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(time.Minute)
	sinkPass(t, e)
	if n := e.ActiveCount("svc-s"); n != 1 {
		t.Fatalf("%d active secrets before rotate_every", n)
	}
	e.Clock.Add(61 * time.Second)
	var wg sync.WaitGroup
	for _, svc := range []*rules.Service{e.Svc, replicaSvc, e.Svc} {
		wg.Go(func() {
			if err := svc.SinkPass(context.Background()); err != nil {
				t.Errorf("SinkPass: %v", err)
			}
		})
	}
	wg.Wait()
	secrets, err := e.Store.Secrets(context.Background(), "svc-s")
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 2 {
		t.Fatalf("%d secrets after the schedule came due, want 2 (one rotation)", len(secrets))
	}
	newest := secrets[1]
	deliverSinks(t, sinkSender(e))
	if secrethash.NewSHA256(rc.PlaintextOf(newest.ID)) != newest.Hash {
		t.Fatal("the scheduled secret delivered is not the one stored")
	}
	if o := secretHash(t, e.Store, "svc-s", first.Secret.ID); o.ExpiresAt == nil {
		t.Fatal("the old secret got no grace after the delivery")
	}
	sinkPass(t, e)
	if secrets, _ := e.Store.Secrets(context.Background(), "svc-s"); len(secrets) != 2 {
		t.Fatalf("%d secrets after another pass", len(secrets))
	}
	// A client rotated on a schedule is cut over automatically unless it
	// sets auto off (SPEC §15); the control plane's default here is off.
	admin := cptest.Root
	if st, err := e.Svc.GetCutover(context.Background(), admin, "svc-s"); err != nil || !st.Policy.Auto {
		t.Fatalf("cut-over of a scheduled client: auto %v, %v; want on", st.Policy.Auto, err)
	}
	off := false
	if st, err := e.Svc.SetCutover(context.Background(), admin, "svc-s", store.CutoverPolicy{Auto: &off}); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over set off: auto %v, %v", st.Policy.Auto, err)
	}
	if st, err := e.Svc.GetCutover(context.Background(), admin, "svc-s"); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over set off, read again: auto %v, %v", st.Policy.Auto, err)
	}
	e.MustClient("svc-plain")
	if st, err := e.Svc.GetCutover(context.Background(), admin, "svc-plain"); err != nil || st.Policy.Auto {
		t.Fatalf("cut-over of a client without a schedule: auto %v, %v; want the default, off", st.Policy.Auto, err)
	}
}

// Two replicas on one database deliver each secret to the sink once.
func testSinkReplicasDeliverOnce(t *testing.T, k storeKit) {
	st, reopen := k.open(t)
	e := newEnvOn(t, st, "")
	rc := sinkClient(t, e, "svc-r", "")
	var ids []string
	for range 2 {
		ids = append(ids, e.MustGenerate("svc-r").Secret.ID)
	}
	other := newEnvOn(t, reopen(t), "")
	other.Clock = e.Clock
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
		if st := rc.Stages(id); len(st) != 1 {
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
	e.MustClient("svc-w")
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

	gen := e.Admin("POST", "/v1/clients/svc-w/secrets", nil)
	cptest.MustStatus(t, gen, http.StatusCreated)
	first := gen.JSON(t)["id"].(string)
	if _, has := gen.JSON(t)["secret"]; has || gen.JSON(t)["delivered_to"] != sink.KindAWSSecretsManager {
		t.Fatalf("generate answer: %s", cptest.Redact(gen.Body))
	}
	pending := read(sink.AWSPending)
	if pending.SecretID != first || secrethash.NewSHA256(pending.ClientSecret) != secretHash(t, e.Store, "svc-w", first).Hash {
		t.Fatal("AWSPENDING does not hold the stored secret")
	}
	if strings.Contains(auditText(e)+strings.Join(storedPayloads(t, e.Store), "")+string(gen.Body), pending.ClientSecret) {
		t.Fatal("the logs, outbox or answer hold the secret")
	}
	e.Clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	if cur := read(sink.AWSCurrent); cur.SecretID != first {
		t.Fatalf("AWSCURRENT is %q after revocation_delay, want %s", cur.SecretID, first)
	}

	rot := e.Admin("POST", "/v1/clients/svc-w/secrets/rotate", map[string]string{"grace": "1h"})
	cptest.MustStatus(t, rot, http.StatusCreated)
	second := rot.JSON(t)["id"].(string)
	if old := secretHash(t, e.Store, "svc-w", first); old.ExpiresAt == nil {
		t.Fatal("the AWS put succeeded, yet the rotation's grace was not applied")
	}
	e.Clock.Add(rules.DefaultRevocationDelay + time.Second)
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
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/svc-w/secrets", nil), http.StatusConflict)
	if after := versions(); after != before {
		t.Fatalf("a refused generate put a version (%d → %d)", before, after)
	}

	// A put that fails: a sink naming a secret that does not exist.
	e.MustClient("svc-x")
	putSink(t, e, "svc-x", sink.Config{Kind: sink.KindAWSSecretsManager, SecretID: "rotagate/missing", Region: "us-east-1", Endpoint: endpoint})
	fail := e.Admin("POST", "/v1/clients/svc-x/secrets", nil)
	cptest.MustStatus(t, fail, http.StatusBadGateway)
	if e.ActiveCount("svc-x") != 0 {
		t.Fatal("a failed put left a secret active")
	}
	mustHaveEvents(t, e.Store, "svc-x", store.EventSecretDeliveryFailed)
}

// A secret revoked before it became current is never promoted: the sink
// hears of it only as pending, and the metric counts its delivery.
func TestSinkRevokedBeforePromotion(t *testing.T) {
	e := newEnv(t)
	rc := sinkClient(t, e, "svc-v", "")
	delivered := testutil.ToFloat64(rules.Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "delivered"))
	ns := e.MustGenerate("svc-v")
	s := sinkSender(e)
	deliverSinks(t, s)
	if got := testutil.ToFloat64(rules.Metrics.SinkDeliveries.WithLabelValues(sink.KindWebhook, "delivered")); got < delivered+1 {
		t.Fatalf("rotagate_sink_deliveries_total{kind=webhook,outcome=delivered} went from %v to %v", delivered, got)
	}
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Root, "svc-v", ns.Secret.ID); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(rules.DefaultRevocationDelay + time.Second)
	sinkPass(t, e)
	deliverSinks(t, s)
	if st := rc.Stages(ns.Secret.ID); strings.Join(st, ",") != "pending" {
		t.Fatalf("stages of a secret revoked before promotion: %v", st)
	}
	rec, err := e.Store.(store.SinkStore).SinkSecret(context.Background(), ns.Secret.ID)
	if err != nil || rec.Stage != store.SinkStageDropped {
		t.Fatalf("sink record: %+v, %v", rec, err)
	}
	r := e.Admin("DELETE", "/v1/clients/svc-v/sink", nil)
	cptest.MustStatus(t, r, http.StatusNoContent)
	r = e.Admin("GET", "/v1/clients/svc-v/sink", nil)
	cptest.MustStatus(t, r, http.StatusNotFound)
	if !bytes.Contains(r.Body, []byte("the client has no sink")) {
		t.Fatalf("GET of no sink: %s", r.Body)
	}
}

// A scheduled rotation that fails (the client is at max_active_secrets)
// is tried again with backoff, not on every pass, and succeeds once
// there is room.
func TestSinkScheduleBackoff(t *testing.T) {
	e := newEnv(t)
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-k")
	old := e.MustGenerate("svc-k")
	e.MustGenerate("svc-k")
	sinkTo(t, e, rc, "svc-k", "1m")
	attempts := func() int {
		n := 0
		for _, l := range e.Audit.All() {
			if l.ContextMap()["action"] == "secret.rotate" && l.ContextMap()["who"] == "schedule" {
				n++
			}
		}
		return n
	}
	e.Clock.Add(61 * time.Second)
	sinkPass(t, e)
	sinkPass(t, e)
	if n := attempts(); n != 1 {
		t.Fatalf("%d scheduled rotations tried at max_active_secrets, want 1 then a wait", n)
	}
	e.Clock.Add(11 * time.Second)
	sinkPass(t, e)
	if n := attempts(); n != 2 {
		t.Fatalf("%d scheduled rotations tried after the first backoff, want 2", n)
	}
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Root, "svc-k", old.Secret.ID); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(21 * time.Second)
	sinkPass(t, e)
	if n := e.ActiveCount("svc-k"); n != 2 {
		t.Fatalf("%d active secrets after the retry with room, want 2", n)
	}
	deliverSinks(t, sinkSender(e))
	if len(rc.Took()) != 1 {
		t.Fatalf("the sink got %d events, want the one scheduled secret", len(rc.Took()))
	}
}

// A public key registered or rotated to for a client with a webhook sink
// is not delivered (it has no plaintext): it is active at once, the answer
// names no sink, and a rotation's grace applies to the others at once
// rather than waiting for an acknowledgement that never comes.
func TestSinkLeavesKeysAlone(t *testing.T) {
	e := newEnv(t)
	rc := cptest.NewReceiver(t)
	e.MustClient("svc-k")
	first := e.MustGenerate("svc-k")
	sinkTo(t, e, rc, "svc-k", "")
	admin := cptest.Root
	pub, _ := cptest.KeyJWKs(t)
	key, err := e.Svc.RotateCredential(context.Background(), admin, "svc-k", time.Hour, rules.GenerateOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if key.DeliveredTo != "" || key.Secret.Kind != store.KindPublicKey {
		t.Fatalf("rotation to a key: delivered to %q, kind %q", key.DeliveredTo, key.Secret.Kind)
	}
	if len(key.Expiring) != 1 || key.Expiring[0] != first.Secret.ID {
		t.Fatalf("rotation to a key left expiring %v, want the old secret at once", key.Expiring)
	}
	if o := secretHash(t, e.Store, "svc-k", first.Secret.ID); o.ExpiresAt == nil {
		t.Fatal("the old secret got no grace")
	}
	deliverSinks(t, sinkSender(e))
	for _, ev := range rc.Took() {
		if ev.SecretID == key.Secret.ID {
			t.Fatalf("the sink got an event for the key: %+v", ev.SecretID)
		}
	}
}
