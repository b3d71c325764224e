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

// maxStampsPerPost keeps each usage POST far below the control plane's
// 16 MiB body limit (a stamp is under 200 bytes of JSON), however many
// secrets were used or piled up during an outage.
const maxStampsPerPost = 10_000

// flush sends what is pending, in POSTs of at most maxStampsPerPost
// stamps. Stamps of a POST that failed go back for the next try, unless
// the control plane refused them as malformed: those are dropped, or they
// would be refused forever.
func (u *usageRecorder) flush(ctx context.Context) error {
	batch := u.take()
	if batch == nil {
		return nil
	}
	stamps := make([]wire.Stamp, 0, len(batch))
	for id, s := range batch {
		stamps = append(stamps, wire.Stamp{ClientID: s.clientID, SecretID: id, LastUsedAt: s.at.UTC(), From: s.from})
	}
	label := controlPlaneLabel(u.feed.urls)
	for len(stamps) > 0 {
		chunk := stamps[:min(len(stamps), maxStampsPerPost)]
		err := u.send(ctx, chunk)
		var refused errRefusedStamps
		switch {
		case err == nil:
			edgeMetrics.stampsSent.WithLabelValues(label).Add(float64(len(chunk)))
		case errors.As(err, &refused):
			edgeMetrics.stampsRetry.WithLabelValues(label).Add(float64(len(chunk)))
			u.logger.Error("the control plane refused a usage batch; its stamps are dropped", zap.Int("stamps", len(chunk)), zap.Error(err))
		default:
			rest := make(map[string]usageStamp, len(stamps)) // this chunk and every one not sent yet
			for _, st := range stamps {
				rest[st.SecretID] = batch[st.SecretID]
			}
			u.putBack(rest)
			edgeMetrics.stampsRetry.WithLabelValues(label).Add(float64(len(stamps)))
			return err
		}
		stamps = stamps[len(chunk):]
	}
	return nil
}

// errRefusedStamps is a usage POST the control plane answered 400 or 413:
// sending it again cannot succeed.
type errRefusedStamps struct{ status int }

func (e errRefusedStamps) Error() string {
	return fmt.Sprintf("usage ingest refused the batch with %d", e.status)
}

// send POSTs one batch to the first control plane that takes it.
func (u *usageRecorder) send(ctx context.Context, stamps []wire.Stamp) error {
	raw, err := json.Marshal(wire.Usage{Edge: u.edge, Stamps: stamps})
	if err != nil {
		return err
	}
	var errs []error
	for _, base := range u.feed.urls {
		err := u.post(ctx, base, raw)
		if err == nil {
			return nil
		}
		var refused errRefusedStamps
		if errors.As(err, &refused) {
			return err
		}
		errs = append(errs, err)
	}
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
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge:
		return errRefusedStamps{status: resp.StatusCode}
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s: usage ingest answered %d", base, resp.StatusCode)
	}
	return nil
}
