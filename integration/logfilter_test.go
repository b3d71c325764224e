package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/internal/feedtest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// TestQuerySecretRefusedAndFilteredFromLogs runs the README's log-filter
// recipe: a client_secret in the URL is refused with 400, never reaches
// the upstream, and the access log keeps the request without the secret.
func TestQuerySecretRefusedAndFilteredFromLogs(t *testing.T) {
	feed := feedtest.New(t, wire.Snapshot{Epoch: "e1", Revision: 1, Clients: []wire.Client{
		{ClientID: "billing", Secrets: []wire.Secret{{ID: "sec_one", Hash: secrethash.NewSHA256(edgeSecret1)}}},
	}})
	up := newTokenUpstream(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	edge := startSite(t, `
	log {
		output file `+accessLog+`
		format filter {
			request>uri query {
				delete client_secret
			}
		}
	}
	client_credentials {
		control_plane `+feed.URL+` {
			token `+feedtest.Token+`
		}
	}
	reverse_proxy `+upstreamAddr(up.URL)+`
`)
	resp, err := http.Post(edge+"/token?client_id=billing&client_secret="+edgeSecret1+"&marker=query-secret-test", "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	up.mu.Lock()
	if len(up.seen) != 0 {
		t.Fatalf("the upstream was reached: %q", up.seen)
	}
	up.mu.Unlock()
	var logged string
	cptest.WaitFor(t, 5*time.Second, "the access log line", func() bool {
		b, _ := os.ReadFile(accessLog)
		logged = string(b)
		return strings.Contains(logged, "query-secret-test")
	})
	if strings.Contains(logged, edgeSecret1) {
		t.Fatal("the access log holds the secret")
	}
}
