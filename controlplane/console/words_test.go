package console

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/internal/wire"
)

// TestConsoleGenerateWithAnExpiry: Generate offers an expiry, as the CLI
// does; the audit log words it for people.
func TestConsoleGenerateWithAnExpiry(t *testing.T) {
	e, _ := consoleEnv(t)
	olive := e.browser("olive")
	for _, p := range []cptest.Response{olive.get("/console/clients/app"), olive.get("/console/clients/app/generate")} {
		mustContain(t, p, `name="expires_in"`, `<option value="" selected>never</option>`, `<option value="720h">in 30 days</option>`)
	}
	r := olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}, "expires_in": {"720h"}})
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, `<dt>Expires</dt><dd><time datetime="2030-02-01T03:04:05Z">`)
	trail, _ := e.Store.Audit(context.Background(), "app", 1)
	if trail[0].Detail != "expires in 30 days" {
		t.Errorf("audit detail %q", trail[0].Detail)
	}
	cptest.MustStatus(t, olive.post("/console/clients/app/generate", url.Values{"seen": {"2"}, "expires_in": {"-1h"}}), 400)
	if e.ActiveCount("app") != 2 {
		t.Fatal("a bad expiry generated a secret")
	}
}

// TestConsoleWording: the wording a new user reads — who is signed in
// (once), how to sign out, a way back from Not found, revoked secrets
// collapsed, plurals, and Allow only these networks only once there are
// callers to allow.
func TestConsoleWording(t *testing.T) {
	e, first := consoleEnv(t)
	olive := e.browser("olive")
	page := olive.get("/console/clients/app")
	mustContain(t, page, "Signed in as <strong>olive</strong>", `href="/console/signout">Sign out</a>`, "No caller seen yet.")
	mustNotContain(t, page, "Allow only these networks", "<details")

	// An admin whose user id is admin reads it once.
	adminEnv := newEnv(t, func(s *rules.ServiceOptions, a *options) {
		withConsole(s, a)
		a.Admins = []string{"admin", "alice"}
	})
	r := adminEnv.browser("admin").get("/console/")
	mustContain(t, r, "Signed in as <strong>admin</strong> · ")
	mustNotContain(t, r, `<span class="badge">admin</span>`)
	mustContain(t, e.browser("alice").get("/console/"), `Signed in as <strong>alice</strong> <span class="badge">admin</span>`)

	signout := olive.get("/console/signout")
	cptest.MustStatus(t, signout, 200)
	mustContain(t, signout, "Sign out", "basic_auth", "close every window", "Back to My clients")

	for _, p := range []string{"/console/nope", "/console/clients/theirs"} {
		r := olive.get(p)
		cptest.MustStatus(t, r, 404)
		mustContain(t, r, "Not found", `href="/console/">Back to My clients</a>`)
	}

	// A revoked secret is listed apart, collapsed.
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Who, "app", first.Secret.ID); err != nil {
		t.Fatal(err)
	}
	live := e.MustGenerate("app").Secret
	page = olive.get("/console/clients/app")
	mustContain(t, page, `<details class="dead">`, "<summary>1 revoked or expired secret</summary>")
	if i, j := strings.Index(string(page.Body), "<details"), strings.Index(string(page.Body), `id="`+first.Secret.ID+`"`); i < 0 || j < i {
		t.Error("the revoked secret is not inside the collapsed list")
	}

	// With callers, Allow only these networks; its page counts them in
	// words.
	if _, err := e.Svc.ApplyUsage(context.Background(), wire.Usage{Callers: []wire.SecretCallers{{ClientID: "app", SecretID: live.ID,
		IPs: []wire.Caller{{IP: "10.1.2.3", FirstAt: e.Clock.Now(), LastAt: e.Clock.Now(), Requests: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, olive.get("/console/clients/app"), "Allow only these networks")
	sug := olive.get("/console/clients/app/networks/suggest")
	mustContain(t, sug, "cover exactly the 1 caller address seen", "one per line")
	mustNotContain(t, sug, "caller addresses", "one a line")
}
