package controlplane

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// testLabelSecret: an owner labels a secret with the app that has it; the
// label is stored (both stores), audited, shown in listings, and never a
// secret, an unprintable string or a novel.
func testLabelSecret(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateClient(ctx, who, "app", "", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	ns := e.mustGenerate("app")
	olive := rules.Actor{TokenID: "user:olive", User: "olive"}
	sec, err := e.svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, "  billing-worker (prod)  ")
	if err != nil || sec.Label != "billing-worker (prod)" {
		t.Fatalf("label: %q %v", sec.Label, err)
	}
	secrets, err := e.store.Secrets(ctx, "app")
	if err != nil || secrets[0].Label != "billing-worker (prod)" {
		t.Fatalf("stored label %q (%v)", secrets[0].Label, err)
	}
	trail, _ := e.store.Audit(ctx, "app", 1)
	if trail[0].Action != "secret.label" || trail[0].Who != "user:olive" || trail[0].Detail != "label: billing-worker (prod)" {
		t.Fatalf("audit: %+v", trail[0])
	}
	for label, want := range map[string]string{
		ns.Plaintext:             "not be the secret",
		"tab\there":              "printable",
		strings.Repeat("é", 101): "at most 100 characters",
	} {
		if _, err := e.svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, label); !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("label %.10q…: %v, want %q", label, err, want)
		}
	}
	if _, err := e.svc.LabelSecret(ctx, rules.Actor{TokenID: "user:mallory", User: "mallory"}, "app", ns.Secret.ID, "mine"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a stranger labelling: %v", err)
	}
	if _, err := e.svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, ""); err != nil {
		t.Fatal(err)
	}
	if secrets, _ := e.store.Secrets(ctx, "app"); secrets[0].Label != "" {
		t.Fatalf("an empty label left %q", secrets[0].Label)
	}
}

// TestLabelInTheConsoleAPIAndCLI: the console asks for a label on the new
// secret's page and on each active secret, and shows it; the API and the
// CLI set and list it.
func TestLabelInTheConsoleAPIAndCLI(t *testing.T) {
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
	mustStatus(t, r, 303)
	page = olive.get(r.header.Get("Location"))
	mustContain(t, page, "Label saved.", `<span class="label">billing-worker</span>`, "Edit the label")
	mustStatus(t, olive.post(labelPage, url.Values{"label": {first.Plaintext}}), 400)
	mustStatus(t, e.browser("mallory").get(labelPage), 404)

	var s secretJSON
	e.admin("PUT", "/v1/clients/app/secrets/"+first.Secret.ID+"/label", `{"label":"billing v2"}`).decode(t, &s)
	if s.Label != "billing v2" {
		t.Fatalf("API label: %+v", s)
	}
	if r := e.admin("PUT", "/v1/clients/app/secrets/"+first.Secret.ID+"/label", `{}`); r.status != 400 || !strings.Contains(string(r.body), "label is required") {
		t.Fatalf("API without a label: %d %s", r.status, r.body)
	}

	c := newCLIEnv(t)
	c.mustRun("client", "create", "--id", "svc")
	c.mustRun("secret", "generate", "svc")
	secrets, _ := c.svc.ListSecrets(context.Background(), who, "svc")
	_, errOut := c.mustRun("secret", "label", "svc", secrets[0].ID, "nightly export")
	if !strings.Contains(errOut, "labelled secret "+secrets[0].ID) || !strings.Contains(errOut, ": nightly export") {
		t.Fatalf("secret label: %s", errOut)
	}
	if out, _ := c.mustRun("--json", "secret", "list", "svc"); !strings.Contains(out, `"label": "nightly export"`) {
		t.Fatalf("secret list --json:\n%s", out)
	}
}
