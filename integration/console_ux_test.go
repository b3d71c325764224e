package integration

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// screenshotsEnv, when set, makes TestConsoleForANewUser save the docs'
// screenshots: ROTAGATE_SCREENSHOTS=1 go test ./integration -run
// TestConsoleForANewUser.
const screenshotsEnv = "ROTAGATE_SCREENSHOTS"

// TestConsoleForANewUser walks what a new user trips on (issue 19) in
// headless Chromium, against a real control plane and edge: Rotate… at
// the maximum offers only what works and says so before the click (with
// JavaScript and without); the copy button is not drawn without
// JavaScript; My clients flags a dead secret presented recently; the
// wording (capitalised, the revoke notice naming the secret, Confirm
// before Cancel, a way back from Not found, signed in once, Sign out,
// revoked secrets collapsed, a label per secret); and at a phone's 390 px no panel overflows
// and each table keeps its intended columns.
func TestConsoleForANewUser(t *testing.T) {
	browser := headless(t)
	h := consoleHalves(t)
	api := h.start(t)
	edgeURL, consoleURL := h.edgeURL(), h.cpURL()+"/console/"
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "demo-app", "name": "Demo app", "owners": []string{"olive"}}, nil))
	ctx := context.Background()
	token := func(secret string) error {
		return fetchToken(ctx, edgeURL, "demo-app", secret, oauth2.AuthStyleInHeader)
	}

	// A secret the app used, then revoked, and still presented at the
	// edge afterwards; then two active secrets, the maximum, both used.
	dead := api.generate("demo-app")
	cptest.WaitFor(t, 10*time.Second, "the edge accepts the first secret", func() bool { return token(dead.Secret) == nil })
	api.revoke("demo-app", dead.ID)
	cptest.WaitFor(t, 5*time.Second, "the edge refuses the revoked secret", func() bool { return refused(token(dead.Secret)) })
	cptest.WaitFor(t, 5*time.Second, "the revoked secret's use reaches the control plane", func() bool {
		var out struct {
			Secrets []struct {
				ID    string `json:"id"`
				Count int64  `json:"presented_after_revoke_count"`
			}
		}
		api.must(api.call(http.MethodGet, "/v1/clients/demo-app/secrets", nil, &out))
		return slices.ContainsFunc(out.Secrets, func(s struct {
			ID    string `json:"id"`
			Count int64  `json:"presented_after_revoke_count"`
		}) bool {
			return s.ID == dead.ID && s.Count > 0
		})
	})
	first, second := api.generate("demo-app"), api.generate("demo-app")
	cptest.WaitFor(t, 5*time.Second, "the edge accepts both active secrets", func() bool { return token(first.Secret) == nil && token(second.Secret) == nil })
	cptest.WaitFor(t, 5*time.Second, "their uses reach the control plane", func() bool {
		s := api.secrets("demo-app")
		return s[first.ID].LastUsedAt != nil && s[second.ID].LastUsedAt != nil
	})

	olive := openTab(t, browser, "olive", true)
	olive.open(consoleURL)
	// My clients: the dead secret presented seconds ago (issue 19 point 8).
	if badge := olive.text("td .badge-danger"); !regexp.MustCompile(`^presented after revoke \d+ seconds? ago$`).MatchString(badge) {
		t.Errorf("My clients' badge reads %q", badge)
	}
	// Signed in once, with a way to sign out.
	if who := olive.text(".who"); who != "Signed in as olive · Sign out" {
		t.Errorf("the header reads %q", who)
	}

	olive.click("//a[normalize-space()='demo-app']")
	body := olive.body()
	for _, want := range []string{"You can only have a maximum of 2 active secrets; revoke one before you generate another.", "1 revoked or expired secret"} {
		if !strings.Contains(body, want) {
			t.Errorf("the client page lacks %q", want)
		}
	}
	// Revoked secrets are collapsed: listed, not shown until opened.
	if visible := run(olive, "reading the revoked row", chromedp.Evaluate[bool](`document.getElementById("`+dead.ID+`").checkVisibility()`)); visible {
		t.Error("the revoked secret is shown, not collapsed")
	}
	// Rotate… at the maximum: only grace none, explained before Confirm,
	// and Confirm comes before Cancel.
	run(olive, "opening the rotate dialog", chromedp.Click("//a[normalize-space()='Rotate…']"))
	run(olive, "waiting for the dialog", chromedp.WaitVisible(chromedp.CSS("#dlg-rotate")))
	if h2 := olive.text("#dlg-rotate h2"); h2 != "Rotate secrets" {
		t.Errorf("the rotate dialog's heading is %q", h2)
	}
	if note := olive.text("#dlg-rotate .limit"); !strings.HasPrefix(note, "At the maximum of 2 active secrets, a rotation can only revoke the other secrets at once") {
		t.Errorf("the rotate dialog at the maximum says %q", note)
	}
	if opts := run(olive, "reading the graces", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#dlg-grace option")).map(o => o.value)`)); !slices.Equal(opts, []string{"0s"}) {
		t.Errorf("at the maximum Rotate offers %q", opts)
	}
	buttons := `Array.from(document.querySelectorAll("%s .actions > *")).map(b => b.textContent)`
	if order := run(olive, "reading the dialog's buttons", chromedp.Evaluate[[]string](strings.Replace(buttons, "%s", "#dlg-rotate", 1))); !slices.Equal(order, []string{"Confirm", "Cancel"}) {
		t.Errorf("the rotate dialog's buttons are %q", order)
	}
	run(olive, "closing the dialog", chromedp.Click("//dialog[@id='dlg-rotate']//button[normalize-space()='Cancel']"))

	// Without JavaScript: the rotate page says the same, rotating revokes
	// the others at once, and the new secret has no dead Copy button.
	nojs := openTab(t, browser, "olive", false)
	nojs.open(consoleURL + "clients/demo-app")
	nojs.click("//a[normalize-space()='Rotate…']")
	if !strings.Contains(nojs.body(), "At the maximum of 2 active secrets") {
		t.Error("the rotate page at the maximum does not say what a rotation does")
	}
	if order := run(nojs, "reading the page's buttons", chromedp.Evaluate[[]string](strings.Replace(buttons, "%s", "main form", 1))); !slices.Equal(order, []string{"Confirm", "Cancel"}) {
		t.Errorf("the rotate page's buttons are %q", order)
	}
	if status := nojs.click("//button[normalize-space()='Confirm']"); status != 200 {
		t.Fatalf("rotating at the maximum answered %d", status)
	}
	if revoked := nojs.text("main dl.facts"); !strings.Contains(revoked, first.ID) || !strings.Contains(revoked, second.ID) {
		t.Errorf("the rotation's answer does not list the revoked secrets: %q", revoked)
	}
	if display := run(nojs, "reading the copy button", chromedp.Evaluate[string](`getComputedStyle(document.querySelector("button[data-copy]")).display`)); display != "none" {
		t.Errorf("without JavaScript the copy button is drawn (display %q)", display)
	}

	// Not found leads back to My clients.
	if status := nojs.open(consoleURL + "clients/nope"); status != 404 {
		t.Fatalf("an unknown client answered %d", status)
	}
	nojs.click("//a[normalize-space()='Back to My clients']")
	if nojs.text("h1") != "My clients" {
		t.Errorf("Back from Not found led to %s", nojs.location())
	}

	// The revoke notice names the secret and how soon edges refuse it.
	var rotated string
	for id, s := range api.secrets("demo-app") {
		if s.Status == "active" {
			rotated = id
		}
	}
	api.generate("demo-app")
	olive.open(consoleURL + "clients/demo-app")
	run(olive, "opening the revoke dialog", chromedp.Click("//tr[@id='"+rotated+"']//a[normalize-space()='Revoke']"))
	olive.click("//dialog[@id='dlg-revoke-" + rotated + "']//button[normalize-space()='Confirm']")
	if notice := olive.text(".notice"); !strings.HasPrefix(notice, "Secret rgs_…") || !strings.Contains(notice, "("+rotated+") revoked. Every edge refuses it within its revocation delay") {
		t.Errorf("the revoke notice reads %q", notice)
	}
	olive.click("//a[normalize-space()='Sign out']")
	if !strings.Contains(olive.body(), "close every window of this browser") {
		t.Error("Sign out does not say how to sign out of basic_auth")
	}

	// The admin's client page has every panel: the screenshot for the
	// docs, then the same pages at a phone's width.
	alice := openTab(t, browser, "alice", true)
	alice.open(consoleURL + "clients/demo-app")
	// Which app has the active secret: a label, from the console.
	alice.click("//a[normalize-space()='Add a label']")
	run(alice, "typing the label", chromedp.SendKeys(chromedp.CSS("#label"), "billing-worker (prod)"))
	alice.click("//button[normalize-space()='Confirm']")
	if label := alice.text("table.secrets .label"); label != "billing-worker (prod)" || !strings.Contains(alice.text(".notice"), "Label saved.") {
		t.Errorf("after labelling, the client page shows the label %q", label)
	}
	screenshot(t, alice, "console-client.png")
	if _, err := chromedp.Call(alice.ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 390, Height: 844, DeviceScaleFactor: 1, Mobile: true}); err != nil {
		t.Fatalf("narrowing the viewport: %v", err)
	}
	columns := map[string][]string{
		"table.callers": {"Caller", "Last seen", "Requests", "Refused"},
		"table.audit":   {"When", "Who", "Action", "Detail"},
		"table.clients": {"Client", "Active secrets", "Last Used"},
	}
	for _, page := range []string{consoleURL + "clients/demo-app", consoleURL} {
		alice.open(page)
		if width := run(alice, "reading the width", chromedp.Evaluate[int](`document.documentElement.clientWidth`)); width != 390 {
			t.Fatalf("the viewport is %d px wide, not 390", width)
		}
		over := run(alice, "measuring the panels", chromedp.Evaluate[[]string](`(() => {
			const out = [];
			const de = document.documentElement;
			if (de.scrollWidth > de.clientWidth) out.push("the page: " + de.scrollWidth + " > " + de.clientWidth);
			document.querySelectorAll("main section, header").forEach(s => {
				if (s.scrollWidth > s.clientWidth) out.push((s.querySelector("h1, h2") || s).textContent.trim().slice(0, 30) + ": " + s.scrollWidth + " > " + s.clientWidth);
			});
			return out;
		})()`))
		if len(over) > 0 {
			t.Errorf("%s at 390 px overflows: %q", page, over)
		}
		for table, want := range columns {
			got := run(alice, "reading "+table, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("`+table+` thead th")).filter(th => getComputedStyle(th).display !== "none").map(th => th.textContent)`))
			if len(got) == 0 {
				continue // not on this page
			}
			if !slices.Equal(got[:min(len(got), len(want))], want) {
				t.Errorf("%s at 390 px shows the columns %q, want %q first", table, got, want)
			}
		}
	}
	// The secrets stack, one block per secret: each with its hint,
	// kind, status, expiry, last use and a Revoke button within the screen.
	alice.open(consoleURL + "clients/demo-app")
	stacked := run(alice, "reading the secrets at 390 px", chromedp.Evaluate[[]string](`(() => {
		const w = document.documentElement.clientWidth;
		return Array.from(document.querySelectorAll("section > .table-scroll table.secrets tr[id]")).map(tr => {
			const cells = Array.from(tr.querySelectorAll("td")).filter(td => td.checkVisibility()).map(td => td.dataset.label || td.className || "secret");
			const b = tr.querySelector("a.button.danger");
			return cells.join(",") + (b && b.checkVisibility() && b.getBoundingClientRect().right <= w ? ",Revoke in reach" : "");
		});
	})()`))
	if len(stacked) == 0 {
		t.Error("no active secret on the client page at 390 px")
	}
	for _, row := range stacked {
		if row != "secret,Kind,Status,Expires,Last Used,revoke,Revoke in reach" {
			t.Errorf("a secret at 390 px shows %q", row)
		}
	}
	screenshot(t, alice, "console-phone.png")
}

// screenshot saves the tab's whole page as docs/<name> when
// ROTAGATE_SCREENSHOTS is set.
func screenshot(t *testing.T, tb *tab, name string) {
	t.Helper()
	if os.Getenv(screenshotsEnv) == "" {
		return
	}
	png := run(tb, "taking the screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile("../docs/"+name, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved docs/%s", name)
}
