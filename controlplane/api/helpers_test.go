package api

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// countingStore counts the calls that reach the store's read side.
type countingStore struct {
	store.Store
	snapshots atomic.Int64
	revisions atomic.Int64
	lookups   atomic.Int64
}

func (c *countingStore) Snapshot(ctx context.Context, now time.Time, window time.Duration, w store.SnapshotWriter) error {
	c.snapshots.Add(1)
	return c.Store.Snapshot(ctx, now, window, w)
}

// storeSnapshot reads a store's snapshot whole.
func storeSnapshot(ctx context.Context, st store.Store, now time.Time, window time.Duration) (wire.Snapshot, error) {
	var c store.Collect
	err := st.Snapshot(ctx, now, window, &c)
	return c.Snapshot, err
}

func (c *countingStore) SecretByHash(ctx context.Context, hash string) (store.Secret, error) {
	c.lookups.Add(1)
	return c.Store.SecretByHash(ctx, hash)
}

func (c *countingStore) Revision(ctx context.Context) (string, int64, error) {
	c.revisions.Add(1)
	return c.Store.Revision(ctx)
}

func (c *countingStore) queries() int64 { return c.snapshots.Load() + c.revisions.Load() }

// env is the API on the shared harness (cptest.Env).
type env struct {
	*cptest.Env
	api *API
}

type envOption func(*rules.ServiceOptions, *Options)

// withAdmins names admin users.
func withAdmins(users ...string) envOption {
	return func(_ *rules.ServiceOptions, a *Options) { a.Admins = users }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	st, path := storetest.SQLite(t)
	return newEnvOn(t, st, path, opts...)
}

func newEnvOn(t *testing.T, st store.Store, path string, opts ...envOption) *env {
	t.Helper()
	ao := Options{AdminToken: cptest.AdminToken, EdgeToken: cptest.EdgeToken}
	e := &env{Env: cptest.NewOn(t, st, path, func(so *rules.ServiceOptions) {
		for _, o := range opts {
			o(so, &ao)
		}
	})}
	var err error
	if e.api, err = New(e.Svc, ao); err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(e.api.Close)
	e.Handler = e.api
	return e
}
