// Package install checks that rotagate installs into a stock Caddy the way
// the README says operators add plugins: xcaddy build --with.
package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// caddyVersion is the Caddy release rotagate is built and tested against
// (go.mod's github.com/caddyserver/caddy/v2).
const caddyVersion = "v2.11.9"

// TestXcaddyBuild builds Caddy with xcaddy and this checkout as the plugin
// (one --with, as in the README) and checks that both handlers are
// compiled in and that they come from the checkout, not from a download.
// A cold build takes minutes, so it runs only with CI set (.ci/run sets it
// and installs xcaddy).
func TestXcaddyBuild(t *testing.T) {
	if os.Getenv("CI") == "" {
		t.Skip("slow (an xcaddy build of Caddy, minutes when cold): runs with CI=true, as .ci/run does")
	}
	xcaddy := findXcaddy(t)
	checkout, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(checkout, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", checkout, err)
	}

	// The build happens in a temporary directory (xcaddy makes its own
	// temporary module there too), so no binary is left in the checkout.
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "caddy")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	build := command(ctx, tmp, xcaddy, "build", caddyVersion,
		"--output", bin,
		"--with", "github.com/rotagate/rotagate="+checkout)
	// rotagate comes from the checkout and everything else from the module
	// proxy: "|off" makes a failed lookup an error at once instead of a
	// fallback to fetching from VCS hosts (which cannot be reached on
	// isolated CI machines).
	build.Env = append(build.Env, "GOPROXY="+proxyOnly(t))
	start := time.Now()
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("xcaddy build (%s): %v\n%s", time.Since(start).Round(time.Second), err, out)
	}
	t.Logf("xcaddy build took %s", time.Since(start).Round(time.Second))

	mods, err := command(ctx, tmp, bin, "list-modules").Output()
	if err != nil {
		t.Fatalf("caddy list-modules: %v", err)
	}
	listed := map[string]bool{}
	var ours []string
	sc := bufio.NewScanner(bytes.NewReader(mods))
	for sc.Scan() {
		m := strings.TrimSpace(sc.Text())
		listed[m] = true
		if strings.Contains(m, "client_credentials") {
			ours = append(ours, m)
		}
	}
	for _, m := range []string{"http.handlers.client_credentials", "http.handlers.client_credentials_control_plane"} {
		if !listed[m] {
			t.Errorf("caddy list-modules does not list %s (it lists %d lines; of ours: %v)", m, len(listed), ours)
		}
	}

	// build-info lists the module with its replacement ("dep <path> <version>"
	// then "=> <dir> (devel)"): proof that the binary holds this checkout.
	info, err := command(ctx, tmp, bin, "build-info").Output()
	if err != nil {
		t.Fatalf("caddy build-info: %v", err)
	}
	if got := replacement(string(info), "github.com/rotagate/rotagate"); got != checkout {
		t.Errorf("caddy build-info: github.com/rotagate/rotagate replaced by %q, want %q", got, checkout)
	}
}

// replacement is the directory build-info says module was replaced by.
func replacement(info, module string) string {
	lines := strings.Split(info, "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "dep" && f[1] == module && i+1 < len(lines) {
			if r := strings.Fields(lines[i+1]); len(r) >= 2 && r[0] == "=>" {
				return r[1]
			}
		}
	}
	return ""
}

// command runs name in dir in a process group of its own, which the
// context's end kills as a whole (xcaddy runs go, which runs compilers).
// Caddy's config and data directories point into dir; Go's caches stay
// where they are, so a second build is warm.
func command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// findXcaddy looks on PATH, then where go install puts binaries.
func findXcaddy(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("xcaddy"); err == nil {
		return p
	}
	var dirs []string
	if gobin := goEnv(t, "GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, p := range filepath.SplitList(goEnv(t, "GOPATH")) {
		dirs = append(dirs, filepath.Join(p, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "xcaddy")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("xcaddy not found on PATH nor in %v; install it with "+
		"`go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.7` (.ci/run does)", dirs)
	return ""
}

// proxyOnly is the first entry of GOPROXY followed by "|off"; a GOPROXY
// that starts with direct or off is kept as it is.
func proxyOnly(t *testing.T) string {
	gp := goEnv(t, "GOPROXY")
	first, _, _ := strings.Cut(gp, ",")
	first, _, _ = strings.Cut(first, "|")
	if first == "" || first == "direct" || first == "off" {
		return gp
	}
	return first + "|off"
}

func goEnv(t *testing.T, key string) string {
	t.Helper()
	out, err := exec.Command("go", "env", key).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go env %s: %v: %s", key, err, ee.Stderr)
		}
		t.Fatalf("go env %s: %v", key, err)
	}
	return strings.TrimSpace(string(out))
}
