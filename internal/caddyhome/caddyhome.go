// Package caddyhome gives a test binary a temporary home for what Caddy
// writes (saved snapshots, storage, the autosaved config), so tests never
// touch the user's files and never see another run's.
package caddyhome

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// Run runs m with HOME, XDG_DATA_HOME and XDG_CONFIG_HOME set to a new
// temporary directory, and Caddy's default storage and autosave path inside
// it (Caddy computed both from the real home at init), then removes the
// directory and returns m's exit code.
func Run(m *testing.M, prefix string) int {
	home, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(home)
	for _, k := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		os.Setenv(k, home)
	}
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(home, "caddy")}
	caddy.ConfigAutosavePath = filepath.Join(home, "autosave.json")
	return m.Run()
}
