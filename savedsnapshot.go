package rotagate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rotagate/rotagate/internal/wire"
)

// savedSnapshot is the copy of the last good snapshot kept in Caddy's data
// directory, so that an edge restarted while the control plane is down
// serves at once — within max_stale, counted from the confirmation time
// saved beside it. The files hold hashes only, never a secret, and are
// written atomically (a temporary file renamed over the old one).
//
//	<data dir>/rotagate/edge/<feed key>.json       the feed's last 200 body
//	<data dir>/rotagate/edge/<feed key>.confirmed  unix nanoseconds, a space, the ETag confirmed
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

func (d *savedSnapshot) snapshotPath() string  { return filepath.Join(d.dir, d.key+".json") }
func (d *savedSnapshot) confirmedPath() string { return filepath.Join(d.dir, d.key+".confirmed") }

// spool opens a temporary file in the directory: a snapshot body is copied
// into it while it is decoded, and keep renames it into place once the
// snapshot is applied.
func (d *savedSnapshot) spool() (*os.File, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(d.dir, ".tmp-*")
}

// keep makes a spooled body the saved snapshot, atomically.
func (d *savedSnapshot) keep(tmp *os.File) error { return commit(tmp, d.snapshotPath()) }

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

// forget removes the saved snapshot and its confirmation time.
func (d *savedSnapshot) forget() error {
	err := os.Remove(d.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err2 := os.Remove(d.confirmedPath()); err2 != nil && !errors.Is(err2, os.ErrNotExist) && err == nil {
		err = err2
	}
	return err
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

// load reads the saved snapshot, at most limit bytes of it, and the time
// it was confirmed. A missing snapshot is (nil, zero, nil); a damaged one
// is an error. The time is zero when no confirmation of this very snapshot
// was saved.
func (d *savedSnapshot) load(limit int64) (*snapshot, time.Time, error) {
	f, err := os.Open(d.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	snap, err := decodeSnapshot(f, limit, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("saved snapshot: %w", err)
	}
	var confirmed time.Time
	if raw, err := os.ReadFile(d.confirmedPath()); err == nil {
		at, etag, _ := strings.Cut(string(raw), " ")
		n, err := strconv.ParseInt(at, 10, 64)
		if err == nil && etag == wire.ETag(snap.epoch, snap.revision) {
			confirmed = time.Unix(0, n)
		}
	}
	return snap, confirmed, nil
}
