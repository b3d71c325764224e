package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// postgresKit opens PostgreSQL stores, each in a schema of its own, for
// the shared store suite.
var postgresKit = storeKit{name: "postgres", database: postgresDatabase}

// postgresDatabase makes a new schema; each of its handles is another pool
// on the schema: what a second replica has.
func postgresDatabase(t *testing.T) func(t *testing.T) store.Store {
	dsn, schema := storetest.Schema(t)
	return func(t *testing.T) store.Store {
		return storetest.OpenPostgres(t, dsn, store.PostgresOptions{Schema: schema})
	}
}

func TestPostgresStore(t *testing.T) {
	storetest.Postgres(t)
	runStoreSuite(t, postgresKit)
}

// A Service over a PostgreSQL store, built with no notifier wiring at
// all, wakes its waiting feed requests for a change made through another
// replica: the store owns the notifier its watcher publishes to, and
// NewService finds it. (Before, a Service given no Notifier made its own,
// which the store's watcher never reached, and the waiters slept until
// their wait ran out.)
func TestPostgresServiceFindsTheStoreNotifier(t *testing.T) {
	ctx := context.Background()
	dsn, schema := storetest.Schema(t)
	// The periodic check is a minute away: only LISTEN can wake B.
	pg := store.PostgresOptions{Schema: schema, PollInterval: time.Minute}
	a := storetest.OpenPostgres(t, dsn, pg)
	b := storetest.OpenPostgres(t, dsn, pg)
	svcA, err := rules.NewService(ctx, a, rules.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svcB, err := rules.NewService(ctx, b, rules.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svcB.Notifier() != b.Notifier() {
		t.Fatal("the Service does not use its store's notifier")
	}
	apiB, err := New(svcB, Options{AdminToken: cptest.AdminToken, EdgeToken: cptest.EdgeToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apiB.Close)
	waiting := make(chan struct{}, 1)
	apiB.onWait = func() { waiting <- struct{}{} }

	epoch, rev, _ := svcB.Notifier().Current()
	answer := make(chan int, 1)
	go func() {
		req := httptest.NewRequest("GET", wire.SnapshotPath+"?wait=30s", nil)
		req.Header.Set("Authorization", "Bearer "+cptest.EdgeToken)
		req.Header.Set("If-None-Match", wire.ETag(epoch, rev))
		rec := httptest.NewRecorder()
		apiB.ServeHTTP(rec, req)
		answer <- rec.Code
	}()
	<-waiting
	if _, err := svcA.CreateClient(ctx, cptest.Who, "c", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-answer:
		if code != http.StatusOK {
			t.Fatalf("the waiting feed request answered %d, want 200", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a change through replica A did not wake the feed request waiting on replica B")
	}
}
