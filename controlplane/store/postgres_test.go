package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

func TestPostgresMigrations(t *testing.T) {
	ctx := context.Background()
	dsn, schema := storetest.Schema(t)
	_, admin := storetest.Postgres(t)

	// Replicas starting together migrate once and agree on the epoch.
	epochs := make([]string, 6)
	var wg sync.WaitGroup
	for i := range epochs {
		wg.Go(func() {
			st, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{Schema: schema})
			if err != nil {
				t.Errorf("open %d: %v", i, err)
				return
			}
			defer st.Close()
			epochs[i], _, err = st.Revision(ctx)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, e := range epochs {
		if e == "" || e != epochs[0] {
			t.Fatalf("replicas started together see epochs %v", epochs)
		}
	}
	var version, metaRows int
	if err := admin.QueryRow(ctx, `SELECT version FROM `+schema+`.schema_version`).Scan(&version); err != nil || version != len(store.Migrations) {
		t.Fatalf("schema_version %d (%v), want %d", version, err, len(store.Migrations))
	}
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM `+schema+`.meta`).Scan(&metaRows); err != nil || metaRows != 1 {
		t.Fatalf("%d meta rows (%v)", metaRows, err)
	}

	// A schema from a newer build is refused, not downgraded.
	if _, err := admin.Exec(ctx, `UPDATE `+schema+`.schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{Schema: schema}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer schema: %v", err)
	}
	if _, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{Schema: "Bad-Name"}); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Fatalf("bad schema name: %v", err)
	}
}

// A broken DSN or an unreachable database gives an error that names the
// target and never the password.
func TestPostgresOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const pw = "s3cret-Pa55word"
	for dsn, want := range map[string]string{
		"":                                       "empty DSN",
		"postgres://u:" + pw + "@h:99999999/db":  "not a valid connection string",
		"postgres://u:" + pw + "@[::1/db":        "not a valid connection string",
		"host=h password=" + pw + " port=x":      "not a valid connection string",
		"postgres://u:" + pw + "@127.0.0.1:1/db": "postgres store (user u, 127.0.0.1:1, database db)",
		"host=127.0.0.1 port=1 user=u password=" + pw + " dbname=db": "connect",
	} {
		_, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", strings.ReplaceAll(dsn, pw, "…"), err, want)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("the error quotes the password: %s", strings.ReplaceAll(err.Error(), pw, "[PASSWORD]"))
		}
	}
}
