// Package rules is the control plane's Service: the rotation rules over
// the store (docs/design.md §3), owners and roles, the audit trail, the
// events written with each change, leak reports, callers and allowed
// networks, and what the feed reads.
package rules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/webhook"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
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
	if _, err := webhook.Build(o.Webhooks); err != nil {
		return err
	}
	if err := validateReminders(o.ExpiryReminders); err != nil {
		return err
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

// CreateClient registers a client with its owners (admins only). An empty
// id gets a generated cli_… id.
func (s *Service) CreateClient(ctx context.Context, who Actor, id, name string, owners []string) (c store.Client, err error) {
	defer func() { s.log(who, "client.create", c.ID, "", err, zap.Strings("owners", c.Owners)) }()
	if !who.Admin {
		return store.Client{ID: id}, ErrForbidden
	}
	if owners, err = normalizeOwners(owners); err != nil {
		return store.Client{ID: id}, err
	}
	if id == "" {
		if id, err = NewClientID(); err != nil {
			return store.Client{}, err
		}
	} else if err := ValidateClientID(id); err != nil {
		return store.Client{}, invalidError(err.Error())
	}
	if err := validateName(name); err != nil {
		return store.Client{}, err
	}
	c = store.Client{ID: id, Name: name, CreatedAt: s.Now(), Owners: owners}
	_, err = update(ctx, s, func(tx store.Tx) (nothing, error) {
		if err := tx.InsertClient(ctx, c); err != nil {
			return nothing{}, err
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventClientCreated, ClientID: id, Data: map[string]any{"name": name}}); err != nil {
			return nothing{}, err
		}
		return nothing{}, s.record(ctx, tx, who, "client.create", id, "", ownersDetail(owners))
	})
	if err != nil {
		return store.Client{ID: id}, err
	}
	return c, nil
}

// normalizeOwners checks user ids and returns them sorted, without
// duplicates.
func normalizeOwners(owners []string) ([]string, error) {
	out := make([]string, 0, len(owners))
	for _, o := range owners {
		if err := ValidateUserID(o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	sort.Strings(out)
	out = slices.Compact(out)
	if len(out) > MaxOwners {
		return nil, invalidf("a client has at most %d owners", MaxOwners)
	}
	return out, nil
}

// ValidateUserID checks a user id as an owner or admin: 1 to 255 bytes of
// UTF-8 without control characters.
func ValidateUserID(u string) error {
	if u == "" || len(u) > MaxUserIDLen || !utf8.ValidString(u) {
		return invalidf("a user id must be 1 to %d bytes of UTF-8", MaxUserIDLen)
	}
	for _, r := range u {
		if unicode.IsControl(r) {
			return invalidf("a user id must not contain control characters")
		}
	}
	return nil
}

func ownersDetail(owners []string) string {
	if len(owners) == 0 {
		return "owners: none"
	}
	return "owners: " + strings.Join(owners, ", ")
}

// OwnersEdit changes a client's owners: with Replace, the owners become
// Set; then Add are added and Remove removed.
type OwnersEdit struct {
	Replace     bool
	Set         []string
	Add, Remove []string
}

// EditOwners changes a client's owners (admins only) and returns the
// client as it is then.
func (s *Service) EditOwners(ctx context.Context, who Actor, clientID string, edit OwnersEdit) (c store.Client, err error) {
	defer func() { s.log(who, "client.owners", clientID, "", err, zap.Strings("owners", c.Owners)) }()
	if !who.Admin {
		return store.Client{}, ErrForbidden
	}
	if err := ValidateClientID(clientID); err != nil {
		return store.Client{}, invalidError(err.Error())
	}
	for _, list := range [][]string{edit.Set, edit.Add, edit.Remove} {
		if _, err := normalizeOwners(list); err != nil {
			return store.Client{}, err
		}
	}
	c, err = update(ctx, s, func(tx store.Tx) (store.Client, error) {
		c, err := tx.LockClient(ctx, clientID)
		if err != nil {
			return store.Client{}, err
		}
		owners := c.Owners
		if edit.Replace {
			owners = edit.Set
		}
		owners = slices.DeleteFunc(append(slices.Clone(owners), edit.Add...), func(o string) bool { return slices.Contains(edit.Remove, o) })
		if owners, err = normalizeOwners(owners); err != nil {
			return store.Client{}, err
		}
		if slices.Equal(owners, c.Owners) {
			return c, nil
		}
		c.Owners = owners
		if err := tx.SetOwners(ctx, clientID, owners); err != nil {
			return store.Client{}, err
		}
		return c, s.record(ctx, tx, who, "client.owners", clientID, "", ownersDetail(owners))
	})
	if err != nil {
		return store.Client{}, err
	}
	return c, nil
}

// AuditTrail returns the newest limit entries of a client's audit trail
// (admins only); limit 0 means DefaultAuditLimit.
func (s *Service) AuditTrail(ctx context.Context, who Actor, clientID string, limit int) ([]store.AuditEntry, error) {
	if !who.Admin {
		return nil, ErrForbidden
	}
	if err := ValidateClientID(clientID); err != nil {
		return nil, invalidError(err.Error())
	}
	if limit == 0 {
		limit = DefaultAuditLimit
	}
	if limit < 1 || limit > MaxPageSize {
		return nil, invalidf("limit must be between 1 and %d", MaxPageSize)
	}
	return s.store.Audit(ctx, clientID, limit)
}

// record adds an entry to the stored audit trail inside tx.
func (s *Service) record(ctx context.Context, tx store.Tx, who Actor, action, clientID, secretID, detail string) error {
	return tx.AppendAudit(ctx, store.AuditEntry{
		At: s.Now(), Who: who.TokenID, RemoteIP: who.RemoteIP,
		Action: action, ClientID: clientID, SecretID: secretID, Detail: detail,
	})
}

func validateName(name string) error {
	if len(name) > maxNameLen || !utf8.ValidString(name) {
		return invalidf("name must be valid UTF-8 of at most %d bytes", maxNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return invalidf("name must not contain control characters")
		}
	}
	return nil
}

// GetClient returns a client and the metadata of all its secrets.
func (s *Service) GetClient(ctx context.Context, who Actor, id string) (store.Client, []store.Secret, error) {
	c, err := s.VisibleClient(ctx, who, id)
	if err != nil {
		return store.Client{}, nil, err
	}
	secrets, err := s.store.Secrets(ctx, id)
	if err != nil {
		return store.Client{}, nil, err
	}
	return c, secrets, nil
}

// VisibleClient returns a client the actor may manage; ErrNotFound for
// one it may not.
func (s *Service) VisibleClient(ctx context.Context, who Actor, id string) (store.Client, error) {
	if err := ValidateClientID(id); err != nil {
		return store.Client{}, invalidError(err.Error())
	}
	c, err := s.store.Client(ctx, id)
	if err != nil {
		return store.Client{}, err
	}
	if !who.mayManage(c) {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

// ListClients returns a page of the clients the actor may manage (all for
// an admin), ordered by id, starting after the given id, and the id to
// continue after ("" at the end). limit 0 means DefaultPageSize.
func (s *Service) ListClients(ctx context.Context, who Actor, after string, limit int) ([]store.Client, string, error) {
	owner := ""
	if !who.Admin {
		if who.User == "" {
			return nil, "", ErrForbidden
		}
		owner = who.User
	}
	if limit == 0 {
		limit = DefaultPageSize
	}
	if limit < 1 || limit > MaxPageSize {
		return nil, "", invalidf("limit must be between 1 and %d", MaxPageSize)
	}
	if after != "" {
		if err := ValidateClientID(after); err != nil {
			return nil, "", invalidf("after: %v", err)
		}
	}
	clients, err := s.store.Clients(ctx, owner, after, limit+1)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(clients) > limit {
		clients = clients[:limit]
		next = clients[limit-1].ID
	}
	return clients, next, nil
}

// ListSecrets returns the metadata of all secrets of a client.
func (s *Service) ListSecrets(ctx context.Context, who Actor, clientID string) ([]store.Secret, error) {
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return nil, err
	}
	return s.store.Secrets(ctx, clientID)
}

// DeleteClient revokes every secret of a client and removes the client
// (admins only).
func (s *Service) DeleteClient(ctx context.Context, who Actor, id string) (err error) {
	var revoked []string
	defer func() { s.log(who, "client.delete", id, "", err, zap.Strings("revoked", revoked)) }()
	if !who.Admin {
		return ErrForbidden
	}
	if err := ValidateClientID(id); err != nil {
		return invalidError(err.Error())
	}
	now := s.Now()
	revoked, err = update(ctx, s, func(tx store.Tx) ([]string, error) {
		if _, err := tx.LockClient(ctx, id); err != nil {
			return nil, err
		}
		secrets, err := tx.Secrets(ctx, id)
		if err != nil {
			return nil, err
		}
		var active []string
		for i := range secrets {
			if secrets[i].Active(now) {
				active = append(active, secrets[i].ID)
			}
		}
		if err := tx.DeleteClient(ctx, id); err != nil {
			return nil, err
		}
		revokedIDs := append([]string{}, active...)
		if err := s.enqueue(ctx, tx, Event{Type: store.EventClientDeleted, ClientID: id, Data: map[string]any{"revoked": revokedIDs}}); err != nil {
			return nil, err
		}
		detail := ""
		if len(active) > 0 {
			detail = "revoked " + strings.Join(active, ", ")
		}
		return active, s.record(ctx, tx, who, "client.delete", id, "", detail)
	})
	return err
}

// GenerateOptions choose what GenerateSecret adds. At most one of
// ImportHash and ImportSecret may be set; with neither, a secret is
// generated.
type GenerateOptions struct {
	// ExpiresIn schedules the expiry of the new secret; 0 means never.
	ExpiresIn time.Duration
	// ImportHash is a bcrypt, argon2id or PBKDF2 hash of a legacy secret.
	ImportHash string
	// ImportSecret is a plaintext legacy secret, hashed with argon2id
	// before it is stored.
	ImportSecret string
}

// CreatedSecret is the result of adding a secret.
type CreatedSecret struct {
	// Secret is the stored metadata of the new secret.
	Secret store.Secret
	// Plaintext is the generated secret, shown once; empty for imports.
	Plaintext string
	// Expiring lists the other secrets a rotation scheduled to expire.
	Expiring []string
	// Revoked lists the other secrets a rotation with no grace revoked.
	Revoked []string
	// Warnings describe what may keep an imported plaintext secret from
	// working with some clients. They never quote the secret.
	Warnings []string
}

// GenerateSecret adds a generated or imported secret to a client, unless
// the client is already at max_active_secrets (ErrTooManyActive).
func (s *Service) GenerateSecret(ctx context.Context, who Actor, clientID string, opts GenerateOptions) (ns CreatedSecret, err error) {
	action := "secret.generate"
	if opts.ImportHash != "" || opts.ImportSecret != "" {
		action = "secret.import"
	}
	defer func() {
		if len(ns.Warnings) > 0 {
			s.logAt(zapcore.WarnLevel, who, action, clientID, ns.Secret.ID, err, zap.Strings("warnings", ns.Warnings))
			return
		}
		s.log(who, action, clientID, ns.Secret.ID, err)
	}()
	if action == "secret.import" && !who.Admin {
		return CreatedSecret{}, ErrForbidden
	}
	if err := ValidateClientID(clientID); err != nil {
		return CreatedSecret{}, invalidError(err.Error())
	}
	if opts.ExpiresIn < 0 {
		return CreatedSecret{}, invalidf("expires_in must not be negative")
	}
	ns, err = s.newSecret(clientID, opts)
	if err != nil {
		return CreatedSecret{}, err
	}
	if opts.ExpiresIn > 0 {
		at := ns.Secret.CreatedAt.Add(opts.ExpiresIn)
		ns.Secret.ExpiresAt = &at
	}
	_, err = update(ctx, s, func(tx store.Tx) (nothing, error) {
		active, err := s.lockActive(ctx, tx, who, clientID, ns.Secret.CreatedAt)
		if err != nil {
			return nothing{}, err
		}
		if len(active) >= s.maxActive {
			return nothing{}, ErrTooManyActive
		}
		if err := tx.InsertSecret(ctx, ns.Secret); err != nil {
			return nothing{}, err
		}
		data := map[string]any{"imported": action == "secret.import"}
		if ns.Secret.ExpiresAt != nil {
			data["expires_at"] = *ns.Secret.ExpiresAt
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretGenerated, ClientID: clientID,
			SecretID: ns.Secret.ID, Hint: ns.Secret.Hint, Data: data}); err != nil {
			return nothing{}, err
		}
		detail := ""
		if ns.Secret.ExpiresAt != nil {
			detail = "expires in " + opts.ExpiresIn.String()
		}
		return nothing{}, s.record(ctx, tx, who, action, clientID, ns.Secret.ID, detail)
	})
	if err != nil {
		return CreatedSecret{Secret: store.Secret{ID: ns.Secret.ID}}, err
	}
	return ns, nil
}

// RotateSecret adds a generated secret and, in the same transaction, sets
// expires_at = min(current, now+grace) on every other active secret. A
// zero grace revokes them at once and is always allowed; a positive grace
// with the client at max_active_secrets is ErrTooManyActive.
func (s *Service) RotateSecret(ctx context.Context, who Actor, clientID string, grace time.Duration) (ns CreatedSecret, err error) {
	defer func() {
		s.log(who, "secret.rotate", clientID, ns.Secret.ID, err,
			zap.Duration("grace", grace), zap.Strings("expiring", ns.Expiring), zap.Strings("revoked", ns.Revoked))
	}()
	if err := ValidateClientID(clientID); err != nil {
		return CreatedSecret{}, invalidError(err.Error())
	}
	if grace < 0 {
		return CreatedSecret{}, invalidf("grace must not be negative")
	}
	ns, err = s.newSecret(clientID, GenerateOptions{})
	if err != nil {
		return CreatedSecret{}, err
	}
	now := ns.Secret.CreatedAt
	until := now.Add(grace)
	type others struct{ expiring, revoked []string }
	res, err := update(ctx, s, func(tx store.Tx) (others, error) {
		res := others{expiring: []string{}}
		active, err := s.lockActive(ctx, tx, who, clientID, now)
		if err != nil {
			return res, err
		}
		if grace > 0 && len(active) >= s.maxActive {
			return res, ErrTooManyActive
		}
		if err := tx.InsertSecret(ctx, ns.Secret); err != nil {
			return res, err
		}
		for _, old := range active {
			switch {
			case grace == 0:
				if err := tx.Revoke(ctx, old.ID, now); err != nil {
					return res, err
				}
				res.revoked = append(res.revoked, old.ID)
			case old.ExpiresAt == nil || until.Before(*old.ExpiresAt):
				if err := tx.SetExpiry(ctx, old.ID, until); err != nil {
					return res, err
				}
				res.expiring = append(res.expiring, old.ID)
			default: // already expires sooner: keep it
				res.expiring = append(res.expiring, old.ID)
			}
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRotated, ClientID: clientID, SecretID: ns.Secret.ID, Hint: ns.Secret.Hint,
			Data: map[string]any{"grace_seconds": int64(grace / time.Second), "expiring": res.expiring, "revoked": append([]string{}, res.revoked...)}}); err != nil {
			return res, err
		}
		for _, old := range active {
			if grace > 0 {
				break // expiring, not revoked: reminders and secret.expired will tell
			}
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: old.ID, Hint: old.Hint,
				Data: map[string]any{"revoked_at": now, "reason": "rotation"}}); err != nil {
				return res, err
			}
		}
		detail := "grace " + grace.String()
		if len(res.expiring) > 0 {
			detail += "; expiring " + strings.Join(res.expiring, ", ")
		}
		if len(res.revoked) > 0 {
			detail += "; revoked " + strings.Join(res.revoked, ", ")
		}
		return res, s.record(ctx, tx, who, "secret.rotate", clientID, ns.Secret.ID, detail)
	})
	if err != nil {
		return CreatedSecret{Secret: store.Secret{ID: ns.Secret.ID}}, err
	}
	ns.Expiring, ns.Revoked = res.expiring, res.revoked
	return ns, nil
}

// RevokeSecret revokes one secret of a client at once. Revoking a revoked
// secret changes nothing. The secret stays listed, with status revoked.
func (s *Service) RevokeSecret(ctx context.Context, who Actor, clientID, secretID string) (sec store.Secret, err error) {
	defer func() { s.log(who, "secret.revoke", clientID, secretID, err) }()
	if err := ValidateClientID(clientID); err != nil {
		return store.Secret{}, invalidError(err.Error())
	}
	if !validSecretID(secretID) {
		return store.Secret{}, invalidf("secret id must be %s followed by %d base62 characters", secretIDPrefix, idRandLen)
	}
	now := s.Now()
	return update(ctx, s, func(tx store.Tx) (store.Secret, error) {
		c, err := tx.LockClient(ctx, clientID)
		if err != nil {
			return store.Secret{}, err
		}
		if !who.mayManage(c) {
			return store.Secret{}, store.ErrNotFound
		}
		secrets, err := tx.Secrets(ctx, clientID)
		if err != nil {
			return store.Secret{}, err
		}
		for _, sec := range secrets {
			if sec.ID != secretID {
				continue
			}
			if sec.RevokedAt != nil {
				return sec, nil
			}
			sec.RevokedAt = &now
			if err := tx.Revoke(ctx, secretID, now); err != nil {
				return store.Secret{}, err
			}
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: secretID, Hint: sec.Hint,
				Data: map[string]any{"revoked_at": now, "reason": "revoke"}}); err != nil {
				return store.Secret{}, err
			}
			return sec, s.record(ctx, tx, who, "secret.revoke", clientID, secretID, "")
		}
		return store.Secret{}, store.ErrNotFound
	})
}

// lockActive locks a client the actor may manage and returns its secrets
// active at now.
func (s *Service) lockActive(ctx context.Context, tx store.Tx, who Actor, clientID string, now time.Time) ([]store.Secret, error) {
	c, err := tx.LockClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if !who.mayManage(c) {
		return nil, store.ErrNotFound
	}
	secrets, err := tx.Secrets(ctx, clientID)
	if err != nil {
		return nil, err
	}
	active := secrets[:0]
	for _, sec := range secrets {
		if sec.Active(now) {
			active = append(active, sec)
		}
	}
	return active, nil
}

// newSecret prepares the record (and, when generated, the plaintext) of a
// secret, outside any transaction: argon2id hashing takes real time.
func (s *Service) newSecret(clientID string, opts GenerateOptions) (CreatedSecret, error) {
	id, err := NewSecretID()
	if err != nil {
		return CreatedSecret{}, err
	}
	ns := CreatedSecret{Secret: store.Secret{ID: id, ClientID: clientID, CreatedAt: s.Now()}}
	switch {
	case opts.ImportHash != "" && opts.ImportSecret != "":
		return CreatedSecret{}, invalidf("import takes either hash or secret, not both")
	case opts.ImportHash != "":
		h, err := secrethash.Parse(opts.ImportHash)
		if err != nil {
			return CreatedSecret{}, invalidf("import.hash: %v", err)
		}
		if !h.Scheme.Slow() {
			return CreatedSecret{}, invalidf("import.hash must be a bcrypt, argon2id or pbkdf2 hash")
		}
		if err := h.CheckImportCost(); err != nil {
			return CreatedSecret{}, invalidf("import.hash: %v", err)
		}
		ns.Secret.Hash = h.Encoded
		ns.Secret.Hint = "(imported " + h.Scheme.String() + ")"
	case opts.ImportSecret != "":
		if len(opts.ImportSecret) > MaxImportSecretLen {
			return CreatedSecret{}, invalidf("import.secret must be at most %d bytes", MaxImportSecretLen)
		}
		if ns.Secret.Hash, err = secrethash.NewArgon2id(opts.ImportSecret); err != nil {
			return CreatedSecret{}, err
		}
		ns.Secret.Hint = importedHint(opts.ImportSecret)
		ns.Warnings = importWarnings(opts.ImportSecret)
	default:
		if ns.Plaintext, err = NewSecret(s.prefix); err != nil {
			return CreatedSecret{}, err
		}
		ns.Secret.Hash = secrethash.NewSHA256(ns.Plaintext)
		ns.Secret.Hint = Hint(s.prefix, ns.Plaintext)
	}
	return ns, nil
}

// importWarnings says what may keep a plaintext legacy secret from
// working with some clients, without quoting it. RFC 6749 §2.3.1 has
// clients form-encode the secret before putting it in HTTP Basic auth;
// many (Python's authlib and requests-oauthlib among them) do not, and
// then send '+' and '%XX' as they are, which a conforming server decodes
// into something else. Appendix A allows only %x20-7E in a secret.
func importWarnings(secret string) []string {
	var out []string
	if strings.ContainsAny(secret, "+%") {
		out = append(out, "the secret contains '+' or '%': clients that put it in HTTP Basic auth without "+
			"form-encoding it (RFC 6749 §2.3.1) send it differently from clients that do; "+
			"the edge accepts both, but other gateways may not: prefer rotating to a generated secret")
	}
	for i := 0; i < len(secret); i++ {
		if secret[i] < 0x20 || secret[i] > 0x7e {
			out = append(out, "the secret has characters outside printable ASCII, which RFC 6749 (Appendix A) "+
				"does not allow in a client secret: clients may encode them differently; "+
				"check every client against the edge, or rotate to a generated secret")
			break
		}
	}
	return out
}

// Snapshot returns the feed's view of the store: every active secret's
// hash and the tombstones, by client, stamped with the service clock.
func (s *Service) Snapshot(ctx context.Context) (wire.Snapshot, error) {
	now := s.Now()
	snap, err := s.store.Snapshot(ctx, now, s.tombstoneWindow)
	if err != nil {
		return wire.Snapshot{}, err
	}
	snap.GeneratedAt = now
	return snap, nil
}

// Changes returns the feed's changes since a revision (Store.Changes),
// with tombstones, stamped with the service clock; ok is false when the
// feed must answer with a full snapshot.
func (s *Service) Changes(ctx context.Context, since int64) (wire.Delta, bool, error) {
	now := s.Now()
	d, ok, err := s.store.Changes(ctx, since, now, s.tombstoneWindow)
	if err != nil || !ok {
		return wire.Delta{}, false, err
	}
	d.GeneratedAt = now
	return d, true, nil
}

// ApplyUsage records a batch of last-used stamps, then its
// presented-after-revoke reports (ApplyRevokedUses). Stamps are merged per
// secret first (newest wins), so the store does one write per distinct
// secret. Stamps from the future are recorded as now, so a skewed edge
// clock cannot pin last_used_at ahead of time; a from that is not an IP
// address is dropped. Then the batch's callers are added (applyCallers):
// one write per (secret, caller IP). It returns how many secrets' last use
// moved.
func (s *Service) ApplyUsage(ctx context.Context, u wire.Usage) (int, error) {
	now := s.Now()
	newest := make(map[string]wire.Stamp, len(u.Stamps))
	for _, st := range u.Stamps {
		if st.SecretID == "" || st.ClientID == "" || st.LastUsedAt.IsZero() {
			continue
		}
		if st.LastUsedAt.After(now) {
			st.LastUsedAt = now
		}
		st.From = cleanIP(st.From)
		if cur, ok := newest[st.SecretID]; !ok || st.LastUsedAt.After(cur.LastUsedAt) {
			newest[st.SecretID] = st
		}
	}
	stamps := make([]wire.Stamp, 0, len(newest))
	for _, st := range newest {
		stamps = append(stamps, st)
	}
	// A stable order keeps lock order and tests deterministic.
	sort.Slice(stamps, func(i, j int) bool { return stamps[i].SecretID < stamps[j].SecretID })
	n, err := s.store.ApplyUsage(ctx, stamps)
	if err != nil {
		return 0, err
	}
	// After the stamps, which are idempotent: a failure here has the
	// edge send the whole batch again, and counts are not.
	if _, err := s.ApplyRevokedUses(ctx, u.Edge, u.RevokedUses); err != nil {
		return 0, err
	}
	return n, s.applyCallers(ctx, u, now)
}

// cleanIP returns an IP address in its canonical form (IPv4-mapped made
// IPv4), or "" for anything that is not one.
func cleanIP(from string) string {
	addr, err := netip.ParseAddr(from)
	if err != nil {
		return ""
	}
	return addr.Unmap().String()
}

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
	}
	return "error"
}
