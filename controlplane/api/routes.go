package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// handler is the shape of every endpoint, as Caddy's admin API has one:
// it reads the request and returns what to answer — a JSON body (200), an
// answer, or a writer — or an error, which fail turns into an answer.
type handler func(r *http.Request, who rules.Actor) (any, error)

// apiError is an answer other than success: a status, an error code and
// a description that never quotes a secret, and headers to set.
type apiError struct {
	status     int
	code, desc string
	header     map[string]string
}

func (e *apiError) Error() string { return e.code + ": " + e.desc }

// badRequest is the answer to a malformed request.
func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: "invalid_request", desc: fmt.Sprintf(format, args...)}
}

// answer is a JSON body (none when nil) with a status and headers.
type answer struct {
	status int
	header map[string]string
	body   any
}

// writer is an answer a handler writes itself (the feed's).
type writer func(w http.ResponseWriter)

type role int

const (
	roleAdmin role = iota
	roleEdge
	// roleLeak: the admin token, the leak token or a signed-in user.
	roleLeak
	// roleAnyone: no token checked (the handler authenticates, if at all).
	roleAnyone
)

// route is one endpoint: a method (GET also answers HEAD), a path
// pattern of http.ServeMux, who may call it, the largest body it reads,
// and its handler.
type route struct {
	method, path string
	who          role
	maxBody      int64
	h            handler
}

// table is the API: every endpoint, once. It drives the mux, the 405
// answers and Handles.
func (a *API) table() []route {
	return []route{
		{"GET", "/v1/clients", roleAdmin, 0, a.listClients},
		{"POST", "/v1/clients", roleAdmin, 0, withBody(true, a.createClient)},
		{"GET", "/v1/clients/{client_id}", roleAdmin, 0, a.getClient},
		{"DELETE", "/v1/clients/{client_id}", roleAdmin, 0, a.deleteClient},
		{"PUT", "/v1/clients/{client_id}/owners", roleAdmin, 0, withBody(false, a.putOwners)},
		{"PATCH", "/v1/clients/{client_id}/owners", roleAdmin, 0, withBody(false, a.patchOwners)},
		{"GET", "/v1/clients/{client_id}/audit", roleAdmin, 0, a.audit},
		{"GET", "/v1/clients/{client_id}/networks", roleAdmin, 0, a.getNetworks},
		{"PUT", "/v1/clients/{client_id}/networks", roleAdmin, 0, withBody(false, a.putNetworks)},
		{"POST", "/v1/clients/{client_id}/networks/suggest", roleAdmin, 0, withBody(true, a.suggestNetworks)},
		{"GET", "/v1/clients/{client_id}/sink", roleAdmin, 0, a.getSink},
		{"PUT", "/v1/clients/{client_id}/sink", roleAdmin, 0, withBody(false, a.putSink)},
		{"DELETE", "/v1/clients/{client_id}/sink", roleAdmin, 0, a.deleteSink},
		{"GET", "/v1/clients/{client_id}/cutover", roleAdmin, 0, a.getCutover},
		{"PUT", "/v1/clients/{client_id}/cutover", roleAdmin, 0, withBody(false, a.putCutover)},
		{"GET", "/v1/clients/{client_id}/secrets", roleAdmin, 0, a.listSecrets},
		{"POST", "/v1/clients/{client_id}/secrets", roleAdmin, 0, withBody(true, a.generateSecret)},
		{"POST", "/v1/clients/{client_id}/secrets/rotate", roleAdmin, 0, withBody(false, a.rotateSecret)},
		{"DELETE", "/v1/clients/{client_id}/secrets/{secret_id}", roleAdmin, 0, a.revokeSecret},
		{"PUT", "/v1/clients/{client_id}/secrets/{secret_id}/label", roleAdmin, 0, withBody(false, a.labelSecret)},
		{"GET", "/v1/clients/{client_id}/secrets/{secret_id}/callers", roleAdmin, 0, a.listCallers},
		{"GET", "/v1/events", roleAdmin, 0, a.listEvents},
		{"GET", wire.SnapshotPath, roleEdge, 0, a.snapshot},
		{"POST", wire.UsagePath, roleEdge, MaxUsageBytes, a.usage},
		{"POST", leaksPath, roleLeak, MaxLeakBodyBytes, a.reportLeaks},
		{"POST", githubLeaksPath, roleAnyone, MaxLeakBodyBytes, a.githubLeaks},
		{"GET", "/healthz", roleAnyone, 0, a.healthz},
	}
}

// routes wires the table to the mux, one pattern per path with its
// methods; other methods get a JSON 405, unknown paths a JSON 404.
func (a *API) routes() {
	byPath := map[string][]route{}
	var paths []string
	for _, rt := range a.table() {
		if byPath[rt.path] == nil {
			paths = append(paths, rt.path)
		}
		byPath[rt.path] = append(byPath[rt.path], rt)
	}
	for _, p := range paths {
		a.mux.HandleFunc(p, a.serve(byPath[p]))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API endpoint")
	})
}

// serve answers the requests for one path: the method, then who calls,
// then the handler.
func (a *API) serve(rts []route) http.HandlerFunc {
	var allowed []string
	for _, rt := range rts {
		allowed = append(allowed, rt.method)
		if rt.method == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		i := slices.IndexFunc(rts, func(rt route) bool { return rt.method == method })
		if i < 0 {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "allowed methods: "+allow)
			return
		}
		rt := rts[i]
		var who rules.Actor
		if rt.who != roleAnyone {
			var err error
			if who, err = a.authorize(r, rt.who); err != nil {
				a.fail(w, r, err)
				return
			}
		}
		maxBody := rt.maxBody
		if maxBody == 0 {
			maxBody = MaxBodyBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		out, err := rt.h(r, who)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		respond(w, out)
	}
}

// Mount serves h beside the API at prefix, a path ending in "/", and at
// prefix without its slash: the API's path check, then h. The console is
// mounted so.
func (a *API) Mount(prefix string, h http.Handler) {
	a.mux.Handle(strings.TrimSuffix(prefix, "/"), h)
	a.mux.Handle(prefix, h)
	a.mounted = append(a.mounted, prefix)
}

// Handles reports whether path belongs to the API (or to a handler
// mounted beside it): it names an API endpoint, or would once cleaned of
// dot and empty segments (the API then refuses it). Inside Caddy, other
// paths go to the next handler.
func (a *API) Handles(path string) bool {
	for _, prefix := range a.mounted {
		if path == strings.TrimSuffix(prefix, "/") || strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return a.owns(path) || a.owns(cleanPath(path))
}

// owns reports whether the table has path, or a path of more than two
// segments under the same two first ones (/v1/clients/…, /v1/edge/…).
func (a *API) owns(path string) bool {
	for _, rt := range a.table() {
		if path == rt.path {
			return true
		}
		segs := strings.SplitN(strings.TrimPrefix(rt.path, "/"), "/", 3)
		if len(segs) == 3 && strings.HasPrefix(path, "/"+segs[0]+"/"+segs[1]+"/") {
			return true
		}
	}
	return false
}

// withBody is the handler h of an endpoint that takes a JSON request
// body: decode reads it into a Req (an empty body is the zero Req when
// allowEmpty) before h runs.
func withBody[Req any](allowEmpty bool, h func(r *http.Request, who rules.Actor, req Req) (any, error)) handler {
	return func(r *http.Request, who rules.Actor) (any, error) {
		var req Req
		if err := decode(r, &req, allowEmpty); err != nil {
			return nil, err
		}
		return h(r, who, req)
	}
}

// reply is a handler's answer to a call of the rules that returns v:
// to(v), or the call's error.
func reply[T, J any](to func(T) J) func(v T, err error) (any, error) {
	return func(v T, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return to(v), nil
	}
}

// respond writes a handler's answer.
func respond(w http.ResponseWriter, out any) {
	switch out := out.(type) {
	case writer:
		out(w)
	case answer:
		for k, v := range out.header {
			w.Header().Set(k, v)
		}
		if out.body == nil {
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(out.status)
			return
		}
		writeJSON(w, out.status, out.body)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

// fail maps an error to an answer: an *apiError as it is, the rules' and
// the store's errors to theirs, and anything else to 500, logged, unless
// the caller went away.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		for k, v := range ae.header {
			w.Header().Set(k, v)
		}
		writeError(w, ae.status, ae.code, ae.desc)
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
	case errors.Is(err, rules.ErrSinkFailed):
		writeError(w, http.StatusBadGateway, "sink_failed", err.Error())
	case errors.Is(err, store.ErrClientExists):
		writeError(w, http.StatusConflict, "client_exists", "a client with this client_id already exists")
	case r.Context().Err() != nil:
		// The caller went away; nobody reads an answer.
	default:
		a.log.Error("management request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "server_error", "internal error; see the server log")
	}
}

// readBody reads the request body, which serve has bounded: over the
// bound is 413, naming what (a request body, a usage batch).
func readBody(r *http.Request, what string) ([]byte, error) {
	data, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "request_too_large",
			desc: fmt.Sprintf("%s is over %d bytes", what, tooBig.Limit)}
	case err != nil:
		return nil, badRequest("reading request body failed")
	}
	return data, nil
}
