package rotagate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/wire"
)

// encodedFile is snap in the saved binary form, as writeFull writes it.
func encodedFile(t testing.TB, snap *snapshot) []byte {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "snap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeSnapshotFile(f, snap); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func readBack(raw []byte, limit int64) (*snapshot, error) {
	return readSnapshotFile(bytes.NewReader(raw), int64(len(raw)), limit)
}

// TestSavedFormatRoundTrip is a property test: random snapshots (every
// kind of secret, expiries, tombstones, networks) read back from the
// binary form authenticate and bury exactly what they did.
func TestSavedFormatRoundTrip(t *testing.T) {
	check := func(name string, w *wire.Snapshot) {
		t.Helper()
		snap, err := newSnapshot(w)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := readBack(encodedFile(t, snap), 1<<30)
		if err != nil {
			t.Fatalf("%s: reading it back: %v", name, err)
		}
		if got, want := canonical(t, back), canonical(t, snap); got != want {
			t.Fatalf("%s: read back\n%s\nwant\n%s", name, got, want)
		}
	}
	check("test snapshot", testSnapshot(t))
	check("no clients", &wire.Snapshot{Epoch: "e", Revision: 0})
	bcrypt := testSnapshot(t).Clients[1].Secrets[0].Hash
	for seed := range uint64(20) {
		m := &randomModel{rng: rand.New(rand.NewPCG(seed, 2)), clients: map[string]*wire.Client{}}
		for range 80 {
			m.step()
		}
		w := m.full(fmt.Sprintf("epoch-%d", seed))
		for i := range w.Clients {
			c := &w.Clients[i]
			switch m.rng.IntN(4) {
			case 0:
				c.AllowedCIDRs, c.NetworksReportOnly = []string{"10.0.0.0/8", "2001:db8::/32"}, m.rng.IntN(2) == 0
			case 1:
				c.Secrets = append(c.Secrets, wire.Secret{ID: fmt.Sprintf("legacy-%d-%d", seed, i), Hash: bcrypt})
			}
		}
		check(fmt.Sprintf("seed %d", seed), w)
	}
}

// TestSavedFormatRejectsDamage: a saved snapshot cut short anywhere, with
// any one byte changed, with a byte added, or of another version, is
// rejected whole.
func TestSavedFormatRejectsDamage(t *testing.T) {
	snap, err := newSnapshot(testSnapshot(t))
	if err != nil {
		t.Fatal(err)
	}
	raw := encodedFile(t, snap)
	if _, err := readBack(raw, 1<<20); err != nil {
		t.Fatalf("the undamaged file: %v", err)
	}
	for n := range len(raw) {
		if _, err := readBack(raw[:n], 1<<20); err == nil {
			t.Fatalf("cut to %d of %d bytes: read", n, len(raw))
		}
	}
	for i := range raw {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			damaged := bytes.Clone(raw)
			damaged[i] ^= flip
			if _, err := readBack(damaged, 1<<20); err == nil {
				t.Fatalf("byte %d xor %#x: read", i, flip)
			}
		}
	}
	if _, err := readBack(append(bytes.Clone(raw), 0), 1<<20); err == nil {
		t.Fatal("a byte added: read")
	}
	other := bytes.Clone(raw)
	other[len(savedMagic)-1] = savedVersion + 1
	if _, err := readBack(other, 1<<20); err == nil || !bytes.Contains([]byte(err.Error()), []byte("version")) {
		t.Fatalf("another version: %v", err)
	}
	if _, err := readBack(raw, int64(len(raw)-1)); err == nil {
		t.Fatal("a file over the limit: read")
	}
}

// TestSavedSnapshotDamageIgnoredAtRestart: a restarted edge whose saved
// snapshot is damaged (a byte flipped, cut short, another version)
// starts with nothing, as a new edge does, never with part of it.
func TestSavedSnapshotDamageIgnoredAtRestart(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	path := syncedOnDisk(t, dir, fs).snapshots.disk.snapshotPath()
	fs.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	version := bytes.Clone(raw)
	version[len(savedMagic)-1]++
	flipped := bytes.Clone(raw)
	flipped[len(raw)-10] ^= 0x04
	for name, damaged := range map[string][]byte{
		"flipped":   flipped,
		"truncated": raw[:len(raw)-1],
		"version":   version,
	} {
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if snap, _ := restartedOnDisk(t, dir, fs.URL).snapshots.current(); snap != nil {
			t.Errorf("%s: loaded a damaged saved snapshot", name)
		}
	}
}

// TestSavedSnapshotInTheOldForm: a copy saved as JSON by an older edge is
// read, with its confirmation; the next full snapshot saved replaces it
// with the binary form.
func TestSavedSnapshotInTheOldForm(t *testing.T) {
	dir := t.TempDir()
	fs := feedtest.New(t, *testSnapshot(t))
	f := syncedOnDisk(t, dir, fs)
	held, confirmed := f.snapshots.current()
	disk := f.snapshots.disk
	// What an older edge left: the feed's JSON, beside the same
	// confirmation file.
	w := wire.Snapshot{Epoch: held.epoch, Revision: held.revision}
	held.each(func(c *client) { w.Clients = append(w.Clients, c.wire()) })
	old, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk.legacyPath(), old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(disk.snapshotPath()); err != nil {
		t.Fatal(err)
	}

	restarted := restartedOnDisk(t, dir, fs.URL)
	snap, c := restarted.snapshots.current()
	if snap == nil || snap.revision != held.revision || !c.Round(0).Equal(confirmed.Round(0)) {
		t.Fatalf("restarted from the old form with %+v confirmed %v, want revision %d confirmed %v", snap, c, held.revision, confirmed)
	}
	if canonical(t, snap) != canonical(t, held) {
		t.Fatal("the old form read differs from the snapshot saved")
	}

	fs.Update(func(s *wire.Snapshot) { s.Revision++ })
	if err := restarted.poll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(disk.legacyPath()); !os.IsNotExist(err) {
		t.Fatalf("the old form is still there after a full snapshot was saved: %v", err)
	}
	if snap, _ := restartedOnDisk(t, dir, fs.URL).snapshots.current(); snap == nil || snap.revision != held.revision+1 {
		t.Fatalf("restarted from the binary form with %+v", snap)
	}

	// A damaged old form is ignored like a damaged new one.
	if err := os.Remove(disk.snapshotPath()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk.legacyPath(), old[:len(old)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if snap, _ := restartedOnDisk(t, dir, fs.URL).snapshots.current(); snap != nil {
		t.Fatal("a truncated old form was loaded")
	}
}

// FuzzReadSnapshotFile: the reader never panics nor asks for memory the
// file does not justify, and whatever it accepts is a valid snapshot that
// reads back the same once written again. Each input is tried as a whole
// file and, so that the fuzzer gets past the checksum, as a body under a
// header that fits it. Seeds in testdata/fuzz/FuzzReadSnapshotFile.
func FuzzReadSnapshotFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		body := raw
		if len(raw) >= savedHeader && bytes.HasPrefix(raw, []byte(savedMagic)) {
			body = raw[savedHeader:]
		}
		sealed := append(savedHeaderFor(int64(len(body)), crc32.Checksum(body, crcTable)), body...)
		for _, file := range [][]byte{raw, sealed} {
			snap, err := readBack(file, 1<<20)
			if err != nil {
				continue
			}
			again, err := readBack(encodedFile(t, snap), 1<<20)
			if err != nil {
				t.Fatalf("written again, it does not read: %v", err)
			}
			if canonical(t, again) != canonical(t, snap) {
				t.Fatal("written again, it reads differently")
			}
		}
	})
}
