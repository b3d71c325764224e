package rotagate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
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

	mu      sync.Mutex
	holders map[*Handler]feedConfig
	// config is fitFeed of the holders, read by the loops at every round.
	config atomic.Pointer[feedConfig]
	// answered is closed once the control plane answered a first poll.
	answered     chan struct{}
	answeredOnce sync.Once
	// fullNext is set when a change could not be applied: the next poll
	// asks for a full snapshot.
	fullNext atomic.Bool
	// refitted wakes the usage loop when config changes.
	refitted chan struct{}

	ctx    context.Context // the loops', cancelled by Destruct
	cancel context.CancelFunc
	done   sync.WaitGroup
	// restartPause is how long a panicked loop waits before it restarts.
	restartPause time.Duration
}

// acquireFeed returns the running feed for cfg, or starts one (a first
// fetch bounded by a short timeout, then the background loops), and
// re-fits it with holder's config. Release it with release(holder).
func acquireFeed(ctx caddy.Context, holder *Handler, cfg feedConfig) (*feed, error) {
	v, _, err := feeds.LoadOrNew(cfg.key(), func() (caddy.Destructor, error) {
		f := newFeed(cfg, caddy.Log().Named("client_credentials"), newSavedSnapshot(cfg.key()))
		f.start(ctx)
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	f := v.(*feed)
	f.hold(holder, cfg)
	return f, nil
}

// newFeed builds a feed that is not started; disk may be nil.
func newFeed(cfg feedConfig, logger *zap.Logger, disk *savedSnapshot) *feed {
	f := &feed{
		key:       cfg.key(),
		logger:    logger,
		client:    newControlPlaneClient(cfg.urls, cfg.token, logger),
		snapshots: newSnapshotStore(disk, logger),
		holders:   make(map[*Handler]feedConfig),
		refitted:  make(chan struct{}, 1),
		answered:  make(chan struct{}),

		restartPause: time.Second,
	}
	f.usage = newUsageRecorder(f.client, logger.Named("usage"))
	f.config.Store(&cfg)
	return f
}

// hold adds (or updates) holder's config and re-fits the feed.
func (f *feed) hold(holder *Handler, cfg feedConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holders[holder] = cfg
	f.refitLocked()
}

// release lets go of holder's hold: the feed re-fits to the holders left,
// and stops (after a last usage flush) when none is.
func (f *feed) release(holder *Handler) error {
	f.mu.Lock()
	delete(f.holders, holder)
	if len(f.holders) > 0 {
		f.refitLocked()
	}
	f.mu.Unlock()
	_, err := feeds.Delete(f.key)
	return err
}

func (f *feed) refitLocked() {
	fit := fitFeed(f.holders)
	if old := f.config.Load(); old.wait == fit.wait && old.maxBytes == fit.maxBytes && old.flush == fit.flush {
		return
	}
	f.config.Store(&fit)
	select {
	case f.refitted <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// start loads the saved snapshot and runs the sync and usage loops until
// the feed is destructed, waiting a few seconds at most for the first
// answer, so provisioning stays fast and a fresh edge serves at once. The
// first fetch goes on past that wait: a big snapshot is not cut off and
// fetched again from the start. The loops' context keeps the Caddy
// context's values but not its cancellation: the feed outlives the config
// that started it.
func (f *feed) start(parent context.Context) {
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(parent))
	cfg := f.config.Load()
	f.snapshots.load(cfg.maxBytes)
	f.run("sync", f.syncLoop)
	f.run("usage", f.usageLoop)
	t := time.NewTimer(min(3*time.Second, cfg.wait))
	defer t.Stop()
	select {
	case <-f.answered:
	case <-t.C:
		f.logger.Info("no snapshot from the control plane yet; still fetching in the background")
	}
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
