// Package store keeps the control plane's data: the Store and Tx
// contracts, the records they return, and their one implementation, SQL
// over a small driver for SQLite or PostgreSQL (docs/design.md §1).
package store

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/rotagate/rotagate/internal/wire"
)

// Domain errors. The store maps its drivers' "no rows" and constraint
// failures to these, so the rules and the API never look at driver errors.
var (
	// ErrNotFound means the client or secret does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClientExists means a client with that id already exists.
	ErrClientExists = errors.New("client already exists")
)

// Store holds clients and the hashes of their secrets. Implementations must
// be safe for concurrent use. Methods that take no transaction see committed
// data only. SQL is the one implementation, on SQLite or PostgreSQL: its
// SQL text is written once and one test suite runs on both drivers.
type Store interface {
	// Update runs fn in one write transaction and commits when fn returns
	// nil, rolls back and returns fn's error otherwise. Writers are
	// serialised against each other for the whole transaction (BEGIN
	// IMMEDIATE on SQLite; Tx.LockClient row locks on PostgreSQL), so that
	// a count read inside fn still holds at commit. When fn wrote anything
	// the store revision is bumped by one in the same transaction. It
	// returns the revision after commit. A store may call fn again when
	// the transaction failed before commit for a transient reason (a
	// broken connection, a deadlock), so fn must leave no trace outside
	// the transaction: the Service's update helper has each attempt return
	// its findings, fresh, and keeps those of the attempt that committed.
	Update(ctx context.Context, fn func(Tx) error) (revision int64, err error)

	// Client returns one client with its owners, or ErrNotFound.
	Client(ctx context.Context, id string) (Client, error)

	// Clients returns up to limit clients, with their owners, whose id
	// sorts after the given one ("" for the first page), ordered by id.
	// With a non-empty owner, only the clients that list that user among
	// their owners.
	Clients(ctx context.Context, owner, after string, limit int) ([]Client, error)

	// Audit returns the newest limit entries of a client's audit trail,
	// newest first. A client that never existed has an empty trail.
	Audit(ctx context.Context, clientID string, limit int) ([]AuditEntry, error)

	// Secrets returns every secret of a client, revoked and expired ones
	// included, oldest first; ErrNotFound when the client does not exist.
	Secrets(ctx context.Context, clientID string) ([]Secret, error)

	// Revision returns the store's epoch, a random id fixed when the store
	// was created, and its revision, a counter that every committed change
	// made through Update increases.
	Revision(ctx context.Context) (epoch string, revision int64, err error)

	// Snapshot reads, in one consistent view, the epoch, the revision and
	// every secret active at now grouped by client, ordered by client id
	// then secret id, with each client's tombstones: its generated
	// (sha256) secrets revoked or expired within tombstoneWindow before
	// now (none when it is 0). A client with tombstones only is listed
	// without secrets. It hands them to w as they are read, one client at
	// a time, so that a million clients are never all in memory (Collect
	// keeps them). An error of w's ends the read with that error.
	Snapshot(ctx context.Context, now time.Time, tombstoneWindow time.Duration, w SnapshotWriter) error

	// SecretByHash returns the secret whose stored hash is hash (an
	// indexed lookup), or ErrNotFound.
	SecretByHash(ctx context.Context, hash string) (Secret, error)

	// Changes returns, read in one consistent view, the epoch, the
	// revision and the changes since revision since: every client whose
	// feed entry a revision after since may have changed, with its
	// secrets active at now and its tombstones within tombstoneWindow (as
	// Snapshot lists them), or in Removed when Snapshot would not list it. ok is false when the change log does
	// not reach back to since (pruned, or since is ahead), or too many
	// clients changed: the feed then answers with a full snapshot.
	// Update writes the log in the transaction of each change, so every
	// replica of a store reads the same changes.
	Changes(ctx context.Context, since int64, now time.Time, tombstoneWindow time.Duration) (delta wire.Delta, ok bool, err error)

	// ApplyUsage records last-used stamps: for each secret, last_used_at
	// becomes the later of the stored and the reported time, and
	// last_used_from follows the newest stamp; first_used_at is set by the
	// first stamp applied and kept after that. Stamps for unknown secrets,
	// or naming the wrong client, are ignored. It costs one statement per
	// stamp, is idempotent, and does not change the revision. It returns
	// how many secrets were updated.
	ApplyUsage(ctx context.Context, stamps []wire.Stamp) (updated int, err error)

	// ApplyCallers adds the callers of a usage batch, ordered by secret
	// id, one (secret, IP) pair each: first seen becomes the earlier, last
	// seen the later, the counts add up. Uses of unknown secrets, or naming
	// the wrong client, are ignored. Then each secret touched keeps its
	// keep most recently seen callers (the row of unlisted requests, IP
	// "", aside). It costs one statement per pair and one per secret, and
	// does not change the revision.
	ApplyCallers(ctx context.Context, uses []CallerUse, keep int) error

	// Callers returns the callers of the given secrets last seen at or
	// after since, by secret id, the most recently seen first.
	Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error)

	// PruneCallers deletes the callers last seen before before, and says
	// how many.
	PruneCallers(ctx context.Context, before time.Time) (int64, error)

	// CutoverPolicy returns the cut-over policy a client has set, or
	// ErrNotFound.
	CutoverPolicy(ctx context.Context, clientID string) (CutoverPolicy, error)

	// Rotations returns, read in one consistent view, the clients with a
	// rotation in progress (a secret added beside an active one, and not
	// yet found ended by Tx.EndRotation), ordered by client id, each with
	// its policy, its secrets active at now and their callers last seen
	// at or after callersSince. Its cost is bounded by those clients, not
	// by all clients. A client listed may have fewer than two active
	// secrets left (expired, revoked): the caller ends its rotation.
	Rotations(ctx context.Context, now, callersSince time.Time) ([]Rotation, error)

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error

	// Close releases the store. It is called once, when nothing uses the
	// store any more.
	Close() error
}

// NotifyingStore is a Store that owns the Notifier of its changes (SQL
// does). A store that other processes write too (PostgreSQL) also
// announces their changes on it, so that feed requests waiting on this
// process wake for a change made through any replica. NewService finds
// the notifier by type assertion: a Service can never be handed a
// notifier other than its store's. A wrapper that embeds the Store
// interface hides the method, and the Service then hears only its own
// changes: wrappers should implement it too.
type NotifyingStore interface {
	Store
	// Notifier returns the store's notifier, the same every call.
	Notifier() *Notifier
}

// Tx is the write side of the store, valid only inside Store.Update. Every
// method that changes data marks the transaction as a change, so the
// revision moves exactly when something was written.
type Tx interface {
	// LockClient returns a client with its owners and keeps its secrets
	// and owners from changing under other transactions until this one
	// ends; ErrNotFound when the client does not exist.
	LockClient(ctx context.Context, id string) (Client, error)

	// InsertClient adds a client and its owners; ErrClientExists when the
	// id is taken.
	InsertClient(ctx context.Context, c Client) error

	// DeleteClient removes a client, its owners and every secret it has
	// (with their callers);
	// ErrNotFound when the client does not exist. Its audit trail stays.
	DeleteClient(ctx context.Context, id string) error

	// SetOwners replaces the owners of an existing client.
	SetOwners(ctx context.Context, clientID string, owners []string) error

	// SetNetworks replaces the allowed networks (canonical) and the
	// report-only mode of a client; ErrNotFound when it does not exist.
	SetNetworks(ctx context.Context, clientID string, cidrs []string, reportOnly bool) error

	// AppendAudit adds an entry to the audit trail, committed with the
	// change it describes. On its own it is no change: it does not move
	// the revision.
	AppendAudit(ctx context.Context, e AuditEntry) error

	// Secrets returns every secret of a client, oldest first.
	Secrets(ctx context.Context, clientID string) ([]Secret, error)

	// InsertSecret adds a secret to an existing client, and puts the
	// client among the rotations in progress when it has another active
	// secret.
	InsertSecret(ctx context.Context, s Secret) error

	// SetExpiry sets a secret's expires_at; ErrNotFound when it does not
	// exist.
	SetExpiry(ctx context.Context, secretID string, at time.Time) error

	// Revoke sets a secret's revoked_at; ErrNotFound when it does not
	// exist.
	Revoke(ctx context.Context, secretID string, at time.Time) error

	// SetLabel sets a secret's label; ErrNotFound when it does not exist.
	SetLabel(ctx context.Context, secretID, label string) error

	// RecordRevokedUse adds a presented-after-revoke report to a secret:
	// the count grows by u.Count, and the last time and caller follow the
	// newest report. ErrNotFound when the secret does not exist, belongs
	// to another client, or was neither revoked nor expired at u.LastAt.
	// One statement; no change: the revision stays.
	RecordRevokedUse(ctx context.Context, u wire.RevokedUse) (RecordedRevokedUse, error)

	// FlagLeak records that a leak report named the secret, unless one
	// did before. No change: the revision stays.
	FlagLeak(ctx context.Context, secretID string, at time.Time) error
	// SetCutoverPolicy replaces the cut-over policy of a client;
	// ErrNotFound when it does not exist.
	SetCutoverPolicy(ctx context.Context, clientID string, p CutoverPolicy) error

	// Callers is Store.Callers inside the transaction.
	Callers(ctx context.Context, secretIDs []string, since time.Time) (map[string][]Caller, error)

	// EndRotation takes a client out of the rotations in progress (see
	// Store.Rotations); call it under LockClient, after checking that the
	// client has fewer than two active secrets, so that no secret added
	// meanwhile is missed. No change: the revision stays.
	EndRotation(ctx context.Context, clientID string) error

	// MarkStalled records that a secret's rotation passed its deadline
	// unfinished, and reports whether it was not recorded before, so that
	// the notice is given once across restarts and replicas. No change:
	// the revision stays.
	MarkStalled(ctx context.Context, secretID string, at time.Time) (bool, error)

	// InsertEvent writes an event to the outbox, with a pending delivery,
	// due at once, for each webhook key given. It does not mark the
	// transaction as a change: events do not move the revision. Call it
	// through the Service's enqueue.
	InsertEvent(ctx context.Context, e OutboxEvent, webhooks []string) error

	// AdvanceNotice records that a secret's expiry notice has reached
	// stage (stages count down: reminder offsets in milliseconds, then
	// 0 for secret.expired), and reports whether it moved: false when the secret
	// was already at that stage or a later one, so each notice is sent
	// once across restarts and replicas. No revision change either.
	AdvanceNotice(ctx context.Context, secretID string, stage int64) (bool, error)

	// Sink returns a client's delivery sink, or ErrNotFound.
	Sink(ctx context.Context, clientID string) (Sink, error)

	// SetSink adds or replaces a client's sink (UpdatedAt is the time of
	// the change; CreatedAt is kept on a replacement). No change: sinks
	// are not in the feed, so the revision stays.
	SetSink(ctx context.Context, k Sink) error

	// DeleteSink removes a client's sink; ErrNotFound when it has none.
	// The secrets it carried keep their records. No revision change.
	DeleteSink(ctx context.Context, clientID string) error

	// InsertSinkSecret records that a sink carries a new secret, in the
	// transaction that stores the secret. No revision change.
	InsertSinkSecret(ctx context.Context, s SinkSecret) error

	// SinkSecret returns what a sink carried of a secret, or ErrNotFound.
	SinkSecret(ctx context.Context, secretID string) (SinkSecret, error)

	// MarkSinkDelivered records that the sink acknowledged the secret,
	// and reports whether this call did (false when it was already
	// marked, by an earlier delivery or another replica). No revision
	// change.
	MarkSinkDelivered(ctx context.Context, secretID string, at time.Time) (bool, error)

	// PromoteSinkSecret makes a secret its sink's current one and the
	// client's other current one previous, once: ok is false when the
	// secret was promoted already (by another replica). It returns the
	// secrets it made previous. No revision change.
	PromoteSinkSecret(ctx context.Context, secretID string, at time.Time) (previous []string, ok bool, err error)

	// DropSinkSecret marks a secret revoked before its promotion as
	// dropped: it is never promoted. No revision change.
	DropSinkSecret(ctx context.Context, secretID string, at time.Time) error
}

// SinkStore is the delivery sinks' side of a store (both of ours): reads
// in transactions of their own, for the API and the sink loop.
type SinkStore interface {
	// Sink returns a client's sink, or ErrNotFound.
	Sink(ctx context.Context, clientID string) (Sink, error)

	// SinkSecret returns what a sink carried of a secret, or ErrNotFound.
	SinkSecret(ctx context.Context, secretID string) (SinkSecret, error)

	// SinkPromotionsDue returns up to limit secrets that their sink
	// delivered, not yet promoted, whose promotion time is at or before
	// now, the earliest first.
	SinkPromotionsDue(ctx context.Context, now time.Time, limit int) ([]SinkSecret, error)

	// ScheduledSinks returns every client whose sink rotates on a
	// schedule, with its newest secret active at now. Its cost grows with
	// those clients only (an index on rotate_every).
	ScheduledSinks(ctx context.Context, now time.Time) ([]ScheduledSink, error)
}

// OutboxStore is the outbox's side of a store (both of ours). The writes
// of events and notices happen inside Store.Update (Tx.InsertEvent,
// Tx.AdvanceNotice); these run transactions of their own.
type OutboxStore interface {
	// ClaimDeliveries leases up to limit deliveries of one webhook that
	// are due at now (neither delivered nor failed, next attempt at or
	// before now), oldest first: their attempt count goes up by one and
	// their next attempt moves to leaseUntil, in one transaction, so no
	// other claim (from any process) gets them until the lease runs out.
	ClaimDeliveries(ctx context.Context, webhook string, now, leaseUntil time.Time, limit int) ([]Delivery, error)

	// FinishDelivery records an attempt's outcome, unless the claim was
	// lost meanwhile (the lease ran out and another claim made a later
	// attempt): then it changes nothing.
	FinishDelivery(ctx context.Context, d Delivery, o DeliveryOutcome) error

	// PendingDeliveries counts the deliveries neither delivered nor
	// failed, by webhook key.
	PendingDeliveries(ctx context.Context) (map[string]int, error)

	// Events returns the newest limit events with their deliveries,
	// newest first.
	Events(ctx context.Context, limit int) ([]EventRecord, error)

	// ExpiryCandidates returns the secrets, not revoked, that expire
	// after from and at or before to, with their notice stage.
	ExpiryCandidates(ctx context.Context, from, to time.Time) ([]ExpiryCandidate, error)

	// PruneEvents deletes the events created before cutoff and their
	// deliveries. It returns how many events it deleted.
	PruneEvents(ctx context.Context, cutoff time.Time) (int, error)
}

// SnapshotWriter receives a snapshot as Store.Snapshot reads it.
type SnapshotWriter interface {
	// Begin starts the snapshot: head holds its epoch and revision, no
	// clients. A read the database retries begins again: whatever was
	// received before is to be dropped.
	Begin(head wire.Snapshot) error
	// Client receives the next client, in client id order. c and its
	// slices are reused once Client returns: keep a CloneClient.
	Client(c *wire.Client) error
}

// Collect is a SnapshotWriter that keeps the whole snapshot in memory:
// for small stores and tests. The feed streams instead.
type Collect struct {
	Snapshot wire.Snapshot
}

// Begin implements SnapshotWriter.
func (c *Collect) Begin(head wire.Snapshot) error {
	c.Snapshot = head
	c.Snapshot.Clients = []wire.Client{} // none is [] in JSON, not null
	return nil
}

// Client implements SnapshotWriter.
func (c *Collect) Client(wc *wire.Client) error {
	c.Snapshot.Clients = append(c.Snapshot.Clients, CloneClient(wc))
	return nil
}

// CloneClient copies a client that a SnapshotWriter received.
func CloneClient(c *wire.Client) wire.Client {
	out := *c
	out.Secrets = slices.Clone(c.Secrets)
	out.Tombstones = slices.Clone(c.Tombstones)
	out.AllowedCIDRs = slices.Clone(c.AllowedCIDRs)
	return out
}
