package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The store's meta row: its epoch and revision.
const (
	sqlSelectMeta   = `SELECT epoch, revision FROM meta WHERE id = 1`
	sqlRevision     = `SELECT revision FROM meta WHERE id = 1`
	sqlBumpRevision = `UPDATE meta SET revision = revision + 1 WHERE id = 1 RETURNING revision`
	sqlPing         = `SELECT 1 FROM meta WHERE id = 1`
)

// SQL is the Store, on SQLite (OpenSQLite) or PostgreSQL (OpenPostgres):
// one implementation over a small driver, so that each read and each
// write is written once and both databases behave the same. It owns the
// Notifier of its changes (a NotifyingStore) and keeps the webhook
// outbox (an OutboxStore).
type SQL struct {
	db       driver
	epoch    string
	notifier *Notifier
}

// open migrates the database behind d and returns the store over it.
func open(ctx context.Context, d driver) (*SQL, error) {
	s := &SQL{db: d, notifier: NewNotifier()}
	epoch, err := write(ctx, s, func(q querier) (string, error) {
		if err := d.prepareMigration(ctx, q); err != nil {
			return "", err
		}
		if err := applyMigrations(ctx, q, d.dialect().words, migrations); err != nil {
			return "", err
		}
		var epoch string
		var rev int64
		return epoch, q.queryRow(ctx, sqlSelectMeta).Scan(&epoch, &rev)
	})
	if err != nil {
		return nil, err
	}
	s.epoch = epoch
	return s, nil
}

// read runs fn in a read transaction and returns the result of the
// attempt that succeeded (the driver may run fn more than once).
func read[T any](ctx context.Context, s *SQL, fn func(querier) (T, error)) (T, error) {
	return inTx(ctx, s.db.read, fn)
}

// write is read for a write transaction.
func write[T any](ctx context.Context, s *SQL, fn func(querier) (T, error)) (T, error) {
	return inTx(ctx, s.db.write, fn)
}

func inTx[T any](ctx context.Context, run func(context.Context, func(querier) error) error, fn func(querier) (T, error)) (T, error) {
	var out T
	err := run(ctx, func(q querier) error {
		var err error
		out, err = fn(q)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// Update implements Store. When fn changed something, the revision moves
// and the change log records it in the same transaction, and other
// processes on the database are told at commit.
func (s *SQL) Update(ctx context.Context, fn func(Tx) error) (int64, error) {
	lock := s.db.dialect().lockClient
	return write(ctx, s, func(q querier) (int64, error) {
		t := &sqlTx{q: q, lockClient: lock}
		if err := fn(t); err != nil {
			return 0, err
		}
		var rev int64
		if !t.changed {
			if err := q.queryRow(ctx, sqlRevision).Scan(&rev); err != nil {
				return 0, fmt.Errorf("reading revision: %w", err)
			}
			return rev, nil
		}
		if err := q.queryRow(ctx, sqlBumpRevision).Scan(&rev); err != nil {
			return 0, fmt.Errorf("bumping revision: %w", err)
		}
		if err := logChanges(ctx, q, rev, t.touched, time.Now()); err != nil {
			return 0, err
		}
		if err := s.db.announce(ctx, q, s.epoch, rev); err != nil {
			return 0, fmt.Errorf("announcing revision: %w", err)
		}
		return rev, nil
	})
}

// Revision implements Store.
func (s *SQL) Revision(ctx context.Context) (string, int64, error) {
	type meta struct {
		epoch string
		rev   int64
	}
	m, err := read(ctx, s, func(q querier) (meta, error) {
		var m meta
		return m, q.queryRow(ctx, sqlSelectMeta).Scan(&m.epoch, &m.rev)
	})
	return m.epoch, m.rev, err
}

// Ping implements Store: the database answers and holds the store.
func (s *SQL) Ping(ctx context.Context) error {
	_, err := read(ctx, s, func(q querier) (int, error) {
		var one int
		return one, q.queryRow(ctx, sqlPing).Scan(&one)
	})
	return err
}

// Close implements Store: it stops watching for changes and closes the
// database.
func (s *SQL) Close() error { return s.db.close() }

// Epoch returns the store's epoch, fixed when the database was set up.
func (s *SQL) Epoch() string { return s.epoch }

// Notifier implements NotifyingStore.
func (s *SQL) Notifier() *Notifier { return s.notifier }

// sqlTx implements Tx over a driver's transaction. lockClient follows the
// client lookup of LockClient: PostgreSQL locks the row (FOR UPDATE);
// SQLite's BEGIN IMMEDIATE already holds the write lock.
type sqlTx struct {
	q          querier
	lockClient string
	changed    bool
	// touched are the clients whose feed entry the transaction may have
	// changed, for the change log: every method that changes what the
	// feed lists of a client (its secrets, its tombstones, whatever it
	// carries) must touch it.
	touched []string
}

// touch records that the feed entry of clientID may have changed.
func (t *sqlTx) touch(clientID string) {
	t.changed = true
	if !slices.Contains(t.touched, clientID) {
		t.touched = append(t.touched, clientID)
	}
}

// execOne runs a statement that must touch one row: ErrNotFound otherwise.
func (t *sqlTx) execOne(ctx context.Context, query string, args ...any) error {
	n, err := t.q.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	t.changed = true
	return nil
}

// RawTx is SQL's Tx with statements of the caller's own, outside the
// contract (they mark no change, and nothing checks them): for tests that
// play an older replica writing the database, or read rows the contract
// does not return. The control plane never uses it.
type RawTx interface {
	Tx
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

func (t *sqlTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return t.q.exec(ctx, query, args...)
}

func (t *sqlTx) QueryRow(ctx context.Context, query string, args ...any) Row {
	return t.q.queryRow(ctx, query, args...)
}

func (t *sqlTx) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	return t.q.query(ctx, query, args...)
}

// notFound maps a driver's "no rows" to ErrNotFound (pgx's ErrNoRows is
// sql.ErrNoRows too).
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// Interface guards
var (
	_ NotifyingStore = (*SQL)(nil)
	_ OutboxStore    = (*SQL)(nil)
	_ SinkStore      = (*SQL)(nil)
	_ RawTx          = (*sqlTx)(nil)
)
