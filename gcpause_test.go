package rotagate

import (
	"runtime/debug"
	"testing"
)

// gcPercent reads the collector's setting.
func gcPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p)
	return p
}

// pauseGC holds the collector off until the last of overlapping pauses
// ends, then gives back the setting found, whatever order they end in
// and however often each resume is called.
func TestPauseGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	first := pauseGC()
	if p := gcPercent(); p != -1 {
		t.Fatalf("paused: GC percent %d", p)
	}
	second := pauseGC()
	first()
	first()
	if p := gcPercent(); p != -1 {
		t.Fatalf("one of two pauses ended: GC percent %d", p)
	}
	second()
	if p := gcPercent(); p != 150 {
		t.Fatalf("both ended: GC percent %d, want the 150 set before", p)
	}
	// A process run with GOGC=off stays so.
	debug.SetGCPercent(-1)
	pauseGC()()
	if p := gcPercent(); p != -1 {
		t.Fatalf("GOGC=off: GC percent %d after a pause", p)
	}
}
