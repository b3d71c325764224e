package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// TestRouteTable: every endpoint of the table belongs to the API
// (Handles) and answers another method with 405 and an Allow header
// listing its methods, before any token is checked.
func TestRouteTable(t *testing.T) {
	e := newEnv(t)
	for _, rt := range e.api.table() {
		path := strings.NewReplacer("{client_id}", "c", "{secret_id}", "sec_x").Replace(rt.path)
		if !e.api.Handles(path) {
			t.Errorf("%s is not handled", path)
		}
		r := e.Do("OPTIONS", path, "", nil)
		cptest.MustStatus(t, r, http.StatusMethodNotAllowed)
		if allow := r.Header.Get("Allow"); !strings.Contains(allow, rt.method) {
			t.Errorf("%s: Allow %q does not list %s", path, allow, rt.method)
		}
	}
	for _, path := range []string{"/", "/v1", "/v1/events/x", "/console/", "/healthz/x"} {
		if e.api.Handles(path) {
			t.Errorf("%s is handled, but no endpoint has it", path)
		}
	}
}
