package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rotagate/rotagate/controlplane"
	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// The fleet test runs against ROTAGATE_TEST_POSTGRES (default: the local
// server, database test). It skips when PostgreSQL is unreachable, unless
// CI is set: then it fails.
const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// fleetSchema returns the DSN of the test database and a fresh schema in
// it, dropped when the test ends.
func fleetSchema(t *testing.T) (dsn, schema string) {
	t.Helper()
	dsn = os.Getenv("ROTAGATE_TEST_POSTGRES")
	if dsn == "" {
		dsn = defaultTestPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required under CI: %v", err)
		}
		t.Skipf("skipping: PostgreSQL is not reachable (%v); with CI set this fails instead", err)
	}
	conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = "rgfleet_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			conn.Close(ctx)
		}
	})
	return dsn, schema
}

// replica is one control-plane process of a fleet: the real control plane
// on PostgreSQL, outside Caddy, on its own port.
type replica struct {
	url  string
	http *http.Server
	cp   *controlplane.Server
}

func startReplica(t *testing.T, dsn, schema, addr string) *replica {
	t.Helper()
	cp, err := controlplane.NewPostgresServer(context.Background(), dsn, store.PostgresOptions{Schema: schema},
		rules.ServiceOptions{}, api.Options{AdminToken: adminToken, EdgeToken: edgeToken})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{url: "http://" + addr, http: serveOutside(t, cp, addr, cp), cp: cp}
	t.Cleanup(r.kill)
	return r
}

// kill stops the replica at once: listener, connections, store.
func (r *replica) kill() {
	if r.http == nil {
		return
	}
	r.cp.API.Close()
	_ = r.http.Close()
	_ = r.cp.Close()
	r.http = nil
}

// TestFleet: two control-plane replicas on one PostgreSQL database and an
// edge that long-polls replica B (listed first) with replica A as its
// fallback. A revoke through A is refused at the edge within 1s; with B
// killed, the edge fails over to A and the revocation bound still holds.
func TestFleet(t *testing.T) {
	dsn, schema := fleetSchema(t)
	a := startReplica(t, dsn, schema, freeAddr(t))
	b := startReplica(t, dsn, schema, freeAddr(t))
	edgeURL := startSite(t, `
	client_credentials {
		control_plane `+b.url+` `+a.url+` {
			token `+edgeToken+`
		}
		revocation_delay 3s
		usage_flush 1s
	}
	respond "upstream reached" 200
`)
	api := adminAPI{t: t, base: a.url}
	api.createClient("fleet")
	first := api.generate("fleet")
	cptest.WaitFor(t, 5*time.Second, "the edge accepts a secret created through replica A", func() bool {
		code, _ := status(t, edgeURL, "fleet", first.Secret)
		return code == 200
	})
	api.revoke("fleet", first.ID)
	latency := cptest.WaitFor(t, time.Second, "a revoke through A is refused at the edge fed by B", func() bool {
		code, _ := status(t, edgeURL, "fleet", first.Secret)
		return code == 401
	})
	t.Logf("revoke through replica A refused at the edge fed by replica B after %v", latency)

	keep := api.generate("fleet")
	doomed := api.generate("fleet")
	cptest.WaitFor(t, 3*time.Second, "the edge accepts the new secrets", func() bool {
		c1, _ := status(t, edgeURL, "fleet", keep.Secret)
		c2, _ := status(t, edgeURL, "fleet", doomed.Secret)
		return c1 == 200 && c2 == 200
	})

	b.kill()
	killed := time.Now()
	api.revoke("fleet", doomed.ID)
	failover := cptest.WaitFor(t, 3*time.Second, "with B dead, a revoke through A is refused within revocation_delay", func() bool {
		code, _ := status(t, edgeURL, "fleet", doomed.Secret)
		return code == 401
	})
	t.Logf("replica B killed: the revoke through A was refused after %v", failover)
	// The edge stays confirmed through A: no 503 past max_stale.
	for time.Since(killed) < 4*time.Second {
		if code, _ := status(t, edgeURL, "fleet", keep.Secret); code != 200 {
			t.Fatalf("%v after B was killed the remaining secret got %d", time.Since(killed), code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Last-used stamps reach the database through A as well.
	cptest.WaitFor(t, 5*time.Second, "the stamp of the remaining secret arrives through A", func() bool {
		s := api.secrets("fleet")[keep.ID]
		return s.LastUsedAt != nil && s.LastUsedAt.After(killed)
	})
}
