package controlplane

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
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/rotagate/rotagate/internal/wire"
)

// sqliteDialect spells the migrations' words for SQLite, whose TEXT
// already compares bytewise (BINARY collation).
var sqliteDialect = strings.NewReplacer(
	"{id}", "TEXT",
	"{revision}", "BIGINT  NOT NULL",
	"{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT",
)

// SQLiteStore is the embedded Store: one SQLite file in WAL mode, written
// through BEGIN IMMEDIATE transactions. It owns the Notifier of its
// changes (a NotifyingStore), so every Service over one open store wakes
// the same feed requests; other processes' writes to the file are not
// watched.
type SQLiteStore struct {
	db       *sql.DB
	notifier *Notifier
	// writeMu queues this process's writers in Go rather than in SQLite's
	// busy handler; BEGIN IMMEDIATE still serialises writers across
	// processes and is what the rules rely on.
	writeMu sync.Mutex
}

// SQLiteDSN is the data source name for the database file at path: WAL, a
// busy timeout, foreign keys, and BEGIN IMMEDIATE for every write
// transaction so that a second writer waits instead of failing.
func SQLiteDSN(path string) string {
	// SQLite reads the name as a URI: escape what would end the path.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
}

// OpenSQLite opens (creating it and its directory when needed) the database
// at path and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLiteStore, error) {
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
	s := &SQLiteStore{db: db, notifier: NewNotifier()}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	return s, nil
}

// migrate applies the missing migrations and creates the epoch, all in one
// transaction, so that two processes opening a new file agree on both.
func (s *SQLiteStore) migrate(ctx context.Context) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return applyMigrations(ctx, sqlDriverTx{tx}, sqliteDialect, migrations)
	})
}

// write runs fn in one write transaction, queued behind this process's
// other writers, and commits when fn returns nil.
func (s *SQLiteStore) write(ctx context.Context, fn func(*sql.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// sqlDriverTx adapts a database/sql transaction to the shared code.
type sqlDriverTx struct{ tx *sql.Tx }

func (t sqlDriverTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlDriverTx) queryRow(ctx context.Context, query string, args ...any) rowScanner {
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t sqlDriverTx) query(ctx context.Context, query string, args ...any) (rows, error) {
	rs, err := t.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

// sqlRows is database/sql's result set with pgx's Close.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

// Update implements Store.
func (s *SQLiteStore) Update(ctx context.Context, fn func(Tx) error) (int64, error) {
	var rev int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		t := &storeTx{d: sqlDriverTx{tx}}
		if err := fn(t); err != nil {
			return err
		}
		var err error
		if t.changed {
			err = tx.QueryRowContext(ctx, sqlBumpRevision).Scan(&rev)
		} else {
			err = tx.QueryRowContext(ctx, sqlRevision).Scan(&rev)
		}
		if err != nil {
			return fmt.Errorf("reading revision: %w", err)
		}
		if t.changed {
			return logChanges(ctx, sqlDriverTx{tx}, rev, t.touched, time.Now())
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}

// Client implements Store.
func (s *SQLiteStore) Client(ctx context.Context, id string) (Client, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Client{}, err
	}
	defer tx.Rollback()
	c, err := scanClient(tx.QueryRowContext(ctx, sqlSelectClient, id))
	if err != nil {
		return Client{}, err
	}
	c.Owners, err = readStrings(ctx, sqlDriverTx{tx}, sqlOwnersOf, id)
	return c, err
}

// Clients implements Store.
func (s *SQLiteStore) Clients(ctx context.Context, owner, after string, limit int) ([]Client, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var rs *sql.Rows
	if owner == "" {
		rs, err = tx.QueryContext(ctx, sqlListClients, after, limit)
	} else {
		rs, err = tx.QueryContext(ctx, sqlListOwnedClients, owner, after, limit)
	}
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out, err := scanAll(sqlRows{rs}, scanClient)
	if err != nil || len(out) == 0 {
		return out, err
	}
	owners, err := tx.QueryContext(ctx, sqlOwnersIn(len(out)), clientIDs(out)...)
	if err != nil {
		return nil, err
	}
	defer owners.Close()
	return out, attachOwners(out, sqlRows{owners})
}

// Audit implements Store.
func (s *SQLiteStore) Audit(ctx context.Context, clientID string, limit int) ([]AuditEntry, error) {
	rs, err := s.db.QueryContext(ctx, sqlAudit, clientID, limit)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	return scanAll(sqlRows{rs}, scanAudit)
}

// Secrets implements Store.
func (s *SQLiteStore) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := scanClient(tx.QueryRowContext(ctx, sqlSelectClient, clientID)); err != nil {
		return nil, err
	}
	return readSecrets(ctx, sqlDriverTx{tx}, clientID)
}

// Revision implements Store.
func (s *SQLiteStore) Revision(ctx context.Context) (string, int64, error) {
	var epoch string
	var rev int64
	err := s.db.QueryRowContext(ctx, sqlSelectMeta).Scan(&epoch, &rev)
	return epoch, rev, err
}

// Snapshot implements Store.
func (s *SQLiteStore) Snapshot(ctx context.Context, now time.Time, tombstoneWindow time.Duration) (wire.Snapshot, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return wire.Snapshot{}, err
	}
	defer tx.Rollback()
	return readSnapshot(ctx, sqlDriverTx{tx}, now, tombstoneWindow)
}

// SecretByHash implements Store.
func (s *SQLiteStore) SecretByHash(ctx context.Context, hash string) (Secret, error) {
	sec, err := scanSecret(s.db.QueryRowContext(ctx, sqlSecretByHash, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Secret{}, ErrNotFound
	}
	return sec, err
}

// Changes implements Store.
func (s *SQLiteStore) Changes(ctx context.Context, since int64, now time.Time, tombstoneWindow time.Duration) (wire.Delta, bool, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return wire.Delta{}, false, err
	}
	defer tx.Rollback()
	return readChanges(ctx, sqlDriverTx{tx}, since, now, tombstoneWindow)
}

// ApplyUsage implements Store.
func (s *SQLiteStore) ApplyUsage(ctx context.Context, stamps []wire.Stamp) (int, error) {
	if len(stamps) == 0 {
		return 0, nil
	}
	updated := 0
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, sqlApplyUsage)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, st := range stamps {
			res, err := stmt.ExecContext(ctx, st.LastUsedAt.UnixMilli(), st.From, st.SecretID, st.ClientID)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			updated += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return updated, nil
}

// ApplyCallers implements Store.
func (s *SQLiteStore) ApplyCallers(ctx context.Context, uses []CallerUse, keep int) error {
	if len(uses) == 0 {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, sqlApplyCaller)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, u := range uses {
			if _, err := stmt.ExecContext(ctx, callerArgs(u)...); err != nil {
				return err
			}
		}
		for _, id := range trimmedSecrets(uses) {
			if _, err := tx.ExecContext(ctx, sqlTrimCallers, id, keep); err != nil {
				return err
			}
		}
		return nil
	})
}

// Callers implements Store.
func (s *SQLiteStore) Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return readCallers(ctx, sqlDriverTx{tx}, secretIDs, since)
}

// PruneCallers implements Store.
func (s *SQLiteStore) PruneCallers(ctx context.Context, before time.Time) (int64, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	res, err := s.db.ExecContext(ctx, sqlPruneCallers, before.UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Ping implements Store.
func (s *SQLiteStore) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, sqlPing).Scan(&one)
}

// Close implements Store.
func (s *SQLiteStore) Close() error { return s.db.Close() }

// Notifier implements NotifyingStore.
func (s *SQLiteStore) Notifier() *Notifier { return s.notifier }

func scanClient(row rowScanner) (Client, error) {
	var c Client
	var created, reportOnly int64
	var cidrs string
	if err := row.Scan(&c.ID, &c.Name, &created, &cidrs, &reportOnly); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Client{}, ErrNotFound
		}
		return Client{}, err
	}
	c.CreatedAt = time.UnixMilli(created).UTC()
	c.AllowedCIDRs, c.NetworksReportOnly = splitCIDRs(cidrs), reportOnly != 0
	return c, nil
}

func toMillis(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

func fromMillis(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// Interface guards
var (
	_ NotifyingStore = (*SQLiteStore)(nil)
	_ Tx             = (*storeTx)(nil)
)
