package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// consoleUsers are the basic_auth users of the owner and console tests:
// alice is an admin, olive owns "owned", mallory owns nothing.
var consoleUsers = map[string]string{"alice": "alice-password", "olive": "olive-password", "mallory": "mallory-password"}

// basicAuthBlock returns a basic_auth block for consoleUsers, hashed at
// bcrypt's lowest cost so the tests stay fast.
func basicAuthBlock(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, u := range []string{"alice", "olive", "mallory"} {
		h, err := bcrypt.GenerateFromPassword([]byte(consoleUsers[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("\t\t" + u + " " + string(h) + "\n")
	}
	return "\tbasic_auth @people {\n" + b.String() + "\t}\n"
}

// peopleRoutes are the README's lines of a control plane's site for
// people: the console and /v1/clients through basic_auth (consoleUsers),
// bearer tokens untouched.
func peopleRoutes(t *testing.T) string {
	return `	@people {
		path /console /console/* /v1/clients /v1/clients/*
		not header Authorization "Bearer *"
	}
` + basicAuthBlock(t)
}

// controlPlaneBehindBasicAuth is the site of the README's layout: a
// control plane on SQLite in db, people through basic_auth, bearer tokens
// untouched.
func controlPlaneBehindBasicAuth(t *testing.T, db string) string {
	return `
` + peopleRoutes(t) + `	client_credentials_control_plane {
		store sqlite ` + db + `
		admin_token ` + adminToken + `
		edge_token ` + edgeToken + `
		admins alice
	}
`
}

// TestOwnersThroughBasicAuth: behind real Caddy and basic_auth, an owner
// sees and rotates only their client through the API, a stranger sees
// nothing, the admin token and the edge feed work as before.
func TestOwnersThroughBasicAuth(t *testing.T) {
	base := startSite(t, controlPlaneBehindBasicAuth(t, t.TempDir()+"/cp.db"))
	api := adminAPI{t: t, base: base}
	api.must(api.call(http.MethodPost, "/v1/clients", map[string]any{"client_id": "owned", "owners": []string{"olive"}}, nil))
	api.createClient("theirs")

	as := func(user, method, path string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, consoleUsers[user])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, m := as("olive", "GET", "/v1/clients"); code != 200 || len(m["clients"].([]any)) != 1 {
		t.Fatalf("the owner's list: %d %v", code, m)
	}
	if code, m := as("olive", "POST", "/v1/clients/owned/secrets"); code != 201 || !strings.HasPrefix(m["secret"].(string), "rgs_") {
		t.Fatalf("the owner's generate: %d", code)
	}
	if code, _ := as("olive", "GET", "/v1/clients/theirs"); code != 404 {
		t.Fatalf("the owner reading another client: %d, want 404", code)
	}
	if code, _ := as("olive", "DELETE", "/v1/clients/owned"); code != 403 {
		t.Fatalf("the owner deleting: %d, want 403", code)
	}
	if code, m := as("mallory", "GET", "/v1/clients"); code != 200 || len(m["clients"].([]any)) != 0 {
		t.Fatalf("a stranger's list: %d %v", code, m)
	}
	if code, _ := as("alice", "DELETE", "/v1/clients/theirs"); code != 204 {
		t.Fatalf("the admin user deleting: %d, want 204", code)
	}
	// basic_auth refuses a wrong password before the control plane.
	req, _ := http.NewRequest("GET", base+"/v1/clients", nil)
	req.SetBasicAuth("olive", "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("wrong password: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The edge feed still takes its bearer token, untouched by basic_auth.
	req, _ = http.NewRequest("GET", base+"/v1/edge/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+edgeToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("edge feed: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}
