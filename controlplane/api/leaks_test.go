package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
)

const testLeakToken = "leak-token-0123456789abcdef"

// signingKey is a key of our own in GitHub's role: the tests sign
// reports as GitHub would.
type signingKey struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newSigningKey(t *testing.T, id string) signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{id: id, priv: priv}
}

// sign returns the Github-Public-Key-Signature of body.
func (k signingKey) sign(t *testing.T, body []byte) string {
	t.Helper()
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// writeKeyFile writes keys in GitHub's published key-list format.
func writeKeyFile(t *testing.T, path string, keys ...signingKey) {
	t.Helper()
	type entry struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	}
	var list struct {
		PublicKeys []entry `json:"public_keys"`
	}
	for i, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pemText := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		list.PublicKeys = append(list.PublicKeys, entry{KeyIdentifier: k.id, Key: string(pemText), IsCurrent: i == 0})
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// leakEnv is a control plane with a leak token and GitHub's keys.
func leakEnv(t *testing.T, keys ...signingKey) (*env, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "github-keys.json")
	writeKeyFile(t, path, keys...)
	e := newEnv(t, withAdmins("root"), func(_ *rules.ServiceOptions, a *Options) {
		a.LeakToken, a.LeakReportKeys = testLeakToken, path
	})
	return e, path
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (e *env) github(body []byte, keyID, signature string) cptest.Response {
	e.T.Helper()
	return e.Do("POST", githubLeaksPath, "", body, githubKeyIDHeader, keyID, githubSignatureHeader, signature)
}

func (e *env) active(clientID, secretID string) bool {
	e.T.Helper()
	secrets, err := e.Store.Secrets(context.Background(), clientID)
	if err != nil {
		e.T.Fatal(err)
	}
	i := cptest.IndexOfSecret(secrets, secretID)
	return i >= 0 && secrets[i].Active(e.Clock.Now())
}

func TestGitHubLeakReport(t *testing.T) {
	k1 := newSigningKey(t, "key-one")
	e, _ := leakEnv(t, k1)
	e.MustClient("c")
	leaked := e.MustGenerate("c")
	bad := []byte(e.MustGenerate("c").Plaintext)
	bad[20] ^= 1 // bad checksum
	body, _ := json.Marshal([]githubReport{
		{Token: leaked.Plaintext, Type: "rotagate_client_secret", URL: "https://github.com/o/r/blob/1/x.env", Source: "content"},
		{Token: string(bad), Type: "rotagate_client_secret", URL: "https://github.com/o/r/blob/1/y.env", Source: "commit"},
	})

	// A wrong signature (signed by another key, or of another body): 401,
	// and nothing revoked.
	other := newSigningKey(t, "key-one")
	for name, sig := range map[string]string{
		"other key":  other.sign(t, body),
		"other body": k1.sign(t, append([]byte(" "), body...)),
		"not base64": "%%%",
		"empty":      "",
	} {
		r := e.github(body, k1.id, sig)
		cptest.MustStatus(t, r, 401)
		if r.JSON(t)["error"] != "invalid_signature" {
			t.Fatalf("%s: %s", name, r.Body)
		}
	}
	cptest.MustStatus(t, e.github(body, "unknown-key", k1.sign(t, body)), 401)
	if !e.active("c", leaked.Secret.ID) {
		t.Fatal("an unsigned report revoked the secret")
	}

	// Signed: the partner answer, in order.
	r := e.github(body, k1.id, k1.sign(t, body))
	cptest.MustStatus(t, r, 200)
	var got []githubFeedback
	r.Decode(t, &got)
	want := []githubFeedback{
		{TokenHash: tokenHash(leaked.Plaintext), TokenType: "rotagate_client_secret", Label: rules.LabelTruePositive},
		{TokenHash: tokenHash(string(bad)), TokenType: "rotagate_client_secret", Label: rules.LabelFalsePositive},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("answer %+v, want %+v", got, want)
	}
	if e.active("c", leaked.Secret.ID) {
		t.Fatal("the reported secret is still active")
	}
	trail, _ := e.Store.Audit(context.Background(), "c", 1)
	if trail[0].Who != "github-secret-scanning" || !strings.Contains(trail[0].Detail, "https://github.com/o/r/blob/1/x.env") {
		t.Fatalf("audit: %+v", trail[0])
	}
	// Neither the answer nor any log line holds a token.
	for _, tok := range []string{leaked.Plaintext, string(bad)} {
		if strings.Contains(string(r.Body), tok) {
			t.Fatal("the answer echoes a token")
		}
		for _, entry := range e.Audit.All() {
			if strings.Contains(fmt.Sprint(entry.ContextMap()), tok) || strings.Contains(entry.Message, tok) {
				t.Fatal("a log line holds a reported token")
			}
		}
	}
}

func TestGitHubLeakKeysReloaded(t *testing.T) {
	k1, k2 := newSigningKey(t, "old"), newSigningKey(t, "new")
	e, path := leakEnv(t, k1)
	body := []byte(`[{"token":"rgs_nothing","type":"t","url":"","source":"content"}]`)
	cptest.MustStatus(t, e.github(body, k1.id, k1.sign(t, body)), 200)
	cptest.MustStatus(t, e.github(body, k2.id, k2.sign(t, body)), 401)
	// GitHub rotates its keys; the operator refreshes the file.
	writeKeyFile(t, path, k2)
	future := time.Now().Add(time.Minute) // a distinct mtime, however coarse the filesystem's clock
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	cptest.MustStatus(t, e.github(body, k2.id, k2.sign(t, body)), 200)
	cptest.MustStatus(t, e.github(body, k1.id, k1.sign(t, body)), 401)
	// A broken file keeps the keys read before.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cptest.MustStatus(t, e.github(body, k2.id, k2.sign(t, body)), 200)
}

func TestGitHubLeakLimits(t *testing.T) {
	k := newSigningKey(t, "k")
	e, _ := leakEnv(t, k)
	// Off without a key file.
	plain := newEnv(t)
	cptest.MustStatus(t, plain.github([]byte("[]"), k.id, k.sign(t, []byte("[]"))), 404)
	cptest.MustStatus(t, e.Do("GET", githubLeaksPath, "", nil), 405)

	big := []byte("[" + strings.Repeat(" ", MaxLeakBodyBytes) + "]")
	cptest.MustStatus(t, e.github(big, k.id, k.sign(t, big)), 413)
	many, _ := json.Marshal(make([]githubReport, MaxLeakTokens+1))
	cptest.MustStatus(t, e.github(many, k.id, k.sign(t, many)), 413)
	obj := []byte(`{"token":"x"}`)
	cptest.MustStatus(t, e.github(obj, k.id, k.sign(t, obj)), 400)

	// The bucket: a burst, then 429 with Retry-After, for this caller only.
	body := []byte("[]")
	sig := k.sign(t, body)
	limited := false
	for range leakBurst + 10 {
		r := e.github(body, k.id, sig)
		if r.Status == 429 {
			limited = r.Header.Get("Retry-After") == "1"
			break
		}
		cptest.MustStatus(t, r, 200)
	}
	if !limited {
		t.Fatal("no 429 after the burst")
	}
}

func TestLeakReportRoles(t *testing.T) {
	e, _ := leakEnv(t, newSigningKey(t, "k"))
	ctx := context.Background()
	root := cptest.Root
	if _, err := e.Svc.CreateClient(ctx, root, "mine", "", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.CreateClient(ctx, root, "theirs", "", []string{"someone"}); err != nil {
		t.Fatal(err)
	}
	report := func(user, token string, secrets ...rules.CreatedSecret) ([]LeakResult, cptest.Response) {
		var req LeaksRequest
		for _, s := range secrets {
			req.Tokens = append(req.Tokens, LeakToken{Token: s.Plaintext, URL: "https://paste.example/1"})
		}
		r := e.DoAs(user, "POST", leaksPath, token, req)
		var out leaksAnswer
		if r.Status == 200 {
			r.Decode(t, &out)
		}
		return out.Tokens, r
	}

	// An owner revokes a secret of their client; a secret of a client
	// they do not own is, to them, a false positive, and stays active.
	mine, theirs := e.MustGenerate("mine"), e.MustGenerate("theirs")
	got, r := report("olive", "", mine, theirs)
	cptest.MustStatus(t, r, 200)
	if len(got) != 2 || got[0] != (LeakResult{tokenHash(mine.Plaintext), rules.LabelTruePositive, rules.LeakActionRevoked}) ||
		got[1] != (LeakResult{tokenHash(theirs.Plaintext), rules.LabelFalsePositive, rules.LeakActionNone}) {
		t.Fatalf("owner's report: %+v", got)
	}
	if e.active("mine", mine.Secret.ID) || !e.active("theirs", theirs.Secret.ID) {
		t.Fatal("the owner's report revoked the wrong secrets")
	}

	// The leak token reports any client's secret.
	got, r = report("", testLeakToken, theirs)
	cptest.MustStatus(t, r, 200)
	if got[0].Action != rules.LeakActionRevoked || e.active("theirs", theirs.Secret.ID) {
		t.Fatalf("leak token's report: %+v", got)
	}
	// The admin token and admin users too.
	a, b := e.MustGenerate("mine"), e.MustGenerate("theirs")
	if got, _ = report("", cptest.AdminToken, a); got[0].Action != rules.LeakActionRevoked {
		t.Fatalf("admin token's report: %+v", got)
	}
	if got, _ = report("root", "", b); got[0].Action != rules.LeakActionRevoked {
		t.Fatalf("admin user's report: %+v", got)
	}

	// The leak token does nothing else; the edge token may not report.
	cptest.MustStatus(t, e.Do("GET", "/v1/clients", testLeakToken, nil), 403)
	cptest.MustStatus(t, e.Do("GET", "/v1/edge/snapshot", testLeakToken, nil), 403)
	_, r = report("", cptest.EdgeToken, a)
	cptest.MustStatus(t, r, 403)
	_, r = report("", "wrong-token-0123456789", a)
	cptest.MustStatus(t, r, 401)
	_, r = report("", "", a)
	cptest.MustStatus(t, r, 401)

	// Malformed and oversized reports.
	cptest.MustStatus(t, e.Do("POST", leaksPath, testLeakToken, `{"tokens":[{"token":"x","extra":1}]}`), 400)
	cptest.MustStatus(t, e.Do("POST", leaksPath, testLeakToken, `[{"token":"x"}]`), 400)
	many, _ := json.Marshal(LeaksRequest{Tokens: make([]LeakToken, MaxLeakTokens+1)})
	cptest.MustStatus(t, e.Do("POST", leaksPath, testLeakToken, many), 413)
}
