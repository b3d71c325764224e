package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// leakLoop is both halves, as bothHalves runs them, plus the leak loop,
// running in Caddy: key's public half in leak_report_keys, the control
// plane's metrics, a webhook to hook, and usage_flush 1s (the bound the
// listing is held to).
type leakLoop struct {
	edge, cp string
	api      adminAPI
	key      githubKey
	hook     *webhooktest.Receiver
}

// startLeakLoop starts a leakLoop whose webhook sends the given events.
func startLeakLoop(t *testing.T, events string) leakLoop {
	t.Helper()
	h := bothHalves(t)
	key, keyFile := newGitHubKey(t, h.Dir)
	hookSecret := webhooktest.Secret(t)
	hook := webhooktest.NewReceiver(t, hookSecret)
	h.CPRoutes = "\thandle /metrics {\n\t\tmetrics\n\t}\n"
	h.CPOptions = "\t\tleak_report_keys " + keyFile + "\n" +
		"\t\twebhook " + hook.URL + " {\n\t\t\tsecret " + hookSecret + "\n\t\t\tevents " + events + "\n\t\t}\n"
	api := h.start(t)
	return leakLoop{edge: h.edgeURL(), cp: h.cpURL(), api: api, key: key, hook: hook}
}

// githubKey plays GitHub's secret scanning signer.
type githubKey struct {
	id   string
	priv *ecdsa.PrivateKey
}

// newGitHubKey makes a key and writes it, in GitHub's key-list format,
// to a file in dir, whose path it returns.
func newGitHubKey(t *testing.T, dir string) (githubKey, string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := githubKey{id: "test-key-1", priv: priv}
	list := map[string]any{"public_keys": []map[string]any{{
		"key_identifier": k.id, "is_current": true,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}}}
	data, _ := json.Marshal(list)
	path := filepath.Join(dir, "github-keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return k, path
}

// report posts a GitHub-format report signed with sig (k's signature of
// the body when sig is empty) and returns the status and the answer.
func (k githubKey) report(t *testing.T, cp string, reports []map[string]string, sig string) (int, []map[string]string) {
	t.Helper()
	body, _ := json.Marshal(reports)
	if sig == "" {
		digest := sha256.Sum256(body)
		raw, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = base64.StdEncoding.EncodeToString(raw)
	}
	req, _ := http.NewRequest(http.MethodPost, cp+"/v1/leaks/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Github-Public-Key-Identifier", k.id)
	req.Header.Set("Github-Public-Key-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]string
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, out
}

// answer401 is everything a refused caller sees.
type answer401 struct {
	status int
	body   string
	header string
}

func present(t *testing.T, edge, client, secret string) answer401 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, edge+"/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	h := resp.Header.Clone()
	h.Del("Date")
	var hdr bytes.Buffer
	h.Write(&hdr)
	return answer401{resp.StatusCode, string(body), hdr.String()}
}

// cpMetric reads one sample of the /metrics of the control plane site at cp.
func cpMetric(t *testing.T, cp, name string) float64 {
	return metricSample(t, cp+"/metrics", name)
}

// TestPresentedAfterRevoke: revoke s1, present it at the edge → the same
// 401 as a wrong secret and an unknown client, byte for byte; the listing
// shows the count and the caller's IP within usage_flush + 1s, the
// control plane's metric counts it, and a webhook receiver that verifies
// signatures gets secret.revoked, then secret.presented_after_revoke.
func TestPresentedAfterRevoke(t *testing.T) {
	l := startLeakLoop(t, "secret.revoked secret.presented_after_revoke")
	l.api.createClient("app")
	s1, s2 := l.api.generate("app"), l.api.generate("app")
	cptest.WaitFor(t, 2*time.Second, "the edge accepts s1", func() bool { return present(t, l.edge, "app", s1.Secret).status == 200 })
	before := cpMetric(t, l.cp, "rotagate_control_plane_presented_after_revoke_total")

	l.api.revoke("app", s1.ID)
	cptest.WaitFor(t, 2*time.Second, "the edge refuses s1", func() bool { return present(t, l.edge, "app", s1.Secret).status == 401 })
	// The edge's snapshot now carries s1 as a tombstone (the revocation
	// reached it); count from here.
	presented := time.Now()
	dead := present(t, l.edge, "app", s1.Secret)
	// s2 with its last character changed (a secret ending in x has a 1 in
	// 62 chance): the right client, a wrong secret of the right length.
	last := "x"
	if strings.HasSuffix(s2.Secret, last) {
		last = "y"
	}
	wrong := present(t, l.edge, "app", s2.Secret[:len(s2.Secret)-1]+last)
	unknown := present(t, l.edge, "nobody", s1.Secret)
	if dead.status != 401 || dead != wrong || dead != unknown {
		t.Fatalf("refusals differ:\nrevoked: %+v\nwrong:   %+v\nunknown: %+v", dead, wrong, unknown)
	}

	cptest.WaitFor(t, 2*time.Second, "the listing shows s1 presented after revoke", func() bool {
		u := l.api.secrets("app")[s1.ID]
		return u.PresentedAfterRevoke >= 1 && u.PresentedAfterRevokeFrom != nil && *u.PresentedAfterRevokeFrom == "127.0.0.1"
	})
	t.Logf("presented after revoke → in the listing: %v (bound usage_flush 1s + 1s)", time.Since(presented))
	if u := l.api.secrets("app")[s2.ID]; u.PresentedAfterRevoke != 0 {
		t.Fatalf("the live secret s2 was counted: %+v", u)
	}
	cptest.WaitFor(t, time.Second, "the metric counts it", func() bool {
		return cpMetric(t, l.cp, "rotagate_control_plane_presented_after_revoke_total") > before
	})
	cptest.WaitFor(t, 5*time.Second, "the webhook receiver gets both events", func() bool {
		types, _, _ := got(t, l.hook)
		return len(types) >= 2
	})
	types, _, forged := got(t, l.hook)
	if types[0] != "secret.revoked" || types[1] != "secret.presented_after_revoke" || forged != 0 {
		t.Fatalf("webhook events %v (%d forged), want secret.revoked, secret.presented_after_revoke", types, forged)
	}
}

// TestGitHubLeakReportRevokes: a signed GitHub-format report of an active
// secret → true_positive, and the edge refuses the secret within
// revocation_delay; the audit names the URL; a wrong signature is 401
// and revokes nothing; a bad checksum is a false_positive (the unit test
// TestLeakReportRevokes shows it costs no store query).
func TestGitHubLeakReportRevokes(t *testing.T) {
	l := startLeakLoop(t, "secret.leak_reported secret.revoked")
	l.api.createClient("app")
	leaked, other := l.api.generate("app"), l.api.generate("app")
	// Both: the edge may hold the revision with the first and not yet the
	// second.
	cptest.WaitFor(t, 2*time.Second, "the edge accepts both secrets", func() bool {
		return present(t, l.edge, "app", leaked.Secret).status == 200 && present(t, l.edge, "app", other.Secret).status == 200
	})

	url := "https://github.com/octo/app/blob/0a1b2c/.env"
	reports := []map[string]string{{"token": leaked.Secret, "type": "rotagate_client_secret", "url": url, "source": "content"}}

	// Signed by someone else: 401, and the secret still works.
	forger, _ := newGitHubKey(t, t.TempDir())
	forger.id = l.key.id
	if st, _ := forger.report(t, l.cp, reports, ""); st != http.StatusUnauthorized {
		t.Fatalf("forged report: %d, want 401", st)
	}
	if st, _ := l.key.report(t, l.cp, reports, base64.StdEncoding.EncodeToString([]byte("not a signature"))); st != http.StatusUnauthorized {
		t.Fatalf("garbage signature: %d, want 401", st)
	}
	if present(t, l.edge, "app", leaked.Secret).status != 200 {
		t.Fatal("a report with a wrong signature revoked the secret")
	}

	// A look-alike with a bad checksum: false positive.
	bad := []byte(other.Secret)
	bad[len(bad)-1] ^= 1
	st, out := l.key.report(t, l.cp, []map[string]string{{"token": string(bad), "type": "rotagate_client_secret", "url": url, "source": "content"}}, "")
	if st != 200 || len(out) != 1 || out[0]["label"] != "false_positive" {
		t.Fatalf("bad checksum: %d %v", st, out)
	}
	if present(t, l.edge, "app", other.Secret).status != 200 {
		t.Fatal("a false positive revoked a secret")
	}

	// Signed by GitHub's key: true positive, refused within the delay.
	reported := time.Now()
	st, out = l.key.report(t, l.cp, reports, "")
	sum := sha256.Sum256([]byte(leaked.Secret))
	if st != 200 || len(out) != 1 || out[0]["label"] != "true_positive" ||
		out[0]["token_hash"] != hex.EncodeToString(sum[:]) || out[0]["token_type"] != "rotagate_client_secret" {
		t.Fatalf("report: %d %v", st, out)
	}
	cptest.WaitFor(t, 2*time.Second, "the edge refuses the reported secret", func() bool {
		return present(t, l.edge, "app", leaked.Secret).status == 401
	})
	t.Logf("leak report → refused at the edge: %v (bound revocation_delay 2s)", time.Since(reported))
	if present(t, l.edge, "app", other.Secret).status != 200 {
		t.Fatal("the other secret stopped working")
	}

	var audit struct {
		Entries []struct {
			Who      string `json:"who"`
			Action   string `json:"action"`
			SecretID string `json:"secret_id"`
			Detail   string `json:"detail"`
		} `json:"entries"`
	}
	l.api.must(l.api.call(http.MethodGet, "/v1/clients/app/audit", nil, &audit))
	e := audit.Entries[0]
	if e.Action != "secret.revoke" || e.SecretID != leaked.ID || e.Who != "github-secret-scanning" || e.Detail != "reason: leak_report; url: "+url {
		t.Fatalf("audit entry: %+v", e)
	}
	cptest.WaitFor(t, 5*time.Second, "the webhook receiver gets the events", func() bool {
		types, _, _ := got(t, l.hook)
		return len(types) >= 2
	})
	if types, _, _ := got(t, l.hook); len(types) != 2 || types[0] != "secret.leak_reported" || types[1] != "secret.revoked" {
		t.Fatalf("webhook events %v, want secret.leak_reported, secret.revoked", types)
	}
}
