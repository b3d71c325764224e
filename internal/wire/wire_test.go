package wire

import "testing"

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
