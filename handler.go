package rotagate

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Placeholders set on success.
const (
	placeholderClientID = "http.auth.client_id"
	placeholderSecretID = "http.auth.secret_id"
	placeholderUserID   = "http.auth.user.id"
)

// outcome names how a request was answered: the debug log's field and the
// auth_total metric's label.
type outcome string

const (
	outcomeAuthenticated outcome = "authenticated"
	outcomeNoCredentials outcome = "no_credentials"
	outcomeMalformed     outcome = "malformed"
	outcomeTooLarge      outcome = "body_too_large"
	outcomeMethodRefused outcome = "method_not_allowed"
	outcomeUnavailable   outcome = "unavailable"
	outcomeInvalidClient outcome = "invalid_client"
	outcomeThrottled     outcome = "throttled"
	// outcomeNetworkRefused: the secret verified, but the caller is
	// outside the client's allowed networks.
	outcomeNetworkRefused outcome = "network_refused"
	// outcomeNetworkReported: the same, let through because the client's
	// networks are report-only.
	outcomeNetworkReported outcome = "network_report_only"
	outcomeInternalFault   outcome = "fault"
)

const (
	contentTypeJSON        = "application/json"
	descriptionBadClient   = "client authentication failed"
	descriptionBadRequest  = "the request's client credentials are malformed or ambiguous"
	descriptionTooLarge    = "the request body is too large"
	descriptionUnavailable = "credentials cannot be checked right now"
	descriptionThrottled   = "too many failed attempts"
)

// answers holds every error answer's body and header values, built once:
// bodies are byte-identical whatever the cause.
type answers struct {
	unauthorized, badRequest, tooLarge, unavailable, throttled []byte
	challenge, retryAfter                                      string
}

func newAnswers(realm string, retryAfterSeconds int) answers {
	body := func(code, desc string) []byte {
		return []byte(`{"error":"` + code + `","error_description":"` + desc + `"}`)
	}
	return answers{
		unauthorized: body("invalid_client", descriptionBadClient),
		badRequest:   body("invalid_request", descriptionBadRequest),
		tooLarge:     body("invalid_request", descriptionTooLarge),
		unavailable:  body("temporarily_unavailable", descriptionUnavailable),
		throttled:    body("invalid_client", descriptionThrottled),
		challenge:    `Basic realm="` + realm + `"`,
		retryAfter:   strconv.Itoa(retryAfterSeconds),
	}
}

// credentials found in a request.
type credentials struct {
	// pairs[:n] are the (client id, secret) pairs to try, in order: one
	// from a form body; from Basic, the form-decoded pair and the raw pair
	// when it differs.
	pairs [2]credentialPair
	n     int
	basic bool // from the Authorization header
	form  formCredentials
	// method is how the request authenticates.
	method methodID
}

// basicScratch is the room on the stack for a decoded Basic pair; a
// longer one is decoded on the heap.
const basicScratch = 256

// ServeHTTP authenticates the request's client credentials.
//
// The strings of the credentials view the request's bytes (a Basic pair
// is decoded on the stack), so nothing keeps them: what outlives the check
// (placeholders, usage, logs) takes the snapshot's copy of the ids.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var scratch [basicScratch]byte
	defer clear(scratch[:]) // it held a secret
	creds, body, out := h.extract(r, scratch[:])
	switch out {
	case outcomeMalformed:
		return h.refuse(w, r, out, http.StatusBadRequest, h.answers.badRequest, false)
	case outcomeTooLarge:
		return h.refuse(w, r, out, http.StatusRequestEntityTooLarge, h.answers.tooLarge, false)
	case outcomeNoCredentials:
		return h.refuse(w, r, out, http.StatusUnauthorized, h.answers.unauthorized, true)
	}
	if !h.allowed[creds.method] {
		return h.refuse(w, r, outcomeMethodRefused, http.StatusUnauthorized, h.answers.unauthorized, creds.basic)
	}

	// The request's one clock read: its wall time, and the monotonic
	// reading that times the check.
	now := h.clock()
	snap, confirmed := h.feed.snapshots.current()
	if snap == nil || (h.MaxStale >= 0 && now.Sub(confirmed) > time.Duration(h.MaxStale)) {
		return h.refuse(w, r, outcomeUnavailable, http.StatusServiceUnavailable, h.answers.unavailable, false)
	}

	from, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	spent := charge{budget: h.budget, now: now}
	name, claimed := creds.pairs[0].id, true
	var m authMethod // nil for a secret
	var p *presented
	if creds.method >= idPrivateKeyJWT {
		m, p = h.present(r, &creds)
		name, claimed = m.claim(p, now)
	}
	if h.budget != nil {
		spent.key = h.budget.failureKey(name, from, snap.client(name) != nil)
		if wait, over := h.budget.over(spent.key, now); over {
			return h.throttle(w, r, wait)
		}
	}
	if m != nil {
		return h.serveMethod(w, r, next, m, p, name, claimed, &creds, body, snap, from, now, &spent)
	}

	var v, dead verdict // the usable secret that matched; a dead one that did
	for _, p := range creds.pairs[:creds.n] {
		var err error
		if v, err = h.verifier.verify(r.Context(), snap, p.id, readOnlyBytes(p.secret), now, &spent); err != nil {
			edgeMetrics.verify.Observe(h.since(now))
			if err == errOverBudget {
				return h.throttle(w, r, spent.wait)
			}
			return h.refuse(w, r, outcomeInternalFault, http.StatusServiceUnavailable, h.answers.unavailable, false)
		}
		if v.secretID != "" {
			break
		}
		if v.revoked != "" && dead.revoked == "" {
			dead = v
		}
	}
	edgeMetrics.verify.Observe(h.since(now))
	if v.secretID == "" {
		if dead.revoked != "" {
			// A dead secret is no guess: it spends no budget, so an app
			// that was never updated does not throttle its updated
			// siblings behind the same address. Its owner hears of it.
			spent.forgive()
			h.feed.usage.recordRevoked(dead.client.id, dead.revoked, from, now)
			edgeMetrics.presentedAfterRevoke.Inc()
		} else {
			spent.fail()
		}
		return h.refuse(w, r, outcomeInvalidClient, http.StatusUnauthorized, h.answers.unauthorized, creds.basic)
	}

	return h.accept(w, r, next, v, nil, nil, &creds, body, from, now, &spent)
}

// clock reads the time: the wall clock (with its monotonic reading), or a
// test's clock.
func (h *Handler) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// since is the seconds from start, a time the handler's clock read, to
// now: from the monotonic clock alone when it is the wall clock's.
func (h *Handler) since(start time.Time) float64 {
	if h.now != nil {
		return h.now().Sub(start).Seconds()
	}
	return time.Since(start).Seconds()
}

// serveMethod authenticates a request by a method other than a secret
// (authmethod.go): the claim read before the budget was consulted, then
// the check against the claimed client's credentials.
func (h *Handler) serveMethod(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, m authMethod, p *presented,
	name string, claimed bool, creds *credentials, body []byte, snap *snapshot, from string, now time.Time, spent *charge) error {
	v := verdict{client: snap.client(name)}
	if claimed {
		v.secretID = m.check(v.client, p, now)
	}
	edgeMetrics.verify.Observe(h.since(now))
	if v.secretID == "" {
		spent.fail()
		return h.refuse(w, r, outcomeInvalidClient, http.StatusUnauthorized, h.answers.unauthorized, false)
	}
	return h.accept(w, r, next, v, m, p, creds, body, from, now, spent)
}

// accept finishes a request whose credential verified (v): the network
// check, then the placeholders, the usage stamp and the stripping of the
// credentials, and the next handler. m and p are the method and what was
// presented to it, nil for a secret.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, v verdict, m authMethod, p *presented,
	creds *credentials, body []byte, from string, now time.Time, spent *charge) error {
	// The network check comes after the credential verified, so a request
	// from outside costs what any other does and gets the same 401 as a
	// wrong credential; the owner sees it among the credential's callers.
	c, use, out := v.client, useAccepted, outcomeAuthenticated
	if !c.allows(from) {
		if !c.reportOnly {
			if m != nil {
				m.pad(p)
			}
			h.feed.usage.record(c.id, v.secretID, from, now, useRefused)
			// Spent like a wrong secret: were it not, an outsider holding a
			// leaked secret could tell it is right from its never being
			// throttled.
			spent.fail()
			return h.refuse(w, r, outcomeNetworkRefused, http.StatusUnauthorized, h.answers.unauthorized, creds.basic)
		}
		use, out = useReportOnly, outcomeNetworkReported
	}
	spent.forgive()

	if !h.ForwardCredentials {
		h.strip(r, creds, body)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var clientID any = c.id // boxed once for both placeholders
	repl.Set(placeholderClientID, clientID)
	repl.Set(placeholderSecretID, v.secretID)
	repl.Set(placeholderUserID, clientID)
	h.feed.usage.record(c.id, v.secretID, from, now, use)
	countOutcome(out)
	if ce := h.logger.Check(zapcore.DebugLevel, "client authenticated"); ce != nil {
		ce.Write(zap.String("client_id", c.id), zap.String("secret_id", v.secretID))
	}
	return next.ServeHTTP(w, r)
}

// throttle answers a caller over its failure budget: 429 with the time
// until it may try again, after holding the answer, and the connection
// closed so that a keep-alive flood must reconnect.
func (h *Handler) throttle(w http.ResponseWriter, r *http.Request, wait time.Duration) error {
	h.budget.holdAnswer(r.Context())
	hdr := w.Header()
	hdr["Retry-After"] = []string{strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second)))}
	hdr["Connection"] = []string{"close"}
	return h.refuse(w, r, outcomeThrottled, http.StatusTooManyRequests, h.answers.throttled, false)
}

// extract finds the request's credentials, and the form body read when
// there was one. A client_secret in the query string makes the request
// malformed (RFC 6749 §2.3.1): it is never checked, and never reaches the
// upstream. The body is apart from the credentials, which may view
// scratch: the body goes on with the request, scratch must not.
func (h *Handler) extract(r *http.Request, scratch []byte) (c credentials, body []byte, out outcome) {
	if querySecret(r.URL.RawQuery) {
		return c, nil, outcomeMalformed
	}
	// Looked up by its canonical name as is: Header.Get would
	// canonicalise it again on every request.
	auths := r.Header["Authorization"]
	if len(auths) > 1 {
		return c, nil, outcomeMalformed // which one would the upstream read?
	}
	if len(auths) == 1 && auths[0] != "" {
		auth := auths[0]
		p, isBasic, err := parseBasic(auth, scratch)
		if err != nil {
			return c, nil, outcomeMalformed
		}
		if c.basic = isBasic; isBasic {
			c.pairs, c.n = p.candidates()
			c.method = idBasic
		}
	}
	if r.Body != nil && r.Body != http.NoBody && isForm(r.Header.Get("Content-Type")) {
		var err error
		body, err = readLimited(r.Body, r.ContentLength, h.MaxBody)
		if err == errBodyTooLarge {
			return c, nil, outcomeTooLarge
		}
		if err != nil {
			return c, nil, outcomeMalformed
		}
		if c.form, err = parseForm(body); err != nil {
			return c, nil, outcomeMalformed
		}
		// Whatever happens next, the upstream gets the body as it came.
		h.setBody(r, body)
	}
	jwt := c.form.hasAssertion || c.form.hasAssertionType
	switch {
	case jwt && (c.basic || c.form.hasSecret):
		return c, nil, outcomeMalformed // two authentication methods in one request
	case jwt && (!c.form.hasAssertion || !c.form.jwtBearer):
		return c, nil, outcomeMalformed // RFC 7521 §4.2: both, of the one type rotagate verifies
	case jwt:
		c.method = idPrivateKeyJWT
		return c, body, ""
	case c.basic && (c.form.hasSecret || (c.form.hasID && !c.names(c.form.clientID))):
		return c, nil, outcomeMalformed // two authentication methods in one request
	case c.basic:
		return c, body, ""
	case c.form.hasSecret && !c.form.hasID:
		return c, nil, outcomeMalformed
	case c.form.hasSecret:
		c.pairs[0], c.n = credentialPair{id: c.form.clientID, secret: c.form.secret}, 1
		c.method = idPost
		return c, body, ""
	case c.form.hasID && hasCertificate(r):
		c.method = idTLSClientAuth
		return c, body, ""
	}
	return c, nil, outcomeNoCredentials
}

// names reports whether one of the pairs to try is for client id.
func (c *credentials) names(id string) bool {
	for _, p := range c.pairs[:c.n] {
		if p.id == id {
			return true
		}
	}
	return false
}

var errBodyTooLarge = errors.New("body too large")

// readLimited reads a whole body of at most limit bytes.
func readLimited(body io.ReadCloser, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return nil, errBodyTooLarge
	}
	// Size the buffer from Content-Length (one more to see EOF without
	// growing), but never trust it for more than a few pages up front.
	size := int64(512)
	if contentLength > 0 {
		size = min(contentLength+1, 64<<10)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	n, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	body.Close()
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, errBodyTooLarge
	}
	return buf.Bytes(), nil
}

// setBody gives the request a body that replays b, with a length to match.
func (h *Handler) setBody(r *http.Request, b []byte) {
	r.Body = io.NopCloser(bytes.NewReader(b))
	if r.ContentLength != int64(len(b)) {
		r.ContentLength = int64(len(b))
		r.TransferEncoding = nil
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	}
}

// strip removes the credentials the request authenticated with: the
// Authorization header for Basic, and every client_secret parameter from
// its form body (client_id stays).
func (h *Handler) strip(r *http.Request, c *credentials, body []byte) {
	if c.basic {
		delete(r.Header, "Authorization") // its canonical name: Header.Del would canonicalise it again
	}
	if kept := c.form.keep(body); len(kept) != len(body) {
		h.setBody(r, kept)
	}
}

// refuse writes an RFC 6749 §5.2 error answer.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, out outcome, status int, body []byte, challenge bool) error {
	countOutcome(out)
	// Fresh slices each time: later handlers (Caddy's deferred `header`
	// replacements) may edit header values in place.
	hdr := w.Header()
	hdr["Content-Type"] = []string{contentTypeJSON}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["Pragma"] = []string{"no-cache"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	if challenge {
		hdr["Www-Authenticate"] = []string{h.answers.challenge}
	}
	if status == http.StatusServiceUnavailable {
		hdr["Retry-After"] = []string{h.answers.retryAfter}
	}
	if c := h.logger.Check(zapcore.DebugLevel, "client authentication refused"); c != nil {
		c.Write(zap.String("outcome", string(out)), zap.Int("status", status), zap.String("remote", r.RemoteAddr))
	}
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// methodID numbers the authentication methods (authmethod.go); the
// methods other than a secret come last.
type methodID uint8

const (
	idBasic methodID = iota
	idPost
	idPrivateKeyJWT
	idTLSClientAuth
	methodCount
)

// methodNames are the methods' names in the methods option, by id.
var methodNames = [methodCount]string{methodBasic, methodPost, methodPrivateKeyJWT, methodTLSClientAuth}

// methodSet is the parsed Methods option: whether each method is allowed.
type methodSet [methodCount]bool

func newMethodSet(methods []string) methodSet {
	var m methodSet
	for _, name := range methods {
		for id, n := range methodNames {
			if n == name {
				m[id] = true
			}
		}
	}
	return m
}
