package controlplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

func TestSQLiteMigrationAndEpoch(t *testing.T) {
	ctx := context.Background()
	st, path := openTestStore(t)
	epoch, rev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(epoch) != 16 || strings.Contains(epoch, ".") || rev != 0 {
		t.Fatalf("new store: epoch %q rev %d", epoch, rev)
	}
	var version int
	if err := st.db.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(sqliteMigrations) {
		t.Fatalf("schema_version = %d (%v), want %d", version, err, len(sqliteMigrations))
	}
	var mode string
	if err := st.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q (%v), want wal", mode, err)
	}
	for _, suffix := range []string{"", "-wal"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("cp.db%s: mode %v, want 0600", suffix, fi.Mode().Perm())
		}
	}

	// A second open of the same file, as after a restart, keeps the epoch
	// and migrates nothing again.
	st2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	epoch2, _, err := st2.Revision(ctx)
	if err != nil || epoch2 != epoch {
		t.Fatalf("reopened epoch %q (%v), want %q", epoch2, err, epoch)
	}

	// Another file is another lifetime: another epoch.
	other, _ := openTestStore(t)
	if e, _, _ := other.Revision(ctx); e == epoch {
		t.Fatal("two stores share an epoch")
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	st, path := openTestStore(t)
	if _, err := st.db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := OpenSQLite(ctx, path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer schema: %v", err)
	}
}

func TestSQLiteDataSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	st, path := openTestStore(t)
	e := newEnvOn(t, st, path)
	e.mustClient("survivor")
	ns := e.mustGenerate("survivor")
	if _, err := e.svc.ApplyUsage(ctx, wire.Usage{Stamps: []wire.Stamp{{ClientID: "survivor", SecretID: ns.Secret.ID, LastUsedAt: e.clock.Now(), From: "192.0.2.1"}}}); err != nil {
		t.Fatal(err)
	}
	epoch, rev, _ := st.Revision(ctx)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	epoch2, rev2, err := st2.Revision(ctx)
	if err != nil || epoch2 != epoch || rev2 != rev {
		t.Fatalf("after reopen: %q/%d (%v), want %q/%d", epoch2, rev2, err, epoch, rev)
	}
	secrets, err := st2.Secrets(ctx, "survivor")
	if err != nil || len(secrets) != 1 {
		t.Fatalf("after reopen: %d secrets (%v)", len(secrets), err)
	}
	got := secrets[0]
	if got.ID != ns.Secret.ID || got.Hash != ns.Secret.Hash || got.Hint != ns.Secret.Hint ||
		!got.CreatedAt.Equal(ns.Secret.CreatedAt) || got.LastUsedAt == nil || got.LastUsedFrom != "192.0.2.1" {
		t.Fatalf("after reopen the secret record differs: id %s hint %s", got.ID, got.Hint)
	}
}

func TestSQLiteRevisionMovesOnlyOnWrites(t *testing.T) {
	ctx := context.Background()
	st, _ := openTestStore(t)
	rev := func() int64 {
		_, r, err := st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	now := time.Now().UTC()
	r, err := st.Update(ctx, func(tx Tx) error { return tx.InsertClient(ctx, Client{ID: "a", CreatedAt: now}) })
	if err != nil || r != 1 || rev() != 1 {
		t.Fatalf("insert client: returned %d (%v), stored %d; want 1", r, err, rev())
	}
	// A transaction that reads only does not move it.
	r, err = st.Update(ctx, func(tx Tx) error { _, err := tx.LockClient(ctx, "a"); return err })
	if err != nil || r != 1 || rev() != 1 {
		t.Fatalf("read-only update: returned %d (%v), stored %d; want 1", r, err, rev())
	}
	// A failed transaction is rolled back whole, revision included.
	boom := errors.New("boom")
	_, err = st.Update(ctx, func(tx Tx) error {
		if err := tx.InsertClient(ctx, Client{ID: "b", CreatedAt: now}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || rev() != 1 {
		t.Fatalf("failed update: %v, revision %d", err, rev())
	}
	if _, err := st.Client(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rolled-back client exists: %v", err)
	}
	// Domain errors.
	_, err = st.Update(ctx, func(tx Tx) error { return tx.InsertClient(ctx, Client{ID: "a", CreatedAt: now}) })
	if !errors.Is(err, ErrClientExists) {
		t.Fatalf("duplicate client: %v", err)
	}
	for name, fn := range map[string]func(Tx) error{
		"lock":   func(tx Tx) error { _, err := tx.LockClient(ctx, "nope"); return err },
		"delete": func(tx Tx) error { return tx.DeleteClient(ctx, "nope") },
		"expire": func(tx Tx) error { return tx.SetExpiry(ctx, "sec_nope", now) },
		"revoke": func(tx Tx) error { return tx.Revoke(ctx, "sec_nope", now) },
	} {
		if _, err := st.Update(ctx, fn); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a missing row: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := st.Secrets(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Secrets of a missing client: %v", err)
	}
	if rev() != 1 {
		t.Fatalf("failed writes moved the revision to %d", rev())
	}
}

func TestSQLiteUsageMaxSemantics(t *testing.T) {
	ctx := context.Background()
	st, _ := openTestStore(t)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := st.Update(ctx, func(tx Tx) error {
		if err := tx.InsertClient(ctx, Client{ID: "c", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.InsertSecret(ctx, Secret{ID: "sec_a", ClientID: "c", Hash: "h", Hint: "x", CreatedAt: t0})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, rev, _ := st.Revision(ctx)
	apply := func(at time.Time, from string) int {
		n, err := st.ApplyUsage(ctx, []wire.Stamp{{ClientID: "c", SecretID: "sec_a", LastUsedAt: at, From: from}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	check := func(at time.Time, from string) {
		t.Helper()
		secrets, err := st.Secrets(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		s := secrets[0]
		if s.LastUsedAt == nil || !s.LastUsedAt.Equal(at) || s.LastUsedFrom != from {
			t.Fatalf("last used %v from %q, want %v from %q", s.LastUsedAt, s.LastUsedFrom, at, from)
		}
	}
	if apply(t0.Add(time.Hour), "192.0.2.1") != 1 {
		t.Fatal("first stamp not applied")
	}
	check(t0.Add(time.Hour), "192.0.2.1")
	if apply(t0.Add(time.Minute), "192.0.2.2") != 0 { // older: ignored
		t.Fatal("an older stamp was applied")
	}
	check(t0.Add(time.Hour), "192.0.2.1")
	if apply(t0.Add(time.Hour), "192.0.2.3") != 0 { // same: idempotent
		t.Fatal("a repeated stamp was applied")
	}
	check(t0.Add(time.Hour), "192.0.2.1")
	apply(t0.Add(2*time.Hour), "192.0.2.4")
	check(t0.Add(2*time.Hour), "192.0.2.4")
	// Unknown secret, or the right secret under the wrong client: ignored.
	n, err := st.ApplyUsage(ctx, []wire.Stamp{
		{ClientID: "c", SecretID: "sec_unknown", LastUsedAt: t0.Add(3 * time.Hour)},
		{ClientID: "other", SecretID: "sec_a", LastUsedAt: t0.Add(3 * time.Hour)},
	})
	if err != nil || n != 0 {
		t.Fatalf("stamps for unknown secrets: %d updated (%v)", n, err)
	}
	check(t0.Add(2*time.Hour), "192.0.2.4")
	if _, r, _ := st.Revision(ctx); r != rev {
		t.Fatalf("usage moved the revision from %d to %d", rev, r)
	}
}

func TestSQLiteSnapshotActiveOnly(t *testing.T) {
	ctx := context.Background()
	st, _ := openTestStore(t)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	later, earlier := t0.Add(time.Hour), t0.Add(-time.Hour)
	_, err := st.Update(ctx, func(tx Tx) error {
		for _, c := range []string{"b", "a", "empty"} {
			if err := tx.InsertClient(ctx, Client{ID: c, CreatedAt: earlier}); err != nil {
				return err
			}
		}
		for _, s := range []Secret{
			{ID: "sec_2", ClientID: "b", Hash: "h2", CreatedAt: earlier},
			{ID: "sec_1", ClientID: "b", Hash: "h1", CreatedAt: earlier, ExpiresAt: &later},
			{ID: "sec_3", ClientID: "a", Hash: "h3", CreatedAt: earlier},
			{ID: "sec_4", ClientID: "a", Hash: "h4", CreatedAt: earlier, ExpiresAt: &earlier},
			{ID: "sec_5", ClientID: "a", Hash: "h5", CreatedAt: earlier},
			{ID: "sec_6", ClientID: "a", Hash: "h6", CreatedAt: earlier, ExpiresAt: &t0},
		} {
			if err := tx.InsertSecret(ctx, s); err != nil {
				return err
			}
		}
		return tx.Revoke(ctx, "sec_5", earlier)
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 1 || snap.Epoch == "" {
		t.Fatalf("snapshot at %q/%d", snap.Epoch, snap.Revision)
	}
	var got []string
	for _, c := range snap.Clients {
		for _, s := range c.Secrets {
			exp := ""
			if s.ExpiresAt != nil {
				exp = "+exp"
			}
			got = append(got, c.ClientID+"/"+s.ID+"/"+s.Hash+exp)
		}
	}
	want := "a/sec_3/h3 b/sec_1/h1+exp b/sec_2/h2"
	if strings.Join(got, " ") != want {
		t.Fatalf("snapshot holds %v, want %s", got, want)
	}
}

func TestSQLiteDSNEscapesPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "odd ?#% dir")
	st, err := OpenSQLite(context.Background(), filepath.Join(dir, "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); err != nil {
		t.Fatalf("the database is not at the path given: %v", err)
	}
}
