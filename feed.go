package rotagate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/clientassertion"
)

// feeds holds one feed per (control plane URLs, token) in this process,
// shared by every handler that uses it and carried across config reloads:
// a reload provisions the new handlers (which find the running feed) before
// it cleans up the old ones.
var feeds = caddy.NewUsagePool()

// feedConfig is what a handler asks of its feed. Handlers naming the same
// URLs and token share one feed, which serves all of them at once: at every
// acquire and release it is re-fitted to the configs of the handlers that
// hold it then, so a reload that relaxes a setting takes effect as one that
// tightens it does.
type feedConfig struct {
	urls  []string
	token string
	// wait is how long a long-poll is held. Pooled: the shortest wait of
	// the holders, so the tightest revocation_delay is kept.
	wait time.Duration
	// maxBytes is the largest snapshot accepted. Pooled: the largest of
	// the holders', so that no site refuses what another one needs.
	maxBytes int64
	// flush is how often usage stamps are sent. Pooled: the shortest of
	// the holders'.
	flush time.Duration
}

func (c feedConfig) key() string {
	h := sha256.Sum256([]byte(strings.Join(c.urls, "\n") + "\x00" + c.token))
	return hex.EncodeToString(h[:])
}

// fitFeed is the config a feed runs with for the given holders' configs
// (at least one).
func fitFeed(configs map[*Handler]feedConfig) feedConfig {
	var fit feedConfig
	first := true
	for _, c := range configs {
		if first {
			fit, first = c, false
			continue
		}
		fit.wait = min(fit.wait, c.wait)
		fit.maxBytes = max(fit.maxBytes, c.maxBytes)
		fit.flush = min(fit.flush, c.flush)
	}
	return fit
}

// feed keeps one control plane's snapshot in step at the edge and reports
// last-used stamps back to it: a control-plane client, the snapshot store,
// the usage recorder, and the two loops (feedloops.go) that drive them.
type feed struct {
	key       string
	logger    *zap.Logger
	client    *controlPlaneClient
	snapshots *snapshotStore
	usage     *usageRecorder
	// assertions verifies private_key_jwt assertions for every site of
	// the feed. Its replay cache lives as long as the feed, across config
	// reloads: a reload must not let an assertion used before it be
	// replayed after it.
	assertions *clientassertion.Verifier

	mu      sync.Mutex
	holders map[*Handler]feedConfig
	// stopped holds the holders whose config is being stopped.
	stopped map[*Handler]bool
	// config is fitFeed of the holders, read by the loops at every round.
	config atomic.Pointer[feedConfig]
	// fullNext is set when a change could not be applied: the next poll
	// asks for a full snapshot.
	fullNext atomic.Bool
	// refitted wakes the usage loop when config changes.
	refitted chan struct{}

	// polls tells those waiting for the sync loop how its polls end.
	polls pollWatch
	// answered is set once the control plane answered a poll.
	answered atomic.Bool
	// startedAt is when the loops started.
	startedAt time.Time

	pollMu sync.Mutex
	// cutPoll ends the held poll in flight (nil when none is): a re-fit to
	// a shorter wait must not wait out a poll held for the longer one.
	cutPoll context.CancelCauseFunc
	// shortNext makes the next poll one that is not held.
	shortNext bool
	// wake ends the sync loop's pause (Caddy's servers started).
	wake chan struct{}

	ctx    context.Context // the loops', cancelled by Destruct
	cancel context.CancelFunc
	done   sync.WaitGroup
	// restartPause is how long a panicked loop waits before it restarts.
	restartPause time.Duration
}

// acquireFeed returns the running feed for cfg, or starts one, and
// re-fits it with holder's config. Release it with release(holder).
//
// It returns once holder has something to serve or there is nothing worth
// waiting for, and for a few seconds at most (firstAnswerWait), so
// provisioning stays fast. A new feed holding a snapshot confirmed within
// maxStale (its saved copy) serves at once; one without waits for its first
// poll, unless that fails (the control plane does not listen: it may be in
// this very process, which cannot listen before provisioning ends). A
// re-fit to a shorter wait cuts the poll held for the longer one and waits
// for a poll started since, so that the tighter max_stale that came with it
// finds a fresh confirmation. The fetch goes on in the background past the
// wait: a big snapshot is not cut off and fetched again from the start.
func acquireFeed(ctx caddy.Context, holder *Handler, cfg feedConfig, maxStale Staleness) (*feed, error) {
	mark := time.Now()
	v, loaded, err := feeds.LoadOrNew(cfg.key(), func() (caddy.Destructor, error) {
		f := newFeed(cfg, caddy.Log().Named("client_credentials"), newSavedSnapshot(cfg.key()))
		var err error
		if f.assertions, err = clientassertion.New(clientassertion.Config{}); err != nil {
			return nil, err
		}
		f.start(ctx)
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	f := v.(*feed)
	cut := f.hold(holder, cfg)
	switch {
	case cut:
		f.awaitPoll(mark)
	case !loaded && !f.servable(maxStale, time.Now()):
		if !f.awaitPoll(mark) {
			f.logger.Info("no snapshot from the control plane yet; still fetching in the background")
		}
	}
	return f, nil
}

// firstAnswerWait bounds how long acquireFeed waits for a poll.
const firstAnswerWait = 3 * time.Second

// servable reports whether a handler with maxStale would serve from the
// snapshot held at now, as the handler checks it.
func (f *feed) servable(maxStale Staleness, now time.Time) bool {
	snap, confirmed := f.snapshots.current()
	return snap != nil && (maxStale < 0 || now.Sub(confirmed) <= time.Duration(maxStale))
}

// awaitPoll waits for a poll started at or after since to end, whether it
// failed or not, for firstAnswerWait or the feed's poll wait, whichever is
// shorter, and reports whether one ended in that time.
func (f *feed) awaitPoll(since time.Time) bool {
	t := time.NewTimer(min(firstAnswerWait, f.config.Load().wait))
	defer t.Stop()
	for {
		last, next := f.polls.outcome()
		if !last.started.Before(since) {
			return true
		}
		select {
		case <-next:
		case <-t.C:
			return false
		}
	}
}

// pollWatch publishes how the sync loop's polls end.
type pollWatch struct {
	mu    sync.Mutex
	last  pollOutcome
	ended chan struct{} // closed (and replaced) when a poll ends
}

// pollOutcome is how a poll ended: when it started, and its error.
type pollOutcome struct {
	started time.Time
	err     error
}

// outcome returns the last poll's outcome and a channel closed when the
// next one ends.
func (w *pollWatch) outcome() (pollOutcome, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended == nil {
		w.ended = make(chan struct{})
	}
	return w.last, w.ended
}

// publish records the outcome of a poll that ended.
func (w *pollWatch) publish(o pollOutcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = o
	if w.ended != nil {
		close(w.ended)
		w.ended = nil
	}
}

// newFeed builds a feed that is not started; disk may be nil.
func newFeed(cfg feedConfig, logger *zap.Logger, disk *savedSnapshot) *feed {
	f := &feed{
		key:       cfg.key(),
		logger:    logger,
		client:    newControlPlaneClient(cfg.urls, cfg.token, logger),
		snapshots: newSnapshotStore(disk, logger),
		holders:   make(map[*Handler]feedConfig),
		stopped:   make(map[*Handler]bool),
		refitted:  make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),

		restartPause: time.Second,
	}
	f.usage = newUsageRecorder(f.client, logger.Named("usage"))
	f.config.Store(&cfg)
	return f
}

// hold adds (or updates) holder's config and re-fits the feed. It reports
// whether the re-fit shortened the poll wait (and so cut the held poll).
func (f *feed) hold(holder *Handler, cfg feedConfig) (cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holders[holder] = cfg
	return f.refitLocked()
}

// release lets go of holder's hold: the feed re-fits to the holders left,
// and stops (after a last usage flush) when none is.
func (f *feed) release(holder *Handler) error {
	f.mu.Lock()
	delete(f.holders, holder)
	delete(f.stopped, holder)
	if len(f.holders) > 0 {
		f.refitLocked()
	}
	f.mu.Unlock()
	_, err := feeds.Delete(f.key)
	return err
}

// refitLocked fits the feed to its holders, wakes the usage loop when that
// changed anything, and cuts the held poll when it shortened the wait,
// reporting whether it did.
func (f *feed) refitLocked() (cut bool) {
	fit := fitFeed(f.holders)
	old := f.config.Load()
	if old.wait == fit.wait && old.maxBytes == fit.maxBytes && old.flush == fit.flush {
		return false
	}
	f.config.Store(&fit)
	select {
	case f.refitted <- struct{}{}:
	default: // a wake-up is pending already
	}
	if fit.wait < old.wait {
		f.cut()
		return true
	}
	return false
}

// cut ends the held poll in flight, if any, and makes the next poll one
// that is not held, so the snapshot is confirmed again within a round
// trip rather than at the end of the old wait.
func (f *feed) cut() {
	f.pollMu.Lock()
	defer f.pollMu.Unlock()
	f.shortNext = true
	if f.cutPoll != nil {
		f.cutPoll(errPollCut)
	}
}

var errPollCut = errors.New("the poll wait was shortened")

// nudge ends the sync loop's pause: after a failure, the next poll goes
// out at once.
func (f *feed) nudge() {
	select {
	case f.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// stopping notes that holder's config is being stopped. Once every
// holder's is (the process exits, or a reload drops this control plane),
// the pending usage is flushed at once, while Caddy's servers still run: a
// control plane in the same process stops listening before the feed is
// released, and the final flush of Destruct would find it gone.
func (f *feed) stopping(holder *Handler) {
	f.mu.Lock()
	if _, ok := f.holders[holder]; ok {
		f.stopped[holder] = true
	}
	last := f.allStoppingLocked()
	f.mu.Unlock()
	if !last {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(f.ctx), finalFlushTimeout)
	defer cancel()
	if err := f.usage.flush(ctx); err != nil {
		f.logger.Info("usage flush before the stop failed; trying again when the feed stops", zap.Error(err))
	}
}

// allStopping reports whether every config that holds the feed is being
// stopped. A control plane in this very process stops listening then,
// before the feed is released, so a failed poll is expected, not news.
func (f *feed) allStopping() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.allStoppingLocked()
}

func (f *feed) allStoppingLocked() bool {
	return len(f.holders) > 0 && len(f.stopped) == len(f.holders)
}

// start loads the saved snapshot and runs the sync and usage loops until
// the feed is destructed; it does not wait for the control plane
// (acquireFeed does, when it must). The loops' context keeps the Caddy
// context's values but not its cancellation: the feed outlives the config
// that started it.
func (f *feed) start(parent context.Context) {
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(parent))
	f.startedAt = time.Now()
	f.snapshots.load(f.config.Load().maxBytes)
	f.run("sync", f.syncLoop)
	f.run("usage", f.usageLoop)
}

// Destruct stops the loops after the last handler let go of the feed, then
// flushes the pending usage stamps, for at most finalFlushTimeout.
func (f *feed) Destruct() error {
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	f.done.Wait()
	final, cancel := context.WithTimeout(context.WithoutCancel(f.ctx), finalFlushTimeout)
	defer cancel()
	if err := f.usage.flush(final); err != nil {
		f.logger.Warn("final usage flush failed; stamps lost", zap.Error(err))
	}
	return nil
}

// Interface guards
var _ caddy.Destructor = (*feed)(nil)
