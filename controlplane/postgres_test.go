package controlplane

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
)

// The Caddy module opens a PostgreSQL store from `store postgres <dsn>`,
// the DSN given through an environment placeholder.
func TestProvisionPostgres(t *testing.T) {
	setTokens(t)
	dsn, schema := storetest.Schema(t)
	_, admin := storetest.Postgres(t)
	if _, err := admin.Exec(context.Background(), `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_CP_DSN", storetest.WithParam(t, dsn, "search_path", schema))
	config := `{"store":{"postgres":{"dsn":"{env.TEST_CP_DSN}"}},"admin_token":"{env.TEST_CP_ADMIN}","edge_token":"{env.TEST_CP_EDGE}"}`
	h1, err := provision(t, config)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := provision(t, config)
	if err != nil {
		t.Fatal(err)
	}
	if h1.api.Service().Store() != h2.api.Service().Store() || !strings.HasPrefix(h1.poolKey, "postgres:") || strings.Contains(h1.poolKey, "postgres://") {
		t.Fatalf("two handlers on one DSN: shared %v, pool key %q", h1.api.Service().Store() == h2.api.Service().Store(), h1.poolKey)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/clients", strings.NewReader(`{"client_id":"c"}`))
	req.Header.Set("Authorization", "Bearer "+cptest.AdminToken)
	if err := h1.ServeHTTP(rec, req, nil); err != nil || rec.Code != 201 {
		t.Fatalf("create client: %d (%v)", rec.Code, err)
	}
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM `+schema+`.clients`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d clients in the schema (%v)", n, err)
	}
	store := h1.api.Service().Store()
	h1.Cleanup()
	h2.Cleanup()
	if err := store.Ping(context.Background()); err == nil {
		t.Fatal("store left open after the last handler went")
	}
}
