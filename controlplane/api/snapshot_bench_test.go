package api

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/secrethash"
)

// seedClients writes n clients of two generated secrets each straight
// into the SQLite file at path, in one transaction (the -scale harness's
// shape: the rules would take minutes for this many), and moves the
// revision to 1.
func seedClients(tb testing.TB, path string, n int) {
	tb.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", store.SQLiteDSN(path))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	now := time.Now().UnixMilli()
	insClient, err := tx.PrepareContext(ctx, `INSERT INTO clients (client_id, name, created_at) VALUES ($1, '', $2)`)
	if err != nil {
		tb.Fatal(err)
	}
	insSecret, err := tx.PrepareContext(ctx, `INSERT INTO secrets (secret_id, client_id, hash, hint, created_at) VALUES ($1, $2, $3, 'bench', $4)`)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("client-%07d", i)
		if _, err := insClient.ExecContext(ctx, id, now); err != nil {
			tb.Fatal(err)
		}
		for j := range 2 {
			hash := secrethash.NewSHA256(fmt.Sprintf("rgs_bench_%07d_%d", i, j))
			if _, err := insSecret.ExecContext(ctx, fmt.Sprintf("sec_%020d", 2*i+j), id, hash, now); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET revision = 1, changes_from = 1`); err != nil {
		tb.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkSnapshotBuild: the feed's first full snapshot of 100,000
// clients / 200,000 secrets on SQLite, read, encoded and gzipped, as a
// cold edge makes the control plane build it. B/op is what one build
// allocates; the bytes kept are the gzip form.
func BenchmarkSnapshotBuild(b *testing.B) {
	const clients = 100_000
	_, path := storetest.SQLite(b)
	seedClients(b, path, clients)
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc, err := rules.NewService(context.Background(), st, rules.ServiceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		built, err := newSnapshotBuilder(svc).get(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(built.gz.n), "gzip-bytes")
	}
}
