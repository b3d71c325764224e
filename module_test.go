package rotagate

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{}`, "control_plane: at least one URL is required"},
		{`{"control_plane":{"urls":["ftp://cp"],"token":"t"}}`, "want http(s)://host[:port]"},
		{`{"control_plane":{"urls":["http://u:p@cp"],"token":"t"}}`, "no user info"},
		{`{"control_plane":{"urls":["http://cp"]}}`, "token is required"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"methods":["digest"]}`, `unknown method "digest"`},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"methods":["post","post"]}`, `"post" listed twice`},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"revocation_delay":"500ms"}`, "at least 1s"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"realm":"a\"b"}`, "realm must not contain"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"max_body":-1}`, "max_body must be positive"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"max_body":9223372036854775807}`, "at most 1 TiB"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"max_snapshot_bytes":9223372036854775807}`, "at most 1 TiB"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"usage_flush":-1}`, "usage_flush must be positive"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"slow_hash_concurrency":-2}`, "slow_hash_concurrency"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"failure_budget":{"failures":-1}}`, "failures must be between 1 and"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"failure_budget":{"per":"100ms"}}`, "period must be between 1s and 24h"},
		{`{"control_plane":{"urls":["http://cp"],"token":"t"},"failure_budget":{"off":true,"failures":5}}`, "off takes no failures"},
	} {
		var h Handler
		if err := json.Unmarshal([]byte(tc.json), &h); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		h.setDefaults()
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.want)
		}
	}
	var h Handler
	if err := json.Unmarshal([]byte(`{"max_stale":"-5s"}`), &h); err == nil {
		t.Error("a negative max_stale was accepted")
	}
}

func TestDefaults(t *testing.T) {
	h := Handler{ControlPlane: &ControlPlane{URLs: []string{"http://cp"}, Token: "t"}}
	h.setDefaults()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if h.RevocationDelay != caddy.Duration(30*time.Second) || h.MaxStale != Staleness(30*time.Second) ||
		h.UsageFlush != caddy.Duration(10*time.Second) || h.MaxBody != 64<<10 || h.Realm != "api" ||
		len(h.Methods) != 4 || h.MaxSnapshotBytes != 256<<20 {
		t.Fatalf("defaults: %+v", h)
	}
	// Slow-hash checks leave the proxy a core.
	if want := max(1, runtime.GOMAXPROCS(0)-1); h.SlowHashConcurrency != want {
		t.Fatalf("slow_hash_concurrency %d, want %d", h.SlowHashConcurrency, want)
	}
	if b := h.FailureBudget; b.Off || b.Failures != 20 || b.Per != caddy.Duration(time.Minute) {
		t.Fatalf("failure budget %+v, want 20 per 1m", b)
	}
	if pollWait(time.Duration(h.RevocationDelay)) != 10*time.Second {
		t.Fatalf("poll wait %s", pollWait(time.Duration(h.RevocationDelay)))
	}
}

func TestStalenessJSON(t *testing.T) {
	for in, want := range map[string]Staleness{`"forever"`: Forever, `"90s"`: Staleness(90 * time.Second), `1000`: Staleness(1000)} {
		var s Staleness
		if err := json.Unmarshal([]byte(in), &s); err != nil || s != want {
			t.Errorf("%s: %v %v", in, s, err)
		}
		out, _ := json.Marshal(s)
		var back Staleness
		if err := json.Unmarshal(out, &back); err != nil || back != s {
			t.Errorf("%s round trip: %s", in, out)
		}
	}
}

// An unset {env.…} token fails provisioning loudly instead of becoming an
// empty token.
func TestProvisionUnsetTokenPlaceholder(t *testing.T) {
	ctx := testContext(t)
	h := Handler{ControlPlane: &ControlPlane{URLs: []string{"http://127.0.0.1:9"}, Token: "{env.ROTAGATE_TEST_SURELY_UNSET}"}}
	err := h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Provision: %v", err)
	}
}
