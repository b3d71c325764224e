package rotagate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rotagate/rotagate/internal/wire"
)

// The last good snapshot is kept in Caddy's data directory, so that an edge
// restarted while the control plane is down serves at once — within
// max_stale, counted from the confirmation time saved beside it. The files
// hold hashes only, never a secret, and are written atomically (a temporary
// file renamed over the old one).
//
//	<data dir>/rotagate/edge/<feed key>.json       the feed's last 200 body
//	<data dir>/rotagate/edge/<feed key>.confirmed  unix nanoseconds
type diskCache struct {
	dir string
	key string
}

func newDiskCache(key string) diskCache {
	return diskCache{dir: filepath.Join(caddy.AppDataDir(), "rotagate", "edge"), key: key}
}

func (d diskCache) snapshotPath() string  { return filepath.Join(d.dir, d.key+".json") }
func (d diskCache) confirmedPath() string { return filepath.Join(d.dir, d.key+".confirmed") }

// spool opens a temporary file in the cache's directory: a snapshot body
// is copied into it while it is decoded, and keep renames it into place
// once the snapshot is applied.
func (d diskCache) spool() (*os.File, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(d.dir, ".tmp-*")
}

// keep makes a spooled body the saved snapshot, atomically.
func (d diskCache) keep(tmp *os.File) error { return commit(tmp, d.snapshotPath()) }

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
func (d diskCache) forget() error {
	err := os.Remove(d.snapshotPath())
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err2 := os.Remove(d.confirmedPath()); err2 != nil && !errors.Is(err2, os.ErrNotExist) && err == nil {
		err = err2
	}
	return err
}

// saveConfirmed writes the confirmation time.
func (d diskCache) saveConfirmed(t time.Time) error {
	return d.write(d.confirmedPath(), []byte(strconv.FormatInt(t.UnixNano(), 10)))
}

// write replaces path with data, atomically.
func (d diskCache) write(path string, data []byte) error {
	tmp, err := d.spool()
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		discard(tmp)
		return err
	}
	return commit(tmp, path)
}

// load reads the saved snapshot and its confirmation time. A missing file
// is (nil, zero, nil); a damaged one is an error and is ignored by callers.
func (d diskCache) load() (*snapshot, time.Time, error) {
	raw, err := os.ReadFile(d.snapshotPath())
	if os.IsNotExist(err) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	var w wire.Snapshot
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, time.Time{}, fmt.Errorf("saved snapshot: %w", err)
	}
	snap, err := newSnapshot(&w)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("saved snapshot: %w", err)
	}
	var confirmed time.Time
	if c, err := os.ReadFile(d.confirmedPath()); err == nil {
		if n, err := strconv.ParseInt(string(c), 10, 64); err == nil {
			confirmed = time.Unix(0, n)
		}
	}
	return snap, confirmed, nil
}
