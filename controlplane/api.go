package controlplane

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
	"sort"
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
	"github.com/rotagate/rotagate/internal/wire"
)

// Limits of the management API.
const (
	// MaxBodyBytes bounds a management request body; larger ones get 413.
	MaxBodyBytes = 64 << 10
	// DefaultMaxWait caps the wait of a feed request unless configured.
	DefaultMaxWait = 60 * time.Second

	healthTimeout = 2 * time.Second
)

// APIOptions configure the HTTP API.
type APIOptions struct {
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
	// Console serves the web console under /console/ for those users.
	// Default: off.
	Console bool
	// Logger receives request failures (never a secret). Default: none.
	Logger *zap.Logger
}

// API serves the management API, the edge feed, the usage ingest and the
// health check (README: Management API; docs/design.md §4) as one http.Handler, usable inside Caddy
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
	console    *console
	// snapshots builds and shares the feed's answers.
	snapshots *snapshotBuilder

	stop     chan struct{}
	stopOnce sync.Once

	// onWait, when set (by tests), is called as a feed request starts
	// waiting for a change.
	onWait func()
}

// withDefaults returns o with every unset field at its default. With
// validate, it is the one place the options are defaulted and checked
// (see rules.ServiceOptions.WithDefaults).
func (o APIOptions) withDefaults() APIOptions {
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

// validate checks options that withDefaults has filled.
func (o APIOptions) validate() error {
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

// NewAPI returns the HTTP API over svc.
func NewAPI(svc *rules.Service, opts APIOptions) (*API, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
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
	if opts.Console {
		var err error
		if a.console, err = newConsole(a); err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
	}
	a.routes()
	return a, nil
}

// Service returns the rules the API serves.
func (a *API) Service() *rules.Service { return a.svc }

// Close answers every waiting feed request at once (304) and makes later
// ones answer without waiting. Call it when the server shuts down, so that
// long polls do not hold the shutdown.
func (a *API) Close() { a.stopOnce.Do(func() { close(a.stop) }) }

// Handles reports whether path belongs to the API (or to the console,
// when it is on): it names an API endpoint, or would once cleaned of dot
// and empty segments (the API then refuses it). Inside Caddy, other paths
// go to the next handler.
func (a *API) Handles(path string) bool {
	if a.console != nil && (path == "/console" || strings.HasPrefix(path, ConsolePrefix)) {
		return true
	}
	return apiPath(path) || apiPath(cleanPath(path))
}

func apiPath(path string) bool {
	return path == "/healthz" || path == "/v1/clients" || path == "/v1/events" || path == leaksPath ||
		strings.HasPrefix(path, "/v1/clients/") || strings.HasPrefix(path, "/v1/edge/") || strings.HasPrefix(path, "/v1/leaks/")
}

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

type role int

const (
	roleAdmin role = iota
	roleEdge
	// roleLeak: the admin token, the leak token or a signed-in user.
	roleLeak
)

// routes wires each path to a handler per method; other methods get a
// JSON 405, unknown paths a JSON 404.
func (a *API) routes() {
	a.route("/v1/clients", roleAdmin, methods{"GET": a.listClients, "POST": a.createClient})
	a.route("/v1/clients/{client_id}", roleAdmin, methods{"GET": a.getClient, "DELETE": a.deleteClient})
	a.route("/v1/clients/{client_id}/owners", roleAdmin, methods{"PUT": a.putOwners, "PATCH": a.patchOwners})
	a.route("/v1/clients/{client_id}/audit", roleAdmin, methods{"GET": a.audit})
	a.route("/v1/clients/{client_id}/networks", roleAdmin, methods{"GET": a.getNetworks, "PUT": a.putNetworks})
	a.route("/v1/clients/{client_id}/networks/suggest", roleAdmin, methods{"POST": a.suggestNetworks})
	a.route("/v1/clients/{client_id}/secrets", roleAdmin, methods{"GET": a.listSecrets, "POST": a.generateSecret})
	a.route("/v1/clients/{client_id}/secrets/rotate", roleAdmin, methods{"POST": a.rotateSecret})
	a.route("/v1/clients/{client_id}/secrets/{secret_id}", roleAdmin, methods{"DELETE": a.revokeSecret})
	a.route("/v1/clients/{client_id}/secrets/{secret_id}/callers", roleAdmin, methods{"GET": a.listCallers})
	a.route("/v1/events", roleAdmin, methods{"GET": a.listEvents})
	a.route(wire.SnapshotPath, roleEdge, methods{"GET": a.snapshot})
	a.route(wire.UsagePath, roleEdge, methods{"POST": a.usage})
	a.route(leaksPath, roleLeak, methods{"POST": a.reportLeaks})
	a.mux.HandleFunc(githubLeaksPath, a.githubLeaks)
	a.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
			return
		}
		a.healthz(w, r)
	})
	if a.console != nil {
		a.mux.Handle("/console", a.console)
		a.mux.Handle(ConsolePrefix, a.console)
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API endpoint")
	})
}

type methods map[string]func(http.ResponseWriter, *http.Request, rules.Actor)

func (a *API) route(pattern string, need role, m methods) {
	allowed := make([]string, 0, len(m)+1)
	for method := range m {
		allowed = append(allowed, method)
	}
	if _, ok := m["GET"]; ok {
		allowed = append(allowed, "HEAD")
	}
	sort.Strings(allowed)
	allow := strings.Join(allowed, ", ")
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := m[method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "allowed methods: "+allow)
			return
		}
		who, ok := a.authorize(w, r, need)
		if !ok {
			return
		}
		h(w, r, who)
	})
}

// CaddyUser is the user that a Caddy authentication handler (basic_auth,
// or any other that sets {http.auth.user.id}) before the API on the same
// route has authenticated; "" outside Caddy or when none has.
func CaddyUser(r *http.Request) string { return placeholderValue(r, DefaultUserID) }

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
func (a *API) authorize(w http.ResponseWriter, r *http.Request, need role) (rules.Actor, bool) {
	if len(r.Header.Values("Authorization")) > 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", "more than one Authorization header")
		return rules.Actor{}, false
	}
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok && need != roleEdge {
		if user := a.user(r); user != "" {
			return rules.Actor{TokenID: "user:" + user, User: user, Admin: a.admins[user], RemoteIP: remoteIP(r)}, true
		}
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rotagate"`)
		writeError(w, http.StatusUnauthorized, "invalid_token", "missing bearer token")
		return rules.Actor{}, false
	}
	sum := sha256.Sum256([]byte(token))
	isAdmin := subtle.ConstantTimeCompare(sum[:], a.admin[:]) == 1
	isEdge := subtle.ConstantTimeCompare(sum[:], a.edge[:]) == 1
	isLeak := a.hasLeak && subtle.ConstantTimeCompare(sum[:], a.leak[:]) == 1
	switch {
	case need != roleEdge && isAdmin:
		return rules.Actor{TokenID: "admin-token", Admin: true, RemoteIP: remoteIP(r)}, true
	case need == roleEdge && isEdge:
		return rules.Actor{TokenID: "edge", RemoteIP: remoteIP(r)}, true
	case need == roleLeak && isLeak:
		return rules.Actor{TokenID: "leak-token", Leak: true, RemoteIP: remoteIP(r)}, true
	case isAdmin, isEdge, isLeak:
		writeError(w, http.StatusForbidden, "insufficient_scope", "this token may not use this endpoint")
		return rules.Actor{}, false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="rotagate", error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, "invalid_token", "wrong bearer token")
	return rules.Actor{}, false
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
	clientJSON struct {
		ClientID  string    `json:"client_id"`
		Name      string    `json:"name"`
		Owners    []string  `json:"owners"`
		CreatedAt time.Time `json:"created_at"`
		// AllowedCIDRs ([] for anywhere) and NetworksReportOnly are set
		// through PUT /v1/clients/{id}/networks.
		AllowedCIDRs       []string `json:"allowed_cidrs"`
		NetworksReportOnly bool     `json:"networks_report_only"`
	}
	clientDetailJSON struct {
		clientJSON
		Secrets []secretJSON `json:"secrets"`
	}
	clientListJSON struct {
		Clients []clientJSON `json:"clients"`
		Next    string       `json:"next,omitempty"`
	}
	secretJSON struct {
		ID           string       `json:"id"`
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
	}
	secretListJSON struct {
		Secrets []secretJSON `json:"secrets"`
	}
	createdSecretJSON struct {
		ID        string     `json:"id"`
		Secret    string     `json:"secret,omitempty"`
		Hint      string     `json:"hint"`
		CreatedAt time.Time  `json:"created_at"`
		ExpiresAt *time.Time `json:"expires_at"`
		// Warnings describe what may keep an imported secret from
		// working with some clients; never the secret itself.
		Warnings []string `json:"warnings,omitempty"`
	}
	rotatedSecretJSON struct {
		createdSecretJSON
		Expiring []string `json:"expiring"`
		Revoked  []string `json:"revoked"`
	}
	errorJSON struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}

	auditEntryJSON struct {
		At       time.Time `json:"at"`
		Who      string    `json:"who"`
		RemoteIP string    `json:"remote_ip,omitempty"`
		Action   string    `json:"action"`
		SecretID string    `json:"secret_id,omitempty"`
		Detail   string    `json:"detail,omitempty"`
	}
	auditJSON struct {
		Entries []auditEntryJSON `json:"entries"`
	}

	createClientRequest struct {
		// ClientID is nil when absent (an id is generated); an empty
		// one is refused.
		ClientID *string  `json:"client_id,omitempty"`
		Name     string   `json:"name"`
		Owners   []string `json:"owners,omitempty"`
	}
	putOwnersRequest struct {
		Owners *[]string `json:"owners"`
	}
	patchOwnersRequest struct {
		Add    []string `json:"add,omitempty"`
		Remove []string `json:"remove,omitempty"`
	}
	generateRequest struct {
		ExpiresIn *string        `json:"expires_in"`
		Import    *importRequest `json:"import"`
	}
	importRequest struct {
		Hash   string `json:"hash"`
		Secret string `json:"secret"`
	}
	rotateRequest struct {
		Grace *string `json:"grace"`
	}
)

func toClientJSON(c store.Client) clientJSON {
	owners := c.Owners
	if owners == nil {
		owners = []string{}
	}
	n := toNetworksJSON(c)
	return clientJSON{ClientID: c.ID, Name: c.Name, Owners: owners, CreatedAt: c.CreatedAt.UTC(),
		AllowedCIDRs: n.AllowedCIDRs, NetworksReportOnly: n.ReportOnly}
}

func toSecretJSON(s store.Secret, now time.Time) secretJSON {
	out := secretJSON{
		ID: s.ID, Hint: s.Hint, Status: s.Status(now), CreatedAt: s.CreatedAt.UTC(),
		ExpiresAt: s.ExpiresAt, RevokedAt: s.RevokedAt, LastUsedAt: s.LastUsedAt, FirstUsedAt: s.FirstUsedAt,
		PresentedAfterRevoke: s.PresentedAfterRevoke, LastPresentedAfterRevokeAt: s.LastPresentedAfterRevokeAt,
		LeakReportedAt: s.LeakReportedAt,
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

func toSecretsJSON(secrets []store.Secret, now time.Time) []secretJSON {
	out := make([]secretJSON, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, toSecretJSON(s, now))
	}
	return out
}

func toCreatedJSON(ns rules.CreatedSecret) createdSecretJSON {
	return createdSecretJSON{
		ID: ns.Secret.ID, Secret: ns.Plaintext, Hint: ns.Secret.Hint,
		CreatedAt: ns.Secret.CreatedAt.UTC(), ExpiresAt: ns.Secret.ExpiresAt, Warnings: ns.Warnings,
	}
}

func (a *API) createClient(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req createClientRequest
	if !a.decode(w, r, &req, true) {
		return
	}
	id := ""
	if req.ClientID != nil {
		if id = *req.ClientID; id == "" {
			writeError(w, http.StatusBadRequest, "invalid_request", "client_id must not be empty; leave it out to have one generated")
			return
		}
	}
	c, err := a.svc.CreateClient(r.Context(), who, id, req.Name, req.Owners)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/clients/"+url.PathEscape(c.ID))
	writeJSON(w, http.StatusCreated, toClientJSON(c))
}

func (a *API) listClients(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("limit must be an integer between 1 and %d", rules.MaxPageSize))
			return
		}
		limit = n
	}
	clients, next, err := a.svc.ListClients(r.Context(), who, q.Get("after"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := clientListJSON{Clients: make([]clientJSON, 0, len(clients)), Next: next}
	for _, c := range clients {
		out.Clients = append(out.Clients, toClientJSON(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getClient(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	c, secrets, err := a.svc.GetClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, clientDetailJSON{clientJSON: toClientJSON(c), Secrets: toSecretsJSON(secrets, a.svc.Now())})
}

func (a *API) deleteClient(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	if err := a.svc.DeleteClient(r.Context(), who, r.PathValue("client_id")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) putOwners(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req putOwnersRequest
	if !a.decode(w, r, &req, false) {
		return
	}
	if req.Owners == nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `owners is required (a list of user ids; [] removes every owner)`)
		return
	}
	a.editOwners(w, r, who, rules.OwnersEdit{Replace: true, Set: *req.Owners})
}

func (a *API) patchOwners(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req patchOwnersRequest
	if !a.decode(w, r, &req, false) {
		return
	}
	a.editOwners(w, r, who, rules.OwnersEdit{Add: req.Add, Remove: req.Remove})
}

func (a *API) editOwners(w http.ResponseWriter, r *http.Request, who rules.Actor, edit rules.OwnersEdit) {
	c, err := a.svc.EditOwners(r.Context(), who, r.PathValue("client_id"), edit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toClientJSON(c))
}

// limitParam reads an optional ?limit= of a listing (0 when absent); a bad
// one is answered 400 here.
func limitParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("limit must be an integer between 1 and %d", rules.MaxPageSize))
		return 0, false
	}
	return n, true
}

func (a *API) audit(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	entries, err := a.svc.AuditTrail(r.Context(), who, r.PathValue("client_id"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := auditJSON{Entries: make([]auditEntryJSON, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, auditEntryJSON{At: e.At, Who: e.Who, RemoteIP: e.RemoteIP, Action: e.Action, SecretID: e.SecretID, Detail: e.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) listSecrets(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	secrets, err := a.svc.ListSecrets(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, secretListJSON{Secrets: toSecretsJSON(secrets, a.svc.Now())})
}

func (a *API) generateSecret(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req generateRequest
	if !a.decode(w, r, &req, true) {
		return
	}
	var opts rules.GenerateOptions
	if req.ExpiresIn != nil {
		d, ok := parseDuration(w, "expires_in", *req.ExpiresIn)
		if !ok {
			return
		}
		if d <= 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "expires_in must be positive")
			return
		}
		opts.ExpiresIn = d
	}
	if req.Import != nil {
		if (req.Import.Hash == "") == (req.Import.Secret == "") {
			writeError(w, http.StatusBadRequest, "invalid_request", "import takes exactly one of hash and secret")
			return
		}
		opts.ImportHash, opts.ImportSecret = req.Import.Hash, req.Import.Secret
	}
	ns, err := a.svc.GenerateSecret(r.Context(), who, r.PathValue("client_id"), opts)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toCreatedJSON(ns))
}

func (a *API) rotateSecret(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req rotateRequest
	if !a.decode(w, r, &req, false) {
		return
	}
	if req.Grace == nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `grace is required (a Go duration; "0s" revokes the other secrets at once)`)
		return
	}
	grace, ok := parseDuration(w, "grace", *req.Grace)
	if !ok {
		return
	}
	ns, err := a.svc.RotateSecret(r.Context(), who, r.PathValue("client_id"), grace)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := rotatedSecretJSON{createdSecretJSON: toCreatedJSON(ns), Expiring: ns.Expiring, Revoked: ns.Revoked}
	if out.Expiring == nil {
		out.Expiring = []string{}
	}
	if out.Revoked == nil {
		out.Revoked = []string{}
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) revokeSecret(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	sec, err := a.svc.RevokeSecret(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toSecretJSON(sec, a.svc.Now()))
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := a.svc.Store().Ping(ctx); err != nil {
		a.log.Warn("health check: store does not answer", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// parseDuration reads a non-negative Go duration string, answering 400
// itself when it is not one.
func parseDuration(w http.ResponseWriter, field, v string) (time.Duration, bool) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		writeError(w, http.StatusBadRequest, "invalid_request", field+` must be a non-negative Go duration such as "24h" or "90m"`)
		return 0, false
	}
	return d, true
}

// decode reads a JSON object of at most MaxBodyBytes into v, refusing
// unknown fields and trailing data. An empty body is {} when allowEmpty.
// On failure it answers 400 or 413 itself. Error descriptions never quote
// the body: it may hold a secret being imported.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("request body is over %d bytes", MaxBodyBytes))
		} else {
			writeError(w, http.StatusBadRequest, "invalid_request", "reading request body failed")
		}
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if allowEmpty {
			return true
		}
		writeError(w, http.StatusBadRequest, "invalid_request", "a JSON object is required")
		return false
	}
	if !exactJSONText(data) {
		writeError(w, http.StatusBadRequest, "invalid_request", "the body must be valid UTF-8, without lone \\u surrogate escapes")
		return false
	}
	if err := decodeStrict(data, v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return false
	}
	return true
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

func decodeStrict(data []byte, v any) error {
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

// fail maps an error from the rules to an answer.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, rules.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, rules.ErrForbidden):
		writeError(w, http.StatusForbidden, "insufficient_scope", "only admins may do this")
	case errors.Is(err, store.ErrNotFound):
		what := "no such client"
		if r.PathValue("secret_id") != "" {
			what = "no such client or secret"
		}
		writeError(w, http.StatusNotFound, "not_found", what)
	case errors.Is(err, rules.ErrTooManyActive):
		writeError(w, http.StatusConflict, "too_many_active_secrets",
			`the client already has the most active secrets allowed (max_active_secrets); revoke one, or rotate with grace "0s"`)
	case errors.Is(err, store.ErrClientExists):
		writeError(w, http.StatusConflict, "client_exists", "a client with this client_id already exists")
	case r.Context().Err() != nil:
		// The caller went away; nobody reads an answer.
	default:
		a.log.Error("management request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "server_error", "internal error; see the server log")
	}
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
	writeJSON(w, status, errorJSON{Error: code, Description: description})
}
