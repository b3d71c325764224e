package rotagate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// finalFlushTimeout bounds the flush made when the feed stops.
const finalFlushTimeout = 5 * time.Second

// usageRecorder keeps, per secret, the newest use and its caller IP, and
// sends them to the control plane every flush interval. Memory grows with
// the number of secrets used, not with requests; a failed flush keeps its
// stamps for the next try.
type usageRecorder struct {
	feed   *feed
	every  time.Duration
	logger *zap.Logger
	edge   string

	mu      sync.Mutex
	pending map[string]usageStamp // by secret id
}

type usageStamp struct {
	clientID string
	at       time.Time
	from     string
}

func newUsageRecorder(f *feed, every time.Duration, logger *zap.Logger) *usageRecorder {
	host, _ := os.Hostname()
	return &usageRecorder{
		feed:    f,
		every:   every,
		logger:  logger,
		edge:    host + "/" + strconv.Itoa(os.Getpid()),
		pending: make(map[string]usageStamp),
	}
}

// record notes a use of a secret. It never blocks on I/O.
func (u *usageRecorder) record(clientID, secretID, from string, at time.Time) {
	u.mu.Lock()
	if old, ok := u.pending[secretID]; !ok || at.After(old.at) {
		u.pending[secretID] = usageStamp{clientID: clientID, at: at, from: from}
	}
	u.mu.Unlock()
}

func (u *usageRecorder) pendingCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}

// take removes and returns everything pending.
func (u *usageRecorder) take() map[string]usageStamp {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.pending) == 0 {
		return nil
	}
	batch := u.pending
	u.pending = make(map[string]usageStamp, len(batch))
	return batch
}

// putBack returns a batch that could not be sent, keeping whichever stamp
// of a secret is newer.
func (u *usageRecorder) putBack(batch map[string]usageStamp) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, s := range batch {
		if old, ok := u.pending[id]; !ok || s.at.After(old.at) {
			u.pending[id] = s
		}
	}
}

// loop flushes every interval, backing off after failures, and makes a
// last bounded flush when ctx ends.
func (u *usageRecorder) loop(ctx context.Context) {
	failures := 0
	for {
		pause := u.every
		if failures > 0 {
			pause = max(u.every, backoff(failures+3))
		}
		if !sleepCtx(ctx, pause) {
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			if err := u.flush(final); err != nil {
				u.logger.Warn("final usage flush failed; stamps lost", zap.Error(err))
			}
			cancel()
			return
		}
		if err := u.flush(ctx); err != nil {
			failures++
			u.logger.Info("usage flush failed; will retry", zap.Int("failures", failures), zap.Error(err))
			continue
		}
		failures = 0
	}
}

// flush sends what is pending; on failure the stamps go back.
func (u *usageRecorder) flush(ctx context.Context) error {
	batch := u.take()
	if batch == nil {
		return nil
	}
	body := wire.Usage{Edge: u.edge, Stamps: make([]wire.Stamp, 0, len(batch))}
	for id, s := range batch {
		body.Stamps = append(body.Stamps, wire.Stamp{ClientID: s.clientID, SecretID: id, LastUsedAt: s.at.UTC(), From: s.from})
	}
	raw, err := json.Marshal(body)
	if err != nil {
		u.putBack(batch)
		return err
	}
	label := controlPlaneLabel(u.feed.urls)
	var errs []error
	for _, base := range u.feed.urls {
		if err := u.post(ctx, base, raw); err != nil {
			errs = append(errs, err)
			continue
		}
		edgeMetrics.stampsSent.WithLabelValues(label).Add(float64(len(batch)))
		return nil
	}
	u.putBack(batch)
	edgeMetrics.stampsRetry.WithLabelValues(label).Add(float64(len(batch)))
	return errors.Join(errs...)
}

func (u *usageRecorder) post(ctx context.Context, base string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+wire.UsagePath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+u.feed.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.feed.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", base, stripURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: usage ingest answered %d", base, resp.StatusCode)
	}
	return nil
}
