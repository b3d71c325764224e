package rotagate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
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
			if f.survive(name, loop) || !sleepCtx(f.ctx, f.restartPause, nil) {
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
// backing off with jitter after errors. A poll cut by a re-fit to a
// shorter wait is followed by one that is not held, at once.
//
// While the edge starts (it never had an answer, for startupGrace at
// most), a control plane that refuses connections is tried again every
// startupRetry, and said once at info level: it is most likely starting
// too, or in this very process, which listens only once provisioning is
// over (Caddy's "started" event nudges the loop then).
func (f *feed) syncLoop(ctx context.Context) {
	failures := 0
	toldStartup := false
	for first := true; ctx.Err() == nil; first = false {
		started, held := time.Now(), f.snapshots.snap.Load()
		// The first poll is not held: a snapshot loaded from disk is
		// confirmed, or replaced, at once.
		pollCtx, long, end := f.beginPoll(ctx, held != nil && !first)
		err := f.poll(pollCtx, long)
		cut := end()
		if ctx.Err() != nil {
			return
		}
		if cut {
			continue
		}
		f.polls.publish(pollOutcome{started: started, err: err})
		if err == nil {
			f.answered.Store(true)
			failures = 0
			// A new snapshot is followed by the next poll at once. A poll
			// that changed nothing yet came back early — a control plane
			// that answers at once instead of holding it (one shutting
			// down, or another implementation) — must not make this loop
			// spin.
			if f.snapshots.snap.Load() == held && !f.pause(ctx, minPollGap-time.Since(started)) {
				return
			}
			continue
		}
		failures++
		edgeMetrics.syncErrors.WithLabelValues(f.client.label).Inc()
		pause := backoff(failures)
		if f.startingUp(err) {
			pause = startupRetry
			if !toldStartup {
				toldStartup = true
				f.logger.Info("the control plane does not accept connections yet; trying again until it does", zap.Error(err))
			}
		} else if f.allStopping() {
			f.logger.Info("snapshot sync failed while Caddy stops", zap.Int("failures", failures), zap.Error(err))
		} else {
			f.logger.Warn("snapshot sync failed", zap.Int("failures", failures), zap.Error(err))
		}
		if !f.pause(ctx, pause) {
			return
		}
	}
}

// startupGrace is how long after its start a feed that never had an
// answer retries refused connections every startupRetry.
const (
	startupGrace = 5 * time.Second
	startupRetry = 100 * time.Millisecond
)

// startingUp reports whether err, a poll's, is every control plane URL
// refusing the connection while the feed starts.
func (f *feed) startingUp(err error) bool {
	return !f.answered.Load() && time.Since(f.startedAt) < startupGrace && refusedEverywhere(err)
}

// refusedEverywhere reports whether err is a refused connection, or
// errors that all are.
func refusedEverywhere(err error) bool {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs := joined.Unwrap()
		for _, e := range errs {
			if !refusedEverywhere(e) {
				return false
			}
		}
		return len(errs) > 0
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// beginPoll prepares the next poll: held when long is set and no re-fit
// asked for a poll that is not. A held poll can be cut (feed.cut); end
// reports whether it was.
func (f *feed) beginPoll(ctx context.Context, long bool) (pollCtx context.Context, held bool, end func() (cut bool)) {
	pollCtx, cancel := context.WithCancelCause(ctx)
	f.pollMu.Lock()
	held = long && !f.shortNext
	f.shortNext = false
	if held {
		f.cutPoll = cancel
	}
	f.pollMu.Unlock()
	return pollCtx, held, func() bool {
		f.pollMu.Lock()
		f.cutPoll = nil
		f.pollMu.Unlock()
		cancel(nil)
		return errors.Is(context.Cause(pollCtx), errPollCut)
	}
}

// pause waits for d, or until the feed is nudged, and reports whether ctx
// is still live.
func (f *feed) pause(ctx context.Context, d time.Duration) bool {
	return sleepCtx(ctx, d, f.wake)
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
	// Asked for by name, gzip is not undone by net/http's transport but
	// by klauspost/compress, which inflates a million clients' snapshot
	// in four fifths of the standard library's time.
	req.header.Set("Accept-Encoding", "gzip")
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
		body, err := answerBody(resp)
		if err != nil {
			return err
		}
		resume := func() {}
		if held == nil { // a cold sync: nothing is served from this feed yet
			resume = pauseGC()
		}
		ans, err := decodeAnswer(body, cfg.maxBytes, held)
		resume()
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

// answerBody is a 200's body, inflated when it came gzipped; max_snapshot_bytes
// bounds what comes out.
func answerBody(resp *http.Response) (io.Reader, error) {
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return resp.Body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("snapshot rejected: gzip: %w", err)
		}
		return zr, nil
	default:
		return nil, fmt.Errorf("snapshot rejected: unsupported Content-Encoding %q", enc)
	}
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

// sleepCtx waits for d, or until wake delivers (a nil wake never does),
// and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}
