package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"
)

// driver is what SQL needs of a database: its transactions and its
// dialect. Everything else (every read, every write, the migrations) is
// written once, in SQL text both databases run (docs/design.md §1).
type driver interface {
	// write runs fn in one write transaction, serialised against the
	// other writers, and commits when fn returns nil. It may run fn
	// again when the transaction failed before commit for a transient
	// reason; a commit whose outcome is unknown is never run again.
	write(ctx context.Context, fn func(querier) error) error

	// read runs fn in a read-only transaction in which every statement
	// sees the same committed state. It may run fn again, as write does.
	read(ctx context.Context, fn func(querier) error) error

	// prepareMigration runs first in the migration's transaction.
	prepareMigration(ctx context.Context, q querier) error

	// announce runs in a transaction that moved the revision to rev,
	// before its commit: it tells other processes on the database.
	announce(ctx context.Context, q querier, epoch string, rev int64) error

	// dialect returns the database's words.
	dialect() dialect

	// close stops what the driver runs and closes the database.
	close() error
}

// dialect is how a database spells what the two do not share.
type dialect struct {
	// words spells the migrations' words in braces (migrations).
	words *strings.Replacer
	// lockClient follows the client lookup of Tx.LockClient.
	lockClient string
	// skipClaimed follows the claim of due deliveries, so that replicas
	// skip each other's claims in progress instead of waiting for them.
	skipClaimed string
}

// querier is a driver's transaction, as the shared code uses it.
type querier interface {
	// exec runs a statement and returns the number of rows it touched.
	exec(ctx context.Context, query string, args ...any) (int64, error)
	queryRow(ctx context.Context, query string, args ...any) Row
	// query runs a query; the caller closes the rows.
	query(ctx context.Context, query string, args ...any) (Rows, error)
	// batch runs statements in order and returns the rows each touched:
	// on PostgreSQL in one round trip, on SQLite each prepared once.
	batch(ctx context.Context, stmts []stmt) ([]int64, error)
}

// stmt is one statement of a batch.
type stmt struct {
	query string
	args  []any
}

// Row is one row of a query.
type Row interface{ Scan(dest ...any) error }

// Rows is what both drivers' result sets offer (pgx.Rows, and
// database/sql's through sqlRows).
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// scanAll reads every row with scan: the loop of every listing.
func scanAll[T any](rs Rows, scan func(Row) (T, error)) ([]T, error) {
	out := []T{} // an empty listing is [] in JSON, not null
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

// queryAll runs a query and reads every row with scan.
func queryAll[T any](ctx context.Context, q querier, scan func(Row) (T, error), query string, args ...any) ([]T, error) {
	rs, err := q.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	return scanAll(rs, scan)
}

// readStrings runs a query that selects one text column.
func readStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	return queryAll(ctx, q, func(r Row) (string, error) {
		var v string
		err := r.Scan(&v)
		return v, err
	}, query, args...)
}

// placeholders writes $from…$from+n-1, comma-separated.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

// inArgs are the arguments of a statement whose first placeholders take
// fixed and the rest, placeholders(len(fixed)+1, len(ids)), the ids.
func inArgs(ids []string, fixed ...any) []any {
	args := make([]any, 0, len(fixed)+len(ids))
	args = append(args, fixed...)
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}

// Times are BIGINT unix milliseconds (UTC) on both databases, and so are
// durations; an optional one is NULL when absent.

// nullMillis is *v in milliseconds as ms counts them, or NULL for nil.
func nullMillis[T any](v *T, ms func(T) int64) sql.NullInt64 {
	if v == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*v), Valid: true}
}

// fromNullMillis is the value from makes of v's milliseconds, or nil for
// NULL.
func fromNullMillis[T any](v sql.NullInt64, from func(int64) T) *T {
	if !v.Valid {
		return nil
	}
	out := from(v.Int64)
	return &out
}

func toMillis(t *time.Time) sql.NullInt64 { return nullMillis(t, time.Time.UnixMilli) }

func fromMillis(v sql.NullInt64) *time.Time { return fromNullMillis(v, millisTime) }

func millisTime(v int64) time.Time { return time.UnixMilli(v).UTC() }
