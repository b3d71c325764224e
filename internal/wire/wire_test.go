package wire

import (
	"encoding/json"
	"testing"
	"time"
)

func TestETagRoundTrip(t *testing.T) {
	tag := ETag("ep0ch.with.dots", 42)
	if tag != `"ep0ch.with.dots.42"` {
		t.Fatalf("ETag = %s", tag)
	}
	epoch, rev, ok := ParseETag("W/" + tag)
	if !ok || epoch != "ep0ch.with.dots" || rev != 42 {
		t.Fatalf("ParseETag = %q %d %v", epoch, rev, ok)
	}
	for _, bad := range []string{"", `"`, `""`, `"abc"`, `".5"`, `"e.-1"`, `"e.x"`, `e.1`} {
		if _, _, ok := ParseETag(bad); ok {
			t.Errorf("ParseETag(%q) accepted", bad)
		}
	}
}

// TestOptionalFieldsKeepTheOldShape: a batch without callers, and a
// client without networks, marshal exactly as before those fields
// existed, so the previous version reads what this one writes.
func TestOptionalFieldsKeepTheOldShape(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	raw, err := json.Marshal(Usage{Edge: "e", Stamps: []Stamp{{ClientID: "c", SecretID: "sec_a", LastUsedAt: at, From: "192.0.2.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"edge":"e","stamps":[{"client_id":"c","secret_id":"sec_a","last_used_at":"2030-01-02T03:04:05Z","from":"192.0.2.1"}]}`; string(raw) != want {
		t.Fatalf("usage batch:\n%s\nwant\n%s", raw, want)
	}
	raw, err = json.Marshal(Client{ClientID: "c", Secrets: []Secret{{ID: "sec_a", Hash: "sha256:x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"client_id":"c","secrets":[{"id":"sec_a","hash":"sha256:x"}]}`; string(raw) != want {
		t.Fatalf("snapshot client:\n%s\nwant\n%s", raw, want)
	}
}
