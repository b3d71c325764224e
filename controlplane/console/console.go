package console

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"go.uber.org/zap"
)

// The console's templates and assets, compiled into the binary: no CDN, no
// build step.
//
//go:embed *.html static
var consoleFiles embed.FS

// Prefix is where the console is served on the control plane's site.
const Prefix = "/console/"

// Headers of every console answer: the console runs no inline script or
// style, is never framed, leaks no URL to other sites and is never cached
// (one of its pages carries a secret).
var consoleHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
	"Referrer-Policy":         "no-referrer",
	"X-Content-Type-Options":  "nosniff",
	"X-Frame-Options":         "DENY",
	"Cache-Control":           "no-store",
}

const (
	// csrfCookie holds a random value per browser session; a form's CSRF
	// token is an HMAC of the signed-in user's id keyed with it, so a
	// token is bound to both the browser and the user, and control
	// planes behind one load balancer need no shared key.
	csrfCookie = "rotagate_console"
	// maxFormBytes bounds a console form.
	maxFormBytes = 64 << 10
	// consolePageSize is how many clients My clients shows at a time.
	consolePageSize = 50
	// filterScanLimit bounds how many clients one filtered page reads.
	filterScanLimit = 5000
	// consoleAuditLimit is how many audit entries a client page shows.
	consoleAuditLimit = 50
	// recentAfterRevoke is how far back My clients looks for dead
	// secrets presented at an edge: its badge shows the recent ones.
	recentAfterRevoke = 7 * 24 * time.Hour
)

// Console serves the web console (docs/design.md §9) over the same
// Service and identity as the API, mounted beside it (API.Mount).
type Console struct {
	api     *api.API
	svc     *rules.Service
	pages   map[string]*template.Template
	handler http.Handler
}

// New returns the console over a's Service, signing users in as a does.
func New(a *api.API) (*Console, error) {
	c := &Console{api: a, svc: a.Service(), pages: map[string]*template.Template{}}
	layout, err := template.ParseFS(consoleFiles, "layout.html")
	if err != nil {
		return nil, err
	}
	for _, page := range []string{"clients", "client", "confirm", "secret", "error", "networks", "sinkset"} {
		t, err := template.Must(layout.Clone()).ParseFS(consoleFiles, page+".html", "networksform.html", "sinkpanel.html", "cutover.html")
		if err != nil {
			return nil, err
		}
		c.pages[page] = t
	}
	static, err := fs.Sub(consoleFiles, "static")
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	pages := []struct {
		method, path string
		h            http.Handler
	}{
		{"GET", "/console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static))},
		{"GET", "/console/{$}", c.signedIn(c.clientsPage)},
		{"GET", "/console/signout", c.signedIn(c.signOut)},
		{"POST", "/console/clients", c.signedIn(c.post(c.createClient))},
		{"GET", "/console/clients/{client_id}", c.signedIn(c.clientPage)},
		{"GET", "/console/clients/{client_id}/generate", c.signedIn(c.confirmGenerate)},
		{"POST", "/console/clients/{client_id}/generate", c.signedIn(c.post(c.generate))},
		{"GET", "/console/clients/{client_id}/rotate", c.signedIn(c.confirmRotate)},
		{"POST", "/console/clients/{client_id}/rotate", c.signedIn(c.post(c.rotate))},
		{"GET", "/console/clients/{client_id}/secrets/{secret_id}/revoke", c.signedIn(c.confirmRevoke)},
		{"POST", "/console/clients/{client_id}/secrets/{secret_id}/revoke", c.signedIn(c.post(c.revoke))},
		{"GET", "/console/clients/{client_id}/secrets/{secret_id}/label", c.signedIn(c.confirmLabel)},
		{"POST", "/console/clients/{client_id}/secrets/{secret_id}/label", c.signedIn(c.post(c.label))},
		{"POST", "/console/clients/{client_id}/owners", c.signedIn(c.post(c.saveOwners))},
		{"GET", "/console/clients/{client_id}/networks/suggest", c.signedIn(c.suggestNetworks)},
		{"POST", "/console/clients/{client_id}/networks", c.signedIn(c.post(c.saveNetworks))},
		{"POST", "/console/clients/{client_id}/sink", c.signedIn(c.post(c.saveSink))},
		{"POST", "/console/clients/{client_id}/sink/delete", c.signedIn(c.post(c.deleteSink))},
		{"POST", "/console/clients/{client_id}/cutover", c.signedIn(c.post(c.saveCutover))},
		{"GET", "/console/clients/{client_id}/delete", c.signedIn(c.confirmDelete)},
		{"POST", "/console/clients/{client_id}/delete", c.signedIn(c.post(c.deleteClient))},
	}
	allowed := map[string][]string{}
	for _, pg := range pages {
		mux.Handle(pg.method+" "+pg.path, pg.h)
		allowed[pg.path] = append(allowed[pg.path], pg.method)
	}
	// A page asked for with another method is answered 405, with the
	// methods it has, rather than as a page that does not exist.
	for path, methods := range allowed {
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		slices.Sort(methods)
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			c.errorPage(w, r, frame{}, http.StatusMethodNotAllowed, "Method not allowed", "This page answers "+allow+" only.")
		})
	}
	mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, frame{}, http.StatusNotFound, "Not found", "There is no such page.")
	})
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
	})

	// Go's cross-origin protection refuses a state change that a browser
	// says comes from another origin; the CSRF token covers browsers that
	// send neither Sec-Fetch-Site nor Origin.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.errorPage(w, r, frame{}, http.StatusForbidden, "Cross-site request refused",
			"This form was sent from another site. Open the console and try again from there.")
	}))
	c.handler = cop.Handler(mux)
	return c, nil
}

// ServeHTTP sets the security headers on every answer, then serves.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for k, v := range consoleHeaders {
		h.Set(k, v)
	}
	c.handler.ServeHTTP(w, r)
}

// frame is what every page shows around its content.
type frame struct {
	User  string
	Admin bool
	CSRF  string
}

type consoleHandler func(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame)

// signedIn finds the signed-in user; without one it answers 401 with a
// page that says how to put an authentication handler in front.
func (c *Console) signedIn(h consoleHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.api.SignedIn(r)
		if !ok {
			c.render(w, r, http.StatusUnauthorized, "error", errorView{
				Title: "Sign-in required",
				Lines: []string{
					"The rotagate console trusts the user that a Caddy authentication handler in front of it has signed in, and has no login of its own.",
					"Put basic_auth, or forward_auth to your SSO, in front of /console/* on the control plane's site, for example:",
				},
				Example: consoleAuthExample,
			})
			return
		}
		h(w, r, who, frame{User: who.User, Admin: who.Admin, CSRF: c.csrfToken(w, r, who.User)})
	}
}

const consoleAuthExample = `@people {
	path /console /console/* /v1/clients /v1/clients/*
	not header Authorization "Bearer *"
}
basic_auth @people {
	alice <bcrypt hash from caddy hash-password>
}
client_credentials_control_plane {
	…
	admins alice
}`

// csrfToken returns the form token of user in this browser, setting the
// session cookie when the browser has none.
func (c *Console) csrfToken(w http.ResponseWriter, r *http.Request, user string) string {
	key := csrfKey(r)
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		http.SetCookie(w, &http.Cookie{
			Name: csrfCookie, Value: base64.RawURLEncoding.EncodeToString(key),
			Path: Prefix, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode,
		})
	}
	return csrfMAC(key, user)
}

func csrfKey(r *http.Request) []byte {
	ck, err := r.Cookie(csrfCookie)
	if err != nil {
		return nil
	}
	key, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil || len(key) != 32 {
		return nil
	}
	return key
}

func csrfMAC(key []byte, user string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("rotagate console csrf\x00" + user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// post reads the form of a state change and checks its CSRF token first.
func (c *Console) post(h consoleHandler) consoleHandler {
	return func(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", "The form could not be read.")
			return
		}
		key := csrfKey(r)
		if key == nil || !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(csrfMAC(key, who.User))) {
			c.errorPage(w, r, fr, http.StatusForbidden, "Form expired",
				"This form's security token does not match your session. Go back, reload the page and try again.")
			return
		}
		h(w, r, who, fr)
	}
}

// render executes a page into a buffer and sends it, so a template error
// never leaves half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		c.api.Logger().Error("console: rendering a page failed", zap.String("page", page), zap.Error(err))
		http.Error(w, "internal error; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

type errorView struct {
	Frame          frame
	Title          string
	Lines          []string
	Example        string
	Back, BackText string
}

// errorPage answers with a page that says what went wrong and leads back:
// to the client's page when there is one to go back to, else to My
// clients.
func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, fr frame, status int, title string, lines ...string) {
	v := errorView{Frame: fr, Title: title, Lines: lines, Back: Prefix, BackText: "Back to My clients"}
	if id := r.PathValue("client_id"); id != "" && status != http.StatusNotFound {
		v.Back, v.BackText = consoleClientPath(id), "Back to "+id
	}
	c.render(w, r, status, "error", v)
}

// signOut says how to sign out: the console has no session of its own,
// the authentication handler in front has.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request, _ rules.Actor, fr frame) {
	c.render(w, r, http.StatusOK, "error", errorView{
		Frame: fr, Title: "Sign out",
		Lines: []string{
			"The console has no sign-in of its own: the authentication handler in front of it signed you in, and signing out happens there.",
			"With basic_auth, the browser keeps your password until you close it: close every window of this browser (or clear its saved passwords) to sign out.",
			"With forward_auth to an SSO, sign out of the SSO.",
		},
		Back: Prefix, BackText: "Back to My clients",
	})
}

// fail answers an error from the rules with a page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, fr frame, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.errorPage(w, r, fr, http.StatusNotFound, "Not found", "There is no such client or secret, or you are not one of its owners.")
	case errors.Is(err, rules.ErrForbidden):
		c.errorPage(w, r, fr, http.StatusForbidden, "Admins only", "Only an admin can do this.")
	case errors.Is(err, rules.ErrTooManyActive) && strings.HasSuffix(r.URL.Path, "/rotate"):
		c.errorPage(w, r, fr, http.StatusConflict, "Too many active secrets", c.rotateAtMax())
	case errors.Is(err, rules.ErrTooManyActive):
		c.errorPage(w, r, fr, http.StatusConflict, "Too many active secrets", c.maxSentence())
	case errors.Is(err, store.ErrClientExists):
		c.errorPage(w, r, fr, http.StatusConflict, "Client exists", "A client with this id already exists.")
	case errors.Is(err, rules.ErrInvalid):
		c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", err.Error())
	case r.Context().Err() != nil:
	default:
		c.api.Logger().Error("console request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		c.errorPage(w, r, fr, http.StatusInternalServerError, "Something went wrong", "The control plane could not do this; the server log says why.")
	}
}

// maxSentence is the sentence users know from hosted providers.
func (c *Console) maxSentence() string {
	return fmt.Sprintf("You can only have a maximum of %d active secrets; revoke one before you generate another.", c.svc.MaxActiveSecrets())
}

// rotateAtMax says what a rotation at the maximum can do, before the
// click (the rotate dialog and page) and after one that failed.
func (c *Console) rotateAtMax() string {
	return fmt.Sprintf("At the maximum of %d active secrets, a rotation can only revoke the other secrets at once: apps still using them stop working within the edges' revocation delay. To keep a grace period, revoke one secret first.", c.svc.MaxActiveSecrets())
}

// when is a time as the pages show it.
type when struct{ ISO, Text string }

func at(t *time.Time) *when {
	if t == nil || t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &when{ISO: u.Format(time.RFC3339), Text: u.Format("2006-01-02 15:04:05 UTC")}
}

func consoleClientPath(id string) string { return "/console/clients/" + url.PathEscape(id) }

// redirect answers a state change with 303 to a page (POST/redirect/GET).
// Notices are codes, never text from the request.
func redirect(w http.ResponseWriter, r *http.Request, path, done string) {
	if done != "" {
		path += "?done=" + done
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// revokedNotice names the secret revoked (the page looks it up in the
// client's own secrets, so no text of the request is shown) and how soon
// edges refuse it.
const revokedNotice = "Secret %s (%s) revoked. " + refusedWithinDelay

// refusedWithinDelay says how soon edges refuse a revoked secret.
const refusedWithinDelay = "Every edge refuses it within its revocation delay (revocation_delay, 30 seconds unless configured)."

var notices = map[string]string{
	"created":  "Client created.",
	"deleted":  "Client deleted; its secrets are revoked.",
	"revoked":  "Secret revoked. " + refusedWithinDelay,
	"owners":   "Owners saved.",
	"labelled": "Label saved.",
	"networks": "Allowed networks saved. Every edge applies them within the revocation delay.",
	"sink":     "Sink saved. New secrets of this client go to it.",
	"unsunk":   "Sink removed. New secrets of this client are shown once again.",
	"delivered": "New secret made and handed to the client's sink; it is not shown here. " +
		"Its events tell when the sink acknowledged it.",
	"cutover": "Cut-over saved.",
	"stale":   "That form had already been sent, or the secrets changed since it was shown: nothing was done. This is the current list.",
}

// My clients.

type clientsView struct {
	Frame   frame
	Query   string
	Notice  string
	Clients []clientRow
	Next    string
}

type clientRow struct {
	ID, Name, Path string
	Active         int
	LastUsed       *when
	// AfterRevoke says when a dead secret of the client was last
	// presented at an edge, if that was within recentAfterRevoke.
	AfterRevoke string
	// Cutover is the rotation in progress, if any.
	Cutover *cutoverProgress
}

func (c *Console) clientsPage(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	q := r.URL.Query()
	query := strings.TrimSpace(q.Get("q"))
	clients, next, err := c.pageOfClients(r, who, query, q.Get("after"))
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	v := clientsView{Frame: fr, Query: query, Notice: notices[q.Get("done")]}
	now := c.svc.Now()
	for _, cl := range clients {
		secrets, err := c.svc.ListSecrets(r.Context(), who, cl.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			c.fail(w, r, fr, err)
			return
		}
		row := clientRow{ID: cl.ID, Name: cl.Name, Path: consoleClientPath(cl.ID)}
		var last, dead *time.Time
		for i := range secrets {
			if secrets[i].Active(now) {
				row.Active++
			}
			if lu := secrets[i].LastUsedAt; lu != nil && (last == nil || lu.After(*last)) {
				last = lu
			}
			if pa := secrets[i].LastPresentedAfterRevokeAt; pa != nil && (dead == nil || pa.After(*dead)) {
				dead = pa
			}
		}
		row.LastUsed = at(last)
		if dead != nil && now.Sub(*dead) < recentAfterRevoke {
			row.AfterRevoke = "presented after revoke " + ago(now.Sub(*dead)) + " ago"
		}
		if row.Active > 1 {
			st, err := c.svc.GetCutover(r.Context(), who, cl.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				c.fail(w, r, fr, err)
				return
			}
			row.Cutover = progressOf(st)
		}
		v.Clients = append(v.Clients, row)
	}
	if next != "" {
		nq := url.Values{"after": {next}}
		if query != "" {
			nq.Set("q", query)
		}
		v.Next = Prefix + "?" + nq.Encode()
	}
	c.render(w, r, http.StatusOK, "clients", v)
}

// pageOfClients returns up to consolePageSize clients the actor may see
// after the given id, those whose id or name contains query (any case)
// when it is set, and where the next page starts ("" at the end).
func (c *Console) pageOfClients(r *http.Request, who rules.Actor, query, after string) ([]store.Client, string, error) {
	if query == "" {
		return c.svc.ListClients(r.Context(), who, after, consolePageSize)
	}
	needle := strings.ToLower(query)
	var out []store.Client
	for scanned := 0; scanned < filterScanLimit; {
		page, next, err := c.svc.ListClients(r.Context(), who, after, 500)
		if err != nil {
			return nil, "", err
		}
		for _, cl := range page {
			scanned++
			after = cl.ID
			if strings.Contains(strings.ToLower(cl.ID), needle) || strings.Contains(strings.ToLower(cl.Name), needle) {
				out = append(out, cl)
				if len(out) == consolePageSize {
					return out, after, nil
				}
			}
		}
		if next == "" {
			return out, "", nil
		}
	}
	return out, after, nil
}

func (c *Console) createClient(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	cl, err := c.svc.CreateClient(r.Context(), who, strings.TrimSpace(r.PostForm.Get("client_id")),
		strings.TrimSpace(r.PostForm.Get("name")), splitUsers(r.PostForm.Get("owners")))
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(cl.ID), "created")
}

// splitUsers reads user ids separated by spaces or commas.
func splitUsers(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// A client.

type clientView struct {
	Frame      frame
	ID, Name   string
	Path       string
	Notice     string
	Created    *when
	Owners     []string
	OwnersText string
	// Secrets are the active (and expiring) ones, newest first; Dead the
	// revoked and expired ones, shown collapsed.
	Secrets    []secretRow
	Dead       []secretRow
	DeadText   string
	AtMax      bool
	MaxText    string
	RotateNote string
	Seen       string
	Graces     []graceOption
	Expiries   []graceOption
	Audit      []auditRow
	Callers    []callersView
	Networks   networksView
	Sink       sinkPanel
	Cutover    cutoverView
}

type secretRow struct {
	ID, Hint string
	// Kind is secret, public_key or certificate; Thumbprint names a key
	// or certificate.
	Kind       store.Kind
	Thumbprint string
	// Label says which app has the secret; LabelPath is its edit page.
	Label, LabelPath string
	Status           store.Status
	Created          *when
	Expires          *when
	Revoked          *when
	LastUsed         *when
	LastFrom         string
	// AfterRevoke counts the requests that presented the secret after it
	// was revoked or expired; AfterRevokeAt and …From are the newest.
	AfterRevoke     int64
	AfterRevokeAt   *when
	AfterRevokeFrom string
	LeakReported    *when
	Active          bool
	RevokePath      string
	CutOver         cutOver
}

type auditRow struct {
	At                                      *when
	Who, RemoteIP, Action, SecretID, Detail string
}

func (c *Console) clientPage(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	cl, secrets, err := c.svc.GetClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	now := c.svc.Now()
	q := r.URL.Query()
	v := clientView{
		Frame: fr, ID: cl.ID, Name: cl.Name, Path: consoleClientPath(cl.ID), Notice: notices[q.Get("done")],
		Created: at(&cl.CreatedAt), Owners: cl.Owners, OwnersText: strings.Join(cl.Owners, ", "),
		Seen: seenSecrets(secrets), Expiries: expiries(),
	}
	if i := slices.IndexFunc(secrets, func(s store.Secret) bool { return s.ID == q.Get("secret") }); i >= 0 && q.Get("done") == "revoked" {
		v.Notice = fmt.Sprintf(revokedNotice, secrets[i].Hint, secrets[i].ID)
	}
	active := 0
	for i := len(secrets) - 1; i >= 0; i-- { // newest first
		s := secrets[i]
		row := secretRow{
			ID: s.ID, Hint: s.Hint, Kind: s.Kind, Thumbprint: s.Thumbprint, Status: s.Status(now), Created: at(&s.CreatedAt), Expires: at(s.ExpiresAt),
			Revoked: at(s.RevokedAt), LastUsed: at(s.LastUsedAt), LastFrom: s.LastUsedFrom, Active: s.Active(now),
			AfterRevoke: s.PresentedAfterRevoke, AfterRevokeAt: at(s.LastPresentedAfterRevokeAt),
			AfterRevokeFrom: s.LastPresentedAfterRevokeFrom, LeakReported: at(s.LeakReportedAt),
			RevokePath: consoleClientPath(cl.ID) + "/secrets/" + url.PathEscape(s.ID) + "/revoke",
			Label:      s.Label, LabelPath: consoleClientPath(cl.ID) + "/secrets/" + url.PathEscape(s.ID) + "/label",
		}
		if !row.Active {
			v.Dead = append(v.Dead, row)
			continue
		}
		active++
		row.CutOver = cutOverHint(s, secrets, now)
		v.Secrets = append(v.Secrets, row)
	}
	v.DeadText = rules.Plural(int64(len(v.Dead)), "revoked or expired secret", "revoked or expired secrets")
	v.AtMax = active >= c.svc.MaxActiveSecrets()
	v.Graces = graces(v.AtMax)
	if v.AtMax {
		v.MaxText, v.RotateNote = c.maxSentence(), c.rotateAtMax()
	}
	v.Networks = newNetworksView(fr, cl)
	if v.Sink, err = c.sinkPanel(r, who, fr, cl.ID); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	st, err := c.svc.GetCutover(r.Context(), who, cl.ID)
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	v.Cutover = newCutoverView(fr, v.Path, st, secrets)
	if v.Callers, err = c.secretCallers(r, who, cl.ID, secrets); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	if who.Admin {
		trail, err := c.svc.AuditTrail(r.Context(), who, cl.ID, consoleAuditLimit)
		if err != nil {
			c.fail(w, r, fr, err)
			return
		}
		for _, e := range trail {
			v.Audit = append(v.Audit, auditRow{At: at(&e.At), Who: e.Who, RemoteIP: e.RemoteIP, Action: e.Action, SecretID: e.SecretID, Detail: e.Detail})
		}
	}
	c.render(w, r, http.StatusOK, "client", v)
}

// seenSecrets is how many secrets (of any status) a client has. Secrets
// are never removed but with their client, so the number grows with every
// generate and rotate: those forms carry it, and a form sent twice (a
// reload of the answer page, a double click) changes nothing the second
// time.
func seenSecrets(secrets []store.Secret) string { return strconv.Itoa(len(secrets)) }

type graceOption struct {
	Value, Label string
	Selected     bool
}

// graces are the grace periods a rotation offers: at the maximum of
// active secrets, only none works (the others are revoked at once).
func graces(atMax bool) []graceOption {
	none := graceOption{Value: "0s", Label: "none: revoke the other secrets now"}
	if atMax {
		none.Selected = true
		return []graceOption{none}
	}
	return []graceOption{
		none,
		{Value: "1h", Label: "1 hour"},
		{Value: "24h", Label: "1 day", Selected: true},
		{Value: "168h", Label: "7 days"},
		{Value: "720h", Label: "30 days"},
	}
}

// expiries are when a generated secret may expire, never by default.
func expiries() []graceOption {
	return []graceOption{
		{Value: "", Label: "never", Selected: true},
		{Value: "168h", Label: "in 7 days"},
		{Value: "720h", Label: "in 30 days"},
		{Value: "2160h", Label: "in 90 days"},
		{Value: "8760h", Label: "in 1 year"},
	}
}

// cutOver says whether revoking a secret is safe, from the last uses of
// it and of the newer secret.
type cutOver struct{ Level, Text string }

// cutOverHint compares the last use of an active secret with the first use
// of the newest active secret created after it: once the new secret is in
// use, a later use of the old one means some app still has it.
func cutOverHint(old store.Secret, all []store.Secret, now time.Time) cutOver {
	var newer *store.Secret
	others := 0
	for i := range all {
		s := &all[i]
		if s.ID == old.ID || !s.Active(now) {
			continue
		}
		others++
		if s.CreatedAt.After(old.CreatedAt) && (newer == nil || s.CreatedAt.After(newer.CreatedAt)) {
			newer = s
		}
	}
	switch {
	case others == 0:
		return cutOver{"warn", "This is the only active secret: apps that use it stop working when you revoke it."}
	case newer == nil:
		return cutOver{"warn", "This is the newest active secret; the older ones stay active."}
	case newer.FirstUsedAt == nil:
		return cutOver{"warn", "The new secret " + newer.Hint + " has not been used yet: update your app before you revoke this one."}
	case old.LastUsedAt != nil && !old.LastUsedAt.Before(*newer.FirstUsedAt):
		text := "Still used " + ago(now.Sub(*old.LastUsedAt)) + " ago"
		if old.LastUsedFrom != "" {
			text += " from " + old.LastUsedFrom
		}
		return cutOver{"warn", text + ", after the new secret's first use: some app still has this one."}
	}
	return cutOver{"ok", "Not used since the new secret's first use at " + newer.FirstUsedAt.UTC().Format("15:04:05 UTC") + " — safe to revoke."}
}

// ago words a duration as "4 minutes".
func ago(d time.Duration) string {
	unit := func(n int64, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case d < time.Minute:
		return unit(max(int64(d/time.Second), 0), "second")
	case d < time.Hour:
		return unit(int64(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return unit(int64(d/time.Hour), "hour")
	}
	return unit(int64(d/(24*time.Hour)), "day")
}

// Confirm pages (JavaScript off; with it, the client page's dialogs).

type confirmView struct {
	Frame      frame
	Title      string
	ClientID   string
	ClientPath string
	Action     string
	Error      string
	Lines      []string
	CutOver    *cutOver
	Guard      bool
	Seen       string
	Graces     []graceOption
	Expiries   []graceOption
	// LabelField asks for a secret's label, LabelText is the current one.
	LabelField bool
	LabelText  string
	TypeID     bool
	Danger     bool
}

// confirmFor loads the client for a confirm page and prepares the view.
func (c *Console) confirmFor(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame, title, action string) (confirmView, []store.Secret, bool) {
	cl, secrets, err := c.svc.GetClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		c.fail(w, r, fr, err)
		return confirmView{}, nil, false
	}
	p := consoleClientPath(cl.ID)
	return confirmView{Frame: fr, Title: title, ClientID: cl.ID, ClientPath: p, Action: p + action}, secrets, true
}

func (c *Console) confirmGenerate(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	v, secrets, ok := c.confirmFor(w, r, who, fr, "Generate new secret", "/generate")
	if !ok {
		return
	}
	v.Lines = []string{"A new secret is added next to the active ones; nothing stops working. It is shown once, on the next page."}
	v.Guard, v.Seen, v.Expiries = true, seenSecrets(secrets), expiries()
	c.render(w, r, http.StatusOK, "confirm", v)
}

func (c *Console) confirmRotate(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	v, secrets, ok := c.confirmFor(w, r, who, fr, "Rotate secrets", "/rotate")
	if !ok {
		return
	}
	now := c.svc.Now()
	atMax := countActive(secrets, now) >= c.svc.MaxActiveSecrets()
	v.Lines = []string{"A new secret is generated, and every other active secret expires after the grace period."}
	if atMax {
		v.Lines = []string{"A new secret is generated.", c.rotateAtMax()}
	}
	v.Guard, v.Seen, v.Graces = true, seenSecrets(secrets), graces(atMax)
	c.render(w, r, http.StatusOK, "confirm", v)
}

func countActive(secrets []store.Secret, now time.Time) int {
	n := 0
	for i := range secrets {
		if secrets[i].Active(now) {
			n++
		}
	}
	return n
}

func (c *Console) confirmRevoke(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	v, secrets, ok := c.confirmFor(w, r, who, fr, "", "/secrets/"+url.PathEscape(r.PathValue("secret_id"))+"/revoke")
	if !ok {
		return
	}
	now := c.svc.Now()
	i := slices.IndexFunc(secrets, func(s store.Secret) bool { return s.ID == r.PathValue("secret_id") })
	if i < 0 || !secrets[i].Active(now) {
		c.errorPage(w, r, fr, http.StatusNotFound, "Not found", "This client has no such active secret.")
		return
	}
	hint := cutOverHint(secrets[i], secrets, now)
	v.Title, v.CutOver, v.Danger = "Revoke "+secrets[i].Hint+"?", &hint, true
	v.Lines = []string{"Every edge refuses it within its revocation delay (revocation_delay, 30 seconds unless configured). This cannot be undone."}
	c.render(w, r, http.StatusOK, "confirm", v)
}

// confirmLabel is the page that sets a secret's label.
func (c *Console) confirmLabel(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	v, secrets, ok := c.confirmFor(w, r, who, fr, "", "/secrets/"+url.PathEscape(r.PathValue("secret_id"))+"/label")
	if !ok {
		return
	}
	i := slices.IndexFunc(secrets, func(s store.Secret) bool { return s.ID == r.PathValue("secret_id") })
	if i < 0 {
		c.errorPage(w, r, fr, http.StatusNotFound, "Not found", "This client has no such secret.")
		return
	}
	v.Title, v.LabelField, v.LabelText = "Label "+secrets[i].Hint, true, secrets[i].Label
	v.Lines = []string{"Which app has this secret? The label shows on this page and in the API and CLI listings; empty clears it."}
	c.render(w, r, http.StatusOK, "confirm", v)
}

func (c *Console) label(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	if _, err := c.svc.LabelSecret(r.Context(), who, id, r.PathValue("secret_id"), r.PostForm.Get("label")); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(id), "labelled")
}

func (c *Console) confirmDelete(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	c.deletePage(w, r, who, fr, http.StatusOK, "")
}

// deletePage asks an admin to type the client id, again with errText
// when the typed id did not match.
func (c *Console) deletePage(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame, status int, errText string) {
	if !who.Admin {
		c.fail(w, r, fr, rules.ErrForbidden)
		return
	}
	v, _, ok := c.confirmFor(w, r, who, fr, "Delete client", "/delete")
	if !ok {
		return
	}
	v.Lines = []string{"Deleting the client revokes all its secrets at once: every app using them stops working."}
	v.TypeID, v.Danger, v.Error = true, true, errText
	c.render(w, r, status, "confirm", v)
}

// The new secret, shown once: the answer to the confirmed POST itself,
// never a redirect, never cached.

type secretView struct {
	Frame      frame
	ClientID   string
	ClientPath string
	Secret     string
	SecretID   string
	Hint       string
	Expires    *when
	// Expiring and Revoked are the other secrets a rotation scheduled to
	// expire (with when) or revoked.
	Expiring []otherSecret
	Revoked  []otherSecret
}

type otherSecret struct {
	ID, Hint string
	Expires  *when
}

// fresh reports whether the client has as many secrets as when the form
// was shown; otherwise it sends the browser back to the client page.
func (c *Console) fresh(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) bool {
	secrets, err := c.svc.ListSecrets(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		c.fail(w, r, fr, err)
		return false
	}
	if r.PostForm.Get("seen") != seenSecrets(secrets) {
		redirect(w, r, consoleClientPath(r.PathValue("client_id")), "stale")
		return false
	}
	return true
}

func (c *Console) generate(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	if !c.fresh(w, r, who, fr) {
		return
	}
	var opts rules.GenerateOptions
	if v := r.PostForm.Get("expires_in"); v != "" {
		d, err := caddy.ParseDuration(v)
		if err != nil || d <= 0 {
			c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", "Choose when the secret expires.")
			return
		}
		opts.ExpiresIn = d
	}
	ns, err := c.svc.GenerateSecret(r.Context(), who, r.PathValue("client_id"), opts)
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	c.showSecret(w, r, who, fr, ns)
}

func (c *Console) rotate(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	grace, err := time.ParseDuration(r.PostForm.Get("grace"))
	if err != nil || grace < 0 {
		c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", "Choose a grace period.")
		return
	}
	if !c.fresh(w, r, who, fr) {
		return
	}
	ns, err := c.svc.RotateSecret(r.Context(), who, r.PathValue("client_id"), grace)
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	c.showSecret(w, r, who, fr, ns)
}

// showSecret renders the new secret, and the other secrets a rotation
// scheduled to expire (with when) or revoked.
func (c *Console) showSecret(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame, ns rules.CreatedSecret) {
	id := r.PathValue("client_id")
	if ns.DeliveredTo != "" {
		redirect(w, r, consoleClientPath(id), "delivered")
		return
	}
	v := secretView{
		Frame: fr, ClientID: id, ClientPath: consoleClientPath(id), Secret: ns.Plaintext,
		SecretID: ns.Secret.ID, Hint: ns.Secret.Hint, Expires: at(ns.Secret.ExpiresAt),
	}
	if len(ns.Expiring)+len(ns.Revoked) > 0 {
		secrets, err := c.svc.ListSecrets(r.Context(), who, id)
		if err != nil {
			c.fail(w, r, fr, err)
			return
		}
		other := func(sid string) otherSecret {
			o := otherSecret{ID: sid}
			if i := slices.IndexFunc(secrets, func(s store.Secret) bool { return s.ID == sid }); i >= 0 {
				o.Hint, o.Expires = secrets[i].Hint, at(secrets[i].ExpiresAt)
			}
			return o
		}
		for _, sid := range ns.Expiring {
			v.Expiring = append(v.Expiring, other(sid))
		}
		for _, sid := range ns.Revoked {
			v.Revoked = append(v.Revoked, other(sid))
		}
	}
	c.render(w, r, http.StatusOK, "secret", v)
}

func (c *Console) revoke(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	if _, err := c.svc.RevokeSecret(r.Context(), who, id, r.PathValue("secret_id")); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(id), "revoked&secret="+url.QueryEscape(r.PathValue("secret_id")))
}

func (c *Console) saveOwners(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	if _, err := c.svc.EditOwners(r.Context(), who, id, rules.OwnersEdit{Replace: true, Set: splitUsers(r.PostForm.Get("owners"))}); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(id), "owners")
}

func (c *Console) deleteClient(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	if !who.Admin {
		c.fail(w, r, fr, rules.ErrForbidden)
		return
	}
	id := r.PathValue("client_id")
	if r.PostForm.Get("confirm_id") != id {
		c.deletePage(w, r, who, fr, http.StatusBadRequest, "The client id you typed does not match; nothing was deleted.")
		return
	}
	if err := c.svc.DeleteClient(r.Context(), who, id); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, Prefix, "deleted")
}
