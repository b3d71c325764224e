package controlplane

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt adapts every testdata/*.caddyfiletest: a Caddyfile,
// a line of dashes, then either the expected JSON or a fragment of the
// expected error.
func TestCaddyfileAdapt(t *testing.T) {
	// spec_example reads {$ROTAGATE_DB:rotagate.db} at adapt time.
	t.Setenv("ROTAGATE_DB", "")
	os.Unsetenv("ROTAGATE_DB")
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found (%v)", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(string(data), "----------")
			if len(parts) != 2 {
				t.Fatal("want a Caddyfile and an expectation separated by ----------")
			}
			caddyfile, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			if strings.HasPrefix(expected, "{") {
				caddytest.AssertAdapt(t, caddyfile, "caddyfile", expected)
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil {
				t.Fatalf("adapted without error, want one containing %q", expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Fatalf("error %q does not contain %q", err, expected)
			}
		})
	}
}
