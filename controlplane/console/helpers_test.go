package console

import (
	"testing"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
)

// env is the API, with the console mounted when asked, on the shared
// harness (cptest.Env).
type env struct {
	*cptest.Env
	api *api.API
}

// options are the API's options and whether the console is mounted.
type options struct {
	api.Options
	console bool
}

type envOption func(*rules.ServiceOptions, *options)

// withAdmins names admin users.
func withAdmins(users ...string) envOption {
	return func(_ *rules.ServiceOptions, o *options) { o.Admins = users }
}

// withConsole mounts the console, with alice as the admin.
func withConsole(_ *rules.ServiceOptions, o *options) {
	o.console = true
	o.Admins = []string{"alice"}
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	o := options{Options: api.Options{AdminToken: cptest.AdminToken, EdgeToken: cptest.EdgeToken}}
	e := &env{Env: cptest.New(t, func(so *rules.ServiceOptions) {
		for _, opt := range opts {
			opt(so, &o)
		}
	})}
	var err error
	if e.api, err = api.New(e.Svc, o.Options); err != nil {
		t.Fatalf("api.New: %v", err)
	}
	t.Cleanup(e.api.Close)
	if o.console {
		c, err := New(e.api)
		if err != nil {
			t.Fatalf("console.New: %v", err)
		}
		e.api.Mount(Prefix, c)
	}
	e.Handler = e.api
	return e
}
