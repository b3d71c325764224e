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

// usageRecorder keeps, per secret, the newest accepted use and its caller
// IP, and per (secret, caller IP) the requests seen since the last flush,
// and sends them to the control plane when flushed (the feed's usage loop
// does so every usage_flush). Memory grows with the secrets used, not with
// requests: a secret lists at most wire.MaxCallersPerSecret caller IPs
// until the next flush, and requests from any further IP are only counted,
// so an attacker spraying source addresses with a valid secret cannot
// grow it. A failed flush keeps its stamps for the next try.
type usageRecorder struct {
	client *controlPlaneClient
	logger *zap.Logger
	edge   string

	mu      sync.Mutex
	pending map[string]*secretUse // by secret id

	revoked revokedUses // dead secrets presented, sent with the stamps
}

// secretUse is what is pending for one secret.
type secretUse struct {
	clientID string
	// last and lastFrom are the newest accepted use; last is zero when
	// every request was refused for its network.
	last     time.Time
	lastFrom string
	callers  map[string]*callerUse // by caller IP, at most wire.MaxCallersPerSecret
	// otherRequests and otherRefused count the requests from caller IPs
	// past the bound.
	otherRequests, otherRefused int64
}

type callerUse struct {
	first, last       time.Time
	requests, refused int64
}

// useKind says how a request that verified a secret was answered.
type useKind uint8

const (
	useAccepted   useKind = iota // from an allowed network
	useReportOnly                // from outside the allowed networks, let through (report-only)
	useRefused                   // from outside the allowed networks, refused
)

func newUsageRecorder(client *controlPlaneClient, logger *zap.Logger) *usageRecorder {
	host, _ := os.Hostname()
	return &usageRecorder{
		client:  client,
		logger:  logger,
		edge:    host + "/" + strconv.Itoa(os.Getpid()),
		pending: make(map[string]*secretUse),
	}
}

// record notes a request in which a secret verified. It never blocks on
// I/O, and allocates only for a secret or caller IP new since the last
// flush.
func (u *usageRecorder) record(clientID, secretID, from string, at time.Time, kind useKind) {
	u.mu.Lock()
	su := u.pending[secretID]
	if su == nil {
		su = &secretUse{clientID: clientID, callers: make(map[string]*callerUse, 1)}
		u.pending[secretID] = su
	}
	if kind != useRefused && at.After(su.last) {
		su.last, su.lastFrom = at, from
	}
	refused := int64(0)
	if kind != useAccepted {
		refused = 1
	}
	su.count(from, callerUse{first: at, last: at, requests: 1, refused: refused})
	u.mu.Unlock()
}

// count adds a caller's use, listing the IP while there is room and
// counting it among the others once there is none. An empty IP (no client
// IP known) is counted among the others.
func (su *secretUse) count(ip string, use callerUse) {
	if c := su.callers[ip]; c != nil {
		c.requests += use.requests
		c.refused += use.refused
		if use.first.Before(c.first) {
			c.first = use.first
		}
		if use.last.After(c.last) {
			c.last = use.last
		}
		return
	}
	if ip == "" || len(su.callers) >= wire.MaxCallersPerSecret {
		su.otherRequests += use.requests
		su.otherRefused += use.refused
		return
	}
	c := use // only a new caller allocates
	su.callers[ip] = &c
}

// merge adds another pending use of the same secret.
func (su *secretUse) merge(o *secretUse) {
	if o.last.After(su.last) {
		su.last, su.lastFrom = o.last, o.lastFrom
	}
	for ip, c := range o.callers {
		su.count(ip, *c)
	}
	su.otherRequests += o.otherRequests
	su.otherRefused += o.otherRefused
}

// recordRevoked notes that a dead secret was presented. It never blocks
// on I/O.
func (u *usageRecorder) recordRevoked(clientID, secretID, from string, at time.Time) {
	u.revoked.record(clientID, secretID, from, at)
}

// pendingCount is how many secrets have uses waiting to be sent.
func (u *usageRecorder) pendingCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}

// take removes and returns everything pending.
func (u *usageRecorder) take() map[string]*secretUse {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.pending) == 0 {
		return nil
	}
	batch := u.pending
	u.pending = make(map[string]*secretUse, len(batch))
	return batch
}

// putBack returns uses that could not be sent, merged with what was
// recorded since: the newer stamp of a secret wins, counts add up, and the
// bound on caller IPs holds.
func (u *usageRecorder) putBack(batch map[string]*secretUse) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, su := range batch {
		if cur := u.pending[id]; cur != nil {
			su.merge(cur)
		}
		u.pending[id] = su
	}
}

// maxEntriesPerPost keeps each usage POST far below the control plane's
// 16 MiB body limit: a POST carries at most this many stamps and caller
// entries together (each under 200 bytes of JSON), however many secrets
// were used or piled up during an outage. A secret's stamp and callers
// always travel in the same POST; one secret has at most
// 1 + wire.MaxCallersPerSecret entries.
const maxEntriesPerPost = 10_000

// usePost is the body of one usage POST and the secrets it carries.
type usePost struct {
	stamps  []wire.Stamp
	callers []wire.SecretCallers
	revoked []wire.RevokedUse
	ids     []string
	entries int
}

// posts splits a batch into POSTs of at most maxEntriesPerPost entries.
func posts(batch map[string]*secretUse) []*usePost {
	var out []*usePost
	cur := &usePost{}
	for id, su := range batch {
		entries := len(su.callers) + 1
		if cur.entries > 0 && cur.entries+entries > maxEntriesPerPost {
			out, cur = append(out, cur), &usePost{}
		}
		cur.ids = append(cur.ids, id)
		cur.entries += entries
		if !su.last.IsZero() {
			cur.stamps = append(cur.stamps, wire.Stamp{ClientID: su.clientID, SecretID: id, LastUsedAt: su.last.UTC(), From: su.lastFrom})
		}
		sc := wire.SecretCallers{ClientID: su.clientID, SecretID: id, IPs: make([]wire.Caller, 0, len(su.callers)),
			OtherRequests: su.otherRequests, OtherRefused: su.otherRefused}
		for ip, c := range su.callers {
			sc.IPs = append(sc.IPs, wire.Caller{IP: ip, FirstAt: c.first.UTC(), LastAt: c.last.UTC(), Requests: c.requests, Refused: c.refused})
		}
		cur.callers = append(cur.callers, sc)
	}
	if cur.entries > 0 {
		out = append(out, cur)
	}
	return out
}

// flush sends what is pending, in POSTs of at most maxEntriesPerPost
// entries (one POST unless there are more), the dead secrets presented
// riding with the first. The uses of a POST that failed
// go back for the next try, with those of every POST not sent yet, unless
// the control plane refused them as malformed: those are dropped, or they
// would be refused forever.
func (u *usageRecorder) flush(ctx context.Context) error {
	batch, revoked := u.take(), u.revoked.take()
	if batch == nil && revoked == nil {
		return nil
	}
	label := u.client.label
	all := posts(batch)
	if len(all) == 0 {
		all = []*usePost{{}}
	}
	all[0].revoked = revoked
	for i, p := range all {
		err := u.send(ctx, p)
		var refused errRefusedStamps
		switch {
		case err == nil:
			edgeMetrics.stampsSent.WithLabelValues(label).Add(float64(len(p.ids)))
		case errors.As(err, &refused):
			edgeMetrics.stampsDropped.WithLabelValues(label).Add(float64(len(p.ids)))
			u.logger.Error("the control plane refused a usage batch; its stamps are dropped", zap.Int("secrets", len(p.ids)), zap.Error(err))
		default:
			rest := make(map[string]*secretUse) // this POST's and every one not sent yet
			for _, q := range all[i:] {
				for _, id := range q.ids {
					rest[id] = batch[id]
				}
			}
			u.putBack(rest)
			if i == 0 {
				u.revoked.putBack(revoked)
			}
			edgeMetrics.stampsFailed.WithLabelValues(label).Add(float64(len(rest)))
			return err
		}
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
func (u *usageRecorder) send(ctx context.Context, p *usePost) error {
	stamps := p.stamps
	if stamps == nil {
		stamps = []wire.Stamp{} // "stamps": [] as an older control plane expects
	}
	raw, err := json.Marshal(wire.Usage{Edge: u.edge, Stamps: stamps, Callers: p.callers, RevokedUses: p.revoked})
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
