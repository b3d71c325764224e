package rotagate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/rotagate/rotagate/internal/wire"
)

// feedAnswer is a decoded 200: a full snapshot, or a change with its wire
// form (which the disk copy appends).
type feedAnswer struct {
	full  *snapshot
	delta *delta
	wire  *wire.Delta
}

// decodeAnswer decodes one feed answer of at most limit bytes from body.
// It reads the JSON token by token: a full snapshot's clients go one at a
// time, validated, straight into the shards of the snapshot being built
// (no intermediate copy of the whole answer). Each client is read into
// one reused rawClient, its strings into reused buffers and its sha256
// hashes into fixed arrays, so a client equal to its record in prev (the
// snapshot held) costs no allocation at all, and a new one costs its
// record: a swap holds little more than the old and the new snapshot
// and makes little garbage. A body with "clients" is a full snapshot;
// one with "since" and no "clients", a change.
func decodeAnswer(body io.Reader, limit int64, prev *snapshot) (feedAnswer, error) {
	counted := &io.LimitedReader{R: body, N: limit + 1}
	dec := jsontext.NewDecoder(counted)
	ans, err := decodeTop(dec, prev)
	if err == nil {
		switch _, err = dec.ReadToken(); {
		case errors.Is(err, io.EOF):
			err = nil
		case err == nil:
			err = errors.New("data after the snapshot")
		}
	}
	if counted.N <= 0 {
		return feedAnswer{}, fmt.Errorf("larger than max_snapshot_bytes (%d)", limit)
	}
	if err != nil {
		return feedAnswer{}, fmt.Errorf("decoding: %w", err)
	}
	return ans, nil
}

// decodeTop reads the top-level object of a feed answer. The decoder
// rejects a key given twice.
func decodeTop(dec *jsontext.Decoder, prev *snapshot) (feedAnswer, error) {
	if err := expectKind(dec, '{'); err != nil {
		return feedAnswer{}, err
	}
	var (
		epoch               []byte
		rev, since          int64
		hasSince, hasChange bool
		full                *snapshotBuilder
		changed             []wire.Client
		removed             []string
	)
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return feedAnswer{}, err
		}
		switch name.String() {
		case "epoch":
			epoch, _, err = readString(dec, nil)
		case "revision":
			rev, err = readInt(dec)
		case "since":
			hasSince = true
			since, err = readInt(dec)
		case "clients":
			full = newSnapshotBuilder(prev)
			err = decodeClients(dec, full)
		case "changed":
			hasChange = true
			err = readJSON(dec, &changed)
		case "removed":
			hasChange = true
			err = readJSON(dec, &removed)
		default: // a field this edge does not know
			err = dec.SkipValue()
		}
		if err != nil {
			return feedAnswer{}, err
		}
	}
	if err := expectKind(dec, '}'); err != nil {
		return feedAnswer{}, err
	}
	switch {
	case full != nil && hasChange:
		return feedAnswer{}, errors.New("both a full snapshot and a change")
	case full == nil && hasSince:
		w := &wire.Delta{Epoch: string(epoch), Revision: rev, Since: since, Changed: changed, Removed: removed}
		d, err := newDelta(w)
		return feedAnswer{delta: d, wire: w}, err
	case hasChange:
		return feedAnswer{}, errors.New("a change without since")
	case full == nil: // no clients at all
		full = newSnapshotBuilder(prev)
	}
	snap, err := full.finish(string(epoch), rev)
	return feedAnswer{full: snap}, err
}

// decodeClients reads the clients array of a full snapshot (or null)
// into b, one client at a time, each into the same rawClient.
func decodeClients(dec *jsontext.Decoder, b *snapshotBuilder) error {
	if isNull(dec) {
		_, err := dec.ReadToken()
		return err
	}
	if err := expectKind(dec, '['); err != nil {
		return fmt.Errorf("clients: %w", err)
	}
	var rc rawClient
	for dec.PeekKind() != ']' {
		rc.reset()
		if err := rc.decode(dec); err != nil {
			return err
		}
		if err := b.add(&rc); err != nil {
			return err
		}
	}
	return expectKind(dec, ']')
}

// decode reads one client object of the feed into rc. Unknown keys are
// skipped; null reads as absent.
func (rc *rawClient) decode(dec *jsontext.Decoder) error {
	if err := expectKind(dec, '{'); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		switch name.String() {
		case "client_id":
			rc.ids, rc.id, err = readString(dec, rc.ids)
		case "secrets":
			err = readArray(dec, func() error {
				s, err := rc.decodeSecret(dec, true)
				rc.secrets = append(rc.secrets, s)
				return err
			})
		case "tombstones":
			err = readArray(dec, func() error {
				s, err := rc.decodeSecret(dec, false)
				rc.tombstones = append(rc.tombstones, s)
				return err
			})
		case "allowed_cidrs":
			err = readArray(dec, func() error {
				var cidr span
				rc.text, cidr, err = readString(dec, rc.text)
				rc.cidrs = append(rc.cidrs, cidr)
				return err
			})
		case "networks_report_only":
			rc.reportOnly, err = readBool(dec)
		case "public_keys":
			err = readArray(dec, func() error {
				k, err := rc.decodeKey(dec)
				rc.keys = append(rc.keys, k)
				return err
			})
		case "certificates":
			err = readArray(dec, func() error {
				c, err := rc.decodeCertificate(dec)
				rc.certs = append(rc.certs, c)
				return err
			})
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	return expectKind(dec, '}')
}

// decodeSecret reads a secret (or, without withExpiry, a tombstone): its
// id into rc.ids, a sha256 hash into the fixed array, any other hash
// into rc.text.
func (rc *rawClient) decodeSecret(dec *jsontext.Decoder, withExpiry bool) (rawSecret, error) {
	var s rawSecret
	if err := expectKind(dec, '{'); err != nil {
		return s, fmt.Errorf("secret: %w", err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return s, err
		}
		switch key := name.String(); {
		case key == "id":
			rc.ids, s.id, err = readString(dec, rc.ids)
		case key == "hash":
			rc.text, s.hash, err = readString(dec, rc.text)
			if err == nil {
				rc.text = s.parseHash(rc.text)
			}
		case key == "expires_at" && withExpiry:
			s.expires, err = readExpiry(dec)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return s, err
		}
	}
	return s, expectKind(dec, '}')
}

// decodeKey reads a public key: its id into rc.ids, its JWK, as the JSON
// it is, into rc.text.
func (rc *rawClient) decodeKey(dec *jsontext.Decoder) (rawKey, error) {
	var k rawKey
	if err := expectKind(dec, '{'); err != nil {
		return k, fmt.Errorf("public key: %w", err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return k, err
		}
		switch name.String() {
		case "id":
			rc.ids, k.id, err = readString(dec, rc.ids)
		case "jwk":
			var v jsontext.Value
			if v, err = dec.ReadValue(); err == nil {
				k.jwk.at = len(rc.text)
				rc.text = append(rc.text, v...)
				k.jwk.end = len(rc.text)
			}
		case "expires_at":
			k.expires, err = readExpiry(dec)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return k, err
		}
	}
	return k, expectKind(dec, '}')
}

// decodeCertificate reads a certificate: its id into rc.ids, its
// thumbprint decoded into the fixed array.
func (rc *rawClient) decodeCertificate(dec *jsontext.Decoder) (rawSecret, error) {
	var c rawSecret
	if err := expectKind(dec, '{'); err != nil {
		return c, fmt.Errorf("certificate: %w", err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return c, err
		}
		switch name.String() {
		case "id":
			rc.ids, c.id, err = readString(dec, rc.ids)
		case "x5t#S256":
			var at span
			if rc.text, at, err = readString(dec, rc.text); err == nil {
				c.digest, c.sha = parseThumbprint(rc.text[at.at:at.end])
				rc.text = rc.text[:at.at]
			}
		case "expires_at":
			c.expires, err = readExpiry(dec)
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return c, err
		}
	}
	return c, expectKind(dec, '}')
}

// readExpiry reads an RFC 3339 time, or null, as secretMeta.expires
// holds it.
func readExpiry(dec *jsontext.Decoder) (int64, error) {
	v, err := dec.ReadValue()
	if err != nil || v.Kind() == 'n' {
		return 0, err
	}
	if v.Kind() != '"' {
		return 0, fmt.Errorf("expires_at: want a string, got %v", v.Kind())
	}
	var buf [64]byte
	raw, err := jsontext.AppendUnquote(buf[:0], v)
	var t time.Time
	if err != nil || t.UnmarshalText(raw) != nil {
		return 0, errors.New("expires_at is not an RFC 3339 time")
	}
	return expiresAt(t), nil
}

// readString appends the string value that comes next (nothing for null)
// to buf, and returns where in buf it is.
func readString(dec *jsontext.Decoder, buf []byte) ([]byte, span, error) {
	at := span{len(buf), len(buf)}
	v, err := dec.ReadValue()
	if err != nil {
		return buf, at, err
	}
	switch v.Kind() {
	case 'n':
		return buf, at, nil
	case '"':
	default:
		return buf, at, fmt.Errorf("want a string, got %v", v.Kind())
	}
	buf, err = jsontext.AppendUnquote(buf, v)
	at.end = len(buf)
	return buf, at, err
}

func readInt(dec *jsontext.Decoder) (int64, error) {
	v, err := dec.ReadValue()
	if err != nil || v.Kind() == 'n' {
		return 0, err
	}
	if v.Kind() != '0' {
		return 0, fmt.Errorf("want an integer, got %v", v.Kind())
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func readBool(dec *jsontext.Decoder) (bool, error) {
	v, err := dec.ReadValue()
	if err != nil {
		return false, err
	}
	switch v.Kind() {
	case 't':
		return true, nil
	case 'f', 'n':
		return false, nil
	}
	return false, fmt.Errorf("want true or false, got %v", v.Kind())
}

// readArray calls each for every element of the array that comes next
// (none for null).
func readArray(dec *jsontext.Decoder, each func() error) error {
	if isNull(dec) {
		_, err := dec.ReadToken()
		return err
	}
	if err := expectKind(dec, '['); err != nil {
		return err
	}
	for dec.PeekKind() != ']' {
		if err := each(); err != nil {
			return err
		}
	}
	return expectKind(dec, ']')
}

// readJSON decodes the value that comes next into v, as encoding/json
// does: for the few clients of a change.
func readJSON(dec *jsontext.Decoder, v any) error {
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

func isNull(dec *jsontext.Decoder) bool { return dec.PeekKind() == 'n' }

// expectKind reads a delimiter token of the given kind.
func expectKind(dec *jsontext.Decoder, want jsontext.Kind) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != want {
		return fmt.Errorf("want %v, got %v", want, tok.Kind())
	}
	return nil
}
