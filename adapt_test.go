package rotagate

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/rotagate/rotagate/internal/adapttest"
)

// TestCaddyfileAdapt adapts every testdata/caddyfile_adapt/*.caddyfiletest
// and compares the JSON.
func TestCaddyfileAdapt(t *testing.T) {
	adapttest.Run(t, "testdata/caddyfile_adapt/*.caddyfiletest")
}

// TestCaddyfileErrors adapts every testdata/caddyfile_errors/*.caddyfiletest
// and checks the error.
func TestCaddyfileErrors(t *testing.T) {
	adapttest.Run(t, "testdata/caddyfile_errors/*.caddyfiletest")
}
