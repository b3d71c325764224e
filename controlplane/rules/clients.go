package rules

import (
	"context"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/store"
)

// Clients, their owners and the audit trail.

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
