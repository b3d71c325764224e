package rotagate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// benchClients is the size of the swap benchmarks, as the -scale harness
// builds it: two sha256 secrets a client, every tenth second one expiring.
const benchClients = 100_000

func benchSnapshotJSON(b testing.TB, rev int64, n int) []byte {
	b.Helper()
	exp := testNow.Add(24 * time.Hour)
	w := wire.Snapshot{Epoch: "bench", Revision: rev, Clients: make([]wire.Client, n)}
	for i := range n {
		c := wire.Client{ClientID: fmt.Sprintf("client-%06d", i), Secrets: make([]wire.Secret, 2)}
		for j := range 2 {
			secret := fmt.Sprintf("rgs_bench_%06d_%d", i, j)
			if i == n-1 && j == 1 {
				secret += fmt.Sprint("_rev", rev) // one client changes a revision
			}
			c.Secrets[j] = wire.Secret{ID: fmt.Sprintf("sec_%020d", 2*i+j), Hash: secrethash.NewSHA256(secret)}
			if j == 1 && i%10 == 0 {
				c.Secrets[j].ExpiresAt = &exp
			}
		}
		w.Clients[i] = c
	}
	raw, err := json.Marshal(&w)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// TestFullSwapReusesRecords: decoding a full answer against the snapshot
// held keeps the record of every client that did not change, so its
// allocations do not grow with the number of clients (the decoder reads
// member names without making strings of them). The fixed part (the shard
// maps) is measured away by comparing two sizes.
func TestFullSwapReusesRecords(t *testing.T) {
	swapAllocs := func(n int) float64 {
		held, next := benchSnapshotJSON(t, 1, n), benchSnapshotJSON(t, 2, n)
		ans, err := decodeAnswer(bytes.NewReader(held), 1<<30, nil)
		if err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(3, func() {
			if _, err := decodeAnswer(bytes.NewReader(next), 1<<30, ans.full); err != nil {
				t.Fatal(err)
			}
		})
	}
	const small, large = 2000, 8000
	a, b := swapAllocs(small), swapAllocs(large)
	if perClient := (b - a) / (large - small); perClient > 0.25 {
		t.Fatalf("%.2f allocations per unchanged client (%.0f for %d, %.0f for %d)", perClient, a, small, b, large)
	}
}

// BenchmarkFullSwap: a full answer of benchClients clients in which one
// changed, decoded on the snapshot held. B/op is the garbage a swap makes
// beyond the shared records: what drives the heap's peak over live.
func BenchmarkFullSwap(b *testing.B) {
	held, next := benchSnapshotJSON(b, 1, benchClients), benchSnapshotJSON(b, 2, benchClients)
	ans, err := decodeAnswer(bytes.NewReader(held), 1<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := decodeAnswer(bytes.NewReader(next), 1<<30, ans.full); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkColdDecode: a full answer of benchClients clients with nothing
// held (a cold sync). B/op includes the snapshot built.
func BenchmarkColdDecode(b *testing.B) {
	body := benchSnapshotJSON(b, 1, benchClients)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := decodeAnswer(bytes.NewReader(body), 1<<30, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadSaved: reading the saved binary copy of benchClients
// clients, as a restart does.
func BenchmarkLoadSaved(b *testing.B) {
	ans, err := decodeAnswer(bytes.NewReader(benchSnapshotJSON(b, 1, benchClients)), 1<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "snap")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := writeSnapshotFile(f, ans.full); err != nil {
		b.Fatal(err)
	}
	f.Close()
	size := fileSize(b, path)
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := readSnapshotFile(f, size, 1<<30); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func fileSize(b *testing.B, path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return info.Size()
}
