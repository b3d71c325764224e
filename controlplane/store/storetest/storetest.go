// Package storetest opens stores for tests: SQLite on a file in a
// temporary directory, and PostgreSQL in a schema of its own on the test
// server, dropped when the test ends.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rotagate/rotagate/controlplane/store"
)

// SQLite opens a SQLite store on a new file (see SQLitePath), closed when
// the test ends, and returns it with the file's path.
func SQLite(t testing.TB) (*store.SQL, string) {
	t.Helper()
	path := SQLitePath(t)
	return OpenSQLite(t, path), path
}

// SQLitePath is the path of a new SQLite file, cp.db in a temporary
// directory of the test's own.
func SQLitePath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "cp.db")
}

// OpenSQLite opens a SQLite store on the file at path, closed when the
// test ends.
func OpenSQLite(t testing.TB, path string) *store.SQL {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("OpenSQLite %s: %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// The PostgreSQL tests run against ROTAGATE_TEST_POSTGRES (default: the
// local server, database test, user postgres). Each test works in a
// schema of its own, dropped at the end. When the server is unreachable
// they skip, unless CI is set: then they fail.
const defaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var (
	pgOnce    sync.Once
	pgAdmin   *pgxpool.Pool
	pgDownErr error
)

// Postgres returns the DSN of the test server and a pool on it for test
// setup, skipping (or failing, under CI) when it is unreachable.
func Postgres(t testing.TB) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := os.Getenv("ROTAGATE_TEST_POSTGRES")
	if dsn == "" {
		dsn = defaultPostgres
	}
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cfg, err := store.ParsePostgresDSN(dsn)
		if err != nil {
			pgDownErr = err
			return
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			err = pool.Ping(ctx)
		}
		if err != nil {
			msg := err.Error()
			if pw := cfg.ConnConfig.Password; pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
			c := cfg.ConnConfig
			pgDownErr = fmt.Errorf("PostgreSQL (user %s, %s:%d, database %s): %s", c.User, c.Host, c.Port, c.Database, msg)
			return
		}
		pgAdmin = pool
	})
	if pgDownErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required under CI: %v", pgDownErr)
		}
		t.Skipf("skipping: PostgreSQL is not reachable (%v). Start it, or point ROTAGATE_TEST_POSTGRES at one; with CI set this fails instead", pgDownErr)
	}
	return dsn, pgAdmin
}

// Schema returns the test server's DSN and a new schema name, dropped
// (with everything in it) when the test ends, after the stores opened
// later are closed.
func Schema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn, admin := Postgres(t)
	var b [6]byte
	rand.Read(b[:])
	schema = "rgtest_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return dsn, schema
}

// OpenPostgres opens a PostgreSQL store, closed when the test ends.
func OpenPostgres(t testing.TB, dsn string, opts store.PostgresOptions) *store.SQL {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.OpenPostgres(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Revision reads st's revision, failing the test if it cannot.
func Revision(t testing.TB, st store.Store) int64 {
	t.Helper()
	_, rev, err := st.Revision(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// PostgresStore opens a PostgreSQL store in a schema of its own (see
// Schema), closed when the test ends.
func PostgresStore(t testing.TB) *store.SQL {
	t.Helper()
	dsn, schema := Schema(t)
	return OpenPostgres(t, dsn, store.PostgresOptions{Schema: schema})
}

// EventData returns the data of one stored event's payload, read
// straight from the store.
func EventData(t testing.TB, st store.Store, id string) map[string]any {
	t.Helper()
	var p string
	_, err := st.Update(context.Background(), func(tx store.Tx) error {
		return tx.(store.RawTx).QueryRow(context.Background(), `SELECT payload FROM events WHERE event_id = $1`, id).Scan(&p)
	})
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(p), &body); err != nil {
		t.Fatal(err)
	}
	return body.Data
}

// WithParam adds a query parameter to a URL DSN.
func WithParam(t *testing.T, dsn, key, value string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}
