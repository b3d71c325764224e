package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// TestCutoverPanelInABrowser: in headless Chromium with JavaScript off,
// olive sees on My clients how many callers of her rotation have moved,
// and on the client page the Cut-over panel naming the caller not moved;
// she ticks "Revoke the old secret automatically once every caller has
// moved" and saves (a plain form POST); once the last caller moves, the
// control plane revokes the old secret and the panel says no rotation is
// in progress.
func TestCutoverPanelInABrowser(t *testing.T) {
	browser := headless(t)
	h := callersHalves(t)
	h.CPRoutes = peopleRoutes(t)
	h.CPOptions += "\t\tadmins alice\n\t\tcutover {\n\t\t\tquiet 2s\n\t\t}\n"
	api := h.start(t)
	edge, consoleURL := h.edgeURL(), h.cpURL()+"/console/"
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "app", "owners": []string{"olive"}}, nil))
	old := api.generate("app")
	edgeKnows(t, edge, api, "probe-1")
	mustToken(t, edge, 1, "127.0.0.1", "app", old.Secret)
	mustToken(t, edge, 1, "127.0.0.2", "app", old.Secret)
	cptest.WaitFor(t, 5*time.Second, "the callers listed", func() bool { return len(api.callers("app", old.ID)) == 2 })
	var rotated secretInfo
	api.must(api.call(http.MethodPost, "/v1/clients/app/secrets/rotate", map[string]string{"grace": "1h"}, &rotated))
	edgeKnows(t, edge, api, "probe-2")
	mustToken(t, edge, 1, "127.0.0.1", "app", rotated.Secret)
	cptest.WaitFor(t, 5*time.Second, "127.0.0.1's move recorded", func() bool {
		rows := api.cutover("app")
		return len(rows) == 1 && len(rows[0].NotMoved) == 1
	})

	olive := openTab(t, browser, "olive", false)
	if status := olive.open(consoleURL); status != 200 {
		t.Fatalf("My clients answered %d", status)
	}
	if body := olive.body(); !strings.Contains(body, "rotation in progress: 1 of 2 callers moved") {
		t.Fatalf("My clients lacks the rotation's progress: %q", body)
	}
	olive.click("//a[normalize-space()='app']")
	if got := olive.text("#cutover ul.not-moved"); strings.TrimSpace(got) != "127.0.0.2" {
		t.Fatalf("callers not moved: %q", got)
	}
	if body := olive.text("#cutover"); !strings.Contains(body, "waiting for 127.0.0.2") || !strings.Contains(body, "Quiet") || !strings.Contains(body, "Deadline") {
		t.Fatalf("the Cut-over panel: %q", body)
	}
	if run(olive, "reading the switch", chromedp.Evaluate[bool](`document.querySelector("#cutover-auto").checked`)) {
		t.Fatal("the switch is on before olive turned it on")
	}
	run(olive, "ticking the switch", chromedp.Click(chromedp.CSS("#cutover-auto")))
	if status := olive.click("//button[normalize-space()='Save cut-over']"); status != 200 {
		t.Fatalf("saving the cut-over answered %d", status)
	}
	if body := olive.body(); !strings.Contains(body, "Cut-over saved.") ||
		!run(olive, "reading the switch", chromedp.Evaluate[bool](`document.querySelector("#cutover-auto").checked`)) {
		t.Fatalf("after saving: %q", body)
	}
	var policy struct{ Auto bool }
	api.must(api.call(http.MethodGet, "/v1/clients/app/cutover", nil, &policy))
	if !policy.Auto {
		t.Fatal("the API says the cut-over is still off")
	}

	mustToken(t, edge, 1, "127.0.0.2", "app", rotated.Secret)
	cptest.WaitFor(t, 20*time.Second, "the cut-over revokes the old secret", func() bool {
		return api.secrets("app")[old.ID].Status == "revoked"
	})
	olive.open(h.cpURL() + "/console/clients/app")
	if body := olive.text("#cutover"); !strings.Contains(body, "No rotation in progress") {
		t.Fatalf("after the cut-over, the panel: %q", body)
	}
}
