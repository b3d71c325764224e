// Package rules is the control plane's Service: the rotation rules over
// the store (docs/design.md §3), owners and roles, the audit trail, the
// events written with each change, leak reports, callers and allowed
// networks, and what the feed reads.
package rules

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
)

// Defaults of the rules.
const (
	DefaultMaxActiveSecrets = 2
	// MaxPageSize bounds a page of ListClients; DefaultPageSize is used when
	// the caller asks for none.
	MaxPageSize     = 1000
	DefaultPageSize = 100

	maxNameLen = 200
	// MaxImportSecretLen bounds an imported plaintext secret, in bytes.
	MaxImportSecretLen = 1024
)

// ErrInvalid marks errors that describe a malformed request. The error's
// message says what is wrong, never echoing a secret.
var ErrInvalid = errors.New("invalid request")

type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return invalidError(fmt.Sprintf(format, args...))
}

// ErrTooManyActive means the client already has max_active_secrets
// active secrets.
var ErrTooManyActive = errors.New("too many active secrets")

// ErrForbidden means the actor may not do this at all, whatever the
// client: creating and deleting clients, changing owners, importing
// secrets and reading the audit trail are for admins.
var ErrForbidden = errors.New("insufficient scope")

// Actor is who performs a management action, as the audit log records it,
// and what it may do.
type Actor struct {
	// TokenID is the audit log's who: a non-secret name for the
	// credential used (admin-token, edge) or user:<id> for a user that a
	// Caddy authentication handler vouched for.
	TokenID string
	// User is that user's id; empty when a token was used.
	User string
	// Admin may do everything: the admin token, or a user listed in
	// admins. Other users manage only the clients that list them as an
	// owner.
	Admin bool
	// RemoteIP is the caller's address, when known.
	RemoteIP string
	// Leak may report leaked secrets of any client, and nothing else:
	// the leak_token, or GitHub's signed secret scanning reports.
	Leak bool
}

// mayManage reports whether the actor may see and manage c's secrets.
// For anybody else c does not exist: they get ErrNotFound, so that a
// client's existence is not revealed to those who do not own it.
func (who Actor) mayManage(c store.Client) bool {
	return who.Admin || (who.User != "" && c.IsOwner(who.User))
}

// Limits of owner lists.
const (
	// MaxOwners bounds the owners of one client.
	MaxOwners = 100
	// MaxUserIDLen bounds a user id, in bytes.
	MaxUserIDLen = 255
	// DefaultAuditLimit is how many audit entries AuditTrail returns
	// unless asked for another number, at most MaxPageSize.
	DefaultAuditLimit = 100
)

// ServiceOptions configure a Service.
type ServiceOptions struct {
	// MaxActiveSecrets is the most active secrets a client may have.
	// Default: 2.
	MaxActiveSecrets int
	// SecretPrefix starts every generated secret. Default: rgs_.
	SecretPrefix string
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// AuditLog receives one entry per management action. Default: none.
	AuditLog *zap.Logger
	// TombstoneWindow is how long the feed keeps carrying a generated
	// secret after it was revoked or expired, as a tombstone by which
	// edges tell it from a wrong secret; 0 carries none. It is also how
	// long a secret's callers are kept after they were last seen (0: none).
	// Default: 720h.
	TombstoneWindow *time.Duration
	// LeakAction is what a leak report of an active secret does:
	// LeakRevoke or LeakFlag. Default: LeakRevoke.
	LeakAction string
	// Logger receives the service's warnings: dead
	// secrets presented at an edge (never a secret), and a failed pruning
	// of callers. Default: none.
	Logger *zap.Logger
	// Webhooks receive the events (outbox.go), their placeholders
	// resolved already. Default: none (events are still recorded).
	Webhooks []webhook.Config
	// ExpiryReminders are the offsets before a secret's expires_at at
	// which secret.expiring fires. Default: 720h, 168h, 24h.
	ExpiryReminders []time.Duration
	// RevocationDelay is how long after a secret is stored every edge
	// accepts it (the edges' revocation_delay): a delivery sink moves the
	// secret to current then (sinks.go). Default: 30s.
	RevocationDelay time.Duration
	// Cutover is the cut-over policy of clients that set none of their
	// own (cutover.go). Default: cutover.Default (auto off).
	Cutover *cutover.Policy
}

// DefaultTombstoneWindow is how long the feed carries a dead generated
// secret unless configured otherwise.
const DefaultTombstoneWindow = 720 * time.Hour

// WithDefaults returns o with every unset field at its default. With
// Validate, it is the one place the options are defaulted and checked:
// NewService applies both, and the Caddy module checks its config with
// the same code before anything is opened.
func (o ServiceOptions) WithDefaults() ServiceOptions {
	if o.MaxActiveSecrets == 0 {
		o.MaxActiveSecrets = DefaultMaxActiveSecrets
	}
	if o.SecretPrefix == "" {
		o.SecretPrefix = DefaultSecretPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AuditLog == nil {
		o.AuditLog = zap.NewNop()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.TombstoneWindow == nil {
		d := DefaultTombstoneWindow
		o.TombstoneWindow = &d
	}
	if o.LeakAction == "" {
		o.LeakAction = LeakRevoke
	}
	if len(o.ExpiryReminders) == 0 {
		o.ExpiryReminders = DefaultExpiryReminders
	}
	if o.RevocationDelay == 0 {
		o.RevocationDelay = DefaultRevocationDelay
	}
	if o.Cutover == nil {
		p := cutover.Default
		o.Cutover = &p
	}
	return o
}

// Validate checks options that WithDefaults has filled.
func (o ServiceOptions) Validate() error {
	if o.MaxActiveSecrets < 1 {
		return fmt.Errorf("max_active_secrets must be at least 1, got %d", o.MaxActiveSecrets)
	}
	if *o.TombstoneWindow < 0 {
		return fmt.Errorf("tombstone_window must not be negative, got %s", *o.TombstoneWindow)
	}
	if o.LeakAction != LeakRevoke && o.LeakAction != LeakFlag {
		return fmt.Errorf("leak_action must be %s or %s, got %q", LeakRevoke, LeakFlag, o.LeakAction)
	}
	if o.RevocationDelay < 0 {
		return fmt.Errorf("revocation_delay must not be negative, got %s", o.RevocationDelay)
	}
	if _, err := webhook.Build(o.Webhooks); err != nil {
		return err
	}
	if err := validateReminders(o.ExpiryReminders); err != nil {
		return err
	}
	if err := o.Cutover.Validate(); err != nil {
		return fmt.Errorf("cutover: %w", err)
	}
	return ValidatePrefix(o.SecretPrefix)
}

// Service enforces the rotation rules (docs/design.md §3) over a Store.
type Service struct {
	store     store.Store
	maxActive int
	prefix    string
	now       func() time.Time
	audit     *zap.Logger
	notifier  *store.Notifier
	epoch     string

	// The leak loop (leak.go): how long dead secrets stay in the feed,
	// and what a leak report does.
	tombstoneWindow time.Duration
	leakAction      string
	// pruneMu guards lastPrune, the cut-off of the last pruning of callers
	// past tombstoneWindow (callers.go), which also keeps callers that long.
	pruneMu   sync.Mutex
	lastPrune time.Time

	// The outbox (outbox.go): the webhooks, the reminder offsets, and
	// the sender's wake-up channel (Committed).
	hooks     []*webhook.Hook
	reminders []time.Duration
	wake      chan struct{}
	logger    *zap.Logger

	// Delivery sinks (sinks.go): when a delivered secret becomes current,
	// and the retries of failed scheduled rotations.
	revocationDelay time.Duration
	sched           schedule
	// The cut-over (cutover.go): the default policy, and the channel
	// that asks the loop for a pass.
	cutover     cutover.Policy
	cutoverKick chan struct{}
}

// NewService returns the rules over store and publishes the store's current
// revision to the notifier: the store's own when it is a NotifyingStore
// (every Service over it, and its watcher of other processes' changes,
// then wake the same feed requests), else a new one, which only this
// Service's changes reach.
func NewService(ctx context.Context, st store.Store, opts ServiceOptions) (*Service, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		store:     st,
		maxActive: opts.MaxActiveSecrets,
		prefix:    opts.SecretPrefix,
		now:       opts.Now,
		audit:     opts.AuditLog,

		tombstoneWindow: *opts.TombstoneWindow,
		leakAction:      opts.LeakAction,

		reminders: opts.ExpiryReminders,
		logger:    opts.Logger,
		wake:      make(chan struct{}, 1),

		revocationDelay: opts.RevocationDelay,
		cutover:         *opts.Cutover,
		cutoverKick:     make(chan struct{}, 1),
	}
	var err error
	if s.hooks, err = webhook.Build(opts.Webhooks); err != nil {
		return nil, err
	}
	if ns, ok := st.(store.NotifyingStore); ok {
		s.notifier = ns.Notifier()
	} else {
		s.notifier = store.NewNotifier()
	}
	epoch, rev, err := st.Revision(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading store revision: %w", err)
	}
	s.epoch = epoch
	s.notifier.Publish(epoch, rev)
	return s, nil
}

// Store returns the store the service works on.
func (s *Service) Store() store.Store { return s.store }

// Notifier returns the notifier the service publishes changes to.
func (s *Service) Notifier() *store.Notifier { return s.notifier }

// Webhooks returns the webhooks the events are enqueued for.
func (s *Service) Webhooks() []*webhook.Hook { return s.hooks }

// MaxActiveSecrets returns the most active secrets a client may have.
func (s *Service) MaxActiveSecrets() int { return s.maxActive }

// TombstoneWindow returns how long a dead generated secret stays in the
// feed as a tombstone; 0 when tombstones are off.
func (s *Service) TombstoneWindow() time.Duration { return s.tombstoneWindow }

// SecretPrefix returns the prefix of generated secrets.
func (s *Service) SecretPrefix() string { return s.prefix }

// Now returns the service clock's time, in UTC at millisecond precision
// (what the store keeps).
func (s *Service) Now() time.Time { return s.now().UTC().Truncate(time.Millisecond) }

// update runs fn in one store transaction and publishes the new
// revision. The store may run fn more than once (Store.Update); fn hands
// what it found back as its result, built afresh by each attempt, and
// update returns the result of the attempt that committed, or the zero
// value with the error. So no attempt's leftovers can reach an answer or
// the audit log, whatever fn does with its own locals.
func update[T any](ctx context.Context, s *Service, fn func(store.Tx) (T, error)) (T, error) {
	var out T
	rev, err := s.store.Update(ctx, func(tx store.Tx) error {
		var err error
		out, err = fn(tx)
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	s.notifier.Publish(s.epoch, rev)
	s.wakeOutbox()
	return out, nil
}

// nothing is the result of a transaction that finds nothing to report.
type nothing struct{}

// log writes one audit entry. It names the secret by id only.
func (s *Service) log(who Actor, action, clientID, secretID string, err error, extra ...zap.Field) {
	s.logAt(zapcore.InfoLevel, who, action, clientID, secretID, err, extra...)
}

// logAt writes one audit entry at the given level.
func (s *Service) logAt(level zapcore.Level, who Actor, action, clientID, secretID string, err error, extra ...zap.Field) {
	fields := append([]zap.Field{
		zap.String("action", action),
		zap.String("who", who.TokenID),
		zap.String("remote_ip", who.RemoteIP),
		zap.String("client_id", clientID),
		zap.String("secret_id", secretID),
		zap.String("outcome", outcome(err)),
	}, extra...)
	s.audit.Log(level, "audit", fields...)
}

// outcome names the result of an action for the audit log.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrTooManyActive):
		return "too_many_active_secrets"
	case errors.Is(err, store.ErrClientExists):
		return "client_exists"
	case errors.Is(err, ErrInvalid):
		return "invalid_request"
	case errors.Is(err, ErrForbidden):
		return "insufficient_scope"
	case errors.Is(err, ErrSinkFailed):
		return "sink_failed"
	}
	return "error"
}
