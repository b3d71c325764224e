package rotagate

import (
	"runtime/debug"
	"sync"
)

// gcPause counts the snapshot builds that hold the collector off, and
// keeps the setting to give back when the last one ends.
var gcPause struct {
	sync.Mutex
	holds   int
	percent int
}

// pauseGC holds the garbage collector off while a snapshot is built
// from nothing — a restart's saved copy, a cold sync — and returns the
// function that lets it run again (once; more calls do nothing). Such a
// build allocates what it keeps, so a collection during it frees almost
// nothing; yet, paced by a heap growing from nothing, the collector marked
// the growing snapshot eight times and, at a million clients, once whole
// near the end: 1–2 s of CPU before the edge could serve. With the pause
// it marks the snapshot once, after the build, concurrently with serving.
// GOMEMLIMIT (which Caddy sets) still bounds the heap meanwhile; a
// process run with GOGC=off stays so.
func pauseGC() (resume func()) {
	gcPause.Lock()
	defer gcPause.Unlock()
	if gcPause.holds == 0 {
		gcPause.percent = debug.SetGCPercent(-1)
	}
	gcPause.holds++
	return sync.OnceFunc(func() {
		gcPause.Lock()
		defer gcPause.Unlock()
		if gcPause.holds--; gcPause.holds == 0 {
			debug.SetGCPercent(gcPause.percent)
		}
	})
}
