package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

func (e *env) edge(method, path string, body any, header ...string) cptest.Response {
	e.T.Helper()
	return e.Do(method, path, cptest.EdgeToken, body, header...)
}

func decodeSnapshot(t *testing.T, r cptest.Response) wire.Snapshot {
	t.Helper()
	var s wire.Snapshot
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("snapshot does not decode as wire.Snapshot: %v", err)
	}
	return s
}

func TestSnapshot(t *testing.T) {
	e := newEnv(t)
	e.MustClient("b")
	e.MustClient("a")
	e.MustClient("idle")
	keep := e.MustGenerate("a")
	gone := e.MustGenerate("a")
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Who, "a", gone.Secret.ID); err != nil {
		t.Fatal(err)
	}
	timed, err := e.Svc.GenerateSecret(context.Background(), cptest.Who, "b", rules.GenerateOptions{ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	epoch, rev, _ := e.Store.Revision(context.Background())

	r := e.edge("GET", wire.SnapshotPath, nil)
	cptest.MustStatus(t, r, 200)
	if r.Header.Get("ETag") != wire.ETag(epoch, rev) || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("ETag %q, want %q", r.Header.Get("ETag"), wire.ETag(epoch, rev))
	}
	s := decodeSnapshot(t, r)
	if s.Epoch != epoch || s.Revision != rev || !s.GeneratedAt.Equal(e.Clock.Now()) {
		t.Fatalf("snapshot %s/%d at %v", s.Epoch, s.Revision, s.GeneratedAt)
	}
	if len(s.Clients) != 2 || s.Clients[0].ClientID != "a" || s.Clients[1].ClientID != "b" {
		t.Fatalf("snapshot clients %+v", s.Clients)
	}
	a, b := s.Clients[0].Secrets, s.Clients[1].Secrets
	if len(a) != 1 || a[0].ID != keep.Secret.ID || a[0].Hash != keep.Secret.Hash || a[0].ExpiresAt != nil {
		t.Fatalf("client a: %+v", a)
	}
	if len(b) != 1 || b[0].ID != timed.Secret.ID || b[0].ExpiresAt == nil || !b[0].ExpiresAt.Equal(*timed.Secret.ExpiresAt) {
		t.Fatalf("client b: %+v", b)
	}
	if bytes.Contains(r.Body, []byte(keep.Plaintext)) {
		t.Fatal("the snapshot holds a plaintext secret")
	}

	// Conditional: 304 with the current tag, 200 with any other.
	r = e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", wire.ETag(epoch, rev))
	cptest.MustStatus(t, r, 304)
	if r.Header.Get("ETag") != wire.ETag(epoch, rev) || len(r.Body) != 0 {
		t.Fatal("304 without its ETag, or with a body")
	}
	cptest.MustStatus(t, e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", `W/`+wire.ETag(epoch, rev)), 304)
	cptest.MustStatus(t, e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", `"x.1", `+wire.ETag(epoch, rev)), 304)
	cptest.MustStatus(t, e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", wire.ETag(epoch, rev-1)), 200)
	cptest.MustStatus(t, e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", wire.ETag("other", rev)), 200)
	cptest.MustStatus(t, e.edge("GET", wire.SnapshotPath, nil, "If-None-Match", "garbage"), 200)

	// After the expiry, the rebuilt snapshot leaves the expired secret
	// out of b's secrets and carries it as b's tombstone.
	e.Clock.Add(2 * time.Hour)
	s = decodeSnapshot(t, e.edge("GET", wire.SnapshotPath, nil))
	if len(s.Clients) != 2 || s.Clients[0].ClientID != "a" || len(s.Clients[0].Secrets) != 1 {
		t.Fatalf("after expiry: %+v", s.Clients)
	}
	if b := s.Clients[1]; b.ClientID != "b" || len(b.Secrets) != 0 || len(b.Tombstones) != 1 ||
		b.Tombstones[0] != (wire.Tombstone{ID: timed.Secret.ID, Hash: timed.Secret.Hash}) {
		t.Fatalf("after expiry, client b: %+v", s.Clients[1])
	}
}

func TestSnapshotBadWait(t *testing.T) {
	e := newEnv(t)
	for _, w := range []string{"soon", "-1s", "10"} {
		r := e.edge("GET", wire.SnapshotPath+"?wait="+w, nil)
		cptest.MustError(t, r, 400, "invalid_request")
	}
}

func TestSnapshotGzip(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	e.MustGenerate("c")
	plain := e.edge("GET", wire.SnapshotPath, nil)
	cptest.MustStatus(t, plain, 200)
	if plain.Header.Get("Content-Encoding") != "" || !strings.Contains(plain.Header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("plain answer: Content-Encoding %q, Vary %q", plain.Header.Get("Content-Encoding"), plain.Header.Get("Vary"))
	}
	for _, ae := range []string{"gzip", "br, gzip;q=0.5", "*", "GZIP"} {
		r := e.edge("GET", wire.SnapshotPath, nil, "Accept-Encoding", ae)
		cptest.MustStatus(t, r, 200)
		if r.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(r.Header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q", ae, r.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(r.Body))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(body, plain.Body) {
			t.Fatalf("gunzipped body differs from the plain one (%v)", err)
		}
	}
	for _, ae := range []string{"gzip;q=0", "br", "identity"} {
		if r := e.edge("GET", wire.SnapshotPath, nil, "Accept-Encoding", ae); r.Header.Get("Content-Encoding") != "" {
			t.Fatalf("Accept-Encoding %q got %q", ae, r.Header.Get("Content-Encoding"))
		}
	}
}

// A waiting feed request answers 200 within 100 ms of a revoke.
func TestLongPollWakesOnRevoke(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	victim := e.MustGenerate("c")
	e.MustGenerate("c")
	waiting := make(chan struct{}, 1)
	e.api.onWait = func() { waiting <- struct{}{} }
	srv := httptest.NewServer(e.api)
	defer srv.Close()

	epoch, rev, _ := e.Store.Revision(context.Background())
	type result struct {
		status int
		etag   string
		snap   wire.Snapshot
		at     time.Time
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", srv.URL+wire.SnapshotPath+"?wait=30s", nil)
		req.Header.Set("Authorization", "Bearer "+cptest.EdgeToken)
		req.Header.Set("If-None-Match", wire.ETag(epoch, rev))
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var res result
		res.status, res.etag = resp.StatusCode, resp.Header.Get("ETag")
		res.err = json.NewDecoder(resp.Body).Decode(&res.snap)
		res.at = time.Now()
		done <- res
	}()
	<-waiting

	start := time.Now()
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Who, "c", victim.Secret.ID); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.status != 200 || res.etag != wire.ETag(epoch, rev+1) || res.snap.Revision != rev+1 {
		t.Fatalf("woken request: %d %s revision %d", res.status, res.etag, res.snap.Revision)
	}
	for _, s := range res.snap.Clients[0].Secrets {
		if s.ID == victim.Secret.ID {
			t.Fatal("the revoked secret is still in the snapshot")
		}
	}
	if took := res.at.Sub(start); took > 100*time.Millisecond {
		t.Fatalf("the waiting request answered %v after the revoke, want < 100ms", took)
	}
}

func TestLongPollTimesOutWith304(t *testing.T) {
	e := newEnv(t)
	epoch, rev, _ := e.Store.Revision(context.Background())
	r := e.edge("GET", wire.SnapshotPath+"?wait=30ms", nil, "If-None-Match", wire.ETag(epoch, rev))
	cptest.MustStatus(t, r, 304)
	// wait is capped by max_wait.
	capped := newEnv(t, func(_ *rules.ServiceOptions, ao *Options) { ao.MaxWait = 20 * time.Millisecond })
	epoch, rev, _ = capped.Store.Revision(context.Background())
	cptest.MustStatus(t, capped.edge("GET", wire.SnapshotPath+"?wait=1h", nil, "If-None-Match", wire.ETag(epoch, rev)), 304)
}

func TestLongPollEndsOnClose(t *testing.T) {
	e := newEnv(t)
	epoch, rev, _ := e.Store.Revision(context.Background())
	waiting := make(chan struct{}, 1)
	e.api.onWait = func() { waiting <- struct{}{} }
	done := make(chan cptest.Response, 1)
	go func() {
		done <- e.edge("GET", wire.SnapshotPath+"?wait=1h", nil, "If-None-Match", wire.ETag(epoch, rev))
	}()
	<-waiting
	e.api.Close()
	cptest.MustStatus(t, <-done, 304)
}

func TestLongPollEndsWithTheRequest(t *testing.T) {
	e := newEnv(t)
	epoch, rev, _ := e.Store.Revision(context.Background())
	waiting := make(chan struct{}, 1)
	e.api.onWait = func() { waiting <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := httptest.NewRequestWithContext(ctx, "GET", wire.SnapshotPath+"?wait=1h", nil)
		req.Header.Set("Authorization", "Bearer "+cptest.EdgeToken)
		req.Header.Set("If-None-Match", wire.ETag(epoch, rev))
		e.api.ServeHTTP(httptest.NewRecorder(), req)
	}()
	<-waiting
	cancel()
	<-done
}

// A thousand waiting edges cost no store queries while they wait, and one
// snapshot build when a change wakes them all.
func TestThousandWaitersNoQueryStorm(t *testing.T) {
	st, path := storetest.SQLite(t)
	counting := &countingStore{Store: st}
	e := newEnvOn(t, counting, path)
	e.MustClient("c")
	victim := e.MustGenerate("c")
	epoch, rev, _ := st.Revision(context.Background())

	const n = 1000
	var started sync.WaitGroup
	started.Add(n)
	e.api.onWait = started.Done
	before := counting.queries()
	results := make(chan cptest.Response, n)
	for range n {
		go func() {
			results <- e.edge("GET", wire.SnapshotPath+"?wait=1m", nil, "If-None-Match", wire.ETag(epoch, rev))
		}()
	}
	started.Wait()
	if q := counting.queries() - before; q != 0 {
		t.Fatalf("%d store queries while %d requests wait, want 0", q, n)
	}
	if _, err := e.Svc.RevokeSecret(context.Background(), cptest.Who, "c", victim.Secret.ID); err != nil {
		t.Fatal(err)
	}
	for range n {
		r := <-results
		if r.Status != 200 || r.Header.Get("ETag") != wire.ETag(epoch, rev+1) {
			t.Fatalf("a waiter got %d %s", r.Status, r.Header.Get("ETag"))
		}
	}
	if q := counting.snapshots.Load(); q > 3 {
		t.Fatalf("%d snapshot queries for %d woken waiters, want at most 3", q, n)
	}
	if q := counting.queries() - before; q > 3 {
		t.Fatalf("%d store queries for %d waiters, want at most 3", q, n)
	}
}

func TestUsageIngest(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	a := e.MustGenerate("c")
	rev := e.Revision()
	at := e.Clock.Now().Add(-time.Minute)
	body := wire.Usage{Edge: "edge-1", Stamps: []wire.Stamp{
		{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: at, From: "198.51.100.7"},
		{ClientID: "c", SecretID: "sec_unknownunknownunkn", LastUsedAt: at},
	}}
	for range 3 { // idempotent
		r := e.edge("POST", wire.UsagePath, body)
		cptest.MustStatus(t, r, 204)
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("usage 204 with Cache-Control %q", r.Header.Get("Cache-Control"))
		}
	}
	older := wire.Usage{Edge: "edge-2", Stamps: []wire.Stamp{{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: at.Add(-time.Hour), From: "198.51.100.8"}}}
	cptest.MustStatus(t, e.edge("POST", wire.UsagePath, older), 204)

	r := e.Admin("GET", "/v1/clients/c/secrets", nil)
	var list SecretList
	r.Decode(t, &list)
	s := list.Secrets[0]
	if s.LastUsedAt == nil || !s.LastUsedAt.Equal(at) || s.LastUsedFrom == nil || *s.LastUsedFrom != "198.51.100.7" {
		t.Fatalf("last used %v from %v", s.LastUsedAt, s.LastUsedFrom)
	}
	if e.Revision() != rev {
		t.Fatal("usage ingest moved the revision")
	}

	// gzip bodies, unknown fields (newer edges) and bad bodies.
	newer := wire.Usage{Stamps: []wire.Stamp{{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: at.Add(30 * time.Second), From: "198.51.100.9"}}}
	raw, _ := json.Marshal(newer)
	raw = append(raw[:len(raw)-1], []byte(`,"future_field":true}`)...)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(raw)
	zw.Close()
	cptest.MustStatus(t, e.edge("POST", wire.UsagePath, zbuf.Bytes(), "Content-Encoding", "gzip"), 204)
	e.Admin("GET", "/v1/clients/c/secrets", nil).Decode(t, &list)
	if got := list.Secrets[0].LastUsedFrom; got == nil || *got != "198.51.100.9" {
		t.Fatalf("gzip stamp not applied: from %v", got)
	}
	for _, tc := range []struct {
		body   any
		header []string
		status int
	}{
		{`{`, nil, 400},
		{`{"stamps":"x"}`, nil, 400},
		{`not gzip`, []string{"Content-Encoding", "gzip"}, 400},
		{`{}`, []string{"Content-Encoding", "br"}, 415},
		{`{"stamps":[` + strings.Repeat(" ", MaxUsageBytes) + `]}`, nil, 413},
	} {
		r := e.edge("POST", wire.UsagePath, tc.body, tc.header...)
		if r.Status != tc.status || r.JSON(t)["error"] == "" {
			t.Errorf("%.30v: %d %s, want %d", tc.body, r.Status, r.Body, tc.status)
		}
	}
}

// testFeedBodyIsMarshal: the full snapshot the feed streams from the
// store into gzip is, byte for byte, json.Marshal of the snapshot read
// whole — with every kind of client (expiring and legacy secrets,
// tombstones only, networks, ids JSON escapes) — and the plain answer is
// the same bytes decompressed.
func testFeedBodyIsMarshal(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newEnv(t)
	for _, id := range []string{"<a&b>", "plain", "z\"quote\\", "gone", "nets"} {
		e.MustClient(id)
		e.MustGenerate(id)
	}
	e.MustGenerate("plain")
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "<a&b>", rules.GenerateOptions{ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "z\"quote\\", rules.GenerateOptions{ImportSecret: "legacy secret"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.SetNetworks(ctx, cptest.Who, "nets", []string{"10.0.0.0/8", "2001:db8::/32"}, true); err != nil {
		t.Fatal(err)
	}
	secrets, err := e.Svc.ListSecrets(ctx, cptest.Who, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "gone", secrets[0].ID); err != nil {
		t.Fatal(err)
	}

	want, err := e.Svc.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantBody, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(wantBody, []byte(`\u003ca\u0026b\u003e`)) || !bytes.Contains(wantBody, []byte(`"tombstones"`)) ||
		!bytes.Contains(wantBody, []byte(`"expires_at"`)) || !bytes.Contains(wantBody, []byte(`$argon2id$`)) {
		t.Fatalf("the fixture misses a case: %s", wantBody)
	}
	zipped := e.edge("GET", wire.SnapshotPath, nil, "Accept-Encoding", "gzip")
	cptest.MustStatus(t, zipped, 200)
	zr, err := gzip.NewReader(bytes.NewReader(zipped.Body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantBody) {
		t.Fatalf("streamed body\n%s\njson.Marshal\n%s", got, wantBody)
	}
	plain := e.edge("GET", wire.SnapshotPath, nil)
	cptest.MustStatus(t, plain, 200)
	if !bytes.Equal(plain.Body, wantBody) || plain.Header.Get("Content-Length") != strconv.Itoa(len(wantBody)) {
		t.Fatalf("plain answer (Content-Length %s) differs from json.Marshal", plain.Header.Get("Content-Length"))
	}
}

// A read the database retries begins again: the encoder drops what the
// first attempt wrote.
func TestSnapshotEncoderBeginsAgain(t *testing.T) {
	head := wire.Snapshot{Epoch: "e", Revision: 3, GeneratedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := wire.Client{ClientID: "a", Secrets: []wire.Secret{{ID: "s", Hash: "sha256:x"}}}
	enc := &snapshotEncoder{bodyEncoder: newBodyEncoder()}
	for _, step := range []func() error{
		func() error { return enc.Begin(head) },
		func() error { return enc.Client(&wire.Client{ClientID: "torn", Secrets: []wire.Secret{}}) },
		func() error { return enc.Begin(head) },
		func() error { return enc.Client(&c) },
		func() error { return enc.write(snapshotTail) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := enc.finish(head.Epoch, head.Revision, head.GeneratedAt)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(b.gz.reader())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(zr)
	head.Clients = []wire.Client{c}
	want, _ := json.Marshal(head)
	if !bytes.Equal(got, want) || b.size != int64(len(want)) {
		t.Fatalf("after a second Begin: %s (size %d), want %s", got, b.size, want)
	}
}

// chunks keeps what is written, in order, across chunks of growing size,
// for WriteTo and for reader alike.
func TestChunks(t *testing.T) {
	var c chunks
	var want bytes.Buffer
	rng := rand.New(rand.NewPCG(3, 4))
	for want.Len() < 3<<20 {
		p := make([]byte, rng.IntN(100_000))
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		c.Write(p)
		want.Write(p)
	}
	if len(c.bufs) < 3 || cap(c.bufs[len(c.bufs)-1]) > maxChunk {
		t.Fatalf("%d chunks, the last of %d bytes", len(c.bufs), cap(c.bufs[len(c.bufs)-1]))
	}
	var out bytes.Buffer
	if n, err := c.WriteTo(&out); err != nil || n != int64(want.Len()) || c.n != want.Len() || !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatalf("WriteTo: %d bytes (%v), n %d, want %d", n, err, c.n, want.Len())
	}
	read, err := io.ReadAll(c.reader())
	if err != nil || !bytes.Equal(read, want.Bytes()) {
		t.Fatalf("reader: %d bytes (%v), want %d", len(read), err, want.Len())
	}
}

// appendPlainClient writes what json.Marshal writes, or leaves the
// client to it.
func TestAppendPlainClient(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_123).UTC()
	for name, c := range map[string]wire.Client{
		"secrets":         {ClientID: "c-1", Secrets: []wire.Secret{{ID: "s1", Hash: "sha256:abc"}, {ID: "s2", Hash: "$2a$10$x/y.z"}}},
		"expiring":        {ClientID: "c-1", Secrets: []wire.Secret{{ID: "s1", Hash: "sha256:abc", ExpiresAt: &at}}},
		"no secrets":      {ClientID: "c-1", Secrets: []wire.Secret{}},
		"nil secrets":     {ClientID: "c-1"},
		"escaped id":      {ClientID: "<a&b>", Secrets: []wire.Secret{{ID: "s1", Hash: "h"}}},
		"escaped secret":  {ClientID: "c", Secrets: []wire.Secret{{ID: "s\"1", Hash: "h"}}},
		"non-ASCII":       {ClientID: "é", Secrets: []wire.Secret{}},
		"networks":        {ClientID: "c", Secrets: []wire.Secret{}, AllowedCIDRs: []string{"10.0.0.0/8"}, NetworksReportOnly: true},
		"report only":     {ClientID: "c", Secrets: []wire.Secret{}, NetworksReportOnly: true},
		"tombstones only": {ClientID: "c", Secrets: []wire.Secret{}, Tombstones: []wire.Tombstone{{ID: "t", Hash: "sha256:x"}}},
	} {
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendPlainClient([]byte("prefix"), &c)
		plain := name == "secrets" || name == "expiring" || name == "no secrets"
		if ok != plain {
			t.Fatalf("%s: written by hand %v, want %v", name, ok, plain)
		}
		if ok && string(got) != "prefix"+string(want) {
			t.Fatalf("%s: wrote\n%s\njson.Marshal writes\n%s", name, got, want)
		}
	}
}
