package console

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// browser is one user's browser session on the console: it keeps the
// session cookie and the CSRF token of the last page it read.
type browser struct {
	t      *testing.T
	e      *env
	user   string
	cookie *http.Cookie
	csrf   string
}

func (e *env) browser(user string) *browser { return &browser{t: e.T, e: e, user: user} }

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) send(req *http.Request) cptest.Response {
	b.t.Helper()
	if b.user != "" {
		req = cptest.WithUser(req, b.user)
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	rec := httptest.NewRecorder()
	b.e.api.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.Name == csrfCookie {
			b.cookie = c
		}
	}
	if m := csrfField.FindSubmatch(rec.Body.Bytes()); m != nil {
		b.csrf = string(m[1])
	}
	return cptest.Response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func (b *browser) get(path string) cptest.Response {
	b.t.Helper()
	return b.send(httptest.NewRequest("GET", path, nil))
}

// post sends a form with the CSRF token of the last page read.
func (b *browser) post(path string, form url.Values, header ...string) cptest.Response {
	b.t.Helper()
	form = cloneValues(form)
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.token())
	}
	req := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.send(req)
}

// token is the CSRF token of the last page read or, when it had no form,
// the one such a page would carry.
func (b *browser) token() string {
	if b.csrf == "" && b.cookie != nil {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(b.cookie)
		if key := csrfKey(r); key != nil {
			return csrfMAC(key, b.user)
		}
	}
	return b.csrf
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// seenOf is the guard that the generate and rotate forms of a page carry.
var seenField = regexp.MustCompile(`name="seen" value="([^"]*)"`)

func seenOf(t *testing.T, r cptest.Response) string {
	t.Helper()
	m := seenField.FindSubmatch(r.Body)
	if m == nil {
		t.Fatalf("the page has no generate or rotate form:\n%s", cptest.Redact(r.Body))
	}
	return string(m[1])
}

func mustContain(t *testing.T, r cptest.Response, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(html.UnescapeString(string(r.Body)), w) {
			t.Errorf("the page (status %d) lacks %q", r.Status, w)
		}
	}
}

func mustNotContain(t *testing.T, r cptest.Response, words ...string) {
	t.Helper()
	for _, w := range words {
		if strings.Contains(html.UnescapeString(string(r.Body)), w) {
			t.Errorf("the page (status %d) shows %q", r.Status, w)
		}
	}
}

// consoleEnv is a console with the client "app" owned by olive with one
// secret, and the client "theirs" owned by nobody.
func consoleEnv(t *testing.T) (*env, rules.CreatedSecret) {
	t.Helper()
	e := newEnv(t, withConsole)
	if _, err := e.Svc.CreateClient(context.Background(), cptest.Who, "app", "The App", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	e.MustClient("theirs")
	return e, e.MustGenerate("app")
}

func TestConsoleNeedsASignedInUser(t *testing.T) {
	e, _ := consoleEnv(t)
	for _, p := range []string{"/console/", "/console/clients/app"} {
		r := e.browser("").get(p)
		cptest.MustStatus(t, r, 401)
		mustContain(t, r, "Sign-in required", "basic_auth", "forward_auth")
		mustNotContain(t, r, "The App")
	}
	r := e.browser("").post("/console/clients/app/generate", url.Values{"seen": {"0"}})
	cptest.MustStatus(t, r, 401)
	if e.ActiveCount("app") != 1 {
		t.Fatal("an anonymous POST generated a secret")
	}
	// The admin token is for automation, not for the console.
	req := httptest.NewRequest("GET", "/console/", nil)
	req.Header.Set("Authorization", "Bearer "+cptest.AdminToken)
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("the admin token on the console: %d", rec.Code)
	}
}

func TestConsoleSecurityHeadersOnEveryAnswer(t *testing.T) {
	e, first := consoleEnv(t)
	olive := e.browser("olive")
	olive.get("/console/")
	answers := map[string]cptest.Response{
		"my clients":  olive.get("/console/"),
		"client":      olive.get("/console/clients/app"),
		"confirm":     olive.get("/console/clients/app/secrets/" + first.Secret.ID + "/revoke"),
		"not found":   olive.get("/console/clients/theirs"),
		"no page":     olive.get("/console/nope"),
		"css":         olive.get("/console/static/console.css"),
		"js":          olive.get("/console/static/console.js"),
		"no user":     e.browser("").get("/console/"),
		"forbidden":   olive.post("/console/clients", url.Values{"client_id": {"x"}}),
		"bad csrf":    olive.post("/console/clients/app/generate", url.Values{"csrf": {"forged"}}),
		"cross site":  olive.post("/console/clients/app/generate", nil, "Sec-Fetch-Site", "cross-site"),
		"new secret":  olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}}),
		"redirect":    olive.post("/console/clients/app/secrets/"+first.Secret.ID+"/revoke", nil),
		"bare prefix": olive.get("/console"),
	}
	for name, r := range answers {
		for k, v := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
			"Referrer-Policy":         "no-referrer",
			"X-Content-Type-Options":  "nosniff",
			"Cache-Control":           "no-store",
		} {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s (%d): %s is %q, want %q", name, r.Status, k, got, v)
			}
		}
		// No inline script or style: CSP forbids them, so they would break.
		if regexp.MustCompile(`<script>|<script [^>]*>[^<]|<style|style="`).Match(r.Body) {
			t.Errorf("%s: the page has inline script or style", name)
		}
	}
	if ct := answers["css"].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("stylesheet served as %q", ct)
	}
	if answers["bare prefix"].Status != 303 || answers["bare prefix"].Header.Get("Location") != "/console/" {
		t.Errorf("/console answered %d %s", answers["bare prefix"].Status, answers["bare prefix"].Header.Get("Location"))
	}
}

func TestConsoleMyClients(t *testing.T) {
	e, first := consoleEnv(t)
	if _, err := e.Svc.ApplyUsage(context.Background(), wire.Usage{Stamps: []wire.Stamp{{ClientID: "app", SecretID: first.Secret.ID, LastUsedAt: e.Clock.Now(), From: "10.1.2.3"}}}); err != nil {
		t.Fatal(err)
	}
	r := e.browser("olive").get("/console/")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "My clients", `href="/console/clients/app"`, "The App", "Last Used", "2030-01-02 03:04:05 UTC", "<td>1</td>")
	mustNotContain(t, r, "theirs", "Create client", "Filter")

	r = e.browser("mallory").get("/console/")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "You own no clients yet")
	mustNotContain(t, r, "app")

	alice := e.browser("alice")
	r = alice.get("/console/")
	mustContain(t, r, "/console/clients/app", "/console/clients/theirs", "Create client", "Filter", "admin")
	r = alice.get("/console/?q=APP")
	mustContain(t, r, "/console/clients/app")
	mustNotContain(t, r, "/console/clients/theirs")
}

func TestConsoleClientPageForAnOwner(t *testing.T) {
	e, first := consoleEnv(t)
	r := e.browser("olive").get("/console/clients/app")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "OAuth secrets", "Generate new secret", "Rotate…", "Revoke", "Confirm", "Last Used", first.Secret.Hint, first.Secret.ID, "active")
	// Admin extras are absent for an owner.
	mustNotContain(t, r, "Delete client", "Audit log", "Save owners", "/owners", "/delete")
	if strings.Contains(string(r.Body), first.Plaintext) {
		t.Fatal("the client page shows a secret")
	}
}

func TestConsoleStrangersSeeNothing(t *testing.T) {
	e, first := consoleEnv(t)
	mallory := e.browser("mallory")
	mallory.get("/console/")
	for _, p := range []string{"/console/clients/app", "/console/clients/app/generate", "/console/clients/app/rotate",
		"/console/clients/app/secrets/" + first.Secret.ID + "/revoke", "/console/clients/nope"} {
		r := mallory.get(p)
		cptest.MustStatus(t, r, 404)
		mustNotContain(t, r, "The App", first.Secret.Hint)
	}
	for _, p := range []string{"/console/clients/app/generate", "/console/clients/app/rotate", "/console/clients/app/secrets/" + first.Secret.ID + "/revoke"} {
		cptest.MustStatus(t, mallory.post(p, url.Values{"seen": {"1"}, "grace": {"0s"}}), 404)
	}
	if e.ActiveCount("app") != 1 {
		t.Fatal("a stranger changed the client's secrets")
	}
}

func TestConsoleAdminOnlyActionsRefusedToAnOwner(t *testing.T) {
	e, _ := consoleEnv(t)
	olive := e.browser("olive")
	olive.get("/console/clients/app")
	rev := e.Revision()
	cptest.MustStatus(t, olive.get("/console/clients/app/delete"), 403)
	for path, form := range map[string]url.Values{
		"/console/clients":               {"client_id": {"new"}},
		"/console/clients/app/delete":    {"confirm_id": {"app"}},
		"/console/clients/app/owners":    {"owners": {"olive mallory"}},
		"/console/clients/theirs/delete": {"confirm_id": {"theirs"}},
	} {
		r := olive.post(path, form)
		cptest.MustStatus(t, r, 403)
		mustContain(t, r, "Admins only")
	}
	if e.Revision() != rev {
		t.Fatal("a refused admin action changed the store")
	}
}

func TestConsoleGenerateShowsTheSecretOnce(t *testing.T) {
	e, first := consoleEnv(t)
	olive := e.browser("olive")
	page := olive.get("/console/clients/app")
	seen := seenOf(t, page)
	if seen != "1" {
		t.Fatalf("the form's guard is %q", seen)
	}
	// Without JavaScript, the button leads to a confirm page.
	confirm := olive.get("/console/clients/app/generate")
	cptest.MustStatus(t, confirm, 200)
	mustContain(t, confirm, "Generate new secret", "Confirm", `action="/console/clients/app/generate"`)

	r := olive.post("/console/clients/app/generate", url.Values{"seen": {seen}})
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "This value will only be shown once", "Copy", "data-copy")
	m := regexp.MustCompile(`id="new-secret" class="secret" readonly value="([^"]+)"`).FindSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no secret on the answer page")
	}
	secret := html.UnescapeString(string(m[1]))
	secrets, _ := e.Svc.ListSecrets(context.Background(), cptest.Who, "app")
	if len(secrets) != 2 || (secrets[0].Hash != secrethash.NewSHA256(secret) && secrets[1].Hash != secrethash.NewSHA256(secret)) || secret == first.Plaintext {
		t.Fatal("the secret shown is not the one stored")
	}
	if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Location") != "" {
		t.Fatal("the secret page may be cached or redirects")
	}
	// Reloading (the same POST again) shows no secret and generates none.
	again := olive.post("/console/clients/app/generate", url.Values{"seen": {seen}})
	cptest.MustStatus(t, again, 303)
	if loc := again.Header.Get("Location"); loc != "/console/clients/app?done=stale" {
		t.Fatalf("a resent form went to %q", loc)
	}
	mustNotContain(t, again, secret)
	if e.ActiveCount("app") != 2 {
		t.Fatal("the resent form generated a secret")
	}
	// The client page never shows it.
	page = olive.get("/console/clients/app?done=stale")
	mustNotContain(t, page, secret)
	mustContain(t, page, "nothing was done")
	// The audit trail names the owner.
	trail, _ := e.Store.Audit(context.Background(), "app", 10)
	if trail[0].Who != "user:olive" || trail[0].Action != "secret.generate" {
		t.Fatalf("audit: %+v", trail[0])
	}
}

func TestConsoleAtTheMax(t *testing.T) {
	e, first := consoleEnv(t)
	e.MustGenerate("app")
	olive := e.browser("olive")
	page := olive.get("/console/clients/app")
	mustContain(t, page, "You can only have a maximum of 2 active secrets; revoke one before you generate another.",
		`<button type="button" disabled>Generate new secret</button>`)
	mustNotContain(t, page, `href="/console/clients/app/generate"`)
	// A POST anyway is refused with the same sentence.
	r := olive.post("/console/clients/app/generate", url.Values{"seen": {seenOf(t, page)}})
	cptest.MustStatus(t, r, 409)
	mustContain(t, r, "You can only have a maximum of 2 active secrets; revoke one before you generate another.")
	// Rotate offers only what works at the maximum, and says so before
	// the click, in the dialog and on the page without JavaScript.
	const atMax = "At the maximum of 2 active secrets, a rotation can only revoke the other secrets at once"
	for _, p := range []cptest.Response{page, olive.get("/console/clients/app/rotate")} {
		mustContain(t, p, atMax, `<option value="0s" selected>none: revoke the other secrets now</option>`)
		mustNotContain(t, p, `value="24h"`, `value="1h"`)
	}
	// A rotation with a grace anyway says why it failed, not "generate".
	r = olive.post("/console/clients/app/rotate", url.Values{"seen": {seenOf(t, page)}, "grace": {"24h"}})
	cptest.MustStatus(t, r, 409)
	mustContain(t, r, atMax, "Back to app")
	mustNotContain(t, r, "before you generate another")
	// Rotating with no grace is always allowed.
	r = olive.post("/console/clients/app/rotate", url.Values{"seen": {seenOf(t, page)}, "grace": {"0s"}})
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "This value will only be shown once", "Revoked", first.Secret.ID)
	if e.ActiveCount("app") != 1 {
		t.Fatalf("after rotate 0s: %d active", e.ActiveCount("app"))
	}
}

func TestConsoleRotateWithGrace(t *testing.T) {
	e, first := consoleEnv(t)
	olive := e.browser("olive")
	confirm := olive.get("/console/clients/app/rotate")
	mustContain(t, confirm, "Rotate secrets", "Grace period", `value="24h" selected`, "Confirm")
	mustNotContain(t, confirm, "Rotate…", "At the maximum")
	r := olive.post("/console/clients/app/rotate", url.Values{"seen": {seenOf(t, confirm)}, "grace": {"24h"}})
	cptest.MustStatus(t, r, 200)
	// The secret expiring, with when.
	mustContain(t, r, "This value will only be shown once", "Expiring", first.Secret.ID, first.Secret.ID+`</span> at <time datetime="2030-01-03T03:04:05Z">2030-01-03 03:04:05 UTC</time>`)
	// The audit log words the grace for people.
	trail, _ := e.Store.Audit(context.Background(), "app", 1)
	if !strings.HasPrefix(trail[0].Detail, "grace 1 day; expiring "+first.Secret.ID) {
		t.Errorf("audit detail %q", trail[0].Detail)
	}
	cptest.MustStatus(t, olive.post("/console/clients/app/rotate", url.Values{"seen": {"0"}, "grace": {"forever"}}), 400)
}

func TestConsoleRevokeWithTheCutOverHint(t *testing.T) {
	e, old := consoleEnv(t)
	olive := e.browser("olive")
	revokePage := "/console/clients/app/secrets/" + old.Secret.ID + "/revoke"
	mustContain(t, olive.get(revokePage), "This is the only active secret")

	e.Clock.Add(time.Minute)
	fresh := e.MustGenerate("app")
	mustContain(t, olive.get(revokePage), "has not been used yet")

	stamp := func(s rules.CreatedSecret, at time.Time, from string) {
		t.Helper()
		if _, err := e.Svc.ApplyUsage(context.Background(), wire.Usage{Stamps: []wire.Stamp{{ClientID: "app", SecretID: s.Secret.ID, LastUsedAt: at, From: from}}}); err != nil {
			t.Fatal(err)
		}
	}
	base := e.Clock.Now()
	e.Clock.Add(6 * time.Minute)
	// The app switched: the old secret's last use is before the new one's
	// first use.
	stamp(old, base.Add(time.Minute), "10.1.2.3")
	stamp(fresh, base.Add(2*time.Minute), "10.9.9.9")
	r := olive.get(revokePage)
	mustContain(t, r, "Not used since the new secret's first use at 03:07:05 UTC — safe to revoke.", "Confirm")
	mustNotContain(t, r, "still used")
	// Another app still has the old one: used after the new one's first use.
	stamp(old, base.Add(2*time.Minute+time.Second), "10.1.2.3")
	stamp(fresh, base.Add(5*time.Minute), "10.9.9.9")
	r = olive.get(revokePage)
	mustContain(t, r, "Still used 3 minutes ago from 10.1.2.3")
	mustNotContain(t, r, "safe to revoke")
	// The dialog on the client page says the same.
	mustContain(t, olive.get("/console/clients/app"), "Still used 3 minutes ago from 10.1.2.3")

	r = olive.post(revokePage, nil)
	cptest.MustStatus(t, r, 303)
	if loc := r.Header.Get("Location"); loc != "/console/clients/app?done=revoked&secret="+old.Secret.ID {
		t.Fatalf("revoke went to %q", loc)
	}
	secrets, _ := e.Svc.ListSecrets(context.Background(), cptest.Who, "app")
	if secrets[0].RevokedAt == nil || secrets[1].RevokedAt != nil {
		t.Fatal("the wrong secret was revoked")
	}
	// The notice names the secret and how soon edges refuse it; the
	// secret is one of the client's, never text from the URL.
	mustContain(t, olive.get(r.Header.Get("Location")), "Secret "+old.Secret.Hint+" ("+old.Secret.ID+") revoked. Every edge refuses it within its revocation delay")
	other := olive.get("/console/clients/app?done=revoked&secret=sec_madeup")
	mustContain(t, other, "Secret revoked. Every edge")
	mustNotContain(t, other, "sec_madeup")
	// A revoked secret has no Revoke page any more.
	cptest.MustStatus(t, olive.get(revokePage), 404)
}

func TestConsoleCSRF(t *testing.T) {
	e, _ := consoleEnv(t)
	olive := e.browser("olive")
	olive.get("/console/clients/app")
	form := url.Values{"seen": {"1"}}
	// A forged token, no token, another user's token, no session cookie.
	for name, r := range map[string]cptest.Response{
		"forged":   olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}, "csrf": {"x"}}),
		"no token": olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}, "csrf": {""}}),
		"other user's token": func() cptest.Response {
			alice := e.browser("alice")
			alice.cookie = olive.cookie
			alice.get("/console/")
			b := e.browser("olive")
			b.cookie = olive.cookie
			b.csrf = alice.csrf
			return b.post("/console/clients/app/generate", form)
		}(),
		"no cookie": func() cptest.Response {
			b := e.browser("olive")
			b.csrf = olive.csrf
			return b.post("/console/clients/app/generate", form)
		}(),
	} {
		if r.Status != 403 || !strings.Contains(string(r.Body), "Form expired") {
			t.Errorf("%s: %d", name, r.Status)
		}
	}
	// A request a browser marks as cross-site is refused by Go's
	// cross-origin protection, even with a valid token.
	r := olive.post("/console/clients/app/generate", form, "Sec-Fetch-Site", "cross-site")
	cptest.MustStatus(t, r, 403)
	mustContain(t, r, "Cross-site request refused")
	r = olive.post("/console/clients/app/generate", form, "Origin", "https://evil.example")
	cptest.MustStatus(t, r, 403)
	if e.ActiveCount("app") != 1 {
		t.Fatal("a refused POST generated a secret")
	}
	// The real thing, same-origin, works.
	cptest.MustStatus(t, olive.post("/console/clients/app/generate", form, "Sec-Fetch-Site", "same-origin"), 200)
}

func TestConsoleEscapesWhatUsersTyped(t *testing.T) {
	e := newEnv(t, withConsole)
	const evilName = `<script>alert(1)</script>`
	const evilID = `x"><img/src=x>`
	if _, err := e.Svc.CreateClient(context.Background(), cptest.Who, evilID, evilName, []string{`<b>olive</b>`}); err != nil {
		t.Fatal(err)
	}
	alice := e.browser("alice")
	list, page := alice.get("/console/"), alice.get("/console/clients/"+url.PathEscape(evilID))
	// The raw HTML, not unescaped as mustContain reads it.
	raw := func(r cptest.Response, want bool, words ...string) {
		t.Helper()
		for _, w := range words {
			if strings.Contains(string(r.Body), w) != want {
				t.Errorf("the page has %q: %v, want %v", w, !want, want)
			}
		}
	}
	for _, r := range []cptest.Response{list, page} {
		cptest.MustStatus(t, r, 200)
		raw(r, false, evilName, `<img/src=x>`, `<b>olive</b>`)
	}
	raw(list, true, "&lt;script&gt;alert(1)&lt;/script&gt;")
	raw(page, true, "&lt;b&gt;olive&lt;/b&gt;", `href="/console/clients/x%22%3E%3Cimg%2Fsrc=x%3E/rotate"`)
	// As text, it reads as typed.
	mustContain(t, list, evilName)
}

func TestConsoleAdminManagesClients(t *testing.T) {
	e, _ := consoleEnv(t)
	alice := e.browser("alice")
	page := alice.get("/console/clients/app")
	mustContain(t, page, "Owners", "Save owners", "Audit log", "Delete client", "client.create")

	r := alice.post("/console/clients", url.Values{"client_id": {"billing"}, "name": {"Billing"}, "owners": {"olive, bob"}})
	cptest.MustStatus(t, r, 303)
	if loc := r.Header.Get("Location"); loc != "/console/clients/billing?done=created" {
		t.Fatalf("create went to %q", loc)
	}
	c, err := e.Store.Client(context.Background(), "billing")
	if err != nil || strings.Join(c.Owners, ",") != "bob,olive" {
		t.Fatalf("created: %+v %v", c, err)
	}
	cptest.MustStatus(t, alice.post("/console/clients", url.Values{"client_id": {"billing"}}), 409)

	cptest.MustStatus(t, alice.post("/console/clients/billing/owners", url.Values{"owners": {"carol"}}), 303)
	if c, _ := e.Store.Client(context.Background(), "billing"); strings.Join(c.Owners, ",") != "carol" {
		t.Fatalf("owners: %v", c.Owners)
	}
	mustContain(t, alice.get("/console/clients/billing"), "user:alice", "client.owners", "owners: carol")

	// Delete asks to type the client id.
	confirm := alice.get("/console/clients/app/delete")
	mustContain(t, confirm, "Type the client id", `name="confirm_id"`)
	r = alice.post("/console/clients/app/delete", url.Values{"confirm_id": {"ap"}})
	cptest.MustStatus(t, r, 400)
	mustContain(t, r, "does not match")
	if _, err := e.Store.Client(context.Background(), "app"); err != nil {
		t.Fatal("a mistyped id deleted the client")
	}
	r = alice.post("/console/clients/app/delete", url.Values{"confirm_id": {"app"}})
	cptest.MustStatus(t, r, 303)
	if r.Header.Get("Location") != "/console/?done=deleted" {
		t.Fatalf("delete went to %q", r.Header.Get("Location"))
	}
	if _, err := e.Store.Client(context.Background(), "app"); err == nil {
		t.Fatal("the client is still there")
	}
}

func TestConsoleOff(t *testing.T) {
	e := newEnv(t, withAdmins("alice"))
	if e.api.Handles("/console/") || e.api.Handles("/console") {
		t.Fatal("the API claims the console paths with the console off")
	}
}

// TestConsoleWrongMethod: a console page asked for with a method it does
// not have is 405 with Allow, not a page that does not exist.
func TestConsoleWrongMethod(t *testing.T) {
	e, _ := consoleEnv(t)
	b := e.browser("alice")
	for path, allow := range map[string]string{
		"/console/":                   "GET, HEAD",
		"/console/clients":            "POST",
		"/console/clients/app/owners": "POST",
	} {
		req := httptest.NewRequest("PUT", path, nil)
		r := b.send(req)
		cptest.MustStatus(t, r, http.StatusMethodNotAllowed)
		if got := r.Header.Get("Allow"); got != allow {
			t.Errorf("%s: Allow %q, want %q", path, got, allow)
		}
	}
	cptest.MustStatus(t, b.get("/console/no/such/page"), http.StatusNotFound)
}

// TestConsoleShowsKinds: the client page names each credential's kind,
// with the thumbprint of a public key.
func TestConsoleShowsKinds(t *testing.T) {
	e, first := consoleEnv(t)
	pub, _ := cptest.KeyJWKs(t)
	key, err := e.Svc.GenerateSecret(context.Background(), cptest.Root, "app", rules.GenerateOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	r := e.browser("olive").get("/console/clients/app")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, first.Secret.ID, key.Secret.ID, "public_key", "thumbprint <code>"+key.Secret.Thumbprint+"</code>")
}

// The client page shows a dead secret presented at an edge, and a leak
// report, with red badges (the CLI's listing: TestCLIAfterRevoke).
func TestPresentedAfterRevokeShown(t *testing.T) {
	e, first := consoleEnv(t)
	e.PresentedAfterRevoke("app", first.Secret.ID, "198.51.100.4", 3)
	r := e.browser("olive").get("/console/clients/app")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, `<span class="badge badge-danger" role="note">presented after revoke: 3</span>`, "from 198.51.100.4", "2030-01-02 03:03:05 UTC")
	mustNotContain(t, r, "leak reported", "style=")
	// My clients shows the recent ones: within the last 7 days.
	mustContain(t, e.browser("olive").get("/console/"), `<span class="badge badge-danger" role="note">presented after revoke 1 minute ago</span>`)

	fresh := e.MustGenerate("app")
	e.ReportLeak(fresh.Plaintext)
	mustContain(t, e.browser("olive").get("/console/clients/app"), `<span class="badge badge-danger" role="note">leak reported`)

	// …and no longer those older than that; the client page still has
	// them.
	e.Clock.Add(7*24*time.Hour - 2*time.Minute)
	mustContain(t, e.browser("olive").get("/console/"), "presented after revoke 6 days ago")
	e.Clock.Add(2 * time.Minute)
	mustNotContain(t, e.browser("olive").get("/console/"), "presented after revoke")
	mustContain(t, e.browser("olive").get("/console/clients/app"), "presented after revoke: 3")
}

// TestLabelInTheConsoleAndAPI: the console asks for a label on the new
// secret's page and on each active secret, and shows it; the API sets it
// (the CLI: TestCLILabel).
func TestLabelInTheConsoleAndAPI(t *testing.T) {
	e, first := consoleEnv(t)
	olive := e.browser("olive")
	olive.get("/console/clients/app")
	r := olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}})
	mustContain(t, r, `action="/console/clients/app/secrets/`, `name="label"`, "Save label")
	page := olive.get("/console/clients/app")
	labelPage := "/console/clients/app/secrets/" + first.Secret.ID + "/label"
	mustContain(t, page, `href="`+labelPage+`">Add a label</a>`)
	mustContain(t, olive.get(labelPage), "Label "+first.Secret.Hint, `name="label"`)
	r = olive.post(labelPage, url.Values{"label": {"billing-worker"}})
	cptest.MustStatus(t, r, 303)
	page = olive.get(r.Header.Get("Location"))
	mustContain(t, page, "Label saved.", `<span class="label">billing-worker</span>`, "Edit the label")
	cptest.MustStatus(t, olive.post(labelPage, url.Values{"label": {first.Plaintext}}), 400)
	cptest.MustStatus(t, e.browser("mallory").get(labelPage), 404)

	var s api.Secret
	e.Admin("PUT", "/v1/clients/app/secrets/"+first.Secret.ID+"/label", `{"label":"billing v2"}`).Decode(t, &s)
	if s.Label != "billing v2" {
		t.Fatalf("API label: %+v", s)
	}
	if r := e.Admin("PUT", "/v1/clients/app/secrets/"+first.Secret.ID+"/label", `{}`); r.Status != 400 || !strings.Contains(string(r.Body), "label is required") {
		t.Fatalf("API without a label: %d %s", r.Status, r.Body)
	}
}
