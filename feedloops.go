package rotagate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// The feed's two background loops are written as Caddy's active health
// checker is (reverseproxy/healthchecks.go): recover with the stack, do
// the work once at once, then again at each turn (a long-poll answered, a
// flush interval passed), until the context ends. Unlike the health
// checker, a loop that panicked is started again after restartPause: a
// feed without its sync loop would serve 503 from max_stale on until the
// next restart.

// run runs loop in a goroutine until it returns, starting it again after a
// panic unless the feed is being stopped.
func (f *feed) run(name string, loop func(context.Context)) {
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		for {
			if f.survive(name, loop) || !sleepCtx(f.ctx, f.restartPause) {
				return
			}
		}
	}()
}

// survive runs loop once and reports whether it returned rather than
// panicked; a panic is logged with its stack.
func (f *feed) survive(name string, loop func(context.Context)) (returned bool) {
	defer func() {
		if r := recover(); r != nil {
			f.logger.Error("background loop panicked", zap.String("loop", name),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	loop(f.ctx)
	return true
}

// syncLoop polls the feed once, then long-polls it until ctx ends,
// backing off with jitter after errors.
func (f *feed) syncLoop(ctx context.Context) {
	failures := 0
	for first := true; ctx.Err() == nil; first = false {
		started, held := time.Now(), f.snapshots.snap.Load()
		// The first poll is not held: a snapshot loaded from disk is
		// confirmed, or replaced, at once.
		err := f.poll(ctx, held != nil && !first)
		if err == nil {
			f.answeredOnce.Do(func() { close(f.answered) })
			failures = 0
			// A new snapshot is followed by the next poll at once. A poll
			// that changed nothing yet came back early — a control plane
			// that answers at once instead of holding it (one shutting
			// down, or another implementation) — must not make this loop
			// spin.
			if f.snapshots.snap.Load() == held && !sleepCtx(ctx, minPollGap-time.Since(started)) {
				return
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		edgeMetrics.syncErrors.WithLabelValues(f.client.label).Inc()
		f.logger.Warn("snapshot sync failed", zap.Int("failures", failures), zap.Error(err))
		if !sleepCtx(ctx, backoff(failures)) {
			return
		}
	}
}

// poll makes one request of the feed and applies the answer. With long
// set, the request waits for a change. Holding a snapshot, it asks for
// the changes since it (unless the last change could not be applied);
// a change that does not follow the snapshot held is answered by asking
// again, at once, for a full snapshot.
func (f *feed) poll(ctx context.Context, long bool) error {
	err := f.pollOnce(ctx, long)
	if errors.Is(err, errUnusableChange) {
		f.fullNext.Store(true)
		f.logger.Info("the control plane's change does not follow the snapshot held; asking for a full snapshot", zap.Error(err))
		err = f.pollOnce(ctx, false)
	}
	return err
}

func (f *feed) pollOnce(ctx context.Context, long bool) error {
	cfg := f.config.Load()
	req := cpRequest{method: http.MethodGet, path: wire.SnapshotPath, header: http.Header{}, timeout: cfg.wait + 10*time.Second}
	query := url.Values{}
	if long {
		query.Set("wait", cfg.wait.String())
	}
	held, _ := f.snapshots.current()
	askedChanges := held != nil && !f.fullNext.Load()
	if held != nil {
		req.header.Set("If-None-Match", wire.ETag(held.epoch, held.revision))
	}
	if askedChanges {
		query.Set(wire.SinceParam, wire.FormatSince(held.epoch, held.revision))
	}
	if len(query) > 0 {
		req.path += "?" + query.Encode()
	}
	return f.client.do(ctx, req, func(resp *http.Response, sent time.Time) error {
		switch resp.StatusCode {
		case http.StatusNotModified:
			if held == nil {
				return errors.New("304 although the edge holds no snapshot")
			}
			f.snapshots.unchanged(held, sent)
			return nil
		case http.StatusOK:
		default:
			return fmt.Errorf("unexpected status %d", resp.StatusCode)
		}
		ans, err := decodeAnswer(resp.Body, cfg.maxBytes, held)
		switch {
		case err != nil:
		case ans.full != nil:
			err = f.snapshots.replace(ans.full, sent)
		case !askedChanges:
			err = errors.New("a change, although the edge asked for a full snapshot")
		default:
			err = f.snapshots.applyChange(ans, sent)
		}
		if err != nil {
			return fmt.Errorf("snapshot rejected: %w", err)
		}
		next, _ := f.snapshots.current()
		f.fullNext.Store(false)
		if ce := f.logger.Check(zap.DebugLevel, "snapshot updated"); ce != nil {
			ce.Write(zap.String("epoch", next.epoch), zap.Int64("revision", next.revision), zap.Int("clients", next.clients), zap.Bool("change", ans.delta != nil))
		}
		return nil
	})
}

// minPollGap is the least time between the starts of two polls.
const minPollGap = 100 * time.Millisecond

// finalFlushTimeout bounds the usage flush made when the feed stops.
const finalFlushTimeout = 5 * time.Second

// usageLoop flushes the usage stamps at once, then every flush interval
// (the feed's current one: a re-fit moves the next flush), backing off
// after failures, until ctx ends; Destruct makes the last flush.
func (f *feed) usageLoop(ctx context.Context) {
	failures := 0
	for {
		last := time.Now()
		if err := f.usage.flush(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			f.usage.logger.Info("usage flush failed; will retry", zap.Int("failures", failures), zap.Error(err))
		} else {
			failures = 0
		}
		for waiting := true; waiting; {
			pause := f.config.Load().flush
			if failures > 0 {
				pause = max(pause, backoff(failures+3))
			}
			t := time.NewTimer(time.Until(last.Add(pause)))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-f.refitted: // measure the pause again
			case <-t.C:
				waiting = false
			}
			t.Stop()
		}
	}
}

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
