package rotagate

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// snapshotStore holds the edge's snapshot, the time the control plane last
// confirmed it, and its copy on disk, and keeps the three in step:
//
//   - the confirmation only moves forward, on the monotonic clock;
//   - a confirmation is never saved beside an older body, nor read beside
//     another one (the saved confirmation names its snapshot);
//   - a confirmation read from disk is never trusted beyond the present;
//   - the rollback guard holds against what the control plane sent this
//     process, never against the disk copy.
//
// Handlers read it on every request (current); only the sync loop writes.
type snapshotStore struct {
	snap atomic.Pointer[snapshot]
	// confirmed is the send time of the newest request that the control
	// plane answered 200 or 304, in nanoseconds since base: the staleness
	// check runs on the monotonic clock, so that a wall-clock step cannot
	// stretch the revocation bound.
	confirmed atomic.Int64
	base      time.Time
	// guarded is set once the snapshot held came from the control plane in
	// this process (a 200, or a 304 for the one loaded from disk): from
	// then on a lower revision of the same epoch is a rollback.
	guarded atomic.Bool

	logger *zap.Logger
	disk   *savedSnapshot // nil: nothing saved
	diskMu sync.Mutex
	// savedTag is the ETag of the snapshot on disk (the full body and the
	// change log after it), "" when there is none: a confirmation is
	// saved only while it is the snapshot held.
	savedTag string
	// changes and changeBytes measure the change log on disk.
	changes     int
	changeBytes int64
}

func newSnapshotStore(disk *savedSnapshot, logger *zap.Logger) *snapshotStore {
	s := &snapshotStore{base: time.Now(), disk: disk, logger: logger}
	s.confirmed.Store(math.MinInt64) // never confirmed
	return s
}

// current returns the snapshot and the time it was last confirmed.
func (s *snapshotStore) current() (*snapshot, time.Time) {
	return s.snap.Load(), s.base.Add(time.Duration(s.confirmed.Load()))
}

// confirm records that the snapshot was current at t, keeping the newest.
func (s *snapshotStore) confirm(t time.Time) {
	n := int64(t.Sub(s.base))
	for {
		old := s.confirmed.Load()
		if n <= old || s.confirmed.CompareAndSwap(old, n) {
			return
		}
	}
}

// unchanged records a 304 to a request sent at sent for held: the
// control plane still had it then.
func (s *snapshotStore) unchanged(held *snapshot, sent time.Time) {
	if s.snap.Load() != held {
		return
	}
	s.guarded.Store(true)
	s.confirm(sent)
	s.diskMu.Lock()
	s.saveConfirmedLocked()
	s.diskMu.Unlock()
}

// replace puts next, answered to a request sent at sent, in force, and
// saves it as the disk copy. A rollback is refused and leaves everything
// as it was.
func (s *snapshotStore) replace(next *snapshot, sent time.Time) error {
	cur := s.snap.Load()
	if cur != nil && next.epoch == cur.epoch && next.revision < cur.revision {
		if s.guarded.Load() {
			return fmt.Errorf("revision %d is older than the %d held (rollback)", next.revision, cur.revision)
		}
		s.logger.Info("the control plane's first answer is older than the saved snapshot; taking it, since the saved copy is no rollback floor",
			zap.Int64("revision", next.revision), zap.Int64("saved_revision", cur.revision))
	}
	s.snap.Store(next)
	s.guarded.Store(true)
	s.confirm(sent)
	s.keep(next)
	return nil
}

// errUnusableChange is an answer with a change that does not follow the
// snapshot held: the feed asks for a full snapshot instead.
var errUnusableChange = errors.New("the change does not follow the snapshot held")

// applyChange applies a change answered to a request sent at sent: the
// shards it touches are copied, the rest shared. A change that does not
// follow the snapshot held (another epoch, another base revision) is
// refused with errUnusableChange, and leaves everything as it was.
func (s *snapshotStore) applyChange(ans feedAnswer, sent time.Time) error {
	cur := s.snap.Load()
	if cur == nil {
		return fmt.Errorf("%w: none is held", errUnusableChange)
	}
	next, err := cur.apply(ans.delta)
	if err != nil {
		return fmt.Errorf("%w: %v", errUnusableChange, err)
	}
	s.snap.Store(next)
	s.guarded.Store(true)
	s.confirm(sent)
	s.keepChange(cur, next, ans.wire)
	return nil
}

// keepChange appends a change to the disk copy, when the disk holds the
// snapshot it follows, and compacts the log into a full snapshot now and
// then. A confirmation is saved only after the change it confirms is.
func (s *snapshotStore) keepChange(cur, next *snapshot, change *wire.Delta) {
	if s.disk == nil {
		return
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	base := wire.ETag(cur.epoch, cur.revision)
	if s.savedTag == base && s.changes < compactChanges && s.changeBytes < compactBytes {
		n, err := s.disk.appendChange(s.savedTag, change, s.changes == 0)
		if err == nil {
			s.savedTag = wire.ETag(next.epoch, next.revision)
			s.changes++
			s.changeBytes += int64(n)
			s.saveConfirmedLocked()
			return
		}
		s.logger.Warn("appending the change to the saved snapshot failed; writing it whole", zap.Error(err))
	}
	s.keepLocked(next)
}

// keep saves a newly applied snapshot whole, with its confirmation time.
func (s *snapshotStore) keep(next *snapshot) {
	if s.disk == nil {
		return
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	s.keepLocked(next)
}

func (s *snapshotStore) keepLocked(next *snapshot) {
	tmp, err := s.disk.writeFull(next)
	if err == nil {
		err = s.disk.keep(tmp)
	}
	s.keptLocked(next, err)
}

// keptLocked records how saving next went: saved, its confirmation time
// goes beside it; not saved, the older saved copy is removed rather than
// left to serve a restart.
func (s *snapshotStore) keptLocked(next *snapshot, err error) {
	s.changes, s.changeBytes = 0, 0
	if err == nil {
		s.savedTag = wire.ETag(next.epoch, next.revision)
		s.saveConfirmedLocked()
		return
	}
	s.logger.Warn("saving the snapshot to disk failed", zap.Error(err))
	s.savedTag = ""
	if err := s.disk.forget(); err != nil {
		s.logger.Warn("removing the outdated saved snapshot failed", zap.Error(err))
	}
}

// saveConfirmedLocked writes the confirmation time beside the saved body,
// if that body is the snapshot held. A failure is logged: the edge works
// on.
func (s *snapshotStore) saveConfirmedLocked() {
	snap, confirmed := s.current()
	if s.disk == nil || snap == nil || s.savedTag != wire.ETag(snap.epoch, snap.revision) {
		return
	}
	if err := s.disk.saveConfirmed(confirmed, s.savedTag); err != nil {
		s.logger.Warn("saving the snapshot's confirmation time failed", zap.Error(err))
	}
}

// load starts the store from the snapshot saved by an earlier run, if
// any, before anything was heard from the control plane. Of the disk copy
// it trusts:
//
//   - the body, once it reads whole (its checksum, version and length
//     right), validates as a feed answer would, and fits in limit;
//   - the confirmation time, only if it names this body and is not ahead
//     of the clock. A time from the future means the clock was stepped
//     back or the data directory came from another machine: by how much is
//     unknowable, so the snapshot counts as never confirmed (503 until the
//     control plane answers) rather than as confirmed now, which would
//     stretch the bound by the size of the step;
//   - not the revision as a rollback floor. A restart is when the store
//     behind the control plane may have been restored from a backup (or
//     the data directory copied from a newer edge); refusing every answer
//     older than the disk copy would leave the edge unconfirmed, answering
//     503, until the store's revision climbed past it. The control plane's
//     first answer is taken as a new edge would take it, and guards from
//     then on.
func (s *snapshotStore) load(limit int64) {
	if s.disk == nil {
		return
	}
	resume := pauseGC()
	st, err := s.disk.load(limit, s.logger)
	resume()
	if err != nil {
		s.logger.Warn("ignoring the saved snapshot", zap.Error(err))
		return
	}
	snap, confirmed := st.snap, st.confirmed
	if snap == nil {
		return
	}
	s.diskMu.Lock()
	s.savedTag = wire.ETag(snap.epoch, snap.revision)
	s.changes, s.changeBytes = st.changes, st.changeBytes
	s.diskMu.Unlock()
	s.snap.Store(snap)
	if now := time.Now(); confirmed.After(now) {
		s.logger.Warn("the saved confirmation time is ahead of the clock (a clock stepped back, or a data directory copied from elsewhere); the saved snapshot counts as unconfirmed",
			zap.Time("saved", confirmed), zap.Duration("ahead", confirmed.Sub(now)))
		confirmed = time.Time{}
	}
	if !confirmed.IsZero() { // without a confirmation it counts as stale
		s.confirm(confirmed)
	}
	s.logger.Info("loaded the saved snapshot", zap.Int64("revision", snap.revision), zap.Time("confirmed", confirmed))
}
