package rotagate

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// savedSnapshot is the copy of the last good snapshot kept in Caddy's data
// directory, so that an edge restarted while the control plane is down
// serves at once — within max_stale, counted from the confirmation time
// saved beside it. The files hold hashes only, never a secret, and are
// written atomically (a temporary file renamed over the old one).
//
//	<data dir>/rotagate/edge/<feed key>.snap       the last full snapshot, binary (savedformat.go)
//	<data dir>/rotagate/edge/<feed key>.changes    the changes applied since, appended
//	<data dir>/rotagate/edge/<feed key>.confirmed  unix nanoseconds, a space, the ETag confirmed
//
// The change log starts with a line naming the ETag of the full snapshot
// it continues, then holds one change (wire.Delta, compact JSON) a line,
// each synced before the edge counts it as saved; a log naming another
// full snapshot, and everything from a torn or unusable line on, is
// ignored. The log is compacted into a new full snapshot (written from
// memory) every compactChanges changes or compactBytes bytes.
//
// Edges before the binary form saved the full snapshot as the feed's JSON
// in <feed key>.json: it is read when there is no .snap, and removed once
// a .snap is written.
//
// The confirmation names the snapshot it confirms, so that it can never be
// read beside another body (a crash between two writes, files copied
// from elsewhere). What a restart may trust of these files is decided by
// snapshotStore.load.
type savedSnapshot struct {
	dir string
	key string
}

func newSavedSnapshot(key string) *savedSnapshot {
	return &savedSnapshot{dir: filepath.Join(caddy.AppDataDir(), "rotagate", "edge"), key: key}
}

func (d *savedSnapshot) snapshotPath() string  { return filepath.Join(d.dir, d.key+".snap") }
func (d *savedSnapshot) legacyPath() string    { return filepath.Join(d.dir, d.key+".json") }
func (d *savedSnapshot) confirmedPath() string { return filepath.Join(d.dir, d.key+".confirmed") }
func (d *savedSnapshot) changesPath() string   { return filepath.Join(d.dir, d.key+".changes") }

// When the change log is compacted into a full snapshot.
const (
	compactChanges = 1000
	compactBytes   = 4 << 20
)

// spool opens a temporary file in the directory, for commit.
func (d *savedSnapshot) spool() (*os.File, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(d.dir, ".tmp-*")
}

// keep makes a body written by writeFull the saved snapshot, atomically,
// and drops the change log of the one before (and a copy in the old
// form).
func (d *savedSnapshot) keep(tmp *os.File) error {
	if err := commit(tmp, d.snapshotPath()); err != nil {
		return err
	}
	return errors.Join(removeIfAny(d.changesPath()), removeIfAny(d.legacyPath()))
}

// appendChange adds one change to the log, synced; first starts a new log
// that continues the full snapshot tagged base.
func (d *savedSnapshot) appendChange(base string, change *wire.Delta, first bool) (int, error) {
	line, err := json.Marshal(change)
	if err != nil {
		return 0, err
	}
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE
	if first {
		flags |= os.O_TRUNC
		line = append([]byte(base+"\n"), line...)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(d.changesPath(), flags, 0o600)
	if err != nil {
		return 0, err
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	return len(line), f.Close()
}

// writeFull writes snap in the binary form to a temporary file, for
// keep.
func (d *savedSnapshot) writeFull(snap *snapshot) (*os.File, error) {
	tmp, err := d.spool()
	if err != nil {
		return nil, err
	}
	err = writeSnapshotFile(tmp, snap)
	if err != nil {
		discard(tmp)
		return nil, err
	}
	return tmp, nil
}

// writeSnapshotFile writes the header (savedformat.go) with a zero
// checksum, then the body, then the header again with the body's length
// and checksum.
func writeSnapshotFile(f *os.File, snap *snapshot) error {
	if _, err := f.Write(savedHeaderFor(0, 0)); err != nil {
		return err
	}
	crc := crc32.New(crcTable)
	counted := &countingWriter{w: io.MultiWriter(f, crc)}
	if err := encodeSnapshot(bufio.NewWriterSize(counted, 1<<16), snap); err != nil {
		return err
	}
	_, err := f.WriteAt(savedHeaderFor(counted.n, crc.Sum32()), 0)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func removeIfAny(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// commit syncs and closes a temporary file and renames it to path; the
// temporary file is gone either way.
func commit(tmp *os.File, path string) error {
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// discard drops a spooled body.
func discard(tmp *os.File) {
	if tmp != nil {
		tmp.Close()
		os.Remove(tmp.Name())
	}
}

// forget removes the saved snapshot, its changes and its confirmation
// time.
func (d *savedSnapshot) forget() error {
	return errors.Join(removeIfAny(d.snapshotPath()), removeIfAny(d.legacyPath()), removeIfAny(d.changesPath()), removeIfAny(d.confirmedPath()))
}

// saveConfirmed writes that the snapshot tagged etag was current at t.
func (d *savedSnapshot) saveConfirmed(t time.Time, etag string) error {
	tmp, err := d.spool()
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(strconv.FormatInt(t.UnixNano(), 10) + " " + etag); err != nil {
		discard(tmp)
		return err
	}
	return commit(tmp, d.confirmedPath())
}

// savedState is what load found on disk.
type savedState struct {
	snap      *snapshot
	confirmed time.Time // zero: no confirmation of this very snapshot
	// changes and changeBytes measure the change log replayed: the store
	// goes on appending to it.
	changes     int
	changeBytes int64
}

// load reads the saved snapshot, at most limit bytes of it, replays the
// changes logged since, and reads the time the result was confirmed. A
// missing snapshot is a zero state; a damaged one is an error. A damaged
// change log ends the replay where it stops making sense: the snapshot
// is then older, and its confirmation (which names the newest) is not
// trusted.
func (d *savedSnapshot) load(limit int64, logger *zap.Logger) (savedState, error) {
	snap, err := d.loadFull(limit, logger)
	if err != nil {
		return savedState{}, fmt.Errorf("saved snapshot: %w", err)
	}
	if snap == nil {
		return savedState{}, nil
	}
	st := savedState{snap: snap}
	if err := d.replay(&st, limit); err != nil {
		st.changes = compactChanges // the next change writes the snapshot whole, past the damage
		logger.Warn("the saved change log ends early; the snapshot is older than the one last confirmed", zap.Error(err))
	}
	if raw, err := os.ReadFile(d.confirmedPath()); err == nil {
		at, etag, _ := strings.Cut(string(raw), " ")
		n, err := strconv.ParseInt(at, 10, 64)
		if err == nil && etag == wire.ETag(st.snap.epoch, st.snap.revision) {
			st.confirmed = time.Unix(0, n)
		}
	}
	return st, nil
}

// loadFull reads the full snapshot saved, in the binary form, or else in
// the JSON form of older edges; nil when there is none.
func (d *savedSnapshot) loadFull(limit int64, logger *zap.Logger) (*snapshot, error) {
	f, err := os.Open(d.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		return d.loadLegacy(limit, logger)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readSnapshotFile(f, info.Size(), limit)
}

// loadLegacy reads a full snapshot saved as JSON by an older edge.
func (d *savedSnapshot) loadLegacy(limit int64, logger *zap.Logger) (*snapshot, error) {
	f, err := os.Open(d.legacyPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ans, err := decodeAnswer(f, limit, nil)
	if err == nil && ans.full == nil {
		err = errors.New("a change, not a snapshot")
	}
	if err != nil {
		return nil, fmt.Errorf("in the JSON form of older edges: %w", err)
	}
	logger.Info("read the saved snapshot in the JSON form of older edges; the next one is saved in the binary form")
	return ans.full, nil
}

// replay applies the saved change log to st, as far as it goes.
func (d *savedSnapshot) replay(st *savedState, limit int64) error {
	f, err := os.Open(d.changesPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReader(io.LimitReader(f, limit))
	head, err := r.ReadString('\n')
	if err != nil || strings.TrimSuffix(head, "\n") != wire.ETag(st.snap.epoch, st.snap.revision) {
		return nil // the log of another snapshot: left from a crash before its removal
	}
	st.changeBytes = int64(len(head))
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("change %d: torn", st.changes+1)
		}
		var w wire.Delta
		if err := json.Unmarshal(line, &w); err != nil {
			return fmt.Errorf("change %d: %w", st.changes+1, err)
		}
		dl, err := newDelta(&w)
		if err != nil {
			return fmt.Errorf("change %d: %w", st.changes+1, err)
		}
		next, err := st.snap.apply(dl)
		if err != nil {
			return fmt.Errorf("change %d: %w", st.changes+1, err)
		}
		st.snap = next
		st.changes++
		st.changeBytes += int64(len(line))
	}
}
