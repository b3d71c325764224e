package store

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
	// ListenBackoffMax is the longest wait before the LISTEN connection
	// is made again: a replica hears of other replicas' changes again
	// at most this long after the database is back.
	ListenBackoffMax = 5 * time.Second
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
	// OpenPostgres). Default: 1s.
	PollInterval time.Duration
	// Logger receives the background work's warnings. Default: none.
	Logger *zap.Logger
}

// postgresDriver is the database for fleets: several control planes
// share one PostgreSQL database. Writers lock the client row (SELECT …
// FOR UPDATE) and then the meta row that holds the revision, so the
// max-active rule holds across processes and revisions commit in order.
// The store's Notifier hears of changes committed by every process on
// the database: the driver LISTENs on PostgresChannel over a dedicated
// connection (reconnecting with backoff) and reads the revision every
// PollInterval as a safety net, vouching for it.
type postgresDriver struct {
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig // for the LISTEN connection
	schema  string
	poll    time.Duration
	log     *zap.Logger

	// Set by watch: the store's epoch, notifier and revision read.
	epoch    string
	notifier *Notifier
	revision func(context.Context) (string, int64, error)

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
func (p *postgresDriver) shouldPing(_ context.Context, sp pgxpool.ShouldPingParams) bool {
	return sp.IdleDuration > time.Second || time.Now().UnixNano() < p.suspectUntil.Load()
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// OpenPostgres connects to the database named by dsn (a postgres:// URL or
// key=value pairs), brings its schema up to date and starts watching for
// changes. It fails when the database does not answer
// within ctx. Errors never contain the password.
func OpenPostgres(ctx context.Context, dsn string, opts PostgresOptions) (*SQL, error) {
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
	p := &postgresDriver{connCfg: cfg.ConnConfig.Copy(), schema: opts.Schema, poll: opts.PollInterval, log: opts.Logger}
	cfg.ShouldPing = p.shouldPing
	if p.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, redactf(password, "postgres store %s: %w", where, err)
	}
	s, err := open(ctx, p)
	if err != nil {
		p.pool.Close()
		return nil, redactf(password, "postgres store %s: %w", where, err)
	}
	p.watch(s)
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

// prepareMigration takes an advisory lock, so that control planes
// starting together migrate once and agree on the epoch, and creates the
// schema.
func (p *postgresDriver) prepareMigration(ctx context.Context, q querier) error {
	key := fnv.New64a()
	key.Write([]byte("rotagate migrate " + p.schema))
	if _, err := q.exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(key.Sum64())); err != nil {
		return err
	}
	if p.schema != "" {
		if _, err := q.exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{p.schema}.Sanitize()); err != nil {
			return err
		}
	}
	return nil
}

// announce notifies PostgresChannel, delivered at commit and only if the
// commit succeeds.
func (p *postgresDriver) announce(ctx context.Context, q querier, epoch string, rev int64) error {
	_, err := q.exec(ctx, `SELECT pg_notify($1, $2)`, PostgresChannel, epoch+"."+strconv.FormatInt(rev, 10))
	return err
}

func (p *postgresDriver) dialect() dialect {
	return dialect{words: postgresDialect, lockClient: ` FOR UPDATE`, skipClaimed: ` FOR UPDATE OF d SKIP LOCKED`}
}

// write runs fn in a transaction on a pooled connection (run retries it).
func (p *postgresDriver) write(ctx context.Context, fn func(querier) error) error {
	return p.run(ctx, func(c *pgxpool.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return fmt.Errorf("beginning transaction: %w", err)
		}
		defer tx.Rollback(ctx) // a no-op after Commit
		if err := fn(pgxTx{tx}); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			if c.Conn().IsClosed() && ctx.Err() == nil {
				return fmt.Errorf("committing: %w (%v)", errCommitUnknown, err)
			}
			return fmt.Errorf("committing: %w", err)
		}
		return nil
	})
}

// read runs fn in a read-only REPEATABLE READ transaction, in which every
// statement sees the same committed state.
func (p *postgresDriver) read(ctx context.Context, fn func(querier) error) error {
	return p.run(ctx, func(c *pgxpool.Conn) error {
		tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := fn(pgxTx{tx}); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
}

// errCommitUnknown marks a commit whose outcome is unknown: the connection
// broke after COMMIT was sent. Such a transaction is never retried.
var errCommitUnknown = errors.New("the database connection broke during commit; the change may or may not have been applied")

// run calls fn with a pooled connection, and again (up to maxAttempts
// times) when it failed for a reason that guarantees nothing was
// committed and a retry may succeed: the connection turned out dead (the
// server closed it, or the database restarted), a deadlock, or a
// serialization failure. fn must therefore be safe to run again.
func (p *postgresDriver) run(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		var c *pgxpool.Conn
		if c, err = p.pool.Acquire(ctx); err != nil {
			return err
		}
		err = fn(c)
		dead := c.Conn().IsClosed()
		c.Release()
		if dead {
			p.suspectUntil.Store(time.Now().Add(suspectFor).UnixNano())
		}
		if err == nil || ctx.Err() != nil || errors.Is(err, errCommitUnknown) || attempt >= maxAttempts {
			return err
		}
		if !dead && !transient(err) {
			return err
		}
	}
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

// pgxTx is a pgx transaction as a querier.
type pgxTx struct{ tx pgx.Tx }

func (t pgxTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (t pgxTx) queryRow(ctx context.Context, query string, args ...any) Row {
	return t.tx.QueryRow(ctx, query, args...)
}

func (t pgxTx) query(ctx context.Context, query string, args ...any) (Rows, error) {
	return t.tx.Query(ctx, query, args...)
}

// batch sends the statements in one round trip.
func (t pgxTx) batch(ctx context.Context, stmts []stmt) ([]int64, error) {
	var b pgx.Batch
	for _, st := range stmts {
		b.Queue(st.query, st.args...)
	}
	res := t.tx.SendBatch(ctx, &b)
	out := make([]int64, len(stmts))
	for i := range stmts {
		tag, err := res.Exec()
		if err != nil {
			res.Close()
			return nil, err
		}
		out[i] = tag.RowsAffected()
	}
	return out, res.Close()
}

// watch starts telling the store's notifier of the changes every process
// makes: the LISTEN connection and the revision check, until close.
func (p *postgresDriver) watch(s *SQL) {
	p.epoch, p.notifier, p.revision = s.epoch, s.notifier, s.Revision
	bg, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.notifier.Watch(p.poll)
	p.wg.Add(2)
	go p.listen(bg)
	go p.pollRevision(bg)
}

// close stops watching for changes and closes the connections.
func (p *postgresDriver) close() error {
	p.closeOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
		}
		p.wg.Wait()
		p.pool.Close()
	})
	return nil
}

// listen holds a LISTEN connection and publishes every change announced
// on it, until ctx ends. A broken connection is replaced, with backoff;
// after each (re)connection the revision is read at once, in case a
// change was announced while nobody listened.
func (p *postgresDriver) listen(ctx context.Context) {
	defer p.wg.Done()
	backoff := listenBackoffMin
	for {
		connected, err := p.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = listenBackoffMin
		}
		p.log.Warn("listening for store changes failed; reconnecting",
			zap.Duration("after", backoff), zap.Error(err))
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(2*backoff, ListenBackoffMax)
	}
}

// listenOnce connects, listens and publishes until the connection fails.
func (p *postgresDriver) listenOnce(ctx context.Context) (connected bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic while listening for store changes", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, p.connCfg.Copy())
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
	p.checkRevision(ctx)
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
		if !ok || epoch != p.epoch {
			continue // another store on this database
		}
		if rev, err := strconv.ParseInt(revText, 10, 64); err == nil {
			p.notifier.Vouch(epoch, rev)
		}
	}
}

// pollRevision reads the revision every poll interval and publishes it:
// the safety net for notifications lost while the LISTEN connection was
// down.
func (p *postgresDriver) pollRevision(ctx context.Context) {
	defer p.wg.Done()
	ticker := time.NewTicker(p.poll)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			p.checkRevision(ctx)
		}
	}
}

// checkRevision reads the revision and publishes it.
func (p *postgresDriver) checkRevision(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic while checking the store revision", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	epoch, rev, err := p.revision(qctx)
	if err != nil {
		if ctx.Err() == nil {
			if ce := p.log.Check(zap.DebugLevel, "checking the store revision failed"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		return
	}
	p.notifier.Vouch(epoch, rev)
}
