package api

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// Limits of the edge protocol.
const (
	// MaxUsageBytes bounds a usage batch, after decompression. It is
	// larger than MaxBodyBytes: a batch holds one stamp per secret used.
	MaxUsageBytes = 16 << 20

	// snapshotRefresh is how long a built snapshot is served while the
	// revision stays the same. Rebuilding drops secrets that have expired
	// since (edges enforce expiry themselves meanwhile) and refreshes
	// generated_at.
	snapshotRefresh = time.Minute
	// snapshotBuildTimeout bounds one snapshot build; the build is shared
	// by every request that needs it, so it does not follow any one
	// request's context.
	snapshotBuildTimeout = 30 * time.Second
)

// snapshotBuilder builds the feed's snapshots once per revision and
// shares them between requests: the JSON body and, on first demand, its
// gzip form. (The edge's feed client, in the root package, is another
// thing.)
type snapshotBuilder struct {
	svc   *rules.Service
	group singleflight.Group

	mu  sync.Mutex
	cur *builtSnapshot
	// changes are the change answers built for the revision changesRev,
	// by the revision they start from.
	changes    map[int64]*builtSnapshot
	changesRev int64
}

// builtSnapshot is a feed answer built once and sent to every edge that
// asks for it. Only its gzip form is kept: a full snapshot of a million
// clients is about 200 MB of JSON and 75 MB compressed, and an edge that
// does not ask for gzip gets it decompressed as it is sent.
type builtSnapshot struct {
	epoch string
	rev   int64
	etag  string
	built time.Time
	// gz is the body compressed; size is its length uncompressed.
	gz   chunks
	size int64
}

func newSnapshotBuilder(svc *rules.Service) *snapshotBuilder { return &snapshotBuilder{svc: svc} }

// get returns a snapshot at least as new as the published revision,
// building one (once, however many requests ask) when needed.
func (f *snapshotBuilder) get(ctx context.Context) (*builtSnapshot, error) {
	epoch, rev, _ := f.svc.Notifier().Current()
	if b := f.cached(); b != nil {
		return b, nil
	}
	// A build already under way may have read the store before the
	// revision this request waited for: then build again.
	for range 3 {
		b, err := f.build(ctx)
		if err != nil || b.epoch != epoch || b.rev >= rev {
			return b, err
		}
	}
	return f.build(ctx)
}

// cached returns the last built snapshot while it is as new as the
// published revision and fresh, else nil.
func (f *snapshotBuilder) cached() *builtSnapshot {
	epoch, rev, _ := f.svc.Notifier().Current()
	f.mu.Lock()
	cur := f.cur
	f.mu.Unlock()
	if cur != nil && cur.epoch == epoch && cur.rev >= rev && f.svc.Now().Sub(cur.built) < snapshotRefresh {
		return cur
	}
	return nil
}

// build reads a snapshot from the store, sharing one read between all
// concurrent callers. A caller that missed the cache just before another
// build finished finds that build's snapshot instead of reading again.
func (f *snapshotBuilder) build(ctx context.Context) (*builtSnapshot, error) {
	ch := f.group.DoChan("snapshot", func() (any, error) {
		if b := f.cached(); b != nil {
			return b, nil
		}
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotBuildTimeout)
		defer cancel()
		enc := newBodyEncoder()
		sw := &snapshotEncoder{bodyEncoder: enc}
		if err := f.svc.WriteSnapshot(bctx, sw); err != nil {
			return nil, err
		}
		if err := enc.write(snapshotTail); err != nil {
			return nil, err
		}
		b, err := enc.finish(sw.head.Epoch, sw.head.Revision, sw.head.GeneratedAt)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		if f.cur == nil || f.cur.epoch != b.epoch || f.cur.rev <= b.rev {
			f.cur = b
		}
		f.mu.Unlock()
		return b, nil
	})
	return awaitBuild(ctx, ch)
}

// changesSince returns an answer with the changes since (epoch, since),
// at least as new as the published revision, built once however many edges
// ask; nil when the answer must be a full snapshot (another epoch, a
// revision the change log no longer reaches, too many changes).
func (f *snapshotBuilder) changesSince(ctx context.Context, epoch string, since int64) (*builtSnapshot, error) {
	cur, rev, _ := f.svc.Notifier().Current()
	if epoch != cur || since > rev {
		return nil, nil
	}
	f.mu.Lock()
	b := f.changes[since]
	f.mu.Unlock()
	if b != nil && b.epoch == cur && b.rev >= rev {
		return b, nil
	}
	for range 3 {
		b, err := f.buildChanges(ctx, since)
		if err != nil || b == nil {
			return nil, err
		}
		if b.epoch != epoch {
			return nil, nil
		}
		if b.rev >= rev {
			return b, nil
		}
	}
	return nil, nil // the store moves faster than changes build: answer in full
}

// buildChanges reads the changes since a revision from the store, one
// read shared by every concurrent caller asking from that revision.
func (f *snapshotBuilder) buildChanges(ctx context.Context, since int64) (*builtSnapshot, error) {
	ch := f.group.DoChan("changes:"+strconv.FormatInt(since, 10), func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotBuildTimeout)
		defer cancel()
		d, ok, err := f.svc.Changes(bctx, since)
		if err != nil || !ok {
			return (*builtSnapshot)(nil), err
		}
		enc := newBodyEncoder()
		if err := enc.value(&d); err != nil {
			return nil, err
		}
		b, err := enc.finish(d.Epoch, d.Revision, d.GeneratedAt)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		if f.changes == nil || b.rev > f.changesRev {
			f.changes, f.changesRev = map[int64]*builtSnapshot{}, b.rev
		}
		if b.rev == f.changesRev {
			f.changes[since] = b
		}
		f.mu.Unlock()
		return b, nil
	})
	return awaitBuild(ctx, ch)
}

// notModified answers 304 — an edge counts it as a confirmation that its
// snapshot is current — only while the revision can be trusted: a replica
// cut off from a shared database answers 503 instead, so edges turn to
// another replica or, failing all, stop trusting their snapshot at
// max_stale.
func notModified(n *store.Notifier, epoch string, rev int64) (any, error) {
	if !n.Trusted() {
		return nil, errStoreDown
	}
	return writer(func(w http.ResponseWriter) { writeNotModified(w, epoch, rev) }), nil
}

// errStoreDown is the feed's answer when the store does not answer.
var errStoreDown = &apiError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "the store did not answer"}

// snapshot serves GET /v1/edge/snapshot (docs/design.md §4). A request whose
// If-None-Match names the current revision gets 304, after waiting up to
// wait (capped at max_wait) for a change that turns the answer into 200.
// Waiting costs no store query: requests block on the notifier's channel.
// A request with since=<epoch>.<revision> gets, when the change log
// reaches back to it, the changes since that revision (wire.Delta) rather
// than the whole snapshot; otherwise (another epoch, too old, malformed)
// the whole snapshot, which is also what edges that never send since get.
func (a *API) snapshot(r *http.Request, _ rules.Actor) (any, error) {
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, badRequest(`wait must be a non-negative Go duration such as "10s"`)
		}
		wait = min(d, a.maxWait)
	}
	n := a.svc.Notifier()
	epoch, rev, changed := n.Current()
	if etagMatches(r.Header.Get("If-None-Match"), epoch, rev) {
		if wait <= 0 {
			return notModified(n, epoch, rev)
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		if a.onWait != nil {
			a.onWait()
		}
		select {
		case <-changed:
		case <-timer.C:
			return notModified(n, epoch, rev)
		case <-a.stop:
			return notModified(n, epoch, rev)
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	var b *builtSnapshot
	var err error
	if since := r.URL.Query().Get(wire.SinceParam); since != "" {
		if e, rev, ok := wire.ParseETag(`"` + since + `"`); ok {
			b, err = a.snapshots.changesSince(r.Context(), e, rev)
		}
	}
	if b == nil && err == nil {
		b, err = a.snapshots.get(r.Context())
	}
	if err != nil {
		if r.Context().Err() != nil {
			return nil, r.Context().Err()
		}
		a.log.Error("building snapshot failed", zap.Error(err))
		return nil, errStoreDown
	}
	gz := acceptsGzip(r.Header.Get("Accept-Encoding"))
	head := r.Method == http.MethodHead
	return writer(func(w http.ResponseWriter) { b.write(w, gz, head) }), nil
}

// write answers with the built body: as it is kept, gzipped, when gz,
// else decompressed on the way.
func (b *builtSnapshot) write(w http.ResponseWriter, gz, head bool) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("ETag", b.etag)
	h.Add("Vary", "Accept-Encoding")
	size := b.size
	if gz {
		h.Set("Content-Encoding", "gzip")
		size = int64(b.gz.n)
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if head {
		return
	}
	if gz {
		b.gz.WriteTo(w)
		return
	}
	zr, err := gzip.NewReader(b.gz.reader())
	if err != nil {
		return // our own gzip: cannot happen; the edge sees a short body
	}
	io.Copy(w, zr)
}

func writeNotModified(w http.ResponseWriter, epoch string, rev int64) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("ETag", wire.ETag(epoch, rev))
	h.Add("Vary", "Accept-Encoding")
	w.WriteHeader(http.StatusNotModified)
}

// etagMatches reports whether an If-None-Match value names (epoch, rev):
// "*", or a list of entity tags one of which is it.
func etagMatches(inm, epoch string, rev int64) bool {
	if epoch == "" || rev < 0 {
		return false
	}
	for _, tag := range strings.Split(inm, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" {
			return true
		}
		if e, r, ok := wire.ParseETag(tag); ok && e == epoch && r == rev {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding value allows gzip: listed
// (or covered by "*") with a non-zero quality.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "x-gzip" && coding != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}

// usage serves POST /v1/edge/usage (docs/design.md §7): 204 once the batch is
// stored. The body may be gzip-compressed (Content-Encoding: gzip). Unknown
// fields are ignored, so that newer edges can talk to older control planes.
func (a *API) usage(r *http.Request, _ rules.Actor) (any, error) {
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, badRequest("malformed gzip body")
		}
		defer zr.Close()
		r.Body = io.NopCloser(io.LimitReader(zr, MaxUsageBytes+1))
	default:
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "invalid_request", desc: "unsupported Content-Encoding (use gzip or none)"}
	}
	data, err := readBody(r, "usage batch")
	if err != nil {
		return nil, err
	}
	if len(data) > MaxUsageBytes {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "request_too_large", desc: fmt.Sprintf("usage batch is over %d bytes", MaxUsageBytes)}
	}
	var u wire.Usage
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, badRequest("%s", describeJSONError(err).Error())
	}
	n, err := a.svc.ApplyUsage(r.Context(), u)
	if err != nil {
		if r.Context().Err() != nil {
			return nil, r.Context().Err()
		}
		a.log.Error("storing usage stamps failed", zap.String("edge", u.Edge), zap.Error(err))
		return nil, errStoreDown
	}
	if ce := a.log.Check(zap.DebugLevel, "usage stamps stored"); ce != nil {
		ips := 0
		for _, sc := range u.Callers {
			ips += len(sc.IPs)
		}
		ce.Write(zap.String("edge", u.Edge), zap.Int("stamps", len(u.Stamps)), zap.Int("updated", n), zap.Int("caller_ips", ips))
	}
	return answer{status: http.StatusNoContent}, nil
}

// awaitBuild waits for a shared build's result, or for ctx to end: the
// build goes on for the other requests sharing it.
func awaitBuild(ctx context.Context, ch <-chan singleflight.Result) (*builtSnapshot, error) {
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*builtSnapshot), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
