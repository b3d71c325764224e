package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// consoleHalves runs the control plane behind basic_auth for people
// (alice the admin, olive, mallory), and an edge in front of a
// tokenUpstream with a 2s revocation delay and a fast usage flush, so
// that Last Used shows up at once.
func consoleHalves(t *testing.T) halves {
	h := newHalves(t)
	h.CPRoutes = peopleRoutes(t)
	h.CPOptions = "\t\tadmins alice\n"
	h.UsageFlush = "100ms"
	h.Upstream = upstreamAddr(newTokenUpstream(t).URL)
	return h
}

// findChromium returns the path of a Chromium (the Debian package
// chromium) or Chrome. Without one the browser tests skip, except under
// CI, where they must run.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium found; CI must run the browser tests (.ci/run installs the Debian package chromium)")
	}
	t.Skip("no chromium found (apt-get install chromium); set CI to make this a failure")
	return ""
}

// headless starts one headless Chromium for the test, with a fresh
// profile, and stops it when the test ends.
func headless(t *testing.T) context.Context {
	t.Helper()
	path := findChromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests run as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	return bctx
}

// tab is one signed-in user's tab, in a browser context of its own (its
// own cookies), sending that user's basic_auth credentials with every
// request, as a browser that has logged in does.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func openTab(t *testing.T, browser context.Context, user string, javascript bool) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	tb := &tab{t: t, name: user, ctx: ctx}
	if !javascript {
		tb.name += "-nojs"
	}
	t.Cleanup(cancel)
	// Runs before cancel (cleanups run last-in first-out).
	t.Cleanup(tb.screenshotOnFailure)
	creds := base64.StdEncoding.EncodeToString([]byte(user + ":" + consoleUsers[user]))
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Basic " + creds},
	}); err != nil {
		t.Fatal(err)
	}
	if !javascript {
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

// screenshotOnFailure saves what the tab shows when the test failed, in
// the test's artifact directory (kept with go test -artifacts).
func (tb *tab) screenshotOnFailure() {
	if !tb.t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("no screenshot of %s: %v", tb.name, err)
		return
	}
	path := filepath.Join(tb.t.ArtifactDir(), "console-"+tb.name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Logf("saving the screenshot: %v", err)
		return
	}
	tb.t.Logf("screenshot of %s's tab on failure: %s", tb.name, path)
}

// browserStep bounds every browser step.
const browserStep = 15 * time.Second

func run[T any](tb *tab, what string, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserStep)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("%s (%s): %v", what, tb.name, err)
	}
	return v
}

// load runs steps that lead to a new page and returns its HTTP status.
func (tb *tab) load(what string, steps ...chromedp.Action[chromedp.Void]) int64 {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserStep)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		tb.t.Fatalf("%s (%s): %v", what, tb.name, err)
	}
	return resp.Status
}

func (tb *tab) open(url string) int64 {
	tb.t.Helper()
	return tb.load("opening "+url, chromedp.Navigate(url))
}

// click clicks the element that XPath q finds, and waits for the page it
// leads to.
func (tb *tab) click(q string) int64 {
	tb.t.Helper()
	return tb.load("clicking "+q, chromedp.Click(q))
}

func (tb *tab) text(css string) string {
	tb.t.Helper()
	return run(tb, "reading "+css, chromedp.Text(chromedp.CSS(css)))
}

// body is the page's text, hidden elements (closed dialogs) included,
// as written (no CSS text-transform).
func (tb *tab) body() string {
	tb.t.Helper()
	return run(tb, "reading the page", chromedp.TextContent(chromedp.CSS("body")))
}

// status is the status of a secret in the client page's tables, shown or
// collapsed.
func (tb *tab) status(secretID string) string {
	tb.t.Helper()
	return run(tb, "reading the status of "+secretID, chromedp.Evaluate[string](fmt.Sprintf("document.querySelector(%q).textContent", "tr#"+secretID+" .status")))
}

func (tb *tab) location() string {
	tb.t.Helper()
	return run(tb, "reading the location", chromedp.Location())
}

// count counts the elements that a CSS selector finds.
func (tb *tab) count(css string) int {
	tb.t.Helper()
	return run(tb, "counting "+css, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", css)))
}

// TestConsoleRotationInABrowser walks the rotation story of the console (docs/design.md §9) in
// headless Chromium, signed in through basic_auth as olive, the owner of
// demo-app: My clients → demo-app → Generate new secret → Confirm → the
// secret shown once → the app gets a token with it → a reload shows no
// secret → Revoke the old secret after reading its Last Used → Confirm →
// the edge refuses the old secret within the revocation delay while the
// new one works. Then: an owner has no admin controls and their POSTs are
// refused, another user sees nothing, a cross-site POST is refused, and
// all of it works with JavaScript off.
func TestConsoleRotationInABrowser(t *testing.T) {
	began := time.Now()
	browser := headless(t)
	h := consoleHalves(t)
	api := h.start(t)
	edgeURL, consoleURL := h.edgeURL(), h.cpURL()+"/console/"
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "demo-app", "name": "Demo app", "owners": []string{"olive"}}, nil))
	api.createClient("theirs")
	const evilName = "<script>alert(1)</script>"
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "xss", "name": evilName, "owners": []string{"olive"}}, nil))
	old := api.generate("demo-app")
	ctx := context.Background()
	token := func(secret string) error {
		return fetchToken(ctx, edgeURL, "demo-app", secret, oauth2.AuthStyleInHeader)
	}

	// The app runs with its first secret.
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the first secret", func() bool { return token(old.Secret) == nil })
	cptest.WaitFor(t, 5*time.Second, "the first secret's last use reaches the control plane", func() bool {
		return api.secrets("demo-app")[old.ID].LastUsedAt != nil
	})

	olive := openTab(t, browser, "olive", true)
	var alerts atomic.Int32
	if err := chromedp.Listen(olive.ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			alerts.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if status := olive.open(consoleURL); status != 200 {
		t.Fatalf("My clients answered %d", status)
	}
	if h := olive.text("h1"); h != "My clients" {
		t.Fatalf("the first page is %q", h)
	}
	if body := olive.body(); strings.Contains(body, "theirs") {
		t.Fatal("My clients lists a client olive does not own")
	}
	// A client named <script>alert(1)</script> shows as text and runs
	// nothing.
	if body := olive.body(); !strings.Contains(body, evilName) || alerts.Load() != 0 || olive.count("main script") != 0 {
		t.Fatal("the client name was not shown as text, or ran")
	}
	olive.click("//a[normalize-space()='demo-app']")
	if !strings.HasSuffix(olive.location(), "/console/clients/demo-app") {
		t.Fatalf("the client link led to %s", olive.location())
	}
	if body := olive.body(); !strings.Contains(body, "OAuth secrets") || !strings.Contains(body, "Last Used") {
		t.Fatalf("the client page lacks the OAuth secrets table: %q", body)
	}
	// Admin-only controls are absent for an owner.
	for _, words := range []string{"Delete client", "Save owners", "Audit log", "Create client"} {
		if strings.Contains(olive.body(), words) {
			t.Errorf("the owner sees %q", words)
		}
	}

	// Generate new secret → Confirm (a <dialog>, JavaScript on).
	run(olive, "opening the generate dialog", chromedp.Click("//a[normalize-space()='Generate new secret']"))
	run(olive, "waiting for the dialog", chromedp.WaitVisible(chromedp.CSS("#dlg-generate")))
	if olive.location() != consoleURL+"clients/demo-app" {
		t.Fatalf("with JavaScript the confirm is a dialog, not a page; at %s", olive.location())
	}
	if status := olive.click("//dialog[@id='dlg-generate']//button[normalize-space()='Confirm']"); status != 200 {
		t.Fatalf("the confirmed generate answered %d", status)
	}
	if !strings.Contains(olive.body(), "This value will only be shown once") {
		t.Fatal("the answer lacks the show-once warning")
	}
	secret := run(olive, "reading the new secret", chromedp.Value(chromedp.CSS("#new-secret")))
	if !strings.HasPrefix(secret, "rgs_") || secret == old.Secret {
		t.Fatal("the page does not show a new secret")
	}
	if olive.count("button[data-copy]:not([hidden])") != 1 {
		t.Error("no copy button with JavaScript on")
	}

	// The app switches to it and gets a token through the edge.
	cptest.WaitFor(t, 5*time.Second, "the edge accepts the new secret", func() bool { return token(secret) == nil })

	// Reloading the answer (the browser sends the POST again) shows no
	// secret and makes none.
	before := len(api.secrets("demo-app"))
	olive.load("reloading the answer", chromedp.Reload())
	if body := olive.body(); strings.Contains(body, secret) || strings.Contains(body, "This value will only be shown once") {
		t.Fatal("a reload shows the secret again")
	}
	if !strings.HasSuffix(olive.location(), "/console/clients/demo-app?done=stale") || len(api.secrets("demo-app")) != before {
		t.Fatalf("the reload went to %s and left %d secrets (was %d)", olive.location(), len(api.secrets("demo-app")), before)
	}

	// Revoke the old one after reading its Last Used, once the new one
	// has been used after it.
	var newID string
	for id := range api.secrets("demo-app") {
		if id != old.ID {
			newID = id
		}
	}
	cptest.WaitFor(t, 5*time.Second, "the new secret's last use reaches the control plane", func() bool {
		s := api.secrets("demo-app")
		return s[newID].LastUsedAt != nil && s[newID].LastUsedAt.After(*s[old.ID].LastUsedAt)
	})
	olive.open(consoleURL + "clients/demo-app")
	lastUsed := olive.text("tr#" + old.ID + " td.last-used")
	if !strings.Contains(lastUsed, "UTC") || !strings.Contains(lastUsed, "from 127.0.0.1") {
		t.Fatalf("the old secret's Last Used reads %q", lastUsed)
	}
	if got := olive.text("tr#" + newID + " td.last-used"); !strings.Contains(got, "from 127.0.0.1") {
		t.Fatalf("the new secret's Last Used reads %q", got)
	}
	run(olive, "opening the revoke dialog", chromedp.Click("//tr[@id='"+old.ID+"']//a[normalize-space()='Revoke']"))
	run(olive, "waiting for the dialog", chromedp.WaitVisible(chromedp.CSS("#dlg-revoke-"+old.ID)))
	if hint := olive.text("#dlg-revoke-" + old.ID + " .hint"); !strings.Contains(hint, "safe to revoke") {
		t.Fatalf("the cut-over hint says %q", hint)
	}
	olive.click("//dialog[@id='dlg-revoke-" + old.ID + "']//button[normalize-space()='Confirm']")
	if !strings.Contains(olive.body(), "("+old.ID+") revoked.") || olive.status(old.ID) != "revoked" {
		t.Fatal("the client page does not show the secret revoked")
	}
	took := cptest.WaitFor(t, 2*time.Second, "the edge refuses the revoked secret within revocation_delay", func() bool {
		return refused(token(old.Secret))
	})
	if err := token(secret); err != nil {
		t.Fatalf("the new secret stopped working: %v", err)
	}
	t.Logf("the edge refused the revoked secret %v after the Confirm page loaded (revocation_delay 2s)", took.Round(time.Millisecond))

	// The owner's POSTs to admin-only forms are refused, even with a valid
	// CSRF token from the page, and change nothing.
	for path, form := range map[string]string{
		"/console/clients/demo-app/delete": "confirm_id=demo-app",
		"/console/clients/demo-app/owners": "owners=olive+mallory",
		"/console/clients":                 "client_id=mine",
	} {
		status := run(olive, "POST "+path, chromedp.Evaluate[int](`(async () => {
			const csrf = document.querySelector("input[name=csrf]").value;
			const r = await fetch(`+"`"+path+"`"+`, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
				body: "csrf=" + encodeURIComponent(csrf) + "&`+form+`"});
			return r.status;
		})()`, chromedp.EvalAwaitPromise))
		if status != 403 {
			t.Errorf("the owner's POST %s answered %d, want 403", path, status)
		}
	}

	// Another user sees neither the client nor its page.
	mallory := openTab(t, browser, "mallory", true)
	mallory.open(consoleURL)
	if body := mallory.body(); strings.Contains(body, "demo-app") || !strings.Contains(body, "You own no clients yet") {
		t.Fatal("mallory's My clients shows demo-app")
	}
	if status := mallory.open(consoleURL + "clients/demo-app"); status != 404 || strings.Contains(mallory.body(), "Demo app") {
		t.Fatalf("mallory opening demo-app: %d", status)
	}

	// A cross-site POST is refused: a page on another site submits a form
	// to the console, carrying olive's credentials as a browser would.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%sclients/demo-app/generate">
<input type="hidden" name="seen" value="%d"><input type="hidden" name="csrf" value="guessed">
<button type="submit">Claim your prize</button></form>`, consoleURL, len(api.secrets("demo-app")))
	}))
	defer evil.Close()
	before = len(api.secrets("demo-app"))
	olive.open("http://localhost:" + evil.URL[strings.LastIndex(evil.URL, ":")+1:] + "/")
	if status := olive.click("//button[normalize-space()='Claim your prize']"); status != 403 {
		t.Fatalf("the cross-site POST answered %d", status)
	}
	if !strings.Contains(olive.body(), "Cross-site request refused") || len(api.secrets("demo-app")) != before {
		t.Fatal("the cross-site POST was not refused")
	}

	// JavaScript off: the same buttons lead to confirmation pages.
	nojs := openTab(t, browser, "olive", false)
	nojs.open(consoleURL + "clients/demo-app")
	nojs.click("//a[normalize-space()='Generate new secret']")
	if !strings.HasSuffix(nojs.location(), "/console/clients/demo-app/generate") {
		t.Fatalf("without JavaScript Generate led to %s", nojs.location())
	}
	nojs.click("//button[normalize-space()='Confirm']")
	third := run(nojs, "reading the secret", chromedp.Value(chromedp.CSS("#new-secret")))
	if !strings.HasPrefix(third, "rgs_") || !strings.Contains(nojs.body(), "This value will only be shown once") {
		t.Fatal("without JavaScript no secret was shown")
	}
	if nojs.count("button[data-copy][hidden]") != 1 {
		t.Error("the copy button shows without JavaScript")
	}
	var thirdID string
	for id := range api.secrets("demo-app") {
		if id != old.ID && id != newID {
			thirdID = id
		}
	}
	nojs.click("//a[normalize-space()='Done, back to demo-app']")
	nojs.click("//tr[@id='" + thirdID + "']//a[normalize-space()='Revoke']")
	if !strings.HasSuffix(nojs.location(), "/secrets/"+thirdID+"/revoke") {
		t.Fatalf("without JavaScript Revoke led to %s", nojs.location())
	}
	nojs.click("//button[normalize-space()='Confirm']")
	if api.secrets("demo-app")[thirdID].Status != "revoked" || nojs.status(thirdID) != "revoked" {
		t.Fatal("without JavaScript the revoke did not happen")
	}
	t.Logf("browser test wall time: %v", time.Since(began).Round(time.Millisecond))
}
