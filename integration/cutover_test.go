package integration

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// cutoverRow is one older secret in GET …/cutover.
type cutoverRow struct {
	SecretID   string   `json:"secret_id"`
	State      string   `json:"state"`
	NotMoved   []string `json:"not_moved"`
	NewestUsed bool     `json:"newest_used"`
}

func (a adminAPI) cutover(client string) []cutoverRow {
	a.t.Helper()
	var out struct{ Secrets []cutoverRow }
	a.must(a.call(http.MethodGet, "/v1/clients/"+client+"/cutover", nil, &out))
	return out.Secrets
}

// TestCutoverEndToEnd is SPEC §14 in real Caddy: a client used from
// 127.0.0.1 and 127.0.0.2 is rotated; .1 moves and GET …/cutover says the
// rotation waits on .2; .2 moves; once the old secret has been quiet for
// 2s the control plane revokes it by itself, the edge refuses it, and
// secret.cutover_completed reaches a webhook receiver. Two clients whose
// caller never moves stall at their 3s deadline: one keeps its old secret
// working, the other has it revoked.
func TestCutoverEndToEnd(t *testing.T) {
	secret := webhooktest.Secret(t)
	rcv := webhooktest.NewReceiver(t, secret)
	t.Setenv("ROTAGATE_TEST_WEBHOOK_SECRET", secret)
	h := callersHalves(t)
	h.CPOptions += "\t\twebhook " + rcv.URL + "/rotagate {\n\t\t\tsecret {env.ROTAGATE_TEST_WEBHOOK_SECRET}\n" +
		"\t\t\tevents secret.cutover_completed secret.cutover_stalled\n\t\t}\n" +
		"\t\tcutover {\n\t\t\tauto on\n\t\t\tquiet 2s\n\t\t}\n"
	api := h.start(t)
	edge := h.edgeURL()

	olds := map[string]secretInfo{}
	for _, c := range []string{"app", "stall-keep", "stall-revoke"} {
		api.createClient(c)
		olds[c] = api.generate(c)
	}
	for _, c := range []string{"stall-keep", "stall-revoke"} {
		onDeadline := strings.TrimPrefix(c, "stall-")
		api.must(api.call(http.MethodPut, "/v1/clients/"+c+"/cutover", map[string]any{"deadline": "3s", "on_deadline": onDeadline}, nil))
	}
	edgeKnows(t, edge, api, "probe-1")
	mustToken(t, edge, 2, "127.0.0.1", "app", olds["app"].Secret)
	mustToken(t, edge, 2, "127.0.0.2", "app", olds["app"].Secret)
	mustToken(t, edge, 1, "127.0.0.3", "stall-keep", olds["stall-keep"].Secret)
	mustToken(t, edge, 1, "127.0.0.3", "stall-revoke", olds["stall-revoke"].Secret)
	cptest.WaitFor(t, 5*time.Second, "the callers listed", func() bool {
		c := api.callers("app", olds["app"].ID)
		return len(c) == 2 && len(api.callers("stall-keep", olds["stall-keep"].ID)) == 1 && len(api.callers("stall-revoke", olds["stall-revoke"].ID)) == 1
	})

	news := map[string]secretInfo{}
	for _, c := range []string{"app", "stall-keep", "stall-revoke"} {
		var rotated secretInfo
		api.must(api.call(http.MethodPost, "/v1/clients/"+c+"/secrets/rotate", map[string]string{"grace": "1h"}, &rotated))
		news[c] = rotated
	}
	edgeKnows(t, edge, api, "probe-2")
	// The stalling clients' newest secret is used, from another caller.
	mustToken(t, edge, 1, "127.0.0.4", "stall-keep", news["stall-keep"].Secret)
	mustToken(t, edge, 1, "127.0.0.4", "stall-revoke", news["stall-revoke"].Secret)

	mustToken(t, edge, 1, "127.0.0.1", "app", news["app"].Secret)
	cptest.WaitFor(t, 5*time.Second, "GET …/cutover waits on 127.0.0.2 only", func() bool {
		rows := api.cutover("app")
		return len(rows) == 1 && rows[0].NewestUsed && slices.Equal(rows[0].NotMoved, []string{"127.0.0.2"})
	})
	if rows := api.cutover("app"); rows[0].SecretID != olds["app"].ID || rows[0].State != "waiting" {
		t.Fatalf("state %+v", rows)
	}
	// .2's last use of the old secret, then its move: quiet counts from here.
	mustToken(t, edge, 1, "127.0.0.2", "app", olds["app"].Secret)
	// Moved means a last use of the old secret before the first of the
	// new: wait for that use to be recorded, so that the two are not in
	// the same millisecond.
	cptest.WaitFor(t, 5*time.Second, "127.0.0.2's last use of the old secret recorded", func() bool {
		return api.callers("app", olds["app"].ID)["127.0.0.2"].Requests == 3
	})
	mustToken(t, edge, 1, "127.0.0.2", "app", news["app"].Secret)
	moved := time.Now()
	// Polled through the API, not the edge: presenting the old secret at
	// the edge would be a use of it, which a cut-over waits out.
	cptest.WaitFor(t, 20*time.Second, "the cut-over revokes the old secret", func() bool {
		return api.secrets("app")[olds["app"].ID].Status == "revoked"
	})
	cptest.WaitFor(t, 5*time.Second, "the edge refuses the old secret", func() bool {
		status, _, _ := token(t, edge, "127.0.0.9", "app", olds["app"].Secret, "")
		return status == 401
	})
	t.Logf("last caller's move to the edge's refusal: %s (usage_flush 1s, quiet 2s, revocation_delay 2s)", time.Since(moved).Round(time.Millisecond))
	if s := api.secrets("app"); s[olds["app"].ID].Status != "revoked" || s[news["app"].ID].Status != "active" {
		t.Fatalf("after the cut-over: %+v", s)
	}
	mustToken(t, edge, 1, "127.0.0.1", "app", news["app"].Secret)

	cptest.WaitFor(t, 20*time.Second, "both stalled rotations acted on", func() bool {
		return api.secrets("stall-revoke")[olds["stall-revoke"].ID].Status == "revoked"
	})
	cptest.WaitFor(t, 10*time.Second, "the receiver gets one completed and two stalled events", func() bool {
		types, _, _ := got(t, rcv)
		return len(types) >= 3
	})
	types, _, forged := got(t, rcv)
	slices.Sort(types)
	if want := []string{"secret.cutover_completed", "secret.cutover_stalled", "secret.cutover_stalled"}; !slices.Equal(types, want) || forged != 0 {
		t.Fatalf("received %v (%d forged), want %v", types, forged, want)
	}
	if s := api.secrets("stall-keep")[olds["stall-keep"].ID]; s.Status == "revoked" {
		t.Fatalf("on_deadline keep revoked the old secret")
	}
	mustToken(t, edge, 1, "127.0.0.3", "stall-keep", olds["stall-keep"].Secret)
	cptest.WaitFor(t, 5*time.Second, "the edge refuses the stalled secret revoked at the deadline", func() bool {
		status, _, _ := token(t, edge, "127.0.0.3", "stall-revoke", olds["stall-revoke"].Secret, "")
		return status == 401
	})
	if rows := api.cutover("stall-keep"); len(rows) != 1 || rows[0].State != "stalled" || !slices.Equal(rows[0].NotMoved, []string{"127.0.0.3"}) {
		t.Fatalf("stall-keep state %+v", rows)
	}
}
