package rotagate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/internal/wire"
)

// usageRecorder keeps, per secret, the newest use and its caller IP, and
// sends them to the control plane when flushed (the feed's usage loop does
// so every usage_flush). Memory grows with the number of secrets used, not
// with requests; a failed flush keeps its stamps for the next try.
type usageRecorder struct {
	client *controlPlaneClient
	logger *zap.Logger
	edge   string

	mu      sync.Mutex
	pending map[string]usageStamp // by secret id

	revoked revokedUses // dead secrets presented, sent with the stamps
}

type usageStamp struct {
	clientID string
	at       time.Time
	from     string
}

func newUsageRecorder(client *controlPlaneClient, logger *zap.Logger) *usageRecorder {
	host, _ := os.Hostname()
	return &usageRecorder{
		client:  client,
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

// recordRevoked notes that a dead secret was presented. It never blocks
// on I/O.
func (u *usageRecorder) recordRevoked(clientID, secretID, from string, at time.Time) {
	u.revoked.record(clientID, secretID, from, at)
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

// maxStampsPerPost keeps each usage POST far below the control plane's
// 16 MiB body limit (a stamp is under 200 bytes of JSON), however many
// secrets were used or piled up during an outage.
const maxStampsPerPost = 10_000

// flush sends what is pending, in POSTs of at most maxStampsPerPost
// stamps, the dead secrets presented riding with the first. Stamps of a
// POST that failed go back for the next try, unless the control plane
// refused them as malformed: those are dropped, or they would be refused
// forever.
func (u *usageRecorder) flush(ctx context.Context) error {
	batch, revoked := u.take(), u.revoked.take()
	if batch == nil && revoked == nil {
		return nil
	}
	stamps := make([]wire.Stamp, 0, len(batch))
	for id, s := range batch {
		stamps = append(stamps, wire.Stamp{ClientID: s.clientID, SecretID: id, LastUsedAt: s.at.UTC(), From: s.from})
	}
	label := u.client.label
	for first := true; first || len(stamps) > 0; first = false {
		chunk := stamps[:min(len(stamps), maxStampsPerPost)]
		var dead []wire.RevokedUse
		if first {
			dead = revoked
		}
		err := u.send(ctx, chunk, dead)
		var refused errRefusedStamps
		switch {
		case err == nil:
			edgeMetrics.stampsSent.WithLabelValues(label).Add(float64(len(chunk)))
		case errors.As(err, &refused):
			edgeMetrics.stampsDropped.WithLabelValues(label).Add(float64(len(chunk)))
			u.logger.Error("the control plane refused a usage batch; its stamps are dropped", zap.Int("stamps", len(chunk)), zap.Error(err))
		default:
			rest := make(map[string]usageStamp, len(stamps)) // this chunk and every one not sent yet
			for _, st := range stamps {
				rest[st.SecretID] = batch[st.SecretID]
			}
			u.putBack(rest)
			u.revoked.putBack(dead)
			edgeMetrics.stampsFailed.WithLabelValues(label).Add(float64(len(stamps)))
			return err
		}
		stamps = stamps[len(chunk):]
	}
	return nil
}

// errRefusedStamps is a usage POST the control plane answered 400 or 413:
// sending it again, to any replica, cannot succeed.
type errRefusedStamps struct{ status int }

func (e errRefusedStamps) Error() string {
	return fmt.Sprintf("usage ingest refused the batch with %d", e.status)
}

func (errRefusedStamps) final() {}

// send POSTs one batch to the first control plane that takes it.
func (u *usageRecorder) send(ctx context.Context, stamps []wire.Stamp, revoked []wire.RevokedUse) error {
	raw, err := json.Marshal(wire.Usage{Edge: u.edge, Stamps: stamps, RevokedUses: revoked})
	if err != nil {
		return err
	}
	req := cpRequest{
		method:  http.MethodPost,
		path:    wire.UsagePath,
		header:  http.Header{"Content-Type": {"application/json"}},
		body:    raw,
		timeout: 10 * time.Second,
	}
	return u.client.do(ctx, req, func(resp *http.Response, _ time.Time) error {
		switch {
		case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge:
			return errRefusedStamps{status: resp.StatusCode}
		case resp.StatusCode/100 != 2:
			return fmt.Errorf("usage ingest answered %d", resp.StatusCode)
		}
		return nil
	})
}

// Interface guards
var _ finalAnswer = errRefusedStamps{}
