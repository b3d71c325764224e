package controlplane

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// postgresDialect spells the migrations' words for PostgreSQL: ids sort
// bytewise (COLLATE "C"), as on SQLite, whatever the database's locale,
// since pagination must not depend on it; the revision is checked
// non-negative.
var postgresDialect = strings.NewReplacer(
	"{id}", `TEXT COLLATE "C"`,
	"{revision}", "BIGINT  NOT NULL CHECK (revision >= 0)",
	"{serial}", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
)

// PostgresChannel is the LISTEN/NOTIFY channel on which every committed
// change announces itself. The payload is "<epoch>.<revision>": the epoch
// tells apart stores that share a database under different schemas.
const PostgresChannel = "rotagate_changes"

// Defaults of the PostgreSQL store.
const (
	// DefaultPostgresPollInterval is how often the store reads the
	// revision, in case a notification was lost.
	DefaultPostgresPollInterval = time.Second
	// defaultConnectTimeout bounds one connection attempt when the DSN
	// sets none.
	defaultConnectTimeout = 5 * time.Second
	// queryTimeout bounds the background revision check.
	queryTimeout = 5 * time.Second

	// listenIdleCheck is how long the LISTEN connection may stay quiet
	// before it is pinged.
	listenIdleCheck = 30 * time.Second

	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// maxAttempts bounds the tries of one operation that fails for a
	// transient reason (a dead pooled connection, a deadlock).
	maxAttempts = 3
)

// PostgresOptions configure OpenPostgres.
type PostgresOptions struct {
	// Schema holds the store's tables; it is created when missing and
	// put first on every connection's search_path. Lower-case letters,
	// digits and underscores. Default: the connection's search_path
	// (usually public).
	Schema string
	// PollInterval is the period of the safety-net revision check (see
	// PostgresStore). Default: 1s.
	PollInterval time.Duration
	// Logger receives the background work's warnings. Default: none.
	Logger *zap.Logger
}

// PostgresStore is the Store for fleets: several control planes share one
// PostgreSQL database. Writers lock the client row (SELECT … FOR UPDATE)
// and then the meta row that holds the revision, so the max-active rule
// holds across processes and revisions commit in order. It owns the
// Notifier of its changes (a NotifyingStore) and tells it of changes
// committed by every process on the database: it LISTENs on
// PostgresChannel over a dedicated connection (reconnecting with backoff)
// and reads the revision every PollInterval as a safety net.
type PostgresStore struct {
	pool     *pgxpool.Pool
	connCfg  *pgx.ConnConfig // for the LISTEN connection
	epoch    string
	notifier *Notifier
	poll     time.Duration
	log      *zap.Logger

	// suspectUntil (unix nanoseconds): until then, every pooled
	// connection is pinged before use, because one was found dead.
	suspectUntil atomic.Int64

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// suspectFor is how long the pool checks every connection before use
// after one was found dead: when the server restarts or drops a client's
// connections, it drops all of them.
const suspectFor = 5 * time.Second

// shouldPing tells the pool to check a connection before handing it out:
// one idle for over a second (pgxpool's default), or any while the pool
// is suspect.
func (s *PostgresStore) shouldPing(_ context.Context, p pgxpool.ShouldPingParams) bool {
	return p.IdleDuration > time.Second || time.Now().UnixNano() < s.suspectUntil.Load()
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// OpenPostgres connects to the database named by dsn (a postgres:// URL or
// key=value pairs), brings its schema up to date and starts watching for
// changes. It fails when the database does not answer
// within ctx. Errors never contain the password.
func OpenPostgres(ctx context.Context, dsn string, opts PostgresOptions) (*PostgresStore, error) {
	cfg, err := ParsePostgresDSN(dsn)
	if err != nil {
		return nil, err
	}
	if opts.Schema != "" {
		if !schemaName.MatchString(opts.Schema) {
			return nil, fmt.Errorf("postgres store: schema %q must be 1 to 63 of [a-z0-9_], not starting with a digit", opts.Schema)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPostgresPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	password := cfg.ConnConfig.Password
	where := describeTarget(cfg.ConnConfig)
	s := &PostgresStore{
		connCfg:  cfg.ConnConfig.Copy(),
		notifier: NewNotifier(),
		poll:     opts.PollInterval,
		log:      opts.Logger,
	}
	cfg.ShouldPing = s.shouldPing
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, redactf(password, "postgres store %s: %w", where, err)
	}
	pool := s.pool
	if s.epoch, err = s.migrate(ctx, opts.Schema); err != nil {
		pool.Close()
		return nil, redactf(password, "postgres store %s: %w", where, err)
	}
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.notifier.Watch(s.poll)
	s.wg.Add(2)
	go s.listen(bg)
	go s.pollRevision(bg)
	return s, nil
}

// ParsePostgresDSN parses a DSN into a pool configuration with the store's
// defaults (a connect timeout of 5s unless the DSN sets one). A malformed
// DSN gives an error that does not quote it: it may hold a password.
func ParsePostgresDSN(dsn string) (*pgxpool.Config, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("postgres store: empty DSN")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts passwords only on a best-effort basis: say what
		// is expected instead of quoting its message.
		return nil, errors.New("postgres store: the DSN is not a valid connection string " +
			"(want postgres://user:password@host:port/database?sslmode=… or host=… user=… dbname=… pairs)")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "rotagate"
	}
	return cfg, nil
}

// describeTarget names the database for errors and logs: user, host, port
// and database, never the password.
func describeTarget(c *pgx.ConnConfig) string {
	return fmt.Sprintf("(user %s, %s:%d, database %s)", c.User, c.Host, c.Port, c.Database)
}

// redactf formats an error and blanks out the password, should a driver
// message ever quote it. (Passwords under 4 characters are left alone:
// blanking them would garble every message and hide nothing.)
func redactf(password, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if len(password) >= 4 && strings.Contains(err.Error(), password) {
		return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
	}
	return err
}

// migrate applies the missing migrations and creates the epoch in one
// transaction, under an advisory lock, so that control planes starting
// together migrate once and agree on the epoch. It returns the epoch.
func (s *PostgresStore) migrate(ctx context.Context, schema string) (string, error) {
	return query(ctx, s, func(c *pgxpool.Conn) (string, error) {
		tx, err := c.Begin(ctx)
		if err != nil {
			return "", err
		}
		defer tx.Rollback(ctx)
		key := fnv.New64a()
		key.Write([]byte("rotagate migrate " + schema))
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(key.Sum64())); err != nil {
			return "", err
		}
		if schema != "" {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return "", err
			}
		}
		if err := applyMigrations(ctx, pgxDriverTx{tx}, postgresDialect, migrations); err != nil {
			return "", err
		}
		var epoch string
		var rev int64
		if err := tx.QueryRow(ctx, sqlSelectMeta).Scan(&epoch, &rev); err != nil {
			return "", err
		}
		return epoch, tx.Commit(ctx)
	})
}

// pgxDriverTx adapts a pgx transaction to the shared code.
type pgxDriverTx struct{ tx pgx.Tx }

func (t pgxDriverTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (t pgxDriverTx) queryRow(ctx context.Context, query string, args ...any) rowScanner {
	return t.tx.QueryRow(ctx, query, args...)
}

func (t pgxDriverTx) query(ctx context.Context, query string, args ...any) (rows, error) {
	return t.tx.Query(ctx, query, args...)
}

// errCommitUnknown marks a commit whose outcome is unknown: the connection
// broke after COMMIT was sent. Such a transaction is never retried.
var errCommitUnknown = errors.New("the database connection broke during commit; the change may or may not have been applied")

// run calls fn with a pooled connection, and again (up to maxAttempts
// times) when it failed for a reason that guarantees nothing was
// committed and a retry may succeed: the connection turned out dead (the
// server closed it, or the database restarted), a deadlock, or a
// serialization failure. fn must therefore be safe to run again.
func (s *PostgresStore) run(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		var c *pgxpool.Conn
		if c, err = s.pool.Acquire(ctx); err != nil {
			return err
		}
		err = fn(c)
		dead := c.Conn().IsClosed()
		c.Release()
		if dead {
			s.suspectUntil.Store(time.Now().Add(suspectFor).UnixNano())
		}
		if err == nil || ctx.Err() != nil || errors.Is(err, errCommitUnknown) || attempt >= maxAttempts {
			return err
		}
		if !dead && !transient(err) {
			return err
		}
	}
}

// query is run for an operation with a result: each attempt builds its
// own, and the one that succeeded is returned (the zero value on error).
func query[T any](ctx context.Context, s *PostgresStore, fn func(*pgxpool.Conn) (T, error)) (T, error) {
	var out T
	err := s.run(ctx, func(c *pgxpool.Conn) error {
		var err error
		out, err = fn(c)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// transient reports whether the server refused a statement for a reason
// that a new attempt may not meet.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return pgconn.SafeToRetry(err)
	}
	switch pgErr.Code {
	case "40001", "40P01", // serialization failure, deadlock detected
		"57P01", "57P02", "57P03": // admin shutdown, crash shutdown, cannot connect now
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") // connection exceptions
}

// Update implements Store. The store may run fn more than once, when a
// transaction failed before commit for a transient reason.
func (s *PostgresStore) Update(ctx context.Context, fn func(Tx) error) (int64, error) {
	return query(ctx, s, func(c *pgxpool.Conn) (int64, error) {
		tx, err := c.Begin(ctx)
		if err != nil {
			return 0, fmt.Errorf("beginning transaction: %w", err)
		}
		defer tx.Rollback(ctx) // a no-op after Commit
		// The row lock keeps other writers of a client waiting until this
		// transaction ends, so a count of its active secrets holds at commit.
		t := &storeTx{d: pgxDriverTx{tx}, lockSuffix: ` FOR UPDATE`}
		if err := fn(t); err != nil {
			return 0, err
		}
		var rev int64
		if t.changed {
			if err := tx.QueryRow(ctx, sqlBumpRevision).Scan(&rev); err != nil {
				return 0, fmt.Errorf("bumping revision: %w", err)
			}
			if err := logChanges(ctx, pgxDriverTx{tx}, rev, t.touched, time.Now()); err != nil {
				return 0, err
			}
			// Delivered at commit, and only if the commit succeeds.
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, PostgresChannel, s.epoch+"."+strconv.FormatInt(rev, 10)); err != nil {
				return 0, fmt.Errorf("announcing revision: %w", err)
			}
		} else if err := tx.QueryRow(ctx, sqlRevision).Scan(&rev); err != nil {
			return 0, fmt.Errorf("reading revision: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			if c.Conn().IsClosed() && ctx.Err() == nil {
				return 0, fmt.Errorf("committing: %w (%v)", errCommitUnknown, err)
			}
			return 0, fmt.Errorf("committing: %w", err)
		}
		return rev, nil
	})
}

// Client implements Store.
func (s *PostgresStore) Client(ctx context.Context, id string) (Client, error) {
	return readOnly(ctx, s, func(tx pgx.Tx) (Client, error) {
		cl, err := scanClient(tx.QueryRow(ctx, sqlSelectClient, id))
		if err != nil {
			return Client{}, err
		}
		cl.Owners, err = readStrings(ctx, pgxDriverTx{tx}, sqlOwnersOf, id)
		return cl, err
	})
}

// Clients implements Store.
func (s *PostgresStore) Clients(ctx context.Context, owner, after string, limit int) ([]Client, error) {
	return readOnly(ctx, s, func(tx pgx.Tx) ([]Client, error) {
		var rs pgx.Rows
		var err error
		if owner == "" {
			rs, err = tx.Query(ctx, sqlListClients, after, limit)
		} else {
			rs, err = tx.Query(ctx, sqlListOwnedClients, owner, after, limit)
		}
		if err != nil {
			return nil, err
		}
		out, err := scanAll(rs, scanClient)
		rs.Close()
		if err != nil || len(out) == 0 {
			return out, err
		}
		owners, err := tx.Query(ctx, sqlOwnersIn(len(out)), clientIDs(out)...)
		if err != nil {
			return nil, err
		}
		defer owners.Close()
		return out, attachOwners(out, owners)
	})
}

// Audit implements Store.
func (s *PostgresStore) Audit(ctx context.Context, clientID string, limit int) ([]AuditEntry, error) {
	return query(ctx, s, func(c *pgxpool.Conn) ([]AuditEntry, error) {
		rows, err := c.Query(ctx, sqlAudit, clientID, limit)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		return scanAll(rows, scanAudit)
	})
}

// readOnly runs fn in a read-only REPEATABLE READ transaction, in which
// every statement sees the same committed state, and returns its result.
func readOnly[T any](ctx context.Context, s *PostgresStore, fn func(pgx.Tx) (T, error)) (T, error) {
	return query(ctx, s, func(c *pgxpool.Conn) (T, error) {
		var zero T
		tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return zero, err
		}
		defer tx.Rollback(ctx)
		out, err := fn(tx)
		if err != nil {
			return zero, err
		}
		return out, tx.Commit(ctx)
	})
}

// Secrets implements Store.
func (s *PostgresStore) Secrets(ctx context.Context, clientID string) ([]Secret, error) {
	return readOnly(ctx, s, func(tx pgx.Tx) ([]Secret, error) {
		if _, err := scanClient(tx.QueryRow(ctx, sqlSelectClient, clientID)); err != nil {
			return nil, err
		}
		return readSecrets(ctx, pgxDriverTx{tx}, clientID)
	})
}

// Revision implements Store.
func (s *PostgresStore) Revision(ctx context.Context) (string, int64, error) {
	type meta struct {
		epoch string
		rev   int64
	}
	m, err := query(ctx, s, func(c *pgxpool.Conn) (meta, error) {
		var m meta
		return m, c.QueryRow(ctx, sqlSelectMeta).Scan(&m.epoch, &m.rev)
	})
	return m.epoch, m.rev, err
}

// Snapshot implements Store.
func (s *PostgresStore) Snapshot(ctx context.Context, now time.Time, tombstoneWindow time.Duration) (wire.Snapshot, error) {
	return readOnly(ctx, s, func(tx pgx.Tx) (wire.Snapshot, error) {
		return readSnapshot(ctx, pgxDriverTx{tx}, now, tombstoneWindow)
	})
}

// SecretByHash implements Store.
func (s *PostgresStore) SecretByHash(ctx context.Context, hash string) (Secret, error) {
	return query(ctx, s, func(c *pgxpool.Conn) (Secret, error) {
		sec, err := scanSecret(c.QueryRow(ctx, sqlSecretByHash, hash))
		if errors.Is(err, pgx.ErrNoRows) {
			return Secret{}, ErrNotFound
		}
		return sec, err
	})
}

// Changes implements Store.
func (s *PostgresStore) Changes(ctx context.Context, since int64, now time.Time, tombstoneWindow time.Duration) (wire.Delta, bool, error) {
	type answer struct {
		delta wire.Delta
		ok    bool
	}
	a, err := readOnly(ctx, s, func(tx pgx.Tx) (answer, error) {
		d, ok, err := readChanges(ctx, pgxDriverTx{tx}, since, now, tombstoneWindow)
		return answer{d, ok}, err
	})
	return a.delta, a.ok, err
}

// ApplyUsage implements Store. The stamps go in one round trip (a batch in
// one transaction); being max-merges, they may be applied again safely.
func (s *PostgresStore) ApplyUsage(ctx context.Context, stamps []wire.Stamp) (int, error) {
	if len(stamps) == 0 {
		return 0, nil
	}
	return query(ctx, s, func(c *pgxpool.Conn) (int, error) {
		tx, err := c.Begin(ctx)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback(ctx)
		var b pgx.Batch
		for _, st := range stamps {
			b.Queue(sqlApplyUsage, st.LastUsedAt.UnixMilli(), st.From, st.SecretID, st.ClientID)
		}
		res := tx.SendBatch(ctx, &b)
		updated := 0
		for range stamps {
			tag, err := res.Exec()
			if err != nil {
				res.Close()
				return 0, err
			}
			updated += int(tag.RowsAffected())
		}
		if err := res.Close(); err != nil {
			return 0, err
		}
		return updated, tx.Commit(ctx)
	})
}

// ApplyCallers implements Store: every statement in one round trip (a
// batch in one transaction).
func (s *PostgresStore) ApplyCallers(ctx context.Context, uses []CallerUse, keep int) error {
	if len(uses) == 0 {
		return nil
	}
	return s.run(ctx, func(c *pgxpool.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		var b pgx.Batch
		for _, u := range uses {
			b.Queue(sqlApplyCaller, callerArgs(u)...)
		}
		for _, id := range trimmedSecrets(uses) {
			b.Queue(sqlTrimCallers, id, keep)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			if c.Conn().IsClosed() && ctx.Err() == nil {
				// Counts are added, not merged: never apply a batch twice.
				return fmt.Errorf("committing: %w (%v)", errCommitUnknown, err)
			}
			return err
		}
		return nil
	})
}

// Callers implements Store.
func (s *PostgresStore) Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error) {
	return readOnly(ctx, s, func(tx pgx.Tx) (map[string][]Caller, error) {
		return readCallers(ctx, pgxDriverTx{tx}, secretIDs, since)
	})
}

// PruneCallers implements Store.
func (s *PostgresStore) PruneCallers(ctx context.Context, before time.Time) (int64, error) {
	return query(ctx, s, func(c *pgxpool.Conn) (int64, error) {
		tag, err := c.Exec(ctx, sqlPruneCallers, before.UnixMilli())
		return tag.RowsAffected(), err
	})
}

// Ping implements Store: the database answers and holds the store.
func (s *PostgresStore) Ping(ctx context.Context) error {
	return s.run(ctx, func(c *pgxpool.Conn) error {
		var one int
		return c.QueryRow(ctx, sqlPing).Scan(&one)
	})
}

// Close implements Store: it stops watching for changes and closes the
// connections.
func (s *PostgresStore) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.pool.Close()
	})
	return nil
}

// Epoch returns the store's epoch, fixed when the database was set up.
func (s *PostgresStore) Epoch() string { return s.epoch }

// Notifier implements NotifyingStore.
func (s *PostgresStore) Notifier() *Notifier { return s.notifier }

// listen holds a LISTEN connection and publishes every change announced
// on it, until ctx ends. A broken connection is replaced, with backoff;
// after each (re)connection the revision is read at once, in case a
// change was announced while nobody listened.
func (s *PostgresStore) listen(ctx context.Context) {
	defer s.wg.Done()
	backoff := listenBackoffMin
	for {
		connected, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = listenBackoffMin
		}
		s.log.Warn("listening for store changes failed; reconnecting",
			zap.Duration("after", backoff), zap.Error(err))
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenOnce connects, listens and publishes until the connection fails.
func (s *PostgresStore) listenOnce(ctx context.Context) (connected bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic while listening for store changes", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, s.connCfg.Copy())
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+PostgresChannel); err != nil {
		return false, err
	}
	s.checkRevision(ctx)
	for {
		// A connection that went silent (a network partition sends no
		// reset) would wait forever: after a quiet while, make sure the
		// server still answers.
		wctx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && pgconn.Timeout(err) && !conn.IsClosed() {
			pctx, cancel := context.WithTimeout(ctx, queryTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		if err != nil {
			return true, err
		}
		epoch, revText, ok := strings.Cut(n.Payload, ".")
		if !ok || epoch != s.epoch {
			continue // another store on this database
		}
		if rev, err := strconv.ParseInt(revText, 10, 64); err == nil {
			s.notifier.Vouch(epoch, rev)
		}
	}
}

// pollRevision reads the revision every poll interval and publishes it:
// the safety net for notifications lost while the LISTEN connection was
// down.
func (s *PostgresStore) pollRevision(ctx context.Context) {
	defer s.wg.Done()
	ticker := time.NewTicker(s.poll)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			s.checkRevision(ctx)
		}
	}
}

// checkRevision reads the revision and publishes it.
func (s *PostgresStore) checkRevision(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic while checking the store revision", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	epoch, rev, err := s.Revision(qctx)
	if err != nil {
		if ctx.Err() == nil {
			if ce := s.log.Check(zap.DebugLevel, "checking the store revision failed"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		return
	}
	s.notifier.Vouch(epoch, rev)
}

// Interface guards
var (
	_ NotifyingStore = (*PostgresStore)(nil)
)
