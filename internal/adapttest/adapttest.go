// Package adapttest runs Caddyfile adapt tests kept as files, for the edge
// and the control plane alike. Each file holds a Caddyfile, a line of ten
// dashes, then either the JSON the Caddyfile must adapt to (it starts with
// "{") or a fragment of the error adapting it must fail with.
package adapttest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// Run adapts every file matching pattern, one subtest each, and fails
// when none matches.
func Run(t *testing.T, pattern string) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests match %s (%v)", pattern, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(string(data), "\n----------\n")
			if len(parts) != 2 {
				t.Fatal("want a Caddyfile and an expectation separated by a line of ----------")
			}
			caddyfile, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, file, caddyfile, "caddyfile", expected) {
					t.Fatal("adapted JSON differs (diff above)")
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil || !strings.Contains(err.Error(), expected) {
				t.Fatalf("adapting gave error %v, want one containing %q", err, expected)
			}
		})
	}
}
