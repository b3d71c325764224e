package console

import (
	"context"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/store"
)

// TestConsoleSink: an owner sets a webhook sink from its JSON and sees
// its signing secret once, the panel then shows kind and target (not the
// secret), a generate hands the secret to the sink instead of showing
// it, bad JSON or a bad field is a 400 page, a stranger changes nothing,
// and Remove sink removes it.
func TestConsoleSink(t *testing.T) {
	e, _ := consoleEnv(t)
	rc := cptest.NewReceiver(t)
	olive := e.browser("olive")
	r := olive.get("/console/clients/app")
	cptest.MustStatus(t, r, 200)
	mustContain(t, r, "<h2>Sink</h2>", "No sink: new secrets are shown once")

	cfg := `{"kind":"webhook","url":"` + rc.URL + `/hook","public_key":` + string(rc.PublicJWK()) + `,"rotate_every":"30d"}`
	r = olive.post("/console/clients/app/sink", url.Values{"config": {cfg}})
	cptest.MustStatus(t, r, 200)
	m := regexp.MustCompile(`value="(whsec_[^"]+)"`).FindSubmatch(r.Body)
	if m == nil {
		t.Fatal("no signing secret on the answer page")
	}
	signing := html.UnescapeString(string(m[1]))
	rc.SetSigningSecret(signing)
	r = olive.get("/console/clients/app")
	mustContain(t, r, `<dd class="sink-kind">webhook</dd>`, rc.URL+"/hook", "30d", "Remove sink")
	mustNotContain(t, r, signing)

	r = olive.post("/console/clients/app/generate", url.Values{"seen": {"1"}})
	if r.Status != 303 || r.Header.Get("Location") != "/console/clients/app?done=delivered" {
		t.Fatalf("generate with a sink: %d %s", r.Status, r.Header.Get("Location"))
	}
	mustContain(t, olive.get("/console/clients/app?done=delivered"), "handed to the client", "sink; it is not shown here")

	for _, bad := range []string{"", "{", `{"kind":"webhook","url":"http://example.com/","public_key":` + string(rc.PublicJWK()) + `}`} {
		r = olive.post("/console/clients/app/sink", url.Values{"config": {bad}})
		cptest.MustStatus(t, r, 400)
	}
	mustContain(t, r, "url:")
	mallory := e.browser("mallory")
	mallory.get("/console/")
	cptest.MustStatus(t, mallory.post("/console/clients/app/sink/delete", url.Values{}), 404)
	r = olive.post("/console/clients/app/sink/delete", url.Values{})
	if r.Status != 303 || !strings.HasSuffix(r.Header.Get("Location"), "done=unsunk") {
		t.Fatalf("remove: %d %s", r.Status, r.Header.Get("Location"))
	}
	if _, err := e.Svc.GetSink(context.Background(), cptest.Who, "app"); err != store.ErrNotFound {
		t.Fatalf("after Remove sink: %v", err)
	}
}
