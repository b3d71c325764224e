package console

import (
	"net/url"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// TestConsoleCutover: My clients says how many callers of a rotation have
// moved; the client page's Cut-over panel lists those not moved, the quiet
// and deadline times; the switch, a plain form POST with the CSRF token,
// turns the automatic cut-over on and off for an owner; without the token
// nothing changes.
func TestConsoleCutover(t *testing.T) {
	e, old := consoleEnv(t)
	k := cptest.Rotation{Env: e.Env, Ctx: t.Context()}
	k.Use("app", old.Secret.ID, "10.1.2.7")
	k.Use("app", old.Secret.ID, "10.1.9.44")
	k.Use("app", old.Secret.ID, "10.1.3.3")
	k.Clock.Add(time.Minute)
	ns, err := e.Svc.RotateSecret(k.Ctx, cptest.Root, "app", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k.Clock.Add(time.Second)
	k.Use("app", ns.Secret.ID, "10.1.2.7")
	k.Use("app", ns.Secret.ID, "10.1.3.3")

	b := e.browser("olive")
	mustContain(t, b.get("/console/"), "rotation in progress: 2 of 3 callers moved")
	page := b.get("/console/clients/app")
	cptest.MustStatus(t, page, 200)
	mustContain(t, page, "Cut-over", "Callers not moved yet", "10.1.9.44", "waiting for 10.1.9.44",
		"Revoke the old secret automatically once every caller has moved", "quiet 1h · lookback 14d · deadline 7d")
	mustNotContain(t, page, `name="auto" value="on" checked`)

	r := b.post("/console/clients/app/cutover", url.Values{"auto": {"on"}})
	cptest.MustStatus(t, r, 303)
	if loc := r.Header.Get("Location"); loc != "/console/clients/app?done=cutover" {
		t.Fatalf("redirected to %q", loc)
	}
	if st := k.State("app"); !st.Policy.Auto {
		t.Fatal("the switch did not turn the cut-over on")
	}
	mustContain(t, b.get("/console/clients/app?done=cutover"), "Cut-over saved.", `name="auto" value="on" checked`)
	cptest.MustStatus(t, b.post("/console/clients/app/cutover", url.Values{"csrf": {"forged"}}), 403)
	if st := k.State("app"); !st.Policy.Auto {
		t.Fatal("a form without the CSRF token changed the cut-over")
	}
	cptest.MustStatus(t, b.post("/console/clients/app/cutover", url.Values{}), 303) // box unchecked
	if st := k.State("app"); st.Policy.Auto {
		t.Fatal("an unchecked switch left the cut-over on")
	}
	stranger := e.browser("mallory")
	stranger.get("/console/")
	cptest.MustStatus(t, stranger.post("/console/clients/app/cutover", url.Values{"auto": {"on"}}), 404)
}
