package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

// Scale of the cut-over benchmark: SPEC §14's figure.
const (
	benchCutoverClients   = 100_000
	benchCutoverRotations = 1_000
)

// bulkInsert adds rows to table in multi-row INSERTs of at most 100 rows
// (SQLite looks $N names up one by one).
func bulkInsert(ctx context.Context, tx store.RawTx, table string, cols []string, rows [][]any) error {
	for len(rows) > 0 {
		n := min(len(rows), 100)
		var b strings.Builder
		args := make([]any, 0, n*len(cols))
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, strings.Join(cols, ", "))
		for i, row := range rows[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for j, v := range row {
				if j > 0 {
					b.WriteString(", ")
				}
				args = append(args, v)
				fmt.Fprintf(&b, "$%d", len(args))
			}
			b.WriteString(")")
		}
		if _, err := tx.Exec(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("seeding %s: %w", table, err)
		}
		rows = rows[n:]
	}
	return nil
}

// seedRotations fills st with benchCutoverClients clients, each with a
// secret used from one caller, of which benchCutoverRotations are in a
// rotation: a newer secret used by two of the old secret's three callers,
// so that every pass judges them all and finds each still waiting.
func seedRotations(b *testing.B, st store.Store, now time.Time) {
	ctx := context.Background()
	ms := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	var clients, secrets, callers, rotations [][]any
	for i := range benchCutoverClients {
		id := fmt.Sprintf("cli_%06d", i)
		old := fmt.Sprintf("sec_o%015d", i)
		clients = append(clients, []any{id, "", ms(90 * 24 * time.Hour)})
		secrets = append(secrets, []any{old, id, "sha256:x", "rgs_…x", ms(90 * 24 * time.Hour), ms(10 * time.Minute), "10.0.0.1", ms(89 * 24 * time.Hour)})
		callers = append(callers, []any{old, "10.0.0.1", ms(89 * 24 * time.Hour), ms(10 * time.Minute), int64(100), int64(0)})
		if i%(benchCutoverClients/benchCutoverRotations) != 0 {
			continue
		}
		newest := fmt.Sprintf("sec_n%015d", i)
		secrets = append(secrets, []any{newest, id, "sha256:y", "rgs_…y", ms(time.Hour), ms(time.Minute), "10.0.0.1", ms(50 * time.Minute)})
		callers = append(callers,
			[]any{old, "10.0.0.2", ms(89 * 24 * time.Hour), ms(55 * time.Minute), int64(100), int64(0)},
			[]any{old, "10.0.0.3", ms(89 * 24 * time.Hour), ms(20 * time.Minute), int64(100), int64(0)},
			[]any{newest, "10.0.0.1", ms(50 * time.Minute), ms(time.Minute), int64(10), int64(0)},
			[]any{newest, "10.0.0.2", ms(45 * time.Minute), ms(time.Minute), int64(10), int64(0)})
		rotations = append(rotations, []any{id})
	}
	_, err := st.Update(ctx, func(tx store.Tx) error {
		raw := tx.(store.RawTx)
		for _, t := range []struct {
			table string
			cols  []string
			rows  [][]any
		}{
			{"clients", []string{"client_id", "name", "created_at"}, clients},
			{"secrets", []string{"secret_id", "client_id", "hash", "hint", "created_at", "last_used_at", "last_used_from", "first_used_at"}, secrets},
			{"secret_callers", []string{"secret_id", "ip", "first_seen", "last_seen", "requests", "refused"}, callers},
			{"rotations", []string{"client_id"}, rotations},
		} {
			if err := bulkInsert(ctx, raw, t.table, t.cols, t.rows); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// A database in service has statistics (autovacuum, or an operator's
	// ANALYZE); a freshly seeded one has none.
	if _, err := st.Update(ctx, func(tx store.Tx) error {
		_, err := tx.(store.RawTx).Exec(ctx, "ANALYZE")
		return err
	}); err != nil {
		b.Fatal(err)
	}
}

// benchmarkCutoverPass times one cut-over pass over a store of
// benchCutoverClients clients with benchCutoverRotations rotations in
// progress, auto on for all: each pass reads and judges every rotation
// and acts on none.
func benchmarkCutoverPass(b *testing.B, st store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	seedRotations(b, st, now)
	policy := cutover.Default
	policy.Auto = true
	svc, err := rules.NewService(ctx, st, rules.ServiceOptions{Now: func() time.Time { return now }, Cutover: &policy})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := svc.RunCutover(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if p.Rotations != benchCutoverRotations || len(p.Revoked)+len(p.Stalled) != 0 {
			b.Fatalf("pass %d rotations, revoked %d, stalled %d; want %d rotations, nothing done", p.Rotations, len(p.Revoked), len(p.Stalled), benchCutoverRotations)
		}
	}
}

func BenchmarkCutoverPassSQLite(b *testing.B) {
	st, _ := storetest.SQLite(b)
	benchmarkCutoverPass(b, st)
}

func BenchmarkCutoverPassPostgres(b *testing.B) {
	benchmarkCutoverPass(b, storetest.PostgresStore(b))
}
