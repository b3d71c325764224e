// Package wire holds the JSON shapes of the edge feed and the usage ingest
// (docs/design.md §4, §7), shared by the control plane that serves them and the edge that
// consumes them, so the two halves cannot drift apart.
package wire

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Paths of the edge protocol on the control plane.
const (
	SnapshotPath = "/v1/edge/snapshot"
	UsagePath    = "/v1/edge/usage"
)

// SinceParam is the query parameter by which an edge asks for the changes
// since the snapshot it holds: since=<epoch>.<revision>.
const SinceParam = "since"

// FormatSince formats the value of SinceParam.
func FormatSince(epoch string, revision int64) string {
	return epoch + "." + strconv.FormatInt(revision, 10)
}

// Snapshot is the body of a 200 answer to GET /v1/edge/snapshot: every
// client with its active secrets, hashes only.
type Snapshot struct {
	Epoch       string    `json:"epoch"`
	Revision    int64     `json:"revision"`
	GeneratedAt time.Time `json:"generated_at"`
	Clients     []Client  `json:"clients"`
}

// Delta is the body of a 200 answer to GET /v1/edge/snapshot?since=…
// when the control plane can answer with the changes since that revision:
// every client changed since then, whole (its active secrets and
// tombstones as a full snapshot would list them), and the ids of the
// clients removed. Applied to the snapshot at Since, it gives the snapshot
// at Revision. A body with "clients" instead is a full snapshot.
type Delta struct {
	Epoch       string    `json:"epoch"`
	Revision    int64     `json:"revision"`
	Since       int64     `json:"since"`
	GeneratedAt time.Time `json:"generated_at"`
	Changed     []Client  `json:"changed"`
	Removed     []string  `json:"removed"`
}

// Client is one client in a snapshot.
type Client struct {
	ClientID string   `json:"client_id"`
	Secrets  []Secret `json:"secrets"`
	// AllowedCIDRs are the networks the client may call from, canonical
	// IPv4 and IPv6 prefixes; empty means anywhere. An edge older than
	// the field ignores it, and so does not enforce it.
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
	// NetworksReportOnly lets a request from outside AllowedCIDRs through,
	// recorded as refused, instead of refusing it.
	NetworksReportOnly bool `json:"networks_report_only,omitempty"`
	// Tombstones are the client's generated secrets revoked or expired
	// within the control plane's tombstone_window, so that an edge can
	// tell a dead secret from a wrong one. Edges that predate them ignore
	// the field; control planes that predate them send none.
	Tombstones []Tombstone `json:"tombstones,omitempty"`
	// PublicKeys are the client's active public-key credentials
	// (private_key_jwt), and Certificates its active certificate
	// credentials (tls_client_auth): public material only. Edges that
	// predate them ignore the fields; control planes that predate them
	// send none.
	PublicKeys   []PublicKey   `json:"public_keys,omitempty"`
	Certificates []Certificate `json:"certificates,omitempty"`
}

// PublicKey is one active public-key credential: its id and its public
// JWK as the control plane stored it (credkey.PublicKey.JSON: public
// members, "kid" and "alg" only).
type PublicKey struct {
	ID        string          `json:"id"`
	JWK       json.RawMessage `json:"jwk"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
}

// Certificate is one active certificate credential: its id and the
// certificate's RFC 8705 x5t#S256 thumbprint (base64url, no padding).
type Certificate struct {
	ID         string     `json:"id"`
	Thumbprint string     `json:"x5t#S256"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// Tombstone is a revoked or expired generated secret: its id and its
// `sha256:…` hash. It never authenticates.
type Tombstone struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
}

// Secret is one active secret in a snapshot. Hash is a stored hash string
// (`sha256:…`, bcrypt or argon2id PHC); ExpiresAt is set when the secret is
// scheduled to expire.
type Secret struct {
	ID        string     `json:"id"`
	Hash      string     `json:"hash"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Usage is the body of POST /v1/edge/usage.
//
// Stamps hold one stamp per secret used: the newest accepted use and its
// caller. Callers, added later, tell per secret every caller IP seen since
// the last flush. The two travel side by side so that the batch stays
// good for both generations: a control plane older than Callers ignores
// the unknown field and reads Stamps as it always did, and a control
// plane that knows Callers takes a batch without them (an older edge) by
// recording each stamp's From as a caller of one request.
type Usage struct {
	Edge    string          `json:"edge"`
	Stamps  []Stamp         `json:"stamps"`
	Callers []SecretCallers `json:"callers,omitempty"`
	// RevokedUses report tombstoned secrets presented at the edge since
	// the last batch. Control planes that predate them ignore the field.
	RevokedUses []RevokedUse `json:"presented_after_revoke,omitempty"`
}

// RevokedUse says that a revoked or expired secret was presented Count
// times since the last batch, the last time at LastAt by a caller at From.
type RevokedUse struct {
	ClientID string    `json:"client_id"`
	SecretID string    `json:"secret_id"`
	LastAt   time.Time `json:"last_presented_at"`
	From     string    `json:"from,omitempty"`
	Count    int64     `json:"count"`
}

// Stamp says that a secret was last used at LastUsedAt, by a caller at From.
type Stamp struct {
	ClientID   string    `json:"client_id"`
	SecretID   string    `json:"secret_id"`
	LastUsedAt time.Time `json:"last_used_at"`
	From       string    `json:"from,omitempty"`
}

// SecretCallers is one secret's callers since the last flush: at most
// MaxCallersPerSecret IPs one by one, the requests from any further IPs
// only counted.
type SecretCallers struct {
	ClientID string   `json:"client_id"`
	SecretID string   `json:"secret_id"`
	IPs      []Caller `json:"ips"`
	// OtherRequests counts the requests from caller IPs past the bound,
	// and OtherRefused those of them refused for their network.
	OtherRequests int64 `json:"other_requests,omitempty"`
	OtherRefused  int64 `json:"other_refused,omitempty"`
}

// MaxCallersPerSecret bounds the caller IPs an edge lists per secret in
// one flush.
const MaxCallersPerSecret = 64

// Caller is the use of a secret from one IP: every request in which the
// secret verified, from FirstAt to LastAt, and how many of them came from
// outside the client's allowed networks (refused, or let through in
// report-only mode).
type Caller struct {
	IP       string    `json:"ip"`
	FirstAt  time.Time `json:"first_at"`
	LastAt   time.Time `json:"last_at"`
	Requests int64     `json:"requests"`
	Refused  int64     `json:"refused,omitempty"`
}

// ETag formats the entity tag of a snapshot: "<epoch>.<revision>", quoted.
func ETag(epoch string, revision int64) string {
	return `"` + epoch + "." + strconv.FormatInt(revision, 10) + `"`
}

// ParseETag reads an entity tag written by ETag. A weak tag (W/"…") is
// accepted, as proxies may weaken tags of compressed answers.
func ParseETag(tag string) (epoch string, revision int64, ok bool) {
	tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
	if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return "", 0, false
	}
	tag = tag[1 : len(tag)-1]
	dot := strings.LastIndexByte(tag, '.')
	if dot <= 0 {
		return "", 0, false
	}
	rev, err := strconv.ParseInt(tag[dot+1:], 10, 64)
	if err != nil || rev < 0 {
		return "", 0, false
	}
	return tag[:dot], rev, true
}
