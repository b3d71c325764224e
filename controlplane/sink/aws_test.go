package sink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/rotagate/rotagate/controlplane/sink/sinktest"
)

var uuidV8 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// The token is what makes a retried put idempotent on AWS; moto does not
// enforce it (it accepts a known token with another value), so its
// derivation is checked here.
func TestClientRequestToken(t *testing.T) {
	tok := ClientRequestToken("sec_0123456789abcdefghij", 1)
	// Pinned: a new derivation would turn a retry across an upgrade into a
	// second version.
	if want := "668c1622-cd6b-8ce2-8004-0be7ba715bc1"; tok != want {
		t.Fatalf("token %s, pinned %s", tok, want)
	}
	if len(tok) < 32 || len(tok) > 64 || !uuidV8.MatchString(tok) {
		t.Fatalf("token %q is not a UUID of 32 to 64 characters", tok)
	}
	if again := ClientRequestToken("sec_0123456789abcdefghij", 1); again != tok {
		t.Fatalf("the same attempt gave %s then %s", tok, again)
	}
	seen := map[string]string{tok: "sec_0123456789abcdefghij/1"}
	for _, in := range []struct {
		id      string
		attempt int
	}{
		{"sec_0123456789abcdefghij", 2},
		{"sec_0123456789abcdefghik", 1},
		{"sec_0123456789abcdefghij1", 1}, // no ambiguity between id and attempt
		{"sec_0123456789abcdefghij", 11},
	} {
		tok := ClientRequestToken(in.id, in.attempt)
		if prev, dup := seen[tok]; dup {
			t.Fatalf("%s/%d and %s share token %s", in.id, in.attempt, prev, tok)
		}
		seen[tok] = in.id
	}
}

func TestQuotes(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"InvalidRequestException: " + testSecret, true},
		{`{"message":"` + testSecret[10:18] + `"}`, true},
		{"value " + testSecret[len(testSecret)-8:], true},
		{"value " + testSecret[10:17], false}, // 7 characters
		{"ResourceNotFoundException: Secrets Manager can't find the specified secret.", false},
	} {
		if got := quotes(tc.text, testSecret); got != tc.want {
			t.Errorf("quotes(%q) = %v", tc.text, got)
		}
	}
	if quotes("anything", "") {
		t.Error("quotes with no secret")
	}
}

// awsEnv gives the SDK's default chain static test credentials and no
// shared configuration of the machine's user.
// readStage returns the value at stage (named: moto answers stale values
// without it) and its version id.
func readStage(t *testing.T, c *secretsmanager.Client, secret, stage string) (Value, string) {
	t.Helper()
	out, err := c.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(secret), VersionStage: aws.String(stage),
	})
	if err != nil {
		t.Fatalf("reading %s: %v", stage, err)
	}
	var v Value
	if err := json.Unmarshal([]byte(aws.ToString(out.SecretString)), &v); err != nil {
		t.Fatalf("%s holds %q: %v", stage, aws.ToString(out.SecretString), err)
	}
	return v, aws.ToString(out.VersionId)
}

func stagesOf(t *testing.T, c *secretsmanager.Client, secret string) map[string][]string {
	t.Helper()
	d, err := c.DescribeSecret(context.Background(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(secret)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range d.VersionIdsToStages {
		slices.Sort(s)
	}
	return d.VersionIdsToStages
}

// The rotation walk on a real Secrets Manager API (moto): pending, then
// current with the old value previous, twice.
func TestAWSRotation(t *testing.T) {
	endpoint := sinktest.StartMoto(t)
	sinktest.AWSEnv(t)
	ctx := context.Background()
	tc := sinktest.AWSClient(t, endpoint)
	old, _ := json.Marshal(Value{ClientID: "billing", ClientSecret: "rgs_old", SecretID: "sec_old"})
	if _, err := tc.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("rotagate/billing"), SecretString: aws.String(string(old)),
	}); err != nil {
		t.Fatal(err)
	}
	s, err := NewAWS(ctx, Config{Kind: KindAWSSecretsManager, SecretID: "rotagate/billing", Region: "us-east-1", Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	_, oldVersion := readStage(t, tc, "rotagate/billing", AWSCurrent)

	first := Value{ClientID: "billing", ClientSecret: testSecret, SecretID: "sec_first"}
	v1, err := s.PutPending(ctx, first, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v1 != ClientRequestToken("sec_first", 1) {
		t.Fatalf("version %s is not the attempt's token", v1)
	}
	if got, id := readStage(t, tc, "rotagate/billing", AWSPending); got != first || id != v1 {
		t.Fatalf("AWSPENDING holds %+v (%s)", got, id)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSCurrent); got.SecretID != "sec_old" {
		t.Fatalf("AWSCURRENT moved before Promote: %+v", got)
	}
	// A retry of the same attempt adds no version.
	if again, err := s.PutPending(ctx, first, 1); err != nil || again != v1 {
		t.Fatalf("retry: %s, %v", again, err)
	}
	if n := len(stagesOf(t, tc, "rotagate/billing")); n != 2 {
		t.Fatalf("%d versions after a retried put, want 2", n)
	}

	if err := s.Promote(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSCurrent); got != first {
		t.Fatalf("AWSCURRENT holds %+v", got)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSPrevious); got.SecretID != "sec_old" {
		t.Fatalf("AWSPREVIOUS holds %+v", got)
	}
	stages := stagesOf(t, tc, "rotagate/billing")
	if !slices.Equal(stages[v1], []string{AWSCurrent}) || !slices.Equal(stages[oldVersion], []string{AWSPrevious}) {
		t.Fatalf("stages after promote: %v", stages)
	}
	// Promote again: nothing left to do.
	if err := s.Promote(ctx, v1); err != nil {
		t.Fatalf("promoting twice: %v", err)
	}

	second := Value{ClientID: "billing", ClientSecret: "rgs_second", SecretID: "sec_second"}
	v2, err := s.PutPending(ctx, second, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSCurrent); got != second {
		t.Fatalf("AWSCURRENT holds %+v after the second rotation", got)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSPrevious); got != first {
		t.Fatalf("AWSPREVIOUS holds %+v after the second rotation", got)
	}
	stages = stagesOf(t, tc, "rotagate/billing")
	if len(stages[oldVersion]) != 0 || !slices.Equal(stages[v2], []string{AWSCurrent}) {
		t.Fatalf("stages after the second rotation: %v", stages)
	}

	// A pending version replaced by a newer one is not promoted.
	v3, err := s.PutPending(ctx, Value{ClientID: "billing", ClientSecret: "rgs_third", SecretID: "sec_third"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	v4, err := s.PutPending(ctx, Value{ClientID: "billing", ClientSecret: "rgs_fourth", SecretID: "sec_fourth"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx, v3); err == nil {
		t.Fatal("promoted a pending version that a newer put replaced")
	}
	if _, id := readStage(t, tc, "rotagate/billing", AWSPending); id != v4 {
		t.Fatalf("AWSPENDING is on %s, want the newer %s", id, v4)
	}
	if got, _ := readStage(t, tc, "rotagate/billing", AWSCurrent); got != second {
		t.Fatalf("a refused promote moved AWSCURRENT: %+v", got)
	}
}

// noPlaintext fails when err quotes any part of the secret.
func noPlaintext(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if quotes(err.Error(), testSecret) {
		t.Fatalf("the error quotes the secret: %v", err)
	}
}

// A failed put says what failed, never what was sent.
func TestAWSPutFails(t *testing.T) {
	sinktest.AWSEnv(t)
	ctx := context.Background()
	v := Value{ClientID: "billing", ClientSecret: testSecret, SecretID: "sec_x"}
	put := func(t *testing.T, endpoint string) error {
		t.Helper()
		s, err := NewAWS(ctx, Config{Kind: KindAWSSecretsManager, SecretID: "rotagate/billing", Region: "us-east-1", Endpoint: endpoint})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err = s.PutPending(ctx, v, 1)
		return err
	}

	t.Run("endpoint down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		err = put(t, "http://"+addr)
		noPlaintext(t, err)
		var e *Error
		if !errors.As(err, &e) || e.Op != "PutSecretValue" || e.Code != "" {
			t.Fatalf("error %#v", err)
		}
	})

	// An endpoint that echoes the request in its error (a proxy, a
	// buggy emulator): the SDK's text would quote the value.
	t.Run("endpoint echoes the request", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.Header().Set("X-Amzn-ErrorType", "InvalidRequestException")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"__type": "InvalidRequestException", "message": "bad request: " + string(body)})
		}))
		defer srv.Close()
		err := put(t, srv.URL)
		noPlaintext(t, err)
		var e *Error
		if !errors.As(err, &e) || e.Code != "InvalidRequestException" || !strings.Contains(err.Error(), "withheld") {
			t.Fatalf("error %v (code %q)", err, e.Code)
		}
	})

	t.Run("secret does not exist", func(t *testing.T) {
		endpoint := sinktest.StartMoto(t)
		err := put(t, endpoint)
		noPlaintext(t, err)
		var e *Error
		if !errors.As(err, &e) || e.Code != "ResourceNotFoundException" {
			t.Fatalf("error %v, want ResourceNotFoundException", err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		s, err := NewAWS(ctx, Config{Kind: KindAWSSecretsManager, SecretID: "b", Region: "us-east-1", Endpoint: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err = s.PutPending(cctx, v, 1)
		noPlaintext(t, err)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v does not unwrap to context.Canceled", err)
		}
	})
}
