package rotagate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestCaddyfileAdapt adapts every testdata/caddyfile_adapt/*.caddyfiletest
// (a Caddyfile, a line of dashes, the JSON it must become) and compares.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			if !caddytest.CompareAdapt(t, f, caddyfile, "caddyfile", strings.TrimSpace(want)) {
				t.Fatal("adapted JSON differs (diff above)")
			}
		})
	}
}

// TestCaddyfileErrors adapts every testdata/caddyfile_errors/*.caddyfiletest
// (a Caddyfile, a line of dashes, the error text expected) and checks that
// adapting fails with that error.
func TestCaddyfileErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_errors/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no error tests found: %v", err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			_, _, err = adapter.Adapt([]byte(caddyfile), nil)
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) {
				t.Fatalf("error %v, want one containing %q", err, strings.TrimSpace(want))
			}
		})
	}
}
