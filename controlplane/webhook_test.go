package controlplane

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/controlplane/webhook/webhooktest"
)

// The module resolves a webhook's placeholders; an unset one is an error
// that names the variable and never quotes the secret.
func TestWebhookPlaceholders(t *testing.T) {
	secret := webhooktest.Secret(t)
	t.Setenv("HOOK_SECRET", secret)
	repl := caddy.NewReplacer()
	c, err := resolveWebhook(repl, webhook.Config{URL: "https://hooks.example:8443/in?k=v", Secret: "{env.HOOK_SECRET}"}, 0)
	if err != nil || c.Secret != secret {
		t.Fatalf("resolved: %v", err)
	}
	for _, tc := range []struct {
		name string
		cfg  webhook.Config
		want string
	}{
		{"unset env", webhook.Config{URL: "https://x/", Secret: "{env.ROTAGATE_UNSET_HOOK}"}, "ROTAGATE_UNSET_HOOK is not set"},
		{"unset env in url", webhook.Config{URL: "https://x/{env.ROTAGATE_UNSET_HOOK}", Secret: secret}, "url: a placeholder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolveWebhook(repl, tc.cfg, 3)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "webhook 3") {
				t.Fatalf("err = %v, want one starting with webhook 3 and containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error quotes the secret: %v", err)
			}
		})
	}
}
