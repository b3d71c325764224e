package api

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// testLabelSecret: an owner labels a secret with the app that has it; the
// label is stored (both stores), audited, shown in listings, and never a
// secret, an unprintable string or a novel.
func testLabelSecret(t *testing.T, k storeKit) {
	e := k.newEnv(t)
	ctx := context.Background()
	if _, err := e.Svc.CreateClient(ctx, cptest.Who, "app", "", []string{"olive"}); err != nil {
		t.Fatal(err)
	}
	ns := e.MustGenerate("app")
	olive := rules.Actor{TokenID: "user:olive", User: "olive"}
	sec, err := e.Svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, "  billing-worker (prod)  ")
	if err != nil || sec.Label != "billing-worker (prod)" {
		t.Fatalf("label: %q %v", sec.Label, err)
	}
	secrets, err := e.Store.Secrets(ctx, "app")
	if err != nil || secrets[0].Label != "billing-worker (prod)" {
		t.Fatalf("stored label %q (%v)", secrets[0].Label, err)
	}
	trail, _ := e.Store.Audit(ctx, "app", 1)
	if trail[0].Action != "secret.label" || trail[0].Who != "user:olive" || trail[0].Detail != "label: billing-worker (prod)" {
		t.Fatalf("audit: %+v", trail[0])
	}
	for label, want := range map[string]string{
		ns.Plaintext:             "not be the secret",
		"tab\there":              "printable",
		strings.Repeat("é", 101): "at most 100 characters",
	} {
		if _, err := e.Svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, label); !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("label %.10q…: %v, want %q", label, err, want)
		}
	}
	if _, err := e.Svc.LabelSecret(ctx, rules.Actor{TokenID: "user:mallory", User: "mallory"}, "app", ns.Secret.ID, "mine"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a stranger labelling: %v", err)
	}
	if _, err := e.Svc.LabelSecret(ctx, olive, "app", ns.Secret.ID, ""); err != nil {
		t.Fatal(err)
	}
	if secrets, _ := e.Store.Secrets(ctx, "app"); secrets[0].Label != "" {
		t.Fatalf("an empty label left %q", secrets[0].Label)
	}
}
