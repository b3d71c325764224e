package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// replica is one control-plane process of a fleet, served over HTTP.
type replica struct {
	srv  *API
	http *httptest.Server
}

func newReplica(t *testing.T, dsn string, pg store.PostgresOptions) *replica {
	t.Helper()
	st := storetest.OpenPostgres(t, dsn, pg)
	svc, err := rules.NewService(context.Background(), st, rules.ServiceOptions{})
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	a, err := New(svc, Options{AdminToken: cptest.AdminToken, EdgeToken: cptest.EdgeToken})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(a)
	// Before the store closes (cleanups run last first).
	t.Cleanup(func() {
		a.Close() // ends long polls, so that the server can close
		hs.Close()
	})
	return &replica{srv: a, http: hs}
}

// call sends one request to the replica and returns its status and body.
func (r *replica) call(t *testing.T, method, path, token, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.http.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.http.Client().Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

// A revoke through replica A wakes the feed requests waiting on replica B
// within a second: LISTEN/NOTIFY carries it, not the periodic check (set
// to a minute here so that it cannot help).
func TestPostgresReplicasWakeEachOther(t *testing.T) {
	dsn, schema := storetest.Schema(t)
	pg := store.PostgresOptions{Schema: schema, PollInterval: time.Minute}
	a, b := newReplica(t, dsn, pg), newReplica(t, dsn, pg)
	waiting := make(chan struct{}, 1)
	b.srv.onWait = func() { waiting <- struct{}{} }

	if st, _, body := a.call(t, "POST", "/v1/clients", cptest.AdminToken, `{"client_id":"c"}`); st != 201 {
		t.Fatalf("create client: %d %s", st, body)
	}
	st, _, body := a.call(t, "POST", "/v1/clients/c/secrets", cptest.AdminToken, `{}`)
	if st != 201 {
		t.Fatalf("generate: %d", st)
	}
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.ID == "" {
		t.Fatalf("generate answered %v", err)
	}
	secretID := created.ID

	// B learns of A's changes without being asked.
	epoch, rev, _ := a.srv.Service().Notifier().Current()
	cptest.WaitFor(t, time.Second, "replica B hears of A's changes", func() bool {
		e, r, _ := b.srv.Service().Notifier().Current()
		return e == epoch && r == rev
	})
	st, hdr, body := b.call(t, "GET", "/v1/edge/snapshot", cptest.EdgeToken, "")
	if st != 200 || !strings.Contains(body, secretID) {
		t.Fatalf("B's snapshot: %d, holds the secret: %v", st, strings.Contains(body, secretID))
	}
	etag := hdr.Get("ETag")

	type answer struct {
		status int
		body   string
		at     time.Time
	}
	done := make(chan answer, 1)
	go func() {
		st, _, body := b.call(t, "GET", "/v1/edge/snapshot?wait=10s", cptest.EdgeToken, "", "If-None-Match", etag)
		done <- answer{st, body, time.Now()}
	}()
	<-waiting
	revoked := time.Now()
	if st, _, _ := a.call(t, "DELETE", "/v1/clients/c/secrets/"+secretID, cptest.AdminToken, ""); st != 200 {
		t.Fatalf("revoke through A: %d", st)
	}
	select {
	case ans := <-done:
		latency := ans.at.Sub(revoked)
		t.Logf("cross-replica wake latency: %v", latency)
		var snap wire.Snapshot
		if ans.status != 200 || json.Unmarshal([]byte(ans.body), &snap) != nil {
			t.Fatalf("B answered %d: %s", ans.status, ans.body)
		}
		for _, c := range snap.Clients {
			for _, sec := range c.Secrets {
				if sec.ID == secretID {
					t.Fatal("B's snapshot still holds the revoked secret")
				}
			}
		}
		if latency > time.Second {
			t.Fatalf("B answered %v after the revoke, want within 1s", latency)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll on B was not woken by a revoke through A")
	}
}

// A change whose notification was lost (here: written without one) still
// reaches waiting feed requests, through the periodic revision check.
func TestPostgresPollCatchesLostNotifications(t *testing.T) {
	ctx := context.Background()
	dsn, schema := storetest.Schema(t)
	_, admin := storetest.Postgres(t)
	b := newReplica(t, dsn, store.PostgresOptions{Schema: schema, PollInterval: 100 * time.Millisecond})
	_, rev, changed := b.srv.Service().Notifier().Current()
	if _, err := admin.Exec(ctx, `UPDATE `+schema+`.meta SET revision = revision + 1`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("a change without a notification was not picked up by the revision check")
	}
	if _, r, _ := b.srv.Service().Notifier().Current(); r != rev+1 {
		t.Fatalf("published revision %d, want %d", r, rev+1)
	}
}

// When the server drops every connection of a replica, the next
// operations succeed on new connections and the replica listens again.
func TestPostgresRecoversFromTerminatedConnections(t *testing.T) {
	ctx := context.Background()
	dsn, schema := storetest.Schema(t)
	_, admin := storetest.Postgres(t)
	appName := schema + "_a"
	a := newReplica(t, storetest.WithParam(t, dsn, "application_name", appName), store.PostgresOptions{Schema: schema, PollInterval: time.Minute})
	b := newReplica(t, dsn, store.PostgresOptions{Schema: schema, PollInterval: time.Minute})
	svc := a.srv.Service()
	if _, err := svc.CreateClient(ctx, cptest.Who, "c", "", nil); err != nil {
		t.Fatal(err)
	}
	// Warm the pool with several connections, then kill them all, and the
	// LISTEN connection with them.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := svc.ListSecrets(ctx, cptest.Who, "c"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var killed int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed < 2 {
		t.Fatalf("terminated %d connections, want the pool's and the listener's", killed)
	}
	// Every next operation works, the first ones included.
	if _, err := svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{}); err != nil {
		t.Fatalf("generate after the connections were killed: %v", err)
	}
	if st, _, _ := a.call(t, "GET", "/healthz", "", ""); st != 200 {
		t.Fatalf("healthz after the connections were killed: %d", st)
	}
	if _, err := svc.ListSecrets(ctx, cptest.Who, "c"); err != nil {
		t.Fatal(err)
	}
	// A listens again: a change through B reaches it (the periodic check
	// is a minute away).
	_, _, changed := svc.Notifier().Current()
	if _, err := b.srv.Service().CreateClient(ctx, cptest.Who, "d", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(3 * time.Second):
		t.Fatal("replica A no longer hears of changes after its connections were killed")
	}
}

// tcpProxy stands between a store and PostgreSQL, so that a test can take
// the database away and bring it back.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		// setDown may have run while this dialled: a connection it could
		// not see must not outlive it.
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

// setDown cuts every open connection and refuses new ones, or accepts
// them again.
func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// The database goes away under a running replica and comes back: while it
// is away /healthz answers 503, writes fail whole (nothing half-written),
// and the errors and logs never show the password; when it is back,
// everything works again, change notifications included.
func TestPostgresDatabaseDownAndBack(t *testing.T) {
	ctx := context.Background()
	dsn, schema := storetest.Schema(t)
	cfg, err := store.ParsePostgresDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
	const pw = "s3cret-Pa55word" // trust authentication ignores it
	u, _ := url.Parse(dsn)
	u.Host = proxy.ln.Addr().String()
	u.User = url.UserPassword(cfg.ConnConfig.User, pw)
	viaProxy := storetest.WithParam(t, u.String(), "connect_timeout", "2")

	// Down at start: a clear error, fast.
	proxy.setDown(true)
	start := time.Now()
	_, err = store.OpenPostgres(ctx, viaProxy, store.PostgresOptions{Schema: schema})
	if err == nil || !strings.Contains(err.Error(), "postgres store (user ") || strings.Contains(err.Error(), pw) {
		t.Fatalf("starting with the database down: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("starting with the database down took %v", time.Since(start))
	}
	proxy.setDown(false)

	core, logs := observer.New(zap.DebugLevel)
	a := newReplica(t, viaProxy, store.PostgresOptions{Schema: schema, PollInterval: time.Minute, Logger: zap.New(core)})
	b := newReplica(t, dsn, store.PostgresOptions{Schema: schema, PollInterval: time.Minute})
	a.srv.log = zap.New(core)
	svc := a.srv.Service()
	if _, err := svc.CreateClient(ctx, cptest.Who, "c", "", nil); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := a.call(t, "GET", "/healthz", "", ""); st != 200 {
		t.Fatalf("healthz: %d", st)
	}
	_, rev, _ := b.srv.svc.Store().Revision(ctx)

	// The connection is lost in the middle of a transaction: nothing of
	// it is written.
	_, err = a.srv.svc.Store().Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertClient(ctx, store.Client{ID: "half", CreatedAt: time.Now()}); err != nil {
			return err
		}
		proxy.setDown(true)
		return tx.InsertClient(ctx, store.Client{ID: "other-half", CreatedAt: time.Now()})
	})
	if err == nil {
		t.Fatal("a transaction whose connection was lost succeeded")
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatal("the error quotes the password")
	}
	if st, _, _ := a.call(t, "GET", "/healthz", "", ""); st != 503 {
		t.Fatalf("healthz with the database away: %d, want 503", st)
	}
	if st, _, _ := a.call(t, "POST", "/v1/clients", cptest.AdminToken, `{"client_id":"x"}`); st < 500 {
		t.Fatalf("a write with the database away answered %d", st)
	}
	for _, id := range []string{"half", "other-half", "x"} {
		if _, err := b.srv.svc.Store().Client(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("client %s written while the database was away: %v", id, err)
		}
	}
	if _, r, _ := b.srv.svc.Store().Revision(ctx); r != rev {
		t.Fatalf("the revision moved from %d to %d without a change", rev, r)
	}

	// Back: health, writes and notifications recover.
	proxy.setDown(false)
	cptest.WaitFor(t, 5*time.Second, "healthz answers 200 again", func() bool {
		st, _, _ := a.call(t, "GET", "/healthz", "", "")
		return st == 200
	})
	if _, err := svc.CreateClient(ctx, cptest.Who, "after", "", nil); err != nil {
		t.Fatalf("write after the database came back: %v", err)
	}
	_, _, changed := svc.Notifier().Current()
	if _, err := b.srv.Service().CreateClient(ctx, cptest.Who, "from-b", "", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(store.ListenBackoffMax + 2*time.Second):
		t.Fatal("replica A no longer hears of changes after the database came back")
	}
	for _, entry := range logs.All() {
		line := entry.Message
		for _, f := range entry.Context {
			line += fmt.Sprint(f.String, f.Interface)
		}
		if strings.Contains(line, pw) {
			t.Fatal("a log entry quotes the password")
		}
	}
}

// A replica cut off from the database must not confirm an edge's snapshot:
// its revision may be stale (another replica may have revoked a secret), so
// it answers 503 instead of 304 until it can vouch for the revision again.
func TestPostgresReplicaWithoutDatabaseConfirmsNothing(t *testing.T) {
	dsn, schema := storetest.Schema(t)
	cfg, err := store.ParsePostgresDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
	u, _ := url.Parse(dsn)
	u.Host = proxy.ln.Addr().String()
	viaProxy := storetest.WithParam(t, u.String(), "connect_timeout", "1")
	a := newReplica(t, viaProxy, store.PostgresOptions{Schema: schema, PollInterval: 50 * time.Millisecond})

	st, hdr, _ := a.call(t, "GET", "/v1/edge/snapshot", cptest.EdgeToken, "")
	if st != 200 {
		t.Fatalf("first snapshot: %d", st)
	}
	etag := hdr.Get("ETag")
	poll := func() int {
		st, _, _ := a.call(t, "GET", "/v1/edge/snapshot", cptest.EdgeToken, "", "If-None-Match", etag)
		return st
	}
	if st := poll(); st != 304 {
		t.Fatalf("unchanged snapshot with the database up: %d", st)
	}
	proxy.setDown(true)
	cptest.WaitFor(t, 5*time.Second, "503 instead of 304 while the database is away", func() bool { return poll() == 503 })
	proxy.setDown(false)
	cptest.WaitFor(t, 10*time.Second, "304 again once the database is back", func() bool { return poll() == 304 })
}
