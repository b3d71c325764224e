package store

import (
	"context"
	"strings"
	"time"
)

// Client is a registered OAuth client.
type Client struct {
	ID        string
	Name      string
	CreatedAt time.Time
	// Owners are the ids of the users (as a Caddy authentication handler
	// names them) who may manage the client's secrets, sorted.
	Owners []string
	// AllowedCIDRs are the networks the client may call from, canonical
	// (NormalizeCIDRs); empty means anywhere.
	AllowedCIDRs []string
	// NetworksReportOnly lets calls from outside AllowedCIDRs through, and
	// records them as refused.
	NetworksReportOnly bool
}

// IsOwner reports whether user is one of the client's owners.
func (c *Client) IsOwner(user string) bool {
	for _, o := range c.Owners {
		if o == user {
			return true
		}
	}
	return false
}

// AuditEntry is one change in the audit trail that the store keeps (the
// zap audit log also has refused attempts). It never holds a secret.
type AuditEntry struct {
	At time.Time
	// Who is admin-token or user:<id>.
	Who      string
	RemoteIP string
	// Action is client.create, client.delete, client.owners,
	// secret.generate, secret.import, secret.rotate or secret.revoke.
	Action   string
	ClientID string
	SecretID string
	// Detail says more where the action needs it (a rotation's grace, an
	// owners change), in a few words.
	Detail string
}

// The clients, their owners (migration 2), their allowed networks
// (migration 6: the canonical CIDR list, space-separated) and the audit
// trail.
const (
	sqlClientColumns    = `c.client_id, c.name, c.created_at, c.allowed_cidrs, c.networks_report_only`
	sqlSelectClient     = `SELECT ` + sqlClientColumns + ` FROM clients c WHERE c.client_id = $1`
	sqlListClients      = `SELECT ` + sqlClientColumns + ` FROM clients c WHERE c.client_id > $1 ORDER BY c.client_id LIMIT $2`
	sqlListOwnedClients = `SELECT ` + sqlClientColumns + ` FROM clients c
		JOIN client_owners o ON o.client_id = c.client_id
		WHERE o.user_id = $1 AND c.client_id > $2 ORDER BY c.client_id LIMIT $3`
	sqlInsertClient = `INSERT INTO clients (client_id, name, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (client_id) DO NOTHING`
	sqlDeleteSecretsOf = `DELETE FROM secrets WHERE client_id = $1`
	sqlDeleteCallersOf = `DELETE FROM secret_callers WHERE secret_id IN (SELECT secret_id FROM secrets WHERE client_id = $1)`
	sqlDeleteClient    = `DELETE FROM clients WHERE client_id = $1`
	sqlSetNetworks     = `UPDATE clients SET allowed_cidrs = $1, networks_report_only = $2 WHERE client_id = $3`

	sqlOwnersOf       = `SELECT user_id FROM client_owners WHERE client_id = $1 ORDER BY user_id`
	sqlInsertOwner    = `INSERT INTO client_owners (client_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	sqlDeleteOwnersOf = `DELETE FROM client_owners WHERE client_id = $1`

	sqlInsertAudit = `INSERT INTO audit_log (at, who, remote_ip, action, client_id, secret_id, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`
	sqlAudit = `SELECT at, who, remote_ip, action, client_id, secret_id, detail
		FROM audit_log WHERE client_id = $1 ORDER BY id DESC LIMIT $2`
)

// sqlOwnersIn selects the owners of n clients, named by $1…$n.
func sqlOwnersIn(n int) string {
	return `SELECT client_id, user_id FROM client_owners WHERE client_id IN (` + placeholders(1, n) + `) ORDER BY client_id, user_id`
}

// Client implements Store.
func (s *SQL) Client(ctx context.Context, id string) (Client, error) {
	return read(ctx, s, func(q querier) (Client, error) { return readClient(ctx, q, id, "") })
}

// readClient reads one client with its owners, the lookup followed by
// lock (a row lock, or nothing).
func readClient(ctx context.Context, q querier, id, lock string) (Client, error) {
	c, err := scanClient(q.queryRow(ctx, sqlSelectClient+lock, id))
	if err != nil {
		return Client{}, notFound(err)
	}
	c.Owners, err = readStrings(ctx, q, sqlOwnersOf, id)
	return c, err
}

// Clients implements Store.
func (s *SQL) Clients(ctx context.Context, owner, after string, limit int) ([]Client, error) {
	return read(ctx, s, func(q querier) ([]Client, error) {
		var out []Client
		var err error
		if owner == "" {
			out, err = queryAll(ctx, q, scanClient, sqlListClients, after, limit)
		} else {
			out, err = queryAll(ctx, q, scanClient, sqlListOwnedClients, owner, after, limit)
		}
		if err != nil || len(out) == 0 {
			return out, err
		}
		ids := make([]any, len(out))
		at := make(map[string]int, len(out))
		for i := range out {
			ids[i], at[out[i].ID] = out[i].ID, i
			out[i].Owners = []string{}
		}
		rs, err := q.query(ctx, sqlOwnersIn(len(out)), ids...)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		for rs.Next() {
			var clientID, user string
			if err := rs.Scan(&clientID, &user); err != nil {
				return nil, err
			}
			if i, ok := at[clientID]; ok {
				out[i].Owners = append(out[i].Owners, user)
			}
		}
		return out, rs.Err()
	})
}

// Audit implements Store.
func (s *SQL) Audit(ctx context.Context, clientID string, limit int) ([]AuditEntry, error) {
	return read(ctx, s, func(q querier) ([]AuditEntry, error) {
		return queryAll(ctx, q, scanAudit, sqlAudit, clientID, limit)
	})
}

func (t *sqlTx) LockClient(ctx context.Context, id string) (Client, error) {
	return readClient(ctx, t.q, id, t.lockClient)
}

func (t *sqlTx) InsertClient(ctx context.Context, c Client) error {
	n, err := t.q.exec(ctx, sqlInsertClient, c.ID, c.Name, c.CreatedAt.UnixMilli())
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrClientExists
	}
	t.touch(c.ID)
	return t.insertOwners(ctx, c.ID, c.Owners)
}

func (t *sqlTx) insertOwners(ctx context.Context, clientID string, owners []string) error {
	for _, o := range owners {
		if _, err := t.q.exec(ctx, sqlInsertOwner, clientID, o); err != nil {
			return err
		}
	}
	return nil
}

func (t *sqlTx) DeleteClient(ctx context.Context, id string) error {
	for _, query := range []string{sqlDeleteCallersOf, sqlDeleteSinkSecretsOf, sqlDeleteSink, sqlDeleteSecretsOf, sqlDeleteOwnersOf, sqlEndRotation} {
		if _, err := t.q.exec(ctx, query, id); err != nil {
			return err
		}
	}
	if err := t.execOne(ctx, sqlDeleteClient, id); err != nil {
		return err
	}
	t.touch(id)
	return nil
}

func (t *sqlTx) SetOwners(ctx context.Context, clientID string, owners []string) error {
	if _, err := t.q.exec(ctx, sqlDeleteOwnersOf, clientID); err != nil {
		return err
	}
	t.changed = true
	return t.insertOwners(ctx, clientID, owners)
}

func (t *sqlTx) SetNetworks(ctx context.Context, clientID string, cidrs []string, reportOnly bool) error {
	ro := 0
	if reportOnly {
		ro = 1
	}
	if err := t.execOne(ctx, sqlSetNetworks, strings.Join(cidrs, " "), ro, clientID); err != nil {
		return err
	}
	t.touch(clientID) // the feed lists a client's networks
	return nil
}

func (t *sqlTx) AppendAudit(ctx context.Context, e AuditEntry) error {
	_, err := t.q.exec(ctx, sqlInsertAudit, e.At.UnixMilli(), e.Who, e.RemoteIP, e.Action, e.ClientID, e.SecretID, e.Detail)
	return err
}

// scanClient reads one row of sqlClientColumns.
func scanClient(r Row) (Client, error) {
	var c Client
	var created, reportOnly int64
	var cidrs string
	if err := r.Scan(&c.ID, &c.Name, &created, &cidrs, &reportOnly); err != nil {
		return Client{}, err
	}
	c.CreatedAt = millisTime(created)
	c.AllowedCIDRs, c.NetworksReportOnly = splitCIDRs(cidrs), reportOnly != 0
	return c, nil
}

// scanAudit reads one row of sqlAudit.
func scanAudit(r Row) (AuditEntry, error) {
	var e AuditEntry
	var at int64
	if err := r.Scan(&at, &e.Who, &e.RemoteIP, &e.Action, &e.ClientID, &e.SecretID, &e.Detail); err != nil {
		return AuditEntry{}, err
	}
	e.At = millisTime(at)
	return e, nil
}

// splitCIDRs reads a stored list of networks; nil when there are none.
func splitCIDRs(stored string) []string {
	if stored == "" {
		return nil
	}
	return strings.Fields(stored)
}
