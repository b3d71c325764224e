package controlplane

import (
	"go/build"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// layers are the control plane's packages, lowest first: each may import
// only those before it (docs/design.md §11). The webhook sender sits below
// the rules: the Service enqueues for the webhooks it builds, and the
// sender reaches back only through the functions it is given. The
// cut-over rule and the delivery sinks are pure leaves: they import no
// other package of the control plane. Above the rules, the HTTP API; the
// console, mounted beside it, signs users in through it; the CLI speaks
// the API's JSON types; the module mounts them all.
var layers = []string{
	"controlplane/cutover",
	"controlplane/sink",
	"controlplane/store",
	"controlplane/webhook",
	"controlplane/rules",
	"controlplane/api",
	"controlplane/console",
	"controlplane/cli",
	"controlplane",
}

// testHelpers are packages for tests only: no layer imports them.
var testHelpers = []string{
	"controlplane/cptest",
	"controlplane/store/storetest",
	"controlplane/sink/sinktest",
	"controlplane/webhook/webhooktest",
}

const module = "github.com/rotagate/rotagate/"

// TestLayers: no package of the control plane imports one above it, nor a
// test helper, and every package has its place in the list.
func TestLayers(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pkg, err := build.ImportDir(path, 0)
		if _, none := err.(*build.NoGoError); none {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join("controlplane", path))
		if slices.Contains(testHelpers, name) {
			return nil
		}
		at := slices.Index(layers, name)
		if at < 0 {
			t.Errorf("package %s has no place in layers", name)
			return nil
		}
		for _, imp := range pkg.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok || !strings.HasPrefix(dep, "controlplane") {
				continue
			}
			if i := slices.Index(layers, dep); i < 0 || i >= at {
				t.Errorf("%s imports %s, which is not below it", name, dep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
