package api

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
)

// A caller is one way of calling the management API (docs/design.md §9).
type caller struct {
	name  string
	user  string // the user an authentication handler in front vouched for
	token string // a bearer token
	// header is another Authorization header, as basic_auth leaves on
	// the request it let through.
	header string
}

var callers = []caller{
	{name: "admin token", token: cptest.AdminToken},
	{name: "admin user", user: "alice", header: "Basic YWxpY2U6cGFzc3dvcmQ="},
	{name: "owner", user: "olive", header: "Basic b2xpdmU6cGFzc3dvcmQ="},
	{name: "other user", user: "mallory"},
	{name: "no identity"},
}

// testRolesAndActions runs every management action as every role, each
// on a store of its own holding the client "owned" (owned by olive, with
// one secret) and the client "other" (no owners), and checks the answer,
// what the store holds afterwards and who the audit trail names.
func testRolesAndActions(t *testing.T, k storeKit) {
	type action struct {
		name, method, path string
		body               any
		// want is the status per caller, in the order of callers.
		want [5]int
	}
	const (
		ok      = 200
		created = 201
		gone    = 204
		denied  = 401
		forbid  = 403
		hidden  = 404
	)
	for _, r := range callers {
		t.Run(r.name, func(t *testing.T) {
			e := k.newEnv(t, withAdmins("alice"))
			ctx := context.Background()
			if _, err := e.Svc.CreateClient(ctx, cptest.Who, "owned", "Owned app", []string{"olive"}); err != nil {
				t.Fatal(err)
			}
			e.MustClient("other")
			first := e.MustGenerate("owned")
			otherSecret := e.MustGenerate("other")
			call := func(method, path string, body any) cptest.Response {
				t.Helper()
				var hdr []string
				if r.header != "" {
					hdr = []string{"Authorization", r.header}
				}
				return e.DoAs(r.user, method, path, r.token, body, hdr...)
			}
			idx := slices.IndexFunc(callers, func(x caller) bool { return x.name == r.name })

			// Listing shows what the role may see, answering 200 even when
			// that is nothing.
			list := call("GET", "/v1/clients", nil)
			wantList := map[string][]string{
				"admin token": {"other", "owned"}, "admin user": {"other", "owned"},
				"owner": {"owned"}, "other user": {},
			}[r.name]
			if r.name == "no identity" {
				cptest.MustStatus(t, list, denied)
			} else {
				cptest.MustStatus(t, list, ok)
				var got ClientList
				list.Decode(t, &got)
				ids := []string{}
				for _, c := range got.Clients {
					ids = append(ids, c.ClientID)
				}
				if !slices.Equal(ids, wantList) {
					t.Errorf("list: %v, want %v", ids, wantList)
				}
			}

			actions := []action{
				{"show", "GET", "/v1/clients/owned", nil, [5]int{ok, ok, ok, hidden, denied}},
				{"show unowned", "GET", "/v1/clients/other", nil, [5]int{ok, ok, hidden, hidden, denied}},
				{"list secrets", "GET", "/v1/clients/owned/secrets", nil, [5]int{ok, ok, ok, hidden, denied}},
				{"revoke", "DELETE", "/v1/clients/owned/secrets/" + first.Secret.ID, nil, [5]int{ok, ok, ok, hidden, denied}},
				{"generate", "POST", "/v1/clients/owned/secrets", map[string]any{}, [5]int{created, created, created, hidden, denied}},
				{"generate unowned", "POST", "/v1/clients/other/secrets", map[string]any{}, [5]int{created, created, hidden, hidden, denied}},
				{"rotate", "POST", "/v1/clients/owned/secrets/rotate", map[string]string{"grace": "0s"}, [5]int{created, created, created, hidden, denied}},
				{"revoke unowned", "DELETE", "/v1/clients/other/secrets/" + otherSecret.Secret.ID, nil, [5]int{ok, ok, hidden, hidden, denied}},
				{"import", "POST", "/v1/clients/owned/secrets", map[string]any{"import": map[string]string{"secret": "legacy-secret-value"}}, [5]int{created, created, forbid, forbid, denied}},
				{"audit", "GET", "/v1/clients/owned/audit", nil, [5]int{ok, ok, forbid, forbid, denied}},
				{"add owner", "PATCH", "/v1/clients/owned/owners", map[string]any{"add": []string{"bob"}}, [5]int{ok, ok, forbid, forbid, denied}},
				{"set owners", "PUT", "/v1/clients/owned/owners", map[string]any{"owners": []string{"olive", "carol"}}, [5]int{ok, ok, forbid, forbid, denied}},
				{"create", "POST", "/v1/clients", map[string]any{"client_id": "new", "owners": []string{"olive"}}, [5]int{created, created, forbid, forbid, denied}},
				{"delete", "DELETE", "/v1/clients/other", nil, [5]int{gone, gone, forbid, forbid, denied}},
			}
			for _, a := range actions {
				want := a.want[idx]
				resp := call(a.method, a.path, a.body)
				if resp.Status != want {
					t.Errorf("%s (%s %s): %d, want %d; %s", a.name, a.method, a.path, resp.Status, want, cptest.Redact(resp.Body))
					continue
				}
				code := map[int]string{denied: "invalid_token", forbid: "insufficient_scope", hidden: "not_found"}[want]
				if code != "" && resp.JSON(t)["error"] != code {
					t.Errorf("%s: error %v, want %s", a.name, resp.JSON(t)["error"], code)
				}
			}

			// What the store holds now is what was allowed.
			c, err := e.Store.Client(ctx, "owned")
			if err != nil {
				t.Fatal(err)
			}
			wantOwners := []string{"olive"}
			if r.name == "admin token" || r.name == "admin user" {
				wantOwners = []string{"carol", "olive"}
			}
			if !slices.Equal(c.Owners, wantOwners) {
				t.Errorf("owners %v, want %v", c.Owners, wantOwners)
			}
			_, errNew := e.Store.Client(ctx, "new")
			_, errOther := e.Store.Client(ctx, "other")
			admin := idx <= 1
			if (errNew == nil) != admin || (errOther != nil) != admin {
				t.Errorf("client new exists: %v, client other deleted: %v; want both %v", errNew == nil, errOther != nil, admin)
			}

			// The stored audit trail names who did it.
			trail, err := e.Store.Audit(ctx, "owned", 100)
			if err != nil {
				t.Fatal(err)
			}
			wantWho := map[string]string{"admin token": "admin-token", "admin user": "user:alice", "owner": "user:olive"}[r.name]
			var whos []string
			for _, en := range trail {
				if en.Who != "test" {
					whos = append(whos, en.Who+" "+en.Action)
				}
			}
			var wantWhos []string
			if wantWho != "" {
				// Newest first.
				for _, act := range []string{"client.owners", "client.owners", "secret.import", "secret.rotate", "secret.generate", "secret.revoke"} {
					if wantWho == "user:olive" && (act == "client.owners" || act == "secret.import") {
						continue
					}
					wantWhos = append(wantWhos, wantWho+" "+act)
				}
			}
			if fmt.Sprint(whos) != fmt.Sprint(wantWhos) {
				t.Errorf("audit trail %v, want %v", whos, wantWhos)
			}
		})
	}
}

// A bearer token is checked as before even when a user is known, and the
// edge routes never take a user.
func TestUserAndTokenTogether(t *testing.T) {
	e := newEnv(t, withAdmins("alice"))
	cptest.MustStatus(t, e.DoAs("alice", "GET", "/v1/clients", "wrong", nil), 401)
	cptest.MustStatus(t, e.DoAs("alice", "GET", "/v1/clients", cptest.EdgeToken, nil), 403)
	cptest.MustStatus(t, e.DoAs("olive", "GET", "/v1/clients", cptest.AdminToken, nil), 200)
	for _, p := range []string{"/v1/edge/snapshot", "/v1/edge/usage"} {
		method := "GET"
		if p == "/v1/edge/usage" {
			method = "POST"
		}
		r := e.DoAs("alice", method, p, "", nil)
		if r.Status != 401 || r.JSON(t)["error"] != "invalid_token" {
			t.Errorf("%s as a user: %d %s", p, r.Status, r.Body)
		}
	}
	// Only a user an authentication handler vouched for counts: a Basic
	// header alone is no identity.
	cptest.MustStatus(t, e.Do("GET", "/v1/clients", "", nil, "Authorization", "Basic YWxpY2U6eA=="), 401)
	if _, err := New(e.Svc, Options{AdminToken: "a", EdgeToken: "b", Admins: []string{""}}); err == nil {
		t.Error("an empty admin user id was accepted")
	}
}

// Owner lists are checked, sorted and deduplicated; PATCH adds and
// removes in one change.
func TestOwnersAPI(t *testing.T) {
	e := newEnv(t)
	r := e.Admin("POST", "/v1/clients", map[string]any{"client_id": "c", "owners": []string{"zed", "amy", "zed"}})
	cptest.MustStatus(t, r, 201)
	if got := fmt.Sprint(r.JSON(t)["owners"]); got != "[amy zed]" {
		t.Fatalf("owners on create: %s", got)
	}
	r = e.Admin("PATCH", "/v1/clients/c/owners", map[string]any{"add": []string{"bob"}, "remove": []string{"zed", "nobody"}})
	cptest.MustStatus(t, r, 200)
	if got := fmt.Sprint(r.JSON(t)["owners"]); got != "[amy bob]" {
		t.Fatalf("owners after patch: %s", got)
	}
	r = e.Admin("GET", "/v1/clients", nil)
	if got := fmt.Sprint(r.JSON(t)["clients"].([]any)[0].(map[string]any)["owners"]); got != "[amy bob]" {
		t.Fatalf("owners in the listing: %s", got)
	}
	rev := e.Revision()
	cptest.MustStatus(t, e.Admin("PUT", "/v1/clients/c/owners", map[string]any{}), 400)
	cptest.MustStatus(t, e.Admin("PUT", "/v1/clients/c/owners", map[string]any{"owners": []string{"bad\x01id"}}), 400)
	cptest.MustStatus(t, e.Admin("PUT", "/v1/clients/nope/owners", map[string]any{"owners": []string{}}), 404)
	cptest.MustStatus(t, e.Admin("PATCH", "/v1/clients/c/owners", map[string]any{"add": []string{"amy"}}), 200)
	if e.Revision() != rev {
		t.Fatal("refused or empty owner changes moved the revision")
	}
	r = e.Admin("PUT", "/v1/clients/c/owners", map[string]any{"owners": []string{}})
	cptest.MustStatus(t, r, 200)
	if got := fmt.Sprint(r.JSON(t)["owners"]); got != "[]" {
		t.Fatalf("owners after PUT []: %s", got)
	}
	r = e.Admin("GET", "/v1/clients/c/audit", nil)
	cptest.MustStatus(t, r, 200)
	entries := r.JSON(t)["entries"].([]any)
	if len(entries) != 3 || entries[0].(map[string]any)["detail"] != "owners: none" || entries[2].(map[string]any)["action"] != "client.create" {
		t.Fatalf("audit trail: %s", r.Body)
	}
}
