package rotagate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// feeds holds one feed per (control plane URLs, token) in this process,
// shared by every handler that uses it and carried across config reloads:
// a reload provisions the new handlers (which find the running feed) before
// it cleans up the old ones.
var feeds = caddy.NewUsagePool()

// feedConfig is what a handler asks of its feed.
type feedConfig struct {
	urls     []string
	token    string
	wait     time.Duration
	maxBytes int64
	flush    time.Duration
}

func (c feedConfig) key() string {
	h := sha256.Sum256([]byte(strings.Join(c.urls, "\n") + "\x00" + c.token))
	return hex.EncodeToString(h[:])
}

// feed keeps the edge's snapshot in step with the control plane by
// long-polling its edge feed, and carries the usage recorder that reports
// last-used stamps back.
type feed struct {
	key      string
	urls     []string
	token    string
	client   *http.Client
	logger   *zap.Logger
	wait     atomic.Int64 // long-poll wait, nanoseconds
	maxBytes atomic.Int64

	snap atomic.Pointer[snapshot]
	// confirmed is the send time of the newest request that the control
	// plane answered 200 or 304: the snapshot is known to have been current
	// then.
	confirmed atomic.Int64
	// base anchors confirmed: it holds nanoseconds since base, so that the
	// staleness check runs on the monotonic clock and a wall-clock step
	// cannot stretch the revocation bound.
	base time.Time

	usage *usageRecorder
	disk  *diskCache // nil: nothing saved
	// savedCurrent is set while the saved snapshot is the one in force, so
	// that a confirmation is never written beside an older body.
	savedCurrent atomic.Bool

	cancel context.CancelFunc
	done   sync.WaitGroup
	// restartPause is how long a panicked loop waits before it restarts.
	restartPause time.Duration
}

// acquireFeed returns the running feed for cfg, or starts one: a first
// fetch bounded by a short timeout, then the background loops.
func acquireFeed(ctx caddy.Context, cfg feedConfig) (*feed, error) {
	v, loaded, err := feeds.LoadOrNew(cfg.key(), func() (caddy.Destructor, error) {
		f := newFeed(cfg, caddy.Log().Named("client_credentials"))
		disk := newDiskCache(f.key)
		f.disk = &disk
		f.start(ctx)
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	f := v.(*feed)
	if loaded {
		// The tightest wait and the largest size limit of the handlers
		// sharing the feed win.
		if w := int64(cfg.wait); w < f.wait.Load() {
			f.wait.Store(w)
		}
		if cfg.maxBytes > f.maxBytes.Load() {
			f.maxBytes.Store(cfg.maxBytes)
		}
	}
	return f, nil
}

func newFeed(cfg feedConfig, logger *zap.Logger) *feed {
	f := &feed{
		key:    cfg.key(),
		urls:   cfg.urls,
		token:  cfg.token,
		client: &http.Client{},
		logger: logger,

		restartPause: time.Second,
	}
	f.base = time.Now()
	f.confirmed.Store(math.MinInt64) // never confirmed
	f.wait.Store(int64(cfg.wait))
	f.maxBytes.Store(cfg.maxBytes)
	f.usage = newUsageRecorder(f, cfg.flush, logger.Named("usage"))
	return f
}

// start makes a first fetch (bounded by a few seconds, so provisioning
// stays fast) and then runs the sync and usage loops until the feed is
// destructed. Their context keeps the Caddy context's values but not its
// cancellation: the feed outlives the config that started it.
func (f *feed) start(parent context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	f.cancel = cancel
	f.loadSaved()
	first, stop := context.WithTimeout(ctx, min(3*time.Second, time.Duration(f.wait.Load())))
	if err := f.poll(first, false); err != nil {
		f.logger.Info("first snapshot fetch failed; retrying in the background", zap.Error(err))
	}
	stop()
	f.goSafe("sync", func() { f.syncLoop(ctx) })
	f.goSafe("usage", func() { f.usage.loop(ctx) })
}

// goSafe runs fn in a goroutine that logs and survives a panic (the loop
// restarts after a pause) and stops with the feed.
func (f *feed) goSafe(name string, fn func()) {
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		for {
			panicked := func() (panicked bool) {
				defer func() {
					if r := recover(); r != nil {
						panicked = true
						f.logger.Error("background loop panicked", zap.String("loop", name),
							zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
					}
				}()
				fn()
				return false
			}()
			if !panicked {
				return
			}
			time.Sleep(f.restartPause)
		}
	}()
}

// syncLoop long-polls the feed until ctx ends, backing off with jitter
// after errors.
func (f *feed) syncLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		started, held := time.Now(), f.snap.Load()
		err := f.poll(ctx, held != nil)
		if err == nil {
			failures = 0
			// A new snapshot is followed by the next poll at once. A poll
			// that changed nothing yet came back early — a control plane
			// that answers at once instead of holding it (one shutting
			// down, or another implementation) — must not make this loop
			// spin.
			if f.snap.Load() == held && !sleepCtx(ctx, minPollGap-time.Since(started)) {
				return
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		edgeMetrics.syncErrors.WithLabelValues(controlPlaneLabel(f.urls)).Inc()
		f.logger.Warn("snapshot sync failed", zap.Int("failures", failures), zap.Error(err))
		if !sleepCtx(ctx, backoff(failures)) {
			return
		}
	}
}

// minPollGap is the least time between the starts of two polls.
const minPollGap = 100 * time.Millisecond

// backoff is the pause after n consecutive failures: exponential from
// 100ms, capped at 5s, with full jitter.
func backoff(n int) time.Duration {
	d := min(100*time.Millisecond<<min(n-1, 10), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// poll makes one request of the feed, trying each URL in turn, and applies
// the answer. With long set, the request waits for a change.
func (f *feed) poll(ctx context.Context, long bool) error {
	var errs []error
	for _, base := range f.urls {
		err := f.pollOne(ctx, base, long)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (f *feed) pollOne(ctx context.Context, base string, long bool) error {
	wait := time.Duration(f.wait.Load())
	target := strings.TrimSuffix(base, "/") + wire.SnapshotPath
	if long {
		target += "?wait=" + wait.String()
	}
	ctx, cancel := context.WithTimeout(ctx, wait+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	cur := f.snap.Load()
	if cur != nil {
		req.Header.Set("If-None-Match", wire.ETag(cur.epoch, cur.revision))
	}
	sent := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", base, stripURLError(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		if cur == nil {
			return fmt.Errorf("%s: 304 although the edge holds no snapshot", base)
		}
		f.confirm(sent)
		f.saveConfirmed()
		return nil
	case http.StatusOK:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: unexpected status %d", base, resp.StatusCode)
	}
	next, spooled, err := f.decode(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: snapshot rejected: %w", base, err)
	}
	if cur != nil && next.epoch == cur.epoch && next.revision < cur.revision {
		discard(spooled)
		return fmt.Errorf("%s: snapshot rejected: revision %d is older than the %d held (rollback)", base, next.revision, cur.revision)
	}
	f.snap.Store(next)
	f.confirm(sent)
	f.persist(spooled)
	f.logger.Debug("snapshot updated", zap.String("epoch", next.epoch), zap.Int64("revision", next.revision), zap.Int("clients", len(next.clients)))
	return nil
}

// decode reads and validates a whole snapshot body, at most maxBytes of it.
// The body is streamed into the decoder, and into a spool file when the
// feed keeps a disk copy, so the raw bytes are never held in memory beside
// the old and the new snapshot. The spool file is returned for the caller
// to keep or discard.
func (f *feed) decode(body io.Reader) (*snapshot, *os.File, error) {
	limit := f.maxBytes.Load()
	counted := &io.LimitedReader{R: body, N: limit + 1}
	in := io.Reader(counted)
	var spool *os.File
	var copied bestEffortWriter
	if f.disk != nil {
		var err error
		if spool, err = f.disk.spool(); err != nil {
			f.logger.Warn("cannot save the snapshot to disk", zap.Error(err))
		} else {
			copied.w = spool
			in = io.TeeReader(counted, &copied)
		}
	}
	snap, err := decodeSnapshot(in, counted, limit)
	if err != nil || copied.err != nil {
		discard(spool)
		spool = nil
	}
	if err != nil {
		return nil, nil, err
	}
	if copied.err != nil {
		f.logger.Warn("saving the snapshot to disk failed", zap.Error(copied.err))
	}
	return snap, spool, nil
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

// persist saves a newly applied snapshot's spooled body and its
// confirmation time. When the body could not be saved, the older saved
// copy is removed: paired with a newer confirmation time it would let a
// restarted edge trust secrets revoked since.
func (f *feed) persist(spooled *os.File) {
	if f.disk == nil {
		return
	}
	if spooled != nil {
		err := f.disk.keep(spooled)
		if err == nil {
			f.savedCurrent.Store(true)
			f.saveConfirmed()
			return
		}
		f.logger.Warn("saving the snapshot to disk failed", zap.Error(err))
	}
	f.savedCurrent.Store(false)
	if err := f.disk.forget(); err != nil {
		f.logger.Warn("removing the outdated saved snapshot failed", zap.Error(err))
	}
}

// decodeSnapshot decodes one snapshot from in, which reads through counted.
func decodeSnapshot(in io.Reader, counted *io.LimitedReader, limit int64) (*snapshot, error) {
	dec := json.NewDecoder(in)
	var w wire.Snapshot
	err := dec.Decode(&w)
	if err == nil && dec.More() {
		err = errors.New("data after the snapshot")
	}
	if err == nil { // the rest (trailing space) belongs in the saved copy
		_, err = io.Copy(io.Discard, in)
	}
	if counted.N <= 0 {
		return nil, fmt.Errorf("larger than max_snapshot_bytes (%d)", limit)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return newSnapshot(&w)
}

// loadSaved starts the feed from the snapshot saved by an earlier run, if
// any, with the confirmation time saved beside it.
func (f *feed) loadSaved() {
	if f.disk == nil {
		return
	}
	snap, confirmed, err := f.disk.load()
	if err != nil {
		f.logger.Warn("ignoring the saved snapshot", zap.Error(err))
		return
	}
	if snap == nil {
		return
	}
	f.snap.Store(snap)
	f.savedCurrent.Store(true)
	if !confirmed.IsZero() { // without a confirmation time it counts as stale
		f.confirm(confirmed)
	}
	f.logger.Info("loaded the saved snapshot", zap.Int64("revision", snap.revision), zap.Time("confirmed", confirmed))
}

// saveConfirmed writes the confirmation time to disk. A failure is
// logged: the edge works on.
func (f *feed) saveConfirmed() {
	if f.disk == nil || !f.savedCurrent.Load() {
		return
	}
	_, confirmed := f.current()
	if err := f.disk.saveConfirmed(confirmed); err != nil {
		f.logger.Warn("saving the snapshot's confirmation time failed", zap.Error(err))
	}
}

// confirm records that the snapshot was current at sent, keeping the newest.
func (f *feed) confirm(sent time.Time) {
	n := int64(sent.Sub(f.base))
	for {
		old := f.confirmed.Load()
		if n <= old || f.confirmed.CompareAndSwap(old, n) {
			return
		}
	}
}

// current returns the snapshot and the time it was last confirmed.
func (f *feed) current() (*snapshot, time.Time) {
	return f.snap.Load(), f.base.Add(time.Duration(f.confirmed.Load()))
}

// stripURLError drops the URL from a client error: the URL carries no
// secret, but the error is logged and the base URL is already named.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (f *feed) release() error {
	_, err := feeds.Delete(f.key)
	return err
}

// Destruct stops the loops after the last handler let go of the feed; the
// usage loop flushes what is pending on its way out.
func (f *feed) Destruct() error {
	if f.cancel != nil {
		f.cancel()
	}
	f.done.Wait()
	return nil
}

// Interface guards
var _ caddy.Destructor = (*feed)(nil)
