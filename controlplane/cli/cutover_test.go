package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// TestCLICutover: `client cutover` shows the defaults, sets the fields
// given and keeps the others, refuses bad values naming the field, and
// `client show` says which callers the rotation waits for.
func TestCLICutover(t *testing.T) {
	c := newCLIEnv(t)
	k := cptest.Rotation{Env: c.Env, Ctx: context.Background()}
	c.mustRun("client", "create", "--id", "acme")
	out, _ := c.mustRun("client", "cutover", "acme")
	if !strings.Contains(out, "auto:        off (manual)\nquiet:       1h\nlookback:    14d\ndeadline:    7d\non_deadline: keep\n") ||
		!strings.Contains(out, "no rotation in progress") {
		t.Fatalf("defaults:\n%s", out)
	}
	out, _ = c.mustRun("client", "cutover", "acme", "--auto", "--quiet", "2s", "--on-deadline", "revoke")
	if !strings.Contains(out, "auto:        on\nquiet:       2s\nlookback:    14d\n") || !strings.Contains(out, "on_deadline: revoke") {
		t.Fatalf("after setting:\n%s", out)
	}
	if out, _ = c.mustRun("client", "cutover", "acme", "--deadline", "3d"); !strings.Contains(out, "auto:        on\nquiet:       2s\n") || !strings.Contains(out, "deadline:    3d") {
		t.Fatalf("one flag changed others:\n%s", out)
	}
	for _, bad := range [][]string{{"--auto", "--manual"}, {"--quiet", "soon"}, {"--on-deadline", "maybe"}} {
		_, errOut, err := c.run(append([]string{"client", "cutover", "acme"}, bad...)...)
		if err == nil {
			t.Errorf("client cutover %v succeeded", bad)
		}
		if field := strings.TrimPrefix(bad[0], "--"); bad[0] != "--auto" && !strings.Contains(errOut+err.Error(), strings.ReplaceAll(field, "-", "_")) {
			t.Errorf("client cutover %v: %q does not name the field", bad, errOut+err.Error())
		}
	}

	old := k.MustGenerate("acme").Secret.ID
	k.Use("acme", old, "10.1.2.7")
	k.Use("acme", old, "10.1.9.44")
	k.Clock.Add(time.Minute)
	ns, err := c.Svc.RotateSecret(k.Ctx, cptest.Root, "acme", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ = c.mustRun("client", "show", "acme"); !strings.Contains(out, "cut-over:    "+old+" waiting for the newest secret's first use") {
		t.Fatalf("show before the newest's use:\n%s", out)
	}
	k.Clock.Add(time.Second)
	k.Use("acme", ns.Secret.ID, "10.1.2.7")
	if out, _ = c.mustRun("client", "show", "acme"); !strings.Contains(out, "cut-over:    "+old+" waiting for 10.1.9.44 (deadline ") {
		t.Fatalf("show:\n%s", out)
	}
}
