package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// Limits of the management API.
const (
	// MaxBodyBytes bounds a management request body; larger ones get 413.
	MaxBodyBytes = 64 << 10
	// DefaultMaxWait caps the wait of a feed request unless configured.
	DefaultMaxWait = 60 * time.Second

	healthTimeout = 2 * time.Second
)

// Options configure the HTTP API.
type Options struct {
	// AdminToken authorises the management API. Required.
	AdminToken string
	// EdgeToken authorises the edge feed and usage ingest. Required, and
	// different from AdminToken.
	EdgeToken string
	// LeakToken authorises POST /v1/leaks and nothing else. Optional;
	// different from the other two.
	LeakToken string
	// LeakReportKeys is the path of GitHub's key list for POST
	// /v1/leaks/github (see Handler.LeakReportKeys). Default: none (the
	// endpoint answers 404).
	LeakReportKeys string
	// MaxWait caps the wait parameter of feed requests. Default: 60s.
	MaxWait time.Duration
	// Admins are the user ids with the admin token's powers. Default:
	// none.
	Admins []string
	// User returns the id of the user that an authentication handler in
	// front of the API has vouched for, "" when none has. Default:
	// CaddyUser.
	User func(*http.Request) string
	// Logger receives request failures (never a secret). Default: none.
	Logger *zap.Logger
}

// API serves the management API, the edge feed, the usage ingest and the
// health check (docs/api.md; docs/design.md §4) as one http.Handler, usable inside Caddy
// (see Handler) or on its own.
type API struct {
	svc   *rules.Service
	admin [sha256.Size]byte
	edge  [sha256.Size]byte
	// leak is the leak token's digest; hasLeak says whether one is set.
	leak    [sha256.Size]byte
	hasLeak bool
	// leaks limits the leak endpoints per caller; githubKeys verifies
	// GitHub's reports (nil: that endpoint is off).
	leaks      *ipLimiter
	githubKeys *keyList
	admins     map[string]bool
	user       func(*http.Request) string
	maxWait    time.Duration
	log        *zap.Logger
	mux        *http.ServeMux
	// mounted are the path prefixes of the handlers Mount added.
	mounted []string
	// snapshots builds and shares the feed's answers.
	snapshots *snapshotBuilder

	stop     chan struct{}
	stopOnce sync.Once

	// onWait, when set (by tests), is called as a feed request starts
	// waiting for a change.
	onWait func()
}

// WithDefaults returns o with every unset field at its default. With
// Validate, it is the one place the options are defaulted and checked
// (see rules.ServiceOptions.WithDefaults).
func (o Options) WithDefaults() Options {
	if o.MaxWait == 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.User == nil {
		o.User = CaddyUser
	}
	return o
}

// Validate checks options that WithDefaults has filled.
func (o Options) Validate() error {
	if o.AdminToken == "" || o.EdgeToken == "" {
		return errors.New("admin_token and edge_token are both required")
	}
	if o.AdminToken == o.EdgeToken {
		return errors.New("admin_token and edge_token must differ")
	}
	if o.LeakToken != "" && (o.LeakToken == o.AdminToken || o.LeakToken == o.EdgeToken) {
		return errors.New("leak_token must differ from admin_token and edge_token")
	}
	if o.MaxWait < 0 {
		return errors.New("max_wait must not be negative")
	}
	for _, u := range o.Admins {
		if err := rules.ValidateUserID(u); err != nil {
			return fmt.Errorf("admins: %v", err)
		}
	}
	return nil
}

// New returns the HTTP API over svc.
func New(svc *rules.Service, opts Options) (*API, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	a := &API{
		svc:     svc,
		admin:   sha256.Sum256([]byte(opts.AdminToken)),
		edge:    sha256.Sum256([]byte(opts.EdgeToken)),
		admins:  make(map[string]bool, len(opts.Admins)),
		user:    opts.User,
		maxWait: opts.MaxWait,
		log:     opts.Logger,
		mux:     http.NewServeMux(),
		stop:    make(chan struct{}),
	}
	for _, u := range opts.Admins {
		a.admins[u] = true
	}
	if opts.LeakToken != "" {
		a.leak, a.hasLeak = sha256.Sum256([]byte(opts.LeakToken)), true
	}
	a.leaks = newIPLimiter(leakRate, leakBurst)
	if opts.LeakReportKeys != "" {
		var err error
		if a.githubKeys, err = loadKeyList(opts.LeakReportKeys, opts.Logger); err != nil {
			return nil, fmt.Errorf("leak_report_keys: %w", err)
		}
	}
	a.snapshots = newSnapshotBuilder(svc)
	a.routes()
	return a, nil
}

// Service returns the rules the API serves.
func (a *API) Service() *rules.Service { return a.svc }

// Logger returns the logger of request failures.
func (a *API) Logger() *zap.Logger { return a.log }

// Close answers every waiting feed request at once (304) and makes later
// ones answer without waiting. Call it when the server shuts down, so that
// long polls do not hold the shutdown.
func (a *API) Close() { a.stopOnce.Do(func() { close(a.stop) }) }

// ServeHTTP implements http.Handler. A path with dot or empty segments is
// refused before anything else: http.ServeMux would answer it with an HTML
// redirect to the cleaned path, ahead of the token check and of
// Cache-Control: no-store.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.EscapedPath(); cleanPath(p) != p {
		writeError(w, http.StatusBadRequest, "invalid_request", "the path must not contain empty, '.' or '..' segments")
		return
	}
	a.mux.ServeHTTP(w, r)
}

// cleanPath is the path http.ServeMux routes p to: rooted, without dot or
// empty segments, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// CaddyUser is the user that a Caddy authentication handler (basic_auth,
// or any other that sets {http.auth.user.id}) before the API on the same
// route has authenticated; "" outside Caddy or when none has.
func CaddyUser(r *http.Request) string { return placeholderValue(r, DefaultUserID) }

// DefaultUserID is the placeholder of the authenticated user that Caddy's
// authentication handler sets.
const DefaultUserID = "{http.auth.user.id}"

// PlaceholderUser returns a User option that reads the user's id from
// one placeholder of the request's Caddy replacer.
func PlaceholderUser(placeholder string) func(*http.Request) string {
	return func(r *http.Request) string { return placeholderValue(r, placeholder) }
}

// placeholderValue is the value of one placeholder in the request's
// Caddy replacer; "" outside Caddy or when unset.
func placeholderValue(r *http.Request, placeholder string) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	return repl.ReplaceAll(placeholder, "")
}

// authorize finds who calls. A bearer token is checked for the route's
// role: missing or unknown → 401; the other role's token → 403; two
// Authorization headers → 400, since proxies and servers disagree on
// which one counts. Tokens are compared as SHA-256 digests in constant
// time, so neither content nor length leaks. Without a bearer token, the
// management routes accept the user an authentication handler in front
// has vouched for; basic_auth leaves its own Authorization header on the
// request, so any other scheme is no bad token but the user's login.
func (a *API) authorize(r *http.Request, need role) (rules.Actor, error) {
	if len(r.Header.Values("Authorization")) > 1 {
		return rules.Actor{}, badRequest("more than one Authorization header")
	}
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok && need != roleEdge {
		if who, ok := a.SignedIn(r); ok {
			return who, nil
		}
	}
	if !ok {
		return rules.Actor{}, &apiError{status: http.StatusUnauthorized, code: "invalid_token", desc: "missing bearer token",
			header: map[string]string{"WWW-Authenticate": `Bearer realm="rotagate"`}}
	}
	sum := sha256.Sum256([]byte(token))
	isAdmin := subtle.ConstantTimeCompare(sum[:], a.admin[:]) == 1
	isEdge := subtle.ConstantTimeCompare(sum[:], a.edge[:]) == 1
	isLeak := a.hasLeak && subtle.ConstantTimeCompare(sum[:], a.leak[:]) == 1
	switch {
	case need != roleEdge && isAdmin:
		return rules.Actor{TokenID: "admin-token", Admin: true, RemoteIP: remoteIP(r)}, nil
	case need == roleEdge && isEdge:
		return rules.Actor{TokenID: "edge", RemoteIP: remoteIP(r)}, nil
	case need == roleLeak && isLeak:
		return rules.Actor{TokenID: "leak-token", Leak: true, RemoteIP: remoteIP(r)}, nil
	case isAdmin, isEdge, isLeak:
		return rules.Actor{}, &apiError{status: http.StatusForbidden, code: "insufficient_scope", desc: "this token may not use this endpoint"}
	}
	return rules.Actor{}, &apiError{status: http.StatusUnauthorized, code: "invalid_token", desc: "wrong bearer token",
		header: map[string]string{"WWW-Authenticate": `Bearer realm="rotagate", error="invalid_token"`}}
}

// SignedIn is the user that an authentication handler in front has
// vouched for, as an actor (an admin when listed in Admins); false when
// none has. The console signs users in so.
func (a *API) SignedIn(r *http.Request) (rules.Actor, bool) {
	user := a.user(r)
	if user == "" {
		return rules.Actor{}, false
	}
	return rules.Actor{TokenID: "user:" + user, User: user, Admin: a.admins[user], RemoteIP: remoteIP(r)}, true
}

func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// remoteIP is Caddy's client IP when the request went through Caddy (so
// trusted_proxies apply), else the peer address.
func remoteIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// JSON shapes of the management API.
type (
	Client struct {
		ClientID  string    `json:"client_id"`
		Name      string    `json:"name"`
		Owners    []string  `json:"owners"`
		CreatedAt time.Time `json:"created_at"`
		// AllowedCIDRs ([] for anywhere) and NetworksReportOnly are set
		// through PUT /v1/clients/{id}/networks.
		AllowedCIDRs       []string `json:"allowed_cidrs"`
		NetworksReportOnly bool     `json:"networks_report_only"`
	}
	ClientDetail struct {
		Client
		Secrets []Secret `json:"secrets"`
	}
	ClientList struct {
		Clients []Client `json:"clients"`
		Next    string   `json:"next,omitempty"`
	}
	Secret struct {
		ID string `json:"id"`
		// Kind is secret, public_key or certificate; Thumbprint names a
		// key (RFC 7638) or certificate (x5t#S256).
		Kind         store.Kind   `json:"kind"`
		Thumbprint   string       `json:"thumbprint,omitempty"`
		Hint         string       `json:"hint"`
		Status       store.Status `json:"status"`
		CreatedAt    time.Time    `json:"created_at"`
		ExpiresAt    *time.Time   `json:"expires_at"`
		RevokedAt    *time.Time   `json:"revoked_at"`
		LastUsedAt   *time.Time   `json:"last_used_at"`
		LastUsedFrom *string      `json:"last_used_from"`
		FirstUsedAt  *time.Time   `json:"first_used_at"`
		// Dead secrets presented at an edge, and leak reports.
		PresentedAfterRevoke         int64      `json:"presented_after_revoke_count"`
		LastPresentedAfterRevokeAt   *time.Time `json:"last_presented_after_revoke_at"`
		LastPresentedAfterRevokeFrom *string    `json:"last_presented_after_revoke_from"`
		LeakReportedAt               *time.Time `json:"leak_reported_at"`
		// Label says which app has the secret ("" for none).
		Label string `json:"label"`
	}
	SecretList struct {
		Secrets []Secret `json:"secrets"`
	}
	CreatedSecret struct {
		ID         string     `json:"id"`
		Kind       store.Kind `json:"kind"`
		Thumbprint string     `json:"thumbprint,omitempty"`
		Secret     string     `json:"secret,omitempty"`
		Hint       string     `json:"hint"`
		CreatedAt  time.Time  `json:"created_at"`
		ExpiresAt  *time.Time `json:"expires_at"`
		// Warnings describe what may keep an imported secret from
		// working with some clients; never the secret itself.
		Warnings []string `json:"warnings,omitempty"`
		// DeliveredTo is the kind of the client's sink when the secret
		// went there instead of into this answer.
		DeliveredTo string `json:"delivered_to,omitempty"`
	}
	RotatedSecret struct {
		CreatedSecret
		Expiring []string `json:"expiring"`
		Revoked  []string `json:"revoked"`
	}
	ErrorBody struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}

	AuditEntry struct {
		At       time.Time `json:"at"`
		Who      string    `json:"who"`
		RemoteIP string    `json:"remote_ip,omitempty"`
		Action   string    `json:"action"`
		SecretID string    `json:"secret_id,omitempty"`
		Detail   string    `json:"detail,omitempty"`
	}
	Audit struct {
		Entries []AuditEntry `json:"entries"`
	}

	CreateClientRequest struct {
		// ClientID is nil when absent (an id is generated); an empty
		// one is refused.
		ClientID *string  `json:"client_id,omitempty"`
		Name     string   `json:"name"`
		Owners   []string `json:"owners,omitempty"`
	}
	PutOwnersRequest struct {
		Owners *[]string `json:"owners"`
	}
	PatchOwnersRequest struct {
		Add    []string `json:"add,omitempty"`
		Remove []string `json:"remove,omitempty"`
	}
	GenerateRequest struct {
		ExpiresIn *string        `json:"expires_in"`
		Import    *ImportRequest `json:"import"`
		CredentialRequest
	}
	// CredentialRequest registers a public key (a JWK) or a certificate
	// (PEM) instead of generating a secret (SPEC §16).
	CredentialRequest struct {
		PublicKey   json.RawMessage `json:"public_key,omitempty"`
		Certificate *string         `json:"certificate,omitempty"`
	}
	ImportRequest struct {
		Hash   string `json:"hash"`
		Secret string `json:"secret"`
	}
	RotateRequest struct {
		Grace *string `json:"grace"`
		CredentialRequest
	}
	LabelRequest struct {
		Label *string `json:"label"`
	}
)

func toClientJSON(c store.Client) Client {
	owners := c.Owners
	if owners == nil {
		owners = []string{}
	}
	n := toNetworksJSON(c)
	return Client{ClientID: c.ID, Name: c.Name, Owners: owners, CreatedAt: c.CreatedAt.UTC(),
		AllowedCIDRs: n.AllowedCIDRs, NetworksReportOnly: n.ReportOnly}
}

func toSecretJSON(s store.Secret, now time.Time) Secret {
	out := Secret{
		ID: s.ID, Kind: s.Kind, Thumbprint: s.Thumbprint, Hint: s.Hint, Status: s.Status(now), CreatedAt: s.CreatedAt.UTC(),
		ExpiresAt: s.ExpiresAt, RevokedAt: s.RevokedAt, LastUsedAt: s.LastUsedAt, FirstUsedAt: s.FirstUsedAt,
		PresentedAfterRevoke: s.PresentedAfterRevoke, LastPresentedAfterRevokeAt: s.LastPresentedAfterRevokeAt,
		LeakReportedAt: s.LeakReportedAt, Label: s.Label,
	}
	if s.LastUsedFrom != "" {
		from := s.LastUsedFrom
		out.LastUsedFrom = &from
	}
	if s.LastPresentedAfterRevokeFrom != "" {
		from := s.LastPresentedAfterRevokeFrom
		out.LastPresentedAfterRevokeFrom = &from
	}
	return out
}

func toSecretsJSON(secrets []store.Secret, now time.Time) []Secret {
	out := make([]Secret, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, toSecretJSON(s, now))
	}
	return out
}

func toCreatedJSON(ns rules.CreatedSecret) CreatedSecret {
	return CreatedSecret{
		ID: ns.Secret.ID, Kind: ns.Secret.Kind, Thumbprint: ns.Secret.Thumbprint, Secret: ns.Plaintext, Hint: ns.Secret.Hint,
		CreatedAt: ns.Secret.CreatedAt.UTC(), ExpiresAt: ns.Secret.ExpiresAt, Warnings: ns.Warnings,
		DeliveredTo: ns.DeliveredTo,
	}
}

func (a *API) createClient(r *http.Request, who rules.Actor, req CreateClientRequest) (any, error) {
	id := ""
	if req.ClientID != nil {
		if id = *req.ClientID; id == "" {
			return nil, badRequest("client_id must not be empty; leave it out to have one generated")
		}
	}
	c, err := a.svc.CreateClient(r.Context(), who, id, req.Name, req.Owners)
	if err != nil {
		return nil, err
	}
	return answer{status: http.StatusCreated, header: map[string]string{"Location": "/v1/clients/" + url.PathEscape(c.ID)}, body: toClientJSON(c)}, nil
}

func (a *API) listClients(r *http.Request, who rules.Actor) (any, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	clients, next, err := a.svc.ListClients(r.Context(), who, r.URL.Query().Get("after"), limit)
	if err != nil {
		return nil, err
	}
	out := ClientList{Clients: make([]Client, 0, len(clients)), Next: next}
	for _, c := range clients {
		out.Clients = append(out.Clients, toClientJSON(c))
	}
	return out, nil
}

func (a *API) getClient(r *http.Request, who rules.Actor) (any, error) {
	c, secrets, err := a.svc.GetClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		return nil, err
	}
	return ClientDetail{Client: toClientJSON(c), Secrets: toSecretsJSON(secrets, a.svc.Now())}, nil
}

func (a *API) deleteClient(r *http.Request, who rules.Actor) (any, error) {
	if err := a.svc.DeleteClient(r.Context(), who, r.PathValue("client_id")); err != nil {
		return nil, err
	}
	return answer{status: http.StatusNoContent}, nil
}

func (a *API) putOwners(r *http.Request, who rules.Actor, req PutOwnersRequest) (any, error) {
	if req.Owners == nil {
		return nil, badRequest(`owners is required (a list of user ids; [] removes every owner)`)
	}
	return a.editOwners(r, who, rules.OwnersEdit{Replace: true, Set: *req.Owners})
}

func (a *API) patchOwners(r *http.Request, who rules.Actor, req PatchOwnersRequest) (any, error) {
	return a.editOwners(r, who, rules.OwnersEdit{Add: req.Add, Remove: req.Remove})
}

func (a *API) editOwners(r *http.Request, who rules.Actor, edit rules.OwnersEdit) (any, error) {
	return reply(toClientJSON)(a.svc.EditOwners(r.Context(), who, r.PathValue("client_id"), edit))
}

// limitParam reads an optional ?limit= of a listing (0 when absent).
func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest("limit must be an integer between 1 and %d", rules.MaxPageSize)
	}
	return n, nil
}

func (a *API) audit(r *http.Request, who rules.Actor) (any, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	entries, err := a.svc.AuditTrail(r.Context(), who, r.PathValue("client_id"), limit)
	if err != nil {
		return nil, err
	}
	out := Audit{Entries: make([]AuditEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, AuditEntry{At: e.At, Who: e.Who, RemoteIP: e.RemoteIP, Action: e.Action, SecretID: e.SecretID, Detail: e.Detail})
	}
	return out, nil
}

func (a *API) listSecrets(r *http.Request, who rules.Actor) (any, error) {
	secrets, err := a.svc.ListSecrets(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		return nil, err
	}
	return SecretList{Secrets: toSecretsJSON(secrets, a.svc.Now())}, nil
}

func (a *API) generateSecret(r *http.Request, who rules.Actor, req GenerateRequest) (any, error) {
	expiresIn, err := optionalDuration("expires_in", req.ExpiresIn)
	if err != nil {
		return nil, err
	}
	if req.ExpiresIn != nil && expiresIn == 0 {
		return nil, badRequest("expires_in must be positive")
	}
	opts := rules.GenerateOptions{ExpiresIn: expiresIn}
	if req.Import != nil {
		if (req.Import.Hash == "") == (req.Import.Secret == "") {
			return nil, badRequest("import takes exactly one of hash and secret")
		}
		opts.ImportHash, opts.ImportSecret = req.Import.Hash, req.Import.Secret
	}
	if err := req.CredentialRequest.options(&opts); err != nil {
		return nil, err
	}
	ns, err := a.svc.GenerateSecret(r.Context(), who, r.PathValue("client_id"), opts)
	if err != nil {
		return nil, err
	}
	return answer{status: http.StatusCreated, body: toCreatedJSON(ns)}, nil
}

func (a *API) rotateSecret(r *http.Request, who rules.Actor, req RotateRequest) (any, error) {
	if req.Grace == nil {
		return nil, badRequest(`grace is required (a Go duration; "0s" revokes the other secrets at once)`)
	}
	grace, err := parseDuration("grace", *req.Grace)
	if err != nil {
		return nil, err
	}
	var opts rules.GenerateOptions
	if err := req.CredentialRequest.options(&opts); err != nil {
		return nil, err
	}
	ns, err := a.svc.RotateCredential(r.Context(), who, r.PathValue("client_id"), grace, opts)
	if err != nil {
		return nil, err
	}
	out := RotatedSecret{CreatedSecret: toCreatedJSON(ns), Expiring: ns.Expiring, Revoked: ns.Revoked}
	if out.Expiring == nil {
		out.Expiring = []string{}
	}
	if out.Revoked == nil {
		out.Revoked = []string{}
	}
	return answer{status: http.StatusCreated, body: out}, nil
}

// options puts the key or certificate to register into opts.
func (c *CredentialRequest) options(opts *rules.GenerateOptions) error {
	if c.PublicKey != nil && c.Certificate != nil {
		return badRequest("give either public_key or certificate, not both")
	}
	if c.PublicKey != nil {
		opts.PublicKey = c.PublicKey
	}
	if c.Certificate != nil {
		if *c.Certificate == "" {
			return badRequest("certificate must be a PEM certificate")
		}
		opts.Certificate = *c.Certificate
	}
	return nil
}

func (a *API) revokeSecret(r *http.Request, who rules.Actor) (any, error) {
	return reply(a.secretJSON)(a.svc.RevokeSecret(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id")))
}

func (a *API) labelSecret(r *http.Request, who rules.Actor, req LabelRequest) (any, error) {
	if req.Label == nil {
		return nil, badRequest(`label is required ("" clears it)`)
	}
	return reply(a.secretJSON)(a.svc.LabelSecret(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id"), *req.Label))
}

// secretJSON is s as the API shows it now.
func (a *API) secretJSON(s store.Secret) Secret { return toSecretJSON(s, a.svc.Now()) }

func (a *API) healthz(r *http.Request, _ rules.Actor) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := a.svc.Store().Ping(ctx); err != nil {
		a.log.Warn("health check: store does not answer", zap.Error(err))
		return answer{status: http.StatusServiceUnavailable, body: map[string]string{"status": "unavailable"}}, nil
	}
	return map[string]string{"status": "ok"}, nil
}

// parseDuration reads a duration of field as Caddy does: a Go duration,
// with d for days also accepted ("24h", "90m", "30d"). Negative ones are
// refused.
func parseDuration(field, v string) (time.Duration, error) {
	d, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, badRequest(`%s must be a duration such as "24h", "90m" or "30d"`, field)
	}
	if d < 0 {
		return 0, badRequest("%s must not be negative", field)
	}
	return d, nil
}

// optionalDuration is parseDuration of an optional field: 0 when it is
// absent.
func optionalDuration(field string, v *string) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	return parseDuration(field, *v)
}

// decode reads a JSON object into v, refusing unknown fields and
// trailing data. An empty body is {} when allowEmpty. Error descriptions
// never quote the body: it may hold a secret being imported.
func decode(r *http.Request, v any, allowEmpty bool) error {
	data, err := readBody(r, "request body")
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("a JSON object is required")
	}
	return decodeJSON(data, v)
}

// decodeJSON decodes a JSON object of exact text (exactJSONText) into v,
// strictly (DecodeStrict).
func decodeJSON(data []byte, v any) error {
	if !exactJSONText(data) {
		return badRequest("the body must be valid UTF-8, without lone \\u surrogate escapes")
	}
	if err := DecodeStrict(data, v); err != nil {
		return badRequest("%s", err.Error())
	}
	return nil
}

// exactJSONText reports whether every string in a JSON text decodes to
// exactly what was sent: the text is valid UTF-8 and no \u escape is a
// lone UTF-16 surrogate. encoding/json would silently turn either into
// U+FFFD, changing a name, or a secret being imported, without a word.
// Malformed escapes are left for the decoder to report.
func exactJSONText(data []byte) bool {
	if !utf8.Valid(data) {
		return false
	}
	escaped := func(i int) (rune, bool) { // the \uXXXX at data[i:], if any
		if i+6 > len(data) || data[i] != '\\' || data[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(data[i+2:i+6]), 16, 32)
		return rune(n), err == nil
	}
	inString := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c != '\\':
		default:
			r, ok := escaped(i)
			if !ok {
				i++ // a one-character escape
				continue
			}
			i += 5
			if !utf16.IsSurrogate(r) {
				continue
			}
			low, ok := escaped(i + 1)
			if r >= 0xdc00 || !ok || utf16.DecodeRune(r, low) == utf8.RuneError {
				return false
			}
			i += 6
		}
	}
	return true
}

// FormatTime writes t as the API does, in UTC (RFC 3339), or none when t
// is unset.
func FormatTime(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

// DecodeStrict decodes a JSON object into v, refusing unknown fields and
// data after the object; errors never quote a value.
func DecodeStrict(data []byte, v any) error {
	if t := bytes.TrimSpace(data); t[0] != '{' {
		return errors.New("the body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("malformed JSON: data after the object")
	}
	return nil
}

// describeJSONError words a decoding error without quoting any value.
func describeJSONError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("malformed JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("field %q must be of type %s", typ.Field, jsonKind(typ.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: unexpected end of body")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errors.New("unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return errors.New("malformed JSON")
}

// jsonKind names the JSON type that a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}

// writeJSON answers with v. Every management answer is no-store: some
// carry a secret, all describe credentials.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error","error_description":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, ErrorBody{Error: code, Description: description})
}
