package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// sqliteDialect spells the migrations' words for SQLite, whose TEXT
// already compares bytewise (BINARY collation).
var sqliteDialect = strings.NewReplacer(
	"{id}", "TEXT",
	"{revision}", "BIGINT  NOT NULL",
	"{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT",
)

// sqliteDriver is the embedded database: one SQLite file in WAL mode,
// written through BEGIN IMMEDIATE transactions. Other processes' writes
// to the file are not watched.
type sqliteDriver struct {
	db *sql.DB
	// writeMu queues this process's writers in Go rather than in SQLite's
	// busy handler; BEGIN IMMEDIATE still serialises writers across
	// processes and is what the rules rely on.
	writeMu sync.Mutex
}

// SQLiteDSN is the data source name for the database file at path: WAL, a
// busy timeout, foreign keys, reads through a memory map of up to 256 MiB
// (shared by every connection through the OS page cache, where each
// connection's own page cache of 2 MiB would miss: a cut-over pass reads
// a few thousand scattered pages), and BEGIN IMMEDIATE for every write
// transaction so that a second writer waits instead of failing.
func SQLiteDSN(path string) string {
	// SQLite reads the name as a URI: escape what would end the path.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=mmap_size(268435456)&_txlock=immediate"
}

// OpenSQLite opens (creating it and its directory when needed) the database
// at path and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQL, error) {
	if path == "" {
		return nil, errors.New("sqlite store: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite store: creating directory: %w", err)
	}
	// A new database is created private: it holds hashes of legacy
	// secrets, which are worth guessing against. SQLite gives its -wal
	// and -shm files the same mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("sqlite store: creating database file: %w", err)
	}
	db, err := sql.Open("sqlite", SQLiteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	s, err := open(ctx, &sqliteDriver{db: db})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	return s, nil
}

func (d *sqliteDriver) write(ctx context.Context, fn func(querier) error) error {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	return d.tx(ctx, nil, fn)
}

func (d *sqliteDriver) read(ctx context.Context, fn func(querier) error) error {
	return d.tx(ctx, &sql.TxOptions{ReadOnly: true}, fn)
}

// tx runs fn in one transaction and commits when fn returns nil.
func (d *sqliteDriver) tx(ctx context.Context, opts *sql.TxOptions, fn func(querier) error) error {
	tx, err := d.db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(sqliteTx{tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

func (d *sqliteDriver) prepareMigration(context.Context, querier) error { return nil }

// announce tells nobody: other processes' writes to the file are not
// watched.
func (d *sqliteDriver) announce(context.Context, querier, string, int64) error { return nil }

func (d *sqliteDriver) dialect() dialect { return dialect{words: sqliteDialect} }

func (d *sqliteDriver) close() error { return d.db.Close() }

// sqliteTx is a database/sql transaction as a querier.
type sqliteTx struct{ tx *sql.Tx }

func (t sqliteTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqliteTx) queryRow(ctx context.Context, query string, args ...any) Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t sqliteTx) query(ctx context.Context, query string, args ...any) (Rows, error) {
	rs, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

// batch prepares each distinct statement once and runs them in order.
func (t sqliteTx) batch(ctx context.Context, stmts []stmt) ([]int64, error) {
	prepared := map[string]*sql.Stmt{}
	defer func() {
		for _, p := range prepared {
			p.Close()
		}
	}()
	out := make([]int64, len(stmts))
	for i, st := range stmts {
		p, ok := prepared[st.query]
		if !ok {
			var err error
			if p, err = t.tx.PrepareContext(ctx, st.query); err != nil {
				return nil, err
			}
			prepared[st.query] = p
		}
		res, err := p.ExecContext(ctx, st.args...)
		if err != nil {
			return nil, err
		}
		if out[i], err = res.RowsAffected(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sqlRows is database/sql's result set with pgx's Close.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }
