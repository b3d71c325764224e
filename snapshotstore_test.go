package rotagate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/wire"
)

// syncedOnDisk returns a feed that synced once from fs (a 200, then a 304
// that moves the confirmation) and saved it in dir.
func syncedOnDisk(t *testing.T, dir string, fs *feedtest.Server) *feed {
	t.Helper()
	f := testFeedOnDisk(t, dir, fs.URL)
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := f.poll(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return f
}

// restartedOnDisk is a new feed on the same disk copy, loaded as a
// restarted edge loads it.
func restartedOnDisk(t *testing.T, dir string, urls ...string) *feed {
	t.Helper()
	f := testFeedOnDisk(t, dir, urls...)
	f.snapshots.load(f.config.Load().maxBytes)
	return f
}

// TestSavedSnapshotSurvivesRestart: a feed that synced once, then a new
// feed (a restarted edge) with the control plane down, serves from disk
// with the saved confirmation time.
func TestSavedSnapshotSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	_, confirmed := syncedOnDisk(t, dir, fs).snapshots.current()
	fs.Close()

	restarted := restartedOnDisk(t, dir, fs.URL)
	snap, c := restarted.snapshots.current()
	if snap == nil || snap.revision != 7 || snap.clients != 6 || !c.Round(0).Equal(confirmed.Round(0)) {
		t.Fatalf("restarted with %+v confirmed %v, want revision 7 confirmed %v", snap, c, confirmed)
	}
	raw, err := os.ReadFile(restarted.snapshots.disk.snapshotPath())
	if err != nil || strings.Contains(string(raw), appSecret) {
		t.Fatalf("saved file: %v", err)
	}
	// A damaged file is ignored, not trusted.
	if err := os.WriteFile(restarted.snapshots.disk.snapshotPath(), raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if snap, _ := restartedOnDisk(t, dir, fs.URL).snapshots.current(); snap != nil {
		t.Fatal("a truncated saved snapshot was loaded")
	}
}

// TestSavedSnapshotWithoutConfirmation: a saved snapshot whose
// confirmation is missing, or names another snapshot, or is unreadable,
// is loaded but counts as never confirmed.
func TestSavedSnapshotWithoutConfirmation(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	f := syncedOnDisk(t, dir, fs)
	path := f.snapshots.disk.confirmedPath()
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	for name, content := range map[string]string{
		"missing":            "",
		"another snapshot":   now + ` "e1.8"`,
		"another epoch":      now + ` "e0.7"`,
		"no snapshot named":  now,
		"not a time":         `soon "e1.7"`,
		"the right snapshot": now + ` "e1.7"`,
	} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if content != "" {
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		snap, confirmed := restartedOnDisk(t, dir, fs.URL).snapshots.current()
		never := time.Since(confirmed) > 100*365*24*time.Hour
		if snap == nil || never != (name != "the right snapshot") {
			t.Errorf("%s: snapshot %v, confirmed %v", name, snap != nil, confirmed)
		}
	}
}

// TestFutureConfirmationIsNotTrusted (issue 9, defect 1): a saved
// confirmation time ahead of the clock is not trusted at all: with the
// control plane down the restarted edge answers 503 at once, and serves
// again when the control plane confirms the snapshot.
func TestFutureConfirmationIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	f := syncedOnDisk(t, dir, fs)
	fs.Close()
	path := f.snapshots.disk.confirmedPath()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, tag, _ := strings.Cut(string(raw), " ")
	ahead := time.Now().Add(24 * time.Hour)
	if err := os.WriteFile(path, []byte(strconv.FormatInt(ahead.UnixNano(), 10)+" "+tag), 0o600); err != nil {
		t.Fatal(err)
	}

	restarted := restartedOnDisk(t, dir, fs.URL)
	if snap, c := restarted.snapshots.current(); snap == nil || c.After(time.Now().Add(-24*time.Hour)) {
		t.Fatalf("restarted with %v confirmed %v, want the saved snapshot, never confirmed", snap, c)
	}
	h := newTestHandler(t, nil, func(h *Handler) { h.MaxStale = Staleness(2 * time.Second) })
	h.feed = restarted
	h.now = time.Now
	if w, _ := serve(t, h, basicRequest("app", appSecret)); w.Code != 503 {
		t.Fatalf("right after the restart, the control plane down: %d", w.Code)
	}
	restarted.snapshots.confirm(time.Now())
	if w, _ := serve(t, h, basicRequest("app", appSecret)); w.Code != 200 {
		t.Fatalf("once confirmed: %d", w.Code)
	}
}

// TestSavedSnapshotIsNoRollbackFloor: after a restart, the control plane's
// first answer is taken even when its revision is lower than the saved
// one (its store was restored from a backup); from then on the rollback
// guard holds against it.
func TestSavedSnapshotIsNoRollbackFloor(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	syncedOnDisk(t, dir, fs) // revision 7 saved
	fs.Update(func(s *wire.Snapshot) { s.Revision = 5 })

	restarted := restartedOnDisk(t, dir, fs.URL)
	if err := restarted.poll(context.Background(), false); err != nil {
		t.Fatalf("the restored control plane's answer was refused: %v", err)
	}
	snap, confirmed := restarted.snapshots.current()
	if snap.revision != 5 || time.Since(confirmed) > time.Minute {
		t.Fatalf("revision %d confirmed %v, want 5 just confirmed", snap.revision, confirmed)
	}
	fs.Update(func(s *wire.Snapshot) { s.Revision = 4 })
	if err := restarted.poll(context.Background(), false); err == nil || !strings.Contains(err.Error(), "rollback") {
		t.Fatalf("a rollback after the first answer: %v", err)
	}

	// A 304 for the saved snapshot makes it the floor too.
	dir = t.TempDir()
	fs = feedtest.New(t, *testSnapshot(t))
	syncedOnDisk(t, dir, fs)
	restarted = restartedOnDisk(t, dir, fs.URL)
	if err := restarted.poll(context.Background(), false); err != nil { // 304
		t.Fatal(err)
	}
	fs.Update(func(s *wire.Snapshot) { s.Revision = 6 })
	if err := restarted.poll(context.Background(), false); err == nil || !strings.Contains(err.Error(), "rollback") {
		t.Fatalf("a rollback after a 304 for the saved snapshot: %v", err)
	}
}

// TestDiskTroubleDoesNotRejectSnapshots: a snapshot that could not be
// saved does not leave an older saved body to be paired with a newer
// confirmation time.
func TestDiskTroubleDoesNotRejectSnapshots(t *testing.T) {
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeedOnDisk(t, t.TempDir(), fs.URL)
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	held, _ := f.snapshots.current()
	f.snapshots.diskMu.Lock()
	f.snapshots.keptLocked(held, errors.New("no space left on device")) // a newer snapshot was applied but could not be saved
	f.snapshots.diskMu.Unlock()
	if _, err := os.Stat(f.snapshots.disk.snapshotPath()); !os.IsNotExist(err) {
		t.Fatalf("the outdated saved snapshot is still there: %v", err)
	}
	if err := f.poll(context.Background(), true); err != nil { // a 304
		t.Fatal(err)
	}
	if _, err := os.Stat(f.snapshots.disk.confirmedPath()); !os.IsNotExist(err) {
		t.Fatal("a confirmation time was saved with no current snapshot beside it")
	}
}

// TestStoreWithoutDisk: a store with no disk copy takes snapshots and
// confirmations alike.
func TestStoreWithoutDisk(t *testing.T) {
	s := newSnapshotStore(nil, zap.NewNop())
	s.load(1 << 20)
	if snap, _ := s.current(); snap != nil {
		t.Fatal("loaded something without a disk")
	}
	next, err := newSnapshot(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := s.replace(next, sent); err != nil {
		t.Fatal(err)
	}
	s.unchanged(next, sent.Add(time.Second))
	if snap, c := s.current(); snap != next || !c.Equal(sent.Add(time.Second)) {
		t.Fatalf("held %v confirmed %v", snap == next, c)
	}
	other, _ := newSnapshot(testSnapshot(t))
	s.unchanged(other, sent.Add(time.Hour)) // a 304 for a snapshot no longer held
	if _, c := s.current(); !c.Equal(sent.Add(time.Second)) {
		t.Fatal("a 304 for another snapshot confirmed the one held")
	}
}

// TestUnwritableDiskDoesNotRejectSnapshots: when the data directory cannot
// be written at all, snapshots are still taken and confirmed; nothing is
// saved.
func TestUnwritableDiskDoesNotRejectSnapshots(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fs := feedtest.New(t, *testSnapshot(t))
	f := testFeedOnDisk(t, filepath.Join(notADir, "edge"), fs.URL)
	if err := f.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := f.poll(context.Background(), true); err != nil { // a 304
		t.Fatal(err)
	}
	if snap, c := f.snapshots.current(); snap == nil || time.Since(c) > time.Minute {
		t.Fatalf("snapshot %v confirmed %v", snap != nil, c)
	}
	if err := f.snapshots.disk.saveConfirmed(time.Now(), `"e1.7"`); err == nil {
		t.Fatal("saved into a file as if it were a directory")
	}
}
