package rotagate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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
// keeps its spooled body (nil: none) as the disk copy. A rollback is
// refused and leaves everything as it was.
func (s *snapshotStore) replace(next *snapshot, spooled *os.File, sent time.Time) error {
	cur := s.snap.Load()
	if cur != nil && next.epoch == cur.epoch && next.revision < cur.revision {
		if s.guarded.Load() {
			discard(spooled)
			return fmt.Errorf("revision %d is older than the %d held (rollback)", next.revision, cur.revision)
		}
		s.logger.Info("the control plane's first answer is older than the saved snapshot; taking it, since the saved copy is no rollback floor",
			zap.Int64("revision", next.revision), zap.Int64("saved_revision", cur.revision))
	}
	s.snap.Store(next)
	s.guarded.Store(true)
	s.confirm(sent)
	s.keep(next, spooled)
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
	spooled, err := s.disk.writeFull(next)
	if err != nil {
		s.logger.Warn("writing the snapshot to disk failed", zap.Error(err))
	}
	s.keepLocked(next, spooled)
}

// keep saves a newly applied snapshot's spooled body and its confirmation
// time. When the body could not be saved, the older saved copy is removed
// rather than left to serve a restart.
func (s *snapshotStore) keep(next *snapshot, spooled *os.File) {
	if s.disk == nil {
		discard(spooled)
		return
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	s.keepLocked(next, spooled)
}

func (s *snapshotStore) keepLocked(next *snapshot, spooled *os.File) {
	s.changes, s.changeBytes = 0, 0
	if spooled != nil {
		err := s.disk.keep(spooled)
		if err == nil {
			s.savedTag = wire.ETag(next.epoch, next.revision)
			s.saveConfirmedLocked()
			return
		}
		s.logger.Warn("saving the snapshot to disk failed", zap.Error(err))
	}
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
//   - the body, once it decodes and validates as a feed answer would, and
//     fits in limit;
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
	st, err := s.disk.load(limit, s.logger)
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

// decode reads and validates a whole 200 body — a full snapshot or a
// change — at most limit bytes of it, building a full snapshot on prev
// (the one held, whose unchanged clients it shares). The body is streamed
// into the decoder, and into a spool file when the store keeps a disk copy,
// so the raw bytes are never held in memory beside the old and the new
// snapshot. The spool file (a full snapshot's only) is returned for
// replace to keep, or nil.
func (s *snapshotStore) decode(body io.Reader, limit int64, prev *snapshot) (feedAnswer, *os.File, error) {
	var spool *lazySpool
	var copied *bestEffortWriter
	if s.disk != nil {
		spool = &lazySpool{disk: s.disk}
		copied = &bestEffortWriter{w: spool}
	}
	ans, err := decodeAnswer(body, limit, copied, prev)
	if err != nil || ans.full == nil || (copied != nil && copied.err != nil) {
		spool.discard()
	}
	if err != nil {
		return feedAnswer{}, nil, err
	}
	if ans.full == nil || spool == nil {
		return ans, nil, nil
	}
	if copied.err == nil {
		copied.err = spool.flush()
	}
	if copied.err != nil {
		s.logger.Warn("saving the snapshot to disk failed", zap.Error(copied.err))
		spool.discard()
		return ans, nil, nil
	}
	return ans, spool.f, nil
}

// lazySpool holds the first spoolInMemory bytes of a body in memory and
// opens the spool file only past them: a change (a few hundred bytes,
// kept in the change log, not as a body) never touches the disk here.
type lazySpool struct {
	disk *savedSnapshot
	buf  []byte
	f    *os.File
}

const spoolInMemory = 64 << 10

func (l *lazySpool) Write(p []byte) (int, error) {
	if l.f == nil && len(l.buf)+len(p) <= spoolInMemory {
		l.buf = append(l.buf, p...)
		return len(p), nil
	}
	if err := l.flush(); err != nil {
		return 0, err
	}
	return l.f.Write(p)
}

// flush opens the spool file, if not yet, and writes what is held.
func (l *lazySpool) flush() error {
	if l.f == nil {
		f, err := l.disk.spool()
		if err != nil {
			return err
		}
		l.f = f
	}
	_, err := l.f.Write(l.buf)
	l.buf = nil
	return err
}

func (l *lazySpool) discard() {
	if l != nil {
		discard(l.f)
		l.f, l.buf = nil, nil
	}
}

// bestEffortWriter copies to w until the first error, which it keeps
// instead of returning: the disk copy is a convenience, and a full disk
// must not make the edge refuse good snapshots.
type bestEffortWriter struct {
	w   io.Writer
	err error
}

func (b *bestEffortWriter) Write(p []byte) (int, error) {
	if b.err == nil {
		_, b.err = b.w.Write(p)
	}
	return len(p), nil
}

// feedAnswer is a decoded 200: a full snapshot, or a change with its wire
// form (which the disk copy appends).
type feedAnswer struct {
	full  *snapshot
	delta *delta
	wire  *wire.Delta
}

// decodeAnswer decodes one feed answer of at most limit bytes from body,
// copying what it reads to copyTo when that is not nil. It reads the JSON
// token by token: a full snapshot's clients go one at a time, validated,
// straight into the shards of the snapshot being built (no intermediate
// copy of the whole answer), so a swap holds little more than the old and
// the new snapshot — and, since clients that did not change are shared
// with prev, little more than one. A body with "clients" is a full
// snapshot; one with "since" and no "clients", a change.
func decodeAnswer(body io.Reader, limit int64, copyTo *bestEffortWriter, prev *snapshot) (feedAnswer, error) {
	counted := &io.LimitedReader{R: body, N: limit + 1}
	in := io.Reader(counted)
	if copyTo != nil {
		in = io.TeeReader(counted, copyTo)
	}
	ans, err := decodeTokens(json.NewDecoder(in), prev)
	if err == nil { // the rest (trailing space) belongs in the saved copy
		_, err = io.Copy(io.Discard, in)
	}
	if counted.N <= 0 {
		return feedAnswer{}, fmt.Errorf("larger than max_snapshot_bytes (%d)", limit)
	}
	if err != nil {
		return feedAnswer{}, fmt.Errorf("decoding: %w", err)
	}
	return ans, nil
}

// decodeTokens reads the top-level object of a feed answer.
func decodeTokens(dec *json.Decoder, prev *snapshot) (feedAnswer, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return feedAnswer{}, err
	}
	var (
		epoch           string
		rev, since      int64
		hasSince        bool
		full            *snapshotBuilder
		changed         []wire.Client
		removed         []string
		hasChange, seen = false, map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return feedAnswer{}, err
		}
		key, _ := tok.(string)
		if seen[key] {
			return feedAnswer{}, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "epoch":
			err = dec.Decode(&epoch)
		case "revision":
			err = dec.Decode(&rev)
		case "since":
			hasSince = true
			err = dec.Decode(&since)
		case "clients":
			full = newSnapshotBuilder(prev)
			err = decodeClients(dec, full)
		case "changed":
			hasChange = true
			err = dec.Decode(&changed)
		case "removed":
			hasChange = true
			err = dec.Decode(&removed)
		default: // a field this edge does not know
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return feedAnswer{}, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return feedAnswer{}, err
	}
	if dec.More() {
		return feedAnswer{}, errors.New("data after the snapshot")
	}
	switch {
	case full != nil && hasChange:
		return feedAnswer{}, errors.New("both a full snapshot and a change")
	case full == nil && hasSince:
		w := &wire.Delta{Epoch: epoch, Revision: rev, Since: since, Changed: changed, Removed: removed}
		d, err := newDelta(w)
		return feedAnswer{delta: d, wire: w}, err
	case hasChange:
		return feedAnswer{}, errors.New("a change without since")
	case full == nil: // no clients at all
		full = newSnapshotBuilder(prev)
	}
	snap, err := full.finish(epoch, rev)
	return feedAnswer{full: snap}, err
}

// decodeClients reads the clients array of a full snapshot (or null)
// into b, one client at a time.
func decodeClients(dec *json.Decoder, b *snapshotBuilder) error {
	tok, err := dec.Token()
	if err != nil || tok == nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return errors.New("clients is not an array")
	}
	// One wire.Client is decoded into again and again: its slices are
	// cleared (a stale expires_at must not survive into the next client)
	// and reused, which spares a few allocations per client.
	var wc wire.Client
	for dec.More() {
		clear(wc.Secrets[:cap(wc.Secrets)])
		clear(wc.Tombstones[:cap(wc.Tombstones)])
		wc = wire.Client{Secrets: wc.Secrets[:0], Tombstones: wc.Tombstones[:0]}
		if err := dec.Decode(&wc); err != nil {
			return err
		}
		if err := b.add(&wc); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}
