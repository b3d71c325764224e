package rotagate

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The saved snapshot's binary form: read in one pass straight into the
// shards, without decoding JSON or base64, so that an edge restarts from
// it in well under a second at a million clients.
//
//	header  8 bytes  savedMagic, its last byte the version (savedVersion)
//	        8 bytes  length of the body, little-endian
//	        4 bytes  CRC-32C of the body, little-endian
//	body    string epoch, varint revision, uvarint clients, then each client:
//	          string id, byte flags (1: networks report-only),
//	          uvarint n, n × string CIDR,
//	          uvarint n, n × secret: string id, byte kind, then
//	            kind 0: 32 bytes, the sha256 digest;
//	            kind 1: string, the stored hash (bcrypt, argon2id, PBKDF2);
//	            and varint expires (unix nanoseconds, 0: none),
//	          uvarint n, n × tombstone: string id, 32 bytes digest,
//	          and with flag 2, the credentials section (credentialsVersion):
//	            byte version,
//	            uvarint n, n × public key: string id, string JWK, varint expires,
//	            uvarint n, n × certificate: string id, 32 bytes thumbprint, varint expires
//
// A file written before the credentials section (no client has flag 2)
// reads as it always did.
// A string is a uvarint length and its bytes. The file is read whole
// before anything of it is used: a wrong magic, version, length or
// checksum, a value out of place or bytes left over reject it all.
const (
	savedMagic   = "RGSNAP\x00\x01"
	savedVersion = 1
	savedHeader  = len(savedMagic) + 8 + 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// minSavedClient is the fewest bytes a client with a secret or a
// tombstone takes in the body (one tombstone: an id of one byte and its
// length, the flags, three counts, the tombstone's id of one byte and
// its length, a digest). A hint only: a client listing nothing is
// smaller.
const minSavedClient = 2 + 1 + 3 + 2 + sha256.Size

const (
	kindDigest = 0
	kindHash   = 1

	flagReportOnly  = 1
	flagCredentials = 2

	// credentialsVersion is the version of the credentials section.
	credentialsVersion = 1
)

// encodeSnapshot writes snap's body to w.
func encodeSnapshot(w *bufio.Writer, snap *snapshot) error {
	var scratch [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) { w.Write(binary.AppendUvarint(scratch[:0], v)) }
	str := func(s string) { uvarint(uint64(len(s))); w.WriteString(s) }
	str(snap.epoch)
	w.Write(binary.AppendVarint(scratch[:0], snap.revision))
	uvarint(uint64(snap.clients))
	snap.each(func(c *client) {
		str(c.id)
		var flags byte
		if c.reportOnly {
			flags |= flagReportOnly
		}
		if c.pub != nil {
			flags |= flagCredentials
		}
		w.WriteByte(flags)
		uvarint(uint64(len(c.cidrs)))
		for _, cidr := range c.cidrs {
			str(cidr)
		}
		uvarint(uint64(len(c.digests) + len(c.slow)))
		for k := range c.digests {
			str(c.digests[k].id)
			w.WriteByte(kindDigest)
			w.Write(c.digests[k].digest[:])
			w.Write(binary.AppendVarint(scratch[:0], c.digests[k].expires))
		}
		for k := range c.slow {
			str(c.slow[k].id)
			w.WriteByte(kindHash)
			str(c.slow[k].hash.Encoded)
			w.Write(binary.AppendVarint(scratch[:0], c.slow[k].expires))
		}
		uvarint(uint64(len(c.buried)))
		for k := range c.buried {
			str(c.buried[k].id)
			w.Write(c.buried[k].digest[:])
		}
		if flags&flagCredentials != 0 {
			encodeCredentials(w, c)
		}
	})
	return w.Flush() // a write error sticks in w until here
}

// encodeCredentials writes the credentials section of a client.
func encodeCredentials(w *bufio.Writer, c *client) {
	var scratch [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) { w.Write(binary.AppendUvarint(scratch[:0], v)) }
	w.WriteByte(credentialsVersion)
	keys, certs := c.keyCreds(), c.certCreds()
	uvarint(uint64(len(keys)))
	for k := range keys {
		uvarint(uint64(len(keys[k].id)))
		w.WriteString(keys[k].id)
		jwk := keys[k].key.JSON()
		uvarint(uint64(len(jwk)))
		w.Write(jwk)
		w.Write(binary.AppendVarint(scratch[:0], keys[k].expires))
	}
	uvarint(uint64(len(certs)))
	for k := range certs {
		uvarint(uint64(len(certs[k].id)))
		w.WriteString(certs[k].id)
		w.Write(certs[k].thumbprint[:])
		w.Write(binary.AppendVarint(scratch[:0], certs[k].expires))
	}
}

// savedHeaderFor is the header of a body of n bytes with checksum sum.
func savedHeaderFor(n int64, sum uint32) []byte {
	h := append([]byte(savedMagic), make([]byte, 12)...)
	binary.LittleEndian.PutUint64(h[len(savedMagic):], uint64(n))
	binary.LittleEndian.PutUint32(h[len(savedMagic)+8:], sum)
	return h
}

// readSnapshotFile reads a saved snapshot of size bytes (the file's
// whole length) from r, which must be at most limit, and validates it as
// a feed answer is validated.
func readSnapshotFile(r io.Reader, size, limit int64) (*snapshot, error) {
	if size > limit {
		return nil, fmt.Errorf("larger than max_snapshot_bytes (%d)", limit)
	}
	var h [savedHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, errors.New("truncated header")
	}
	if string(h[:len(savedMagic)-1]) != savedMagic[:len(savedMagic)-1] {
		return nil, errors.New("not a saved snapshot")
	}
	if v := h[len(savedMagic)-1]; v != savedVersion {
		return nil, fmt.Errorf("version %d, this edge reads %d", v, savedVersion)
	}
	n := binary.LittleEndian.Uint64(h[len(savedMagic):])
	if n != uint64(size-int64(savedHeader)) {
		return nil, fmt.Errorf("the body should be %d bytes, the file holds %d", n, size-int64(savedHeader))
	}
	crc := crc32.New(crcTable)
	br := &binReader{r: bufio.NewReaderSize(io.TeeReader(io.LimitReader(r, int64(n)), crc), 1<<16), left: int64(n)}
	snap, err := br.snapshot()
	if err == nil && br.left != 0 {
		err = fmt.Errorf("%d bytes after the last client", br.left)
	}
	if err == nil && crc.Sum32() != binary.LittleEndian.Uint32(h[len(savedMagic)+8:]) {
		err = errors.New("checksum mismatch")
	}
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// binReader reads the body; the first error sticks. left bounds every
// length, so that a damaged one cannot ask for more memory than the file
// has bytes.
type binReader struct {
	r    *bufio.Reader
	left int64
	err  error
}

func (b *binReader) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *binReader) uvarint() uint64 { return readVarint(b, binary.ReadUvarint) }

func (b *binReader) varint() int64 { return readVarint(b, binary.ReadVarint) }

// readVarint reads one number with read (binary.ReadUvarint or
// ReadVarint) unless an error came before, and keeps read's error.
func readVarint[T uint64 | int64](b *binReader, read func(io.ByteReader) (T, error)) T {
	if b.err != nil {
		return 0
	}
	v, err := read(b)
	b.fail(err)
	return v
}

func (b *binReader) ReadByte() (byte, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left <= 0 {
		b.fail(io.ErrUnexpectedEOF)
		return 0, b.err
	}
	c, err := b.r.ReadByte()
	if err != nil {
		b.fail(io.ErrUnexpectedEOF)
		return 0, b.err
	}
	b.left--
	return c, nil
}

// count reads a number of things that take at least one byte each.
func (b *binReader) count() int {
	n := b.uvarint()
	if n > uint64(b.left) {
		b.fail(errors.New("a count beyond the end"))
		return 0
	}
	return int(n)
}

// fixed reads len(dst) bytes, at most the reader's buffer (a digest):
// through Peek, so that dst does not escape to the heap.
func (b *binReader) fixed(dst []byte) {
	if b.err != nil {
		return
	}
	if int64(len(dst)) > b.left {
		b.fail(io.ErrUnexpectedEOF)
		return
	}
	p, err := b.r.Peek(len(dst))
	if err != nil {
		b.fail(io.ErrUnexpectedEOF)
		return
	}
	copy(dst, p)
	b.r.Discard(len(dst))
	b.left -= int64(len(dst))
}

// str appends a string to buf and returns where it is.
func (b *binReader) str(buf []byte) ([]byte, span) {
	n := b.count()
	at := len(buf)
	if b.err != nil {
		return buf, span{at, at}
	}
	buf = append(buf, make([]byte, n)...)
	if _, err := io.ReadFull(b.r, buf[at:]); err != nil {
		b.fail(io.ErrUnexpectedEOF)
		return buf[:at], span{at, at}
	}
	b.left -= int64(n)
	return buf, span{at, at + n}
}

func (b *binReader) snapshot() (*snapshot, error) {
	epoch, _ := b.str(nil)
	revision := b.varint()
	n := b.count()
	builder := newSnapshotBuilder(nil)
	// Sized for n clients, but for no more than the body's bytes could
	// hold, so that a damaged count allocates nothing out of proportion
	// before the checksum rejects the file.
	builder.expect(min(n, int(b.left/minSavedClient)))
	var rc rawClient
	for i := 0; i < n && b.err == nil; i++ {
		rc.reset()
		b.client(&rc)
		if b.err == nil {
			if err := builder.add(&rc); err != nil {
				return nil, err
			}
		}
	}
	if b.err != nil {
		return nil, b.err
	}
	return builder.finish(string(epoch), revision)
}

func (b *binReader) client(rc *rawClient) {
	rc.ids, rc.id = b.str(rc.ids)
	flags, _ := b.ReadByte()
	if flags&^(flagReportOnly|flagCredentials) != 0 {
		b.fail(fmt.Errorf("unknown flags %#x", flags))
	}
	rc.reportOnly = flags&flagReportOnly != 0
	for range b.count() {
		var cidr span
		rc.text, cidr = b.str(rc.text)
		rc.cidrs = append(rc.cidrs, cidr)
	}
	for range b.count() {
		var s rawSecret
		rc.ids, s.id = b.str(rc.ids)
		switch kind, _ := b.ReadByte(); kind {
		case kindDigest:
			s.sha = true
			b.fixed(s.digest[:])
		case kindHash:
			rc.text, s.hash = b.str(rc.text)
		default:
			b.fail(fmt.Errorf("unknown secret kind %d", kind))
		}
		s.expires = b.varint()
		rc.secrets = append(rc.secrets, s)
	}
	for range b.count() {
		rc.tombstones = append(rc.tombstones, b.digestEntry(rc))
	}
	if flags&flagCredentials != 0 {
		b.credentials(rc)
	}
}

// credentials reads a client's credentials section.
func (b *binReader) credentials(rc *rawClient) {
	if v, _ := b.ReadByte(); v != credentialsVersion && b.err == nil {
		b.fail(fmt.Errorf("credentials section version %d, this edge reads %d", v, credentialsVersion))
	}
	for range b.count() {
		var k rawKey
		rc.ids, k.id = b.str(rc.ids)
		rc.text, k.jwk = b.str(rc.text)
		k.expires = b.varint()
		rc.keys = append(rc.keys, k)
	}
	for range b.count() {
		c := b.digestEntry(rc)
		c.expires = b.varint()
		rc.certs = append(rc.certs, c)
	}
}

// digestEntry reads what a tombstone and a certificate both start with:
// an id and a sha256 digest (of the secret, or the x5t#S256 thumbprint).
func (b *binReader) digestEntry(rc *rawClient) rawSecret {
	s := rawSecret{sha: true}
	rc.ids, s.id = b.str(rc.ids)
	b.fixed(s.digest[:])
	return s
}
