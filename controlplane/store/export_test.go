package store

import (
	"context"
	"database/sql"
)

// What the tests of package store_test see of the inside.
var (
	Migrations      = migrations
	SQLiteDialect   = sqliteDialect
	PostgresDialect = postgresDialect
)

// DB returns the database/sql handle of a SQLite store.
func DB(s *SQL) *sql.DB { return s.db.(*sqliteDriver).db }

// ApplyMigrations brings a SQLite database up to schema version n.
func ApplyMigrations(ctx context.Context, tx *sql.Tx, n int) error {
	return applyMigrations(ctx, sqliteTx{tx}, sqliteDialect, migrations[:n])
}
