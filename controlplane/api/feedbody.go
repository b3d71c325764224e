package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/rotagate/rotagate/internal/wire"
)

// feedGzipLevel is how hard feed answers are compressed. Their bulk is
// hashes, base64 of random bytes, which no level shrinks: the fastest
// level gives a body 5 % larger than the default's for 20 % less time
// (BenchmarkSnapshotBuild). The compressor is klauspost/compress's (Caddy's
// own encode module uses it): at that level it takes half the time of the
// standard library's for a body 1 % smaller.
const feedGzipLevel = gzip.BestSpeed

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, feedGzipLevel) // a valid level: no error
	return zw
}}

// bodyEncoder writes a feed answer's JSON straight into its gzip form,
// value by value, each written exactly as json.Marshal writes it: a full
// snapshot is never whole in memory, uncompressed.
type bodyEncoder struct {
	out     chunks
	zw      *gzip.Writer
	size    int64 // uncompressed bytes written
	scratch bytes.Buffer
	enc     *json.Encoder
}

func newBodyEncoder() *bodyEncoder {
	e := &bodyEncoder{zw: gzipWriters.Get().(*gzip.Writer)}
	e.zw.Reset(&e.out)
	e.enc = json.NewEncoder(&e.scratch)
	return e
}

// reset drops everything written.
func (e *bodyEncoder) reset() {
	e.out = chunks{}
	e.zw.Reset(&e.out)
	e.size = 0
}

// write adds raw JSON text.
func (e *bodyEncoder) write(p []byte) error {
	e.size += int64(len(p))
	_, err := e.zw.Write(p)
	return err
}

// value adds v as json.Marshal writes it (json.Encoder writes the same,
// and a newline after it, which is dropped).
func (e *bodyEncoder) value(v any) error {
	e.scratch.Reset()
	if err := e.enc.Encode(v); err != nil {
		return err
	}
	return e.write(bytes.TrimSuffix(e.scratch.Bytes(), []byte("\n")))
}

// finish ends the body and returns it as an answer for (epoch, rev).
func (e *bodyEncoder) finish(epoch string, rev int64, built time.Time) (*builtSnapshot, error) {
	err := e.zw.Close()
	gzipWriters.Put(e.zw)
	e.zw = nil
	if err != nil {
		return nil, err
	}
	return &builtSnapshot{epoch: epoch, rev: rev, etag: wire.ETag(epoch, rev), built: built, gz: e.out, size: e.size}, nil
}

// snapshotEncoder encodes a full snapshot as the store reads it
// (store.SnapshotWriter), into the bytes json.Marshal gives of the
// wire.Snapshot: the head, then each client, then snapshotTail.
type snapshotEncoder struct {
	*bodyEncoder
	head    wire.Snapshot
	clients int
	plain   []byte // appendPlainClient's, reused
}

// snapshotTail closes the clients' list and the snapshot.
var snapshotTail = []byte("]}")

// Begin implements store.SnapshotWriter: the head, as json.Marshal writes
// a snapshot without clients, up to the list's opening bracket.
func (s *snapshotEncoder) Begin(head wire.Snapshot) error {
	s.reset()
	s.head, s.clients = head, 0
	head.Clients = []wire.Client{}
	s.scratch.Reset()
	if err := s.enc.Encode(&head); err != nil {
		return err
	}
	raw := bytes.TrimSuffix(s.scratch.Bytes(), []byte("\n"))
	if !bytes.HasSuffix(raw, snapshotTail) || !bytes.HasSuffix(raw, []byte(`"clients":[]}`)) {
		return errors.New("the snapshot's clients are not its last field")
	}
	return s.write(raw[:len(raw)-len(snapshotTail)])
}

// Client implements store.SnapshotWriter.
func (s *snapshotEncoder) Client(c *wire.Client) error {
	if s.clients > 0 {
		if err := s.write([]byte{','}); err != nil {
			return err
		}
	}
	s.clients++
	var ok bool
	if s.plain, ok = appendPlainClient(s.plain[:0], c); ok {
		return s.write(s.plain)
	}
	return s.value(c)
}

// appendPlainClient appends c as json.Marshal writes it, when c has
// secrets only and strings that JSON writes as they are — nearly every
// client of a big snapshot — and reports whether it did; any other
// client is left to encoding/json. Reflection was a third of the
// encoder's time at a million clients.
func appendPlainClient(buf []byte, c *wire.Client) ([]byte, bool) {
	if c.Secrets == nil || len(c.AllowedCIDRs) > 0 || c.NetworksReportOnly || len(c.Tombstones) > 0 ||
		len(c.PublicKeys) > 0 || len(c.Certificates) > 0 || !plainJSON(c.ClientID) {
		return buf, false
	}
	buf = append(buf, `{"client_id":"`...)
	buf = append(buf, c.ClientID...)
	buf = append(buf, `","secrets":[`...)
	for i := range c.Secrets {
		sec := &c.Secrets[i]
		if !plainJSON(sec.ID) || !plainJSON(sec.Hash) {
			return buf, false
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"id":"`...)
		buf = append(buf, sec.ID...)
		buf = append(buf, `","hash":"`...)
		buf = append(buf, sec.Hash...)
		buf = append(buf, '"')
		if sec.ExpiresAt != nil {
			at, err := sec.ExpiresAt.MarshalJSON() // what json.Marshal calls
			if err != nil {
				return buf, false
			}
			buf = append(buf, `,"expires_at":`...)
			buf = append(buf, at...)
		}
		buf = append(buf, '}')
	}
	return append(buf, "]}"...), true
}

// plainJSON reports whether json.Marshal writes s as it is, between
// quotes: printable ASCII, none of the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b > 0x7e, b == '"', b == '\\', b == '<', b == '>', b == '&':
			return false
		}
	}
	return true
}

// chunks is a buffer that grows by adding chunks rather than by copying
// into one twice the size: a full snapshot's tens of megabytes are
// written once.
type chunks struct {
	bufs [][]byte
	n    int
}

const (
	minChunk = 4 << 10
	maxChunk = 1 << 20
)

func (c *chunks) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		last := len(c.bufs) - 1
		if last < 0 || len(c.bufs[last]) == cap(c.bufs[last]) {
			size := minChunk
			if last >= 0 {
				size = min(2*cap(c.bufs[last]), maxChunk)
			}
			c.bufs = append(c.bufs, make([]byte, 0, size))
			last++
		}
		k := min(len(p), cap(c.bufs[last])-len(c.bufs[last]))
		c.bufs[last] = append(c.bufs[last], p[:k]...)
		p = p[k:]
	}
	c.n += n
	return n, nil
}

// WriteTo writes the bytes held to w.
func (c *chunks) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, b := range c.bufs {
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// reader reads the bytes held.
func (c *chunks) reader() io.Reader {
	readers := make([]io.Reader, len(c.bufs))
	for i, b := range c.bufs {
		readers[i] = bytes.NewReader(b)
	}
	return io.MultiReader(readers...)
}
