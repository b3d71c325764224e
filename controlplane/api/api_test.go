package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

func TestAuth(t *testing.T) {
	e := newEnv(t)
	admin := []struct{ method, path string }{
		{"GET", "/v1/clients"},
		{"POST", "/v1/clients"},
		{"GET", "/v1/clients/c"},
		{"DELETE", "/v1/clients/c"},
		{"GET", "/v1/clients/c/secrets"},
		{"POST", "/v1/clients/c/secrets"},
		{"POST", "/v1/clients/c/secrets/rotate"},
		{"DELETE", "/v1/clients/c/secrets/sec_01234567890123456789"},
	}
	edge := []struct{ method, path string }{
		{"GET", "/v1/edge/snapshot"},
		{"POST", "/v1/edge/usage"},
	}
	check := func(method, path string, r cptest.Response, want int, code string) {
		t.Helper()
		if r.Status != want || r.JSON(t)["error"] != code {
			t.Errorf("%s %s: %d %s, want %d %s", method, path, r.Status, cptest.Redact(r.Body), want, code)
		}
	}
	for _, rt := range admin {
		check(rt.method, rt.path, e.Do(rt.method, rt.path, "", nil), 401, "invalid_token")
		check(rt.method, rt.path, e.Do(rt.method, rt.path, "wrong", nil), 401, "invalid_token")
		check(rt.method, rt.path, e.Do(rt.method, rt.path, cptest.EdgeToken, nil), 403, "insufficient_scope")
	}
	for _, rt := range edge {
		check(rt.method, rt.path, e.Do(rt.method, rt.path, "", nil), 401, "invalid_token")
		check(rt.method, rt.path, e.Do(rt.method, rt.path, cptest.EdgeToken+"x", nil), 401, "invalid_token")
		check(rt.method, rt.path, e.Do(rt.method, rt.path, cptest.AdminToken, nil), 403, "insufficient_scope")
	}
	r := e.Do("GET", "/v1/clients", "", nil)
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without a Bearer challenge")
	}
	// Other schemes and case.
	req := e.Do("GET", "/v1/clients", "", nil, "Authorization", "Basic "+cptest.AdminToken)
	cptest.MustStatus(t, req, 401)
	cptest.MustStatus(t, e.Do("GET", "/v1/clients", "", nil, "Authorization", "bearer "+cptest.AdminToken), 200)
	if e.Revision() != 0 {
		t.Fatal("unauthorised requests wrote to the store")
	}
	if _, err := New(e.Svc, Options{AdminToken: "same", EdgeToken: "same"}); err == nil {
		t.Error("New accepted equal tokens")
	}
	if _, err := New(e.Svc, Options{AdminToken: "a"}); err == nil {
		t.Error("New accepted a missing edge token")
	}
}

func TestClientsAPI(t *testing.T) {
	e := newEnv(t)
	r := e.Admin("POST", "/v1/clients", map[string]string{"client_id": "acme", "name": "ACME Corp"})
	cptest.MustStatus(t, r, 201)
	var c Client
	r.Decode(t, &c)
	if c.ClientID != "acme" || c.Name != "ACME Corp" || !c.CreatedAt.Equal(e.Clock.Now()) || r.Header.Get("Location") != "/v1/clients/acme" {
		t.Fatalf("created %+v, Location %q", c, r.Header.Get("Location"))
	}
	if !bytes.Contains(r.Body, []byte(`"created_at":"2030-01-02T03:04:05Z"`)) {
		t.Fatalf("created_at is not RFC 3339 UTC: %s", r.Body)
	}
	// Generated id, with and without a body.
	for _, body := range []any{nil, map[string]string{"name": "gen"}} {
		r = e.Admin("POST", "/v1/clients", body)
		cptest.MustStatus(t, r, 201)
		r.Decode(t, &c)
		if !strings.HasPrefix(c.ClientID, "cli_") || len(c.ClientID) != 24 {
			t.Fatalf("generated id %q", c.ClientID)
		}
	}
	r = e.Admin("POST", "/v1/clients", map[string]string{"client_id": "acme"})
	cptest.MustError(t, r, 409, "client_exists")

	r = e.Admin("GET", "/v1/clients/acme", nil)
	cptest.MustStatus(t, r, 200)
	var d ClientDetail
	r.Decode(t, &d)
	if d.ClientID != "acme" || d.Secrets == nil || !bytes.Contains(r.Body, []byte(`"secrets":[]`)) {
		t.Fatalf("client detail %s", r.Body)
	}

	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/acme", nil), 204)
	r = e.Admin("GET", "/v1/clients/acme", nil)
	cptest.MustError(t, r, 404, "not_found")
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/acme", nil), 404)
	cptest.MustStatus(t, e.Admin("GET", "/v1/clients/acme/secrets", nil), 404)
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/acme/secrets", nil), 404)
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/acme/secrets/rotate", `{"grace":"0s"}`), 404)
}

func TestClientIDsNeedEscapingInPaths(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"with/slash", "per%cent", "q?and#hash", "semi;colon", "plus+sign"} {
		cptest.MustStatus(t, e.Admin("POST", "/v1/clients", map[string]string{"client_id": id}), 201)
		path := "/v1/clients/" + url.PathEscape(id)
		r := e.Admin("GET", path, nil)
		cptest.MustStatus(t, r, 200)
		if r.JSON(t)["client_id"] != id {
			t.Fatalf("%q: got %s", id, r.Body)
		}
		cptest.MustStatus(t, e.Admin("POST", path+"/secrets", nil), 201)
		cptest.MustStatus(t, e.Admin("DELETE", path, nil), 204)
	}
}

func TestListClientsPagination(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.MustClient(fmt.Sprintf("client-%d", i))
	}
	var seen []string
	after := ""
	pages := 0
	for {
		path := "/v1/clients?limit=2"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		r := e.Admin("GET", path, nil)
		cptest.MustStatus(t, r, 200)
		var page ClientList
		r.Decode(t, &page)
		pages++
		for _, c := range page.Clients {
			seen = append(seen, c.ClientID)
		}
		if page.Next == "" {
			if bytes.Contains(r.Body, []byte(`"next"`)) {
				t.Fatalf("last page carries next: %s", r.Body)
			}
			break
		}
		after = page.Next
	}
	if pages != 3 || strings.Join(seen, ",") != "client-0,client-1,client-2,client-3,client-4" {
		t.Fatalf("%d pages: %v", pages, seen)
	}
	r := e.Admin("GET", "/v1/clients", nil)
	var all ClientList
	r.Decode(t, &all)
	if len(all.Clients) != 5 || all.Next != "" {
		t.Fatalf("default page: %d clients, next %q", len(all.Clients), all.Next)
	}
	r = e.Admin("GET", "/v1/clients?limit=1000&after=client-4", nil)
	r.Decode(t, &all)
	if len(all.Clients) != 0 || !bytes.Contains(r.Body, []byte(`"clients":[]`)) {
		t.Fatalf("past the end: %s", r.Body)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=abc", "limit=-1", "after=has%20space"} {
		r := e.Admin("GET", "/v1/clients?"+q, nil)
		cptest.MustError(t, r, 400, "invalid_request")
	}
}

func TestSecretsAPI(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")

	r := e.Admin("POST", "/v1/clients/c/secrets", map[string]string{"expires_in": "720h"})
	cptest.MustStatus(t, r, 201)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("an answer carrying a secret is cacheable")
	}
	m := r.JSON(t)
	for _, k := range []string{"id", "secret", "hint", "created_at", "expires_at"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("generate answer lacks %q", k)
		}
	}
	first := m["secret"].(string)
	firstID := m["id"].(string)
	if !rules.CheckSecret(first, rules.DefaultSecretPrefix) || m["hint"] != rules.Hint(rules.DefaultSecretPrefix, first) || m["expires_at"] != "2030-02-01T03:04:05Z" {
		t.Fatalf("generate answer: hint %v expires %v", m["hint"], m["expires_at"])
	}

	r = e.Admin("POST", "/v1/clients/c/secrets/rotate", map[string]string{"grace": "1h"})
	cptest.MustStatus(t, r, 201)
	m = r.JSON(t)
	second, _ := m["secret"].(string)
	if !rules.CheckSecret(second, rules.DefaultSecretPrefix) || fmt.Sprint(m["expiring"]) != "["+firstID+"]" || fmt.Sprint(m["revoked"]) != "[]" {
		t.Fatalf("rotate answer: expiring %v revoked %v", m["expiring"], m["revoked"])
	}

	r = e.Admin("POST", "/v1/clients/c/secrets", nil)
	cptest.MustError(t, r, 409, "too_many_active_secrets")
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/c/secrets/rotate", `{"grace":"24h"}`), 409)

	r = e.Admin("GET", "/v1/clients/c/secrets", nil)
	cptest.MustStatus(t, r, 200)
	var list struct {
		Secrets []map[string]any `json:"secrets"`
	}
	r.Decode(t, &list)
	if len(list.Secrets) != 2 {
		t.Fatalf("%d secrets listed", len(list.Secrets))
	}
	for _, s := range list.Secrets {
		for _, k := range []string{"id", "hint", "status", "created_at", "expires_at", "revoked_at", "last_used_at", "last_used_from"} {
			if _, ok := s[k]; !ok {
				t.Fatalf("listing lacks %q", k)
			}
		}
		if s["id"] == firstID && s["status"] != "expiring" || s["id"] != firstID && s["status"] != "active" {
			t.Fatalf("status of %v: %v", s["id"], s["status"])
		}
	}

	r = e.Admin("DELETE", "/v1/clients/c/secrets/"+firstID, nil)
	cptest.MustStatus(t, r, 200)
	if m := r.JSON(t); m["status"] != "revoked" || m["revoked_at"] != "2030-01-02T03:04:05Z" || m["id"] != firstID {
		t.Fatalf("revoke answer: %v", m)
	}
	missing, _ := rules.NewSecretID()
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/c/secrets/"+missing, nil), 404)
	cptest.MustStatus(t, e.Admin("DELETE", "/v1/clients/nobody/secrets/"+firstID, nil), 404)

	// A secret is shown once: no later answer carries it.
	for _, path := range []string{"/v1/clients/c", "/v1/clients/c/secrets", "/v1/clients"} {
		body := e.Admin("GET", path, nil).Body
		if bytes.Contains(body, []byte(first)) || bytes.Contains(body, []byte(second)) {
			t.Fatalf("%s shows a secret again", path)
		}
	}
	if body := e.Admin("DELETE", "/v1/clients/c/secrets/"+firstID, nil).Body; bytes.Contains(body, []byte(first)) {
		t.Fatal("the revoke answer shows the secret")
	}
}

func TestRotateWithoutGraceAPI(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	a, b := e.MustGenerate("c"), e.MustGenerate("c")
	r := e.Admin("POST", "/v1/clients/c/secrets/rotate", `{"grace":"0s"}`)
	cptest.MustStatus(t, r, 201)
	m := r.JSON(t)
	if got := fmt.Sprint(m["revoked"]); got != fmt.Sprint([]string{a.Secret.ID, b.Secret.ID}) && got != fmt.Sprint([]string{b.Secret.ID, a.Secret.ID}) {
		t.Fatalf("revoked %v", got)
	}
}

func TestImportAPI(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	h, err := bcrypt.GenerateFromPassword([]byte("legacy"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"import": map[string]string{"hash": string(h)}})
	cptest.MustStatus(t, r, 201)
	if _, ok := r.JSON(t)["secret"]; ok {
		t.Fatal("a hash import answers with a secret")
	}
	const legacy = "legacy-plaintext-imported-via-api"
	r = e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"import": map[string]string{"secret": legacy}})
	cptest.MustStatus(t, r, 201)
	if _, ok := r.JSON(t)["secret"]; ok || bytes.Contains(r.Body, []byte(legacy)) {
		t.Fatal("a plaintext import echoes the secret")
	}
}

// Every malformed request gets a JSON error and writes nothing.
func TestMalformedRequestsWriteNothing(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	e.MustGenerate("c")
	e.MustGenerate("c")
	rev := e.Revision()
	long := strings.Repeat("a", 256)
	cases := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/v1/clients", `{`, 400, "invalid_request"},
		{"POST", "/v1/clients", `[]`, 400, "invalid_request"},
		{"POST", "/v1/clients", `"x"`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"x"} {}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"x","extra":1}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":5}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"a b"}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"a:b"}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"` + long + `"}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"client_id":"ok","name":"bad\u0007name"}`, 400, "invalid_request"},
		{"POST", "/v1/clients", `{"name":"` + strings.Repeat("n", 201) + `"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"expires_in":"soon"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"expires_in":"-1h"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"expires_in":"0s"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"expires_in":3600}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":{}}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":{"hash":"x","secret":"y"}}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":{"hash":"plain-text"}}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":{"hash":"$2b$10$short"}}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":{"secret":"x","other":1}}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets", `{"import":"x"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", nil, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{"grace":"1 day"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{"grace":"-5m"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{"grace":null}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{"grace":"1h","expires_in":"1h"}`, 400, "invalid_request"},
		{"POST", "/v1/clients/c/secrets/rotate", `{"grace":"1h"}`, 409, "too_many_active_secrets"},
		{"GET", "/v1/clients/a%20b", nil, 400, "invalid_request"},
		{"DELETE", "/v1/clients/a:b", nil, 400, "invalid_request"},
		{"DELETE", "/v1/clients/c/secrets/not-a-secret-id", nil, 400, "invalid_request"},
		{"DELETE", "/v1/clients/c/secrets/sec_01234567890123456789", nil, 404, "not_found"},
		{"DELETE", "/v1/clients/nobody", nil, 404, "not_found"},
		{"POST", "/v1/clients/nobody/secrets", nil, 404, "not_found"},
		{"POST", "/v1/clients", `{"client_id":"c"}`, 409, "client_exists"},
		{"POST", "/v1/clients", strings.Repeat(" ", MaxBodyBytes) + `{}`, 413, "request_too_large"},
		{"POST", "/v1/clients/c/secrets", `{"import":{"secret":"` + strings.Repeat("s", MaxBodyBytes) + `"}}`, 413, "request_too_large"},
		{"PUT", "/v1/clients", `{}`, 405, "method_not_allowed"},
		{"GET", "/v1/clients/c/secrets/rotate", nil, 405, "method_not_allowed"},
		{"GET", "/v1/nothing-here", nil, 404, "not_found"},
	}
	for _, tc := range cases {
		r := e.Admin(tc.method, tc.path, tc.body)
		if r.Status != tc.status {
			t.Errorf("%s %s %.60v: status %d, want %d (%s)", tc.method, tc.path, tc.body, r.Status, tc.status, cptest.Redact(r.Body))
			continue
		}
		m := r.JSON(t)
		if m["error"] != tc.code || m["error_description"] == "" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s %.60v: error %v (%v), want %s", tc.method, tc.path, tc.body, m["error"], m["error_description"], tc.code)
		}
		if tc.status == 405 && r.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
	if e.Revision() != rev {
		t.Fatalf("malformed requests moved the revision from %d to %d", rev, e.Revision())
	}
	clients, _, _ := e.Svc.ListClients(context.Background(), cptest.Who, "", 0)
	if len(clients) != 1 || e.ActiveCount("c") != 2 {
		t.Fatalf("malformed requests wrote: %d clients, %d active secrets", len(clients), e.ActiveCount("c"))
	}
}

func TestErrorsNeverQuoteTheBody(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	const legacy = "legacy-Secret-in-a-broken-body"
	for _, body := range []string{
		`{"import":{"secret":"` + legacy + `"}`,
		`{"import":{"secret":"` + legacy + `", "x": 1}}`,
		`{"import":{"secret":["` + legacy + `"]}}`,
		`{"import":{"secret":"` + legacy + `"}} trailing`,
		`{"expires_in":"` + legacy + `"}`,
	} {
		r := e.Admin("POST", "/v1/clients/c/secrets", body)
		cptest.MustStatus(t, r, 400)
		if bytes.Contains(r.Body, []byte(legacy)) {
			t.Fatal("an error answer quotes the request body")
		}
	}
	for _, entry := range e.Audit.All() {
		for _, v := range entry.ContextMap() {
			if strings.Contains(fmt.Sprint(v), legacy) {
				t.Fatal("a log entry quotes the request body")
			}
		}
	}
}

// Plaintext secrets never reach the database file, its WAL or shared
// memory: only hashes do.
func TestSecretsNeverStored(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	r := e.Admin("POST", "/v1/clients/c/secrets", nil)
	cptest.MustStatus(t, r, 201)
	generated := r.JSON(t)["secret"].(string)
	const legacy = "legacy-plaintext-that-must-not-be-stored"
	cptest.MustStatus(t, e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"import": map[string]string{"secret": legacy}}), 201)

	found := 0
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(e.Path + suffix)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		found++
		for _, needle := range []string{generated, generated[len(rules.DefaultSecretPrefix):], legacy} {
			if bytes.Contains(data, []byte(needle)) {
				t.Fatalf("a plaintext secret is in %s", "cp.db"+suffix)
			}
		}
	}
	if found < 2 {
		t.Fatalf("expected the database and its WAL on disk, found %d files", found)
	}
	// The hash is there, so the scan looked at the right bytes.
	var all []byte
	for _, suffix := range []string{"", "-wal"} {
		data, _ := os.ReadFile(e.Path + suffix)
		all = append(all, data...)
	}
	secrets, _ := e.Svc.ListSecrets(context.Background(), cptest.Who, "c")
	if !bytes.Contains(all, []byte(secrets[0].Hash)) {
		t.Fatal("the stored hash is not in the files scanned")
	}
}

func TestHealthz(t *testing.T) {
	st, path := storetest.SQLite(t)
	e := newEnvOn(t, st, path)
	r := e.Do("GET", "/healthz", "", nil)
	cptest.MustStatus(t, r, 200)
	cptest.MustStatus(t, e.Do("POST", "/healthz", "", nil), 405)
	st.Close()
	r = e.Do("GET", "/healthz", "", nil)
	cptest.MustStatus(t, r, 503)
}

func TestHandles(t *testing.T) {
	e := newEnv(t)
	for path, want := range map[string]bool{
		"/healthz": true, "/v1/clients": true, "/v1/clients/x": true, "/v1/edge/snapshot": true,
		"/": false, "/v1": false, "/v1/clientsx": false, "/other": false, "/healthz/x": false,
	} {
		if got := e.api.Handles(path); got != want {
			t.Errorf("Handles(%q) = %v", path, got)
		}
	}
}

// A path with dot or empty segments gets a JSON 400 with no-store before
// anything else; http.ServeMux would answer an HTML redirect to the clean
// path, ahead of the token check.
func TestDotSegmentPathsRefused(t *testing.T) {
	e := newEnv(t)
	e.MustClient("acme")
	for _, path := range []string{
		"/v1/clients/../x", "/v1/./clients", "//v1/clients", "/v1/clients/acme/secrets/..",
		"/v1/clients/acme/../acme", "/v1/edge/./snapshot", "/healthz/.", "/v1/clients/.",
	} {
		for _, token := range []string{"", cptest.AdminToken, cptest.EdgeToken} {
			r := e.Do("GET", path, token, nil)
			if r.Status != 400 || r.JSON(t)["error"] != "invalid_request" ||
				r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Location") != "" {
				t.Errorf("GET %s (token %t): %d %v %s", path, token != "", r.Status, r.Header, r.Body)
			}
		}
		if !e.api.Handles(path) {
			t.Errorf("Handles(%q) is false: inside Caddy the path would go to the next handler", path)
		}
	}
	// Paths that only clean into the API are the API's to refuse; others
	// are not its business.
	for path, want := range map[string]bool{"/static/../v1/clients": true, "/static/../index.html": false, "/healthz/..": false} {
		if e.api.Handles(path) != want {
			t.Errorf("Handles(%q) = %v", path, !want)
		}
	}
}

func TestTwoAuthorizationHeadersRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ path, first, second string }{
		{"/v1/clients", cptest.AdminToken, cptest.AdminToken},
		{"/v1/clients", cptest.AdminToken, "wrong"},
		{"/v1/clients", "wrong", cptest.AdminToken},
		{wire.SnapshotPath, cptest.EdgeToken, cptest.EdgeToken},
	} {
		req := httptest.NewRequest("GET", c.path, nil)
		req.Header.Add("Authorization", "Bearer "+c.first)
		req.Header.Add("Authorization", "Bearer "+c.second)
		rec := httptest.NewRecorder()
		e.api.ServeHTTP(rec, req)
		r := cptest.Response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
		if r.Status != 400 || r.JSON(t)["error"] != "invalid_request" || r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s with two Authorization headers: %d %s", c.path, r.Status, r.Body)
		}
	}
}

func TestCreateClientRefusesEmptyIDAndInvalidUTF8(t *testing.T) {
	e := newEnv(t)
	rev := e.Revision()
	for name, body := range map[string]string{
		"empty client_id":         `{"client_id": ""}`,
		"invalid UTF-8 in name":   "{\"client_id\": \"a\", \"name\": \"caf\xe9\"}",
		"invalid UTF-8 in id":     "{\"client_id\": \"\xff\"}",
		"lone high surrogate":     `{"client_id": "a", "name": "x\ud800"}`,
		"lone low surrogate":      `{"client_id": "a", "name": "\udc00x"}`,
		"reversed surrogate pair": `{"client_id": "a", "name": "\ude00\ud83d"}`,
		"high then plain escape":  `{"client_id": "a", "name": "\ud83d\u0041"}`,
	} {
		r := e.Admin("POST", "/v1/clients", body)
		if r.Status != 400 || r.JSON(t)["error"] != "invalid_request" {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	// Imports too: a secret must not be changed silently either.
	e.MustClient("c")
	rev = e.Revision()
	r := e.Admin("POST", "/v1/clients/c/secrets", "{\"import\": {\"secret\": \"legacy\xff\"}}")
	cptest.MustStatus(t, r, 400)
	if e.Revision() != rev {
		t.Fatal("a refused request wrote to the store")
	}
	// What is valid still goes through: a surrogate pair, an escaped
	// backslash before a u, and U+FFFD sent on purpose.
	r = e.Admin("POST", "/v1/clients", `{"client_id": "b", "name": "\ud83d\ude00 \\ud800 \ufffd"}`)
	cptest.MustStatus(t, r, 201)
	if got := r.JSON(t)["name"]; got != "😀 \\ud800 \ufffd" {
		t.Fatalf("name %q", got)
	}
}

// The answer to a plaintext import carries the warnings; the CLI prints
// them on stderr (TestCLIImport).
func TestImportWarningsInTheAnswer(t *testing.T) {
	e := newEnv(t)
	e.MustClient("c")
	const legacy = "legacy+secret%41"
	r := e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"import": map[string]string{"secret": legacy}})
	cptest.MustStatus(t, r, 201)
	var out CreatedSecret
	r.Decode(t, &out)
	if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "form-encoding") || bytes.Contains(r.Body, []byte(legacy)) {
		t.Fatalf("answer %s", r.Body)
	}
	r = e.Admin("POST", "/v1/clients/c/secrets", map[string]any{"import": map[string]string{"secret": "plain-legacy"}})
	cptest.MustStatus(t, r, 201)
	if bytes.Contains(r.Body, []byte("warnings")) {
		t.Fatalf("warnings for a plain secret: %s", r.Body)
	}
}
