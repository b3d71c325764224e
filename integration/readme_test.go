package integration

import (
	"os"
	"regexp"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestReadmeCaddyfiles adapts every ```caddyfile block of the README, so
// the documentation cannot drift from what the directives accept.
func TestReadmeCaddyfiles(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(string(raw), -1)
	if len(blocks) == 0 {
		t.Fatal("the README has no caddyfile block")
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	for i, b := range blocks {
		if _, warnings, err := adapter.Adapt([]byte(b[1]), nil); err != nil {
			t.Errorf("README caddyfile block %d: %v\n%s", i+1, err, b[1])
		} else if len(warnings) > 0 {
			t.Errorf("README caddyfile block %d: warnings %v", i+1, warnings)
		}
	}
}
