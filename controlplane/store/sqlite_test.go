package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

func TestSQLiteMigrationAndEpoch(t *testing.T) {
	ctx := context.Background()
	st, path := storetest.SQLite(t)
	epoch, rev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(epoch) != 16 || strings.Contains(epoch, ".") || rev != 0 {
		t.Fatalf("new store: epoch %q rev %d", epoch, rev)
	}
	var version int
	if err := store.DB(st).QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(store.Migrations) {
		t.Fatalf("schema_version = %d (%v), want %d", version, err, len(store.Migrations))
	}
	var mode string
	if err := store.DB(st).QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}
	for _, suffix := range []string{"", "-wal"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("cp.db%s: mode %v, want 0600", suffix, fi.Mode().Perm())
		}
	}

	// A second open of the same file, as after a restart, keeps the epoch
	// and migrates nothing again.
	st2 := storetest.OpenSQLite(t, path)
	epoch2, _, err := st2.Revision(ctx)
	if err != nil || epoch2 != epoch {
		t.Fatalf("reopened epoch %q (%v), want %q", epoch2, err, epoch)
	}

	// Another file is another lifetime: another epoch.
	other, _ := storetest.SQLite(t)
	if e, _, _ := other.Revision(ctx); e == epoch {
		t.Fatal("two stores share an epoch")
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	st, path := storetest.SQLite(t)
	if _, err := store.DB(st).Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := store.OpenSQLite(ctx, path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer schema: %v", err)
	}
}

func TestSQLiteDSNEscapesPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "odd ?#% dir")
	st := storetest.OpenSQLite(t, filepath.Join(dir, "x.db"))
	if err := st.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); err != nil {
		t.Fatalf("the database is not at the path given: %v", err)
	}
}

// openAtVersion makes a SQLite database at schema version, holding the
// rows that stmts insert, and opens it as the store, which brings it up to
// date.
func openAtVersion(t *testing.T, version int, stmts ...string) *store.SQL {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", store.SQLiteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.ApplyMigrations(ctx, tx, version); err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	return storetest.OpenSQLite(t, path)
}

// A database made by the first release is brought up to date on open, its
// clients kept, with no owners.
func TestSQLiteMigratesFromVersion1(t *testing.T) {
	ctx := context.Background()
	st := openAtVersion(t, 1, `INSERT INTO clients (client_id, name, created_at) VALUES ('old', 'Old', 1)`)
	c, err := st.Client(ctx, "old")
	if err != nil || c.Name != "Old" || len(c.Owners) != 0 {
		t.Fatalf("after the upgrade: %+v (%v)", c, err)
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.SetOwners(ctx, "old", []string{"u"}) }); err != nil {
		t.Fatal(err)
	}
	if list, err := st.Clients(ctx, "u", "", 10); err != nil || len(list) != 1 || list[0].Owners[0] != "u" {
		t.Fatalf("owned clients: %+v (%v)", list, err)
	}
}

// A database of schema 6 holding rotations in progress is brought up to
// date with them in the rotations set, and without the clients that have
// one active secret.
func TestSQLiteMigrationFindsRotationsInProgress(t *testing.T) {
	st := openAtVersion(t, 6,
		`INSERT INTO clients (client_id, name, created_at) VALUES ('rotating', '', 1), ('settled', '', 1)`,
		`INSERT INTO secrets (secret_id, client_id, hash, hint, created_at) VALUES
			('sec_a', 'rotating', 'h', 'x', 1), ('sec_b', 'rotating', 'h', 'x', 2), ('sec_c', 'settled', 'h', 'x', 1)`,
		`INSERT INTO secrets (secret_id, client_id, hash, hint, created_at, revoked_at) VALUES ('sec_d', 'settled', 'h', 'x', 2, 3)`,
	)
	rs, err := st.Rotations(context.Background(), time.UnixMilli(10), time.UnixMilli(0))
	if err != nil || len(rs) != 1 || rs[0].ClientID != "rotating" || len(rs[0].Secrets) != 2 {
		t.Fatalf("rotations after the upgrade: %+v (%v)", rs, err)
	}
}
