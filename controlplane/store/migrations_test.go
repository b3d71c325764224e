package store_test

import (
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/store"
)

// released holds the schema statements each store ran before the two
// lists became one, as they were released: the shared list, spelled in
// each dialect, must still run them, or new databases would differ from
// old ones.
var released = map[string][]string{
	"sqlite": {
		`CREATE TABLE meta ( id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL, revision BIGINT NOT NULL )`,
		`CREATE TABLE clients ( client_id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL )`,
		`CREATE TABLE secrets ( secret_id TEXT PRIMARY KEY, client_id TEXT NOT NULL REFERENCES clients (client_id), hash TEXT NOT NULL, hint TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT, last_used_at BIGINT, last_used_from TEXT NOT NULL DEFAULT '' )`,
		`CREATE INDEX secrets_by_client ON secrets (client_id, created_at)`,
	},
	"postgres": {
		`CREATE TABLE meta ( id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL, revision BIGINT NOT NULL CHECK (revision >= 0) )`,
		`CREATE TABLE clients ( client_id TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL )`,
		`CREATE TABLE secrets ( secret_id TEXT COLLATE "C" PRIMARY KEY, client_id TEXT COLLATE "C" NOT NULL REFERENCES clients (client_id), hash TEXT NOT NULL, hint TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT, revoked_at BIGINT, last_used_at BIGINT, last_used_from TEXT NOT NULL DEFAULT '' )`,
		`CREATE INDEX secrets_by_client ON secrets (client_id, created_at)`,
	},
}

func TestMigrationsSpellTheReleasedSchemas(t *testing.T) {
	for name, dialect := range map[string]*strings.Replacer{"sqlite": store.SQLiteDialect, "postgres": store.PostgresDialect} {
		want := released[name]
		if len(store.Migrations) < 1 || len(store.Migrations[0]) != len(want) {
			t.Fatalf("%s: migration 1 has %d statements, want %d", name, len(store.Migrations[0]), len(want))
		}
		for i, stmt := range store.Migrations[0] {
			got := strings.Join(strings.Fields(dialect.Replace(stmt)), " ")
			if got != want[i] {
				t.Errorf("%s, statement %d:\n got %s\nwant %s", name, i+1, got, want[i])
			}
			if strings.ContainsAny(got, "{}") {
				t.Errorf("%s, statement %d: a word is left unspelled: %s", name, i+1, got)
			}
		}
	}
}

// Every migration, not only the released first one, is fully spelled in
// both dialects.
func TestMigrationsFullySpelled(t *testing.T) {
	for name, dialect := range map[string]*strings.Replacer{"sqlite": store.SQLiteDialect, "postgres": store.PostgresDialect} {
		for i, m := range store.Migrations {
			for j, stmt := range m {
				if got := dialect.Replace(stmt); strings.ContainsAny(got, "{}") {
					t.Errorf("%s, migration %d statement %d: a word is left unspelled: %s", name, i+1, j+1, got)
				}
			}
		}
	}
}
