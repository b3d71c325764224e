package controlplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rotagate/rotagate/internal/adapttest"
)

// TestCaddyfileAdapt adapts every testdata/*.caddyfiletest: a Caddyfile,
// a line of dashes, then either the expected JSON or a fragment of the
// expected error.
func TestCaddyfileAdapt(t *testing.T) {
	// spec_example reads {$ROTAGATE_DB:rotagate.db} at adapt time.
	t.Setenv("ROTAGATE_DB", "")
	os.Unsetenv("ROTAGATE_DB")
	adapttest.Run(t, filepath.Join("testdata", "*.caddyfiletest"))
}
