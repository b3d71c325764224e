package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/crypto/bcrypt"

	"github.com/rotagate/rotagate/controlplane/cptest"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

func testGenerateUpToMax(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	a := e.MustGenerate("c")
	b := e.MustGenerate("c")
	if a.Secret.ID == b.Secret.ID || a.Plaintext == b.Plaintext {
		t.Fatal("two secrets are equal")
	}
	if !rules.CheckSecret(a.Plaintext, rules.DefaultSecretPrefix) || a.Secret.Hash != secrethash.NewSHA256(a.Plaintext) {
		t.Fatal("generated secret is malformed or its stored hash is not sha256 of it")
	}
	rev := e.Revision()
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{}); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatalf("third secret: %v, want ErrTooManyActive", err)
	}
	if e.Revision() != rev || e.ActiveCount("c") != 2 {
		t.Fatal("a refused generate changed the store")
	}
	// Revoking one frees a slot; an expired one does not count either.
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", a.Secret.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ExpiresIn: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(time.Hour)
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{}); err != nil {
		t.Fatalf("generate with an expired secret around: %v", err)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "nobody", rules.GenerateOptions{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("generate for an unknown client: %v", err)
	}
}

func testMaxActiveSecretsConfigurable(t *testing.T, k storeKit) {
	e := k.newClientEnv(t, func(so *rules.ServiceOptions, _ *Options) { so.MaxActiveSecrets = 3; so.SecretPrefix = "acme_" })
	for range 3 {
		if ns := e.MustGenerate("c"); !rules.CheckSecret(ns.Plaintext, "acme_") {
			t.Fatal("secret does not use the configured prefix")
		}
	}
	if _, err := e.Svc.GenerateSecret(context.Background(), cptest.Who, "c", rules.GenerateOptions{}); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatalf("fourth secret: %v", err)
	}
	st := k.openStore(t)
	for _, bad := range []rules.ServiceOptions{{MaxActiveSecrets: -1}, {SecretPrefix: "Bad-"}} {
		if _, err := rules.NewService(context.Background(), st, bad); err == nil {
			t.Errorf("NewService accepted %+v", bad)
		}
	}
}

func testStatusesOverTime(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	plain := e.MustGenerate("c")
	timed, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ExpiresIn: 90 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.Clock.Now().Add(90 * time.Minute); timed.Secret.ExpiresAt == nil || !timed.Secret.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at %v, want %v", timed.Secret.ExpiresAt, want)
	}
	status := func() map[string]store.Status {
		secrets, err := e.Svc.ListSecrets(ctx, cptest.Who, "c")
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[string]store.Status)
		for i := range secrets {
			m[secrets[i].ID] = secrets[i].Status(e.Svc.Now())
		}
		return m
	}
	if s := status(); s[plain.Secret.ID] != store.StatusActive || s[timed.Secret.ID] != store.StatusExpiring {
		t.Fatalf("statuses %v", s)
	}
	e.Clock.Add(90 * time.Minute) // expires_at is exclusive: at it, the secret is expired
	if s := status(); s[timed.Secret.ID] != store.StatusExpired {
		t.Fatalf("statuses %v", s)
	}
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", plain.Secret.ID); err != nil {
		t.Fatal(err)
	}
	if s := status(); s[plain.Secret.ID] != store.StatusRevoked || len(s) != 2 {
		t.Fatalf("revoked secret is not listed as revoked: %v", s)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ExpiresIn: -time.Second}); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("negative expires_in: %v", err)
	}
}

func testRotateWithGrace(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	old := e.MustGenerate("c")
	start := e.Clock.Now()

	first, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if first.Plaintext == "" || len(first.Expiring) != 1 || first.Expiring[0] != old.Secret.ID || len(first.Revoked) != 0 {
		t.Fatalf("rotate: expiring %v revoked %v", first.Expiring, first.Revoked)
	}
	secrets, _ := e.Svc.ListSecrets(ctx, cptest.Who, "c")
	byID := map[string]store.Secret{}
	for _, s := range secrets {
		byID[s.ID] = s
	}
	if exp := byID[old.Secret.ID].ExpiresAt; exp == nil || !exp.Equal(start.Add(24*time.Hour)) {
		t.Fatalf("old secret expires at %v, want now+24h", exp)
	}
	if byID[first.Secret.ID].ExpiresAt != nil {
		t.Fatal("the new secret got an expiry")
	}

	// At the max, a rotation with grace would need a third active secret.
	rev := e.Revision()
	if _, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatalf("rotate with grace at the max: %v", err)
	}
	if e.Revision() != rev {
		t.Fatal("a refused rotation moved the revision")
	}

	// Once the old one has expired there is room again. A later, longer
	// grace never extends an earlier expiry: expires_at = min(current, now+G).
	e.Clock.Add(25 * time.Hour)
	second, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Expiring) != 1 || second.Expiring[0] != first.Secret.ID {
		t.Fatalf("second rotation expiring %v", second.Expiring)
	}
	e2 := k.newEnv(t)
	e2.MustClient("c")
	a := e2.MustGenerate("c")
	if _, err := e2.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour); err != nil {
		t.Fatal(err)
	}
	// a now expires in 1h. With a larger max (a second service on the same
	// store), rotate again with a longer grace: a keeps its earlier expiry.
	svc3, err := rules.NewService(ctx, e2.Store, rules.ServiceOptions{MaxActiveSecrets: 3, Now: e2.Clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc3.RotateSecret(ctx, cptest.Who, "c", 10*time.Hour); err != nil {
		t.Fatal(err)
	}
	secrets, _ = e2.Svc.ListSecrets(ctx, cptest.Who, "c")
	for _, s := range secrets {
		if s.ID == a.Secret.ID && (s.ExpiresAt == nil || !s.ExpiresAt.Equal(e2.Clock.Now().Add(time.Hour))) {
			t.Fatalf("a longer grace extended an expiry to %v", s.ExpiresAt)
		}
	}
}

func testRotateWithoutGraceRevokesOthers(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	e.MustGenerate("c")
	e.MustGenerate("c")
	ns, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", 0) // at the max, and allowed
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Revoked) != 2 || len(ns.Expiring) != 0 {
		t.Fatalf("revoked %v expiring %v", ns.Revoked, ns.Expiring)
	}
	secrets, _ := e.Svc.ListSecrets(ctx, cptest.Who, "c")
	for _, s := range secrets {
		want := store.StatusRevoked
		if s.ID == ns.Secret.ID {
			want = store.StatusActive
		}
		if got := s.Status(e.Clock.Now()); got != want {
			t.Errorf("%s: status %s, want %s", s.ID, got, want)
		}
	}
	if e.ActiveCount("c") != 1 {
		t.Fatal("more than the new secret is active")
	}
	if _, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", -time.Second); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("negative grace: %v", err)
	}
	if _, err := e.Svc.RotateSecret(ctx, cptest.Who, "nobody", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotate for an unknown client: %v", err)
	}
}

// faultStore fails the n-th write step inside an Update, to prove that a
// rotation is all or nothing.
type faultStore struct {
	store.NotifyingStore // so that the Service shares the store's notifier
	failAt               int
}

var errInjected = errors.New("injected failure")

func (f *faultStore) Update(ctx context.Context, fn func(store.Tx) error) (int64, error) {
	return f.NotifyingStore.Update(ctx, func(tx store.Tx) error { return fn(&faultTx{Tx: tx, left: f.failAt}) })
}

type faultTx struct {
	store.Tx
	left int
}

func (t *faultTx) step() error {
	if t.left--; t.left == 0 {
		return errInjected
	}
	return nil
}

func (t *faultTx) InsertSecret(ctx context.Context, s store.Secret) error {
	if err := t.step(); err != nil {
		return err
	}
	return t.Tx.InsertSecret(ctx, s)
}

func (t *faultTx) SetExpiry(ctx context.Context, id string, at time.Time) error {
	if err := t.step(); err != nil {
		return err
	}
	return t.Tx.SetExpiry(ctx, id, at)
}

func (t *faultTx) Revoke(ctx context.Context, id string, at time.Time) error {
	if err := t.step(); err != nil {
		return err
	}
	return t.Tx.Revoke(ctx, id, at)
}

func testRotateIsAtomic(t *testing.T, k storeKit) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		failAt int
	}{
		{"grace: fail at the first expiry, after the insert", time.Hour, 2},
		{"no grace: fail at the second revoke", 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := k.openStore(t)
			e := newEnvOn(t, st, "", func(so *rules.ServiceOptions, _ *Options) { so.MaxActiveSecrets = 3 })
			e.MustClient("c")
			e.MustGenerate("c")
			e.MustGenerate("c")
			before, _ := st.Secrets(ctx, "c")
			rev := e.Revision()
			_, _, changed := e.Svc.Notifier().Current()

			faulty, err := rules.NewService(ctx, &faultStore{NotifyingStore: st.(store.NotifyingStore), failAt: tc.failAt},
				rules.ServiceOptions{MaxActiveSecrets: 3, Now: e.Clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := faulty.RotateSecret(ctx, cptest.Who, "c", tc.grace); !errors.Is(err, errInjected) {
				t.Fatalf("rotate: %v, want the injected failure", err)
			}
			after, _ := st.Secrets(ctx, "c")
			if len(after) != len(before) {
				t.Fatalf("%d secrets after a failed rotation, want %d", len(after), len(before))
			}
			for i := range after {
				if after[i].ExpiresAt != nil || after[i].RevokedAt != nil {
					t.Fatalf("secret %s changed by a failed rotation", after[i].ID)
				}
			}
			if e.Revision() != rev {
				t.Fatal("a failed rotation moved the revision")
			}
			select {
			case <-changed:
				t.Fatal("a failed rotation was published")
			default:
			}
		})
	}
}

func testRevoke(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	e.MustClient("d")
	a := e.MustGenerate("c")
	rev := e.Revision()
	sec, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", a.Secret.ID)
	if err != nil {
		t.Fatal(err) // revoking the last active secret is allowed
	}
	if sec.RevokedAt == nil || !sec.RevokedAt.Equal(e.Clock.Now()) || sec.Status(e.Clock.Now()) != store.StatusRevoked {
		t.Fatalf("revoked secret: revoked_at %v", sec.RevokedAt)
	}
	if e.Revision() != rev+1 {
		t.Fatal("revoke did not move the revision by one")
	}
	e.Clock.Add(time.Minute)
	again, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", a.Secret.ID)
	if err != nil || !again.RevokedAt.Equal(*sec.RevokedAt) || e.Revision() != rev+1 {
		t.Fatalf("revoking twice: %v, revoked_at %v, revision %d", err, again.RevokedAt, e.Revision())
	}
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "d", a.Secret.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke through another client: %v", err)
	}
	missing, _ := rules.NewSecretID()
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", missing); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke an unknown secret: %v", err)
	}
	if _, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", "not-an-id"); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("revoke a malformed id: %v", err)
	}
}

func testDeleteClient(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	a, b := e.MustGenerate("c"), e.MustGenerate("c")
	if err := e.Svc.DeleteClient(ctx, cptest.Who, "c"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Svc.GetClient(ctx, cptest.Who, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted client: %v", err)
	}
	if err := e.Svc.DeleteClient(ctx, cptest.Who, "c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	snap, err := e.Svc.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Clients) != 0 {
		t.Fatal("a deleted client's secrets are still in the snapshot")
	}
	found := false
	for _, entry := range e.Audit.All() {
		m := entry.ContextMap()
		if m["action"] != "client.delete" || m["outcome"] != "ok" {
			continue
		}
		found = true
		got, _ := m["revoked"].([]any)
		if len(got) != 2 || !(got[0] == a.Secret.ID && got[1] == b.Secret.ID || got[0] == b.Secret.ID && got[1] == a.Secret.ID) {
			t.Fatalf("the audit of the delete names revoked secrets %v", got)
		}
	}
	if !found {
		t.Fatal("the delete is not in the audit log")
	}
	// The id is free again.
	e.MustClient("c")
}

func testImportHash(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	bc, err := bcrypt.GenerateFromPassword([]byte("legacy-one"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: string(bc)})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Plaintext != "" || ns.Secret.Hash != string(bc) || ns.Secret.Hint != "(imported bcrypt)" {
		t.Fatalf("bcrypt import: hint %q", ns.Secret.Hint)
	}
	argon, err := secrethash.NewArgon2id("legacy-two")
	if err != nil {
		t.Fatal(err)
	}
	if ns, err = e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: argon}); err != nil || ns.Secret.Hash != argon {
		t.Fatalf("argon2id import: %v", err)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: argon}); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatalf("imports count towards the max: %v", err)
	}
	// PBKDF2 in both spellings (secret "password" and "tofu"; vectors of
	// internal/secrethash), stored in canonical form: Kong's padding goes.
	for _, v := range []struct{ given, stored string }{
		{"$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
			"$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M"},
		{"$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZisvP34=$FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ=",
			"$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZisvP34$FqbWTVlkN4/OqF5l2c4kGDMCYTfPj6R3U5zTGQw4oeQ"},
	} {
		ep := k.newEnv(t)
		ep.MustClient("p")
		ns, err := ep.Svc.GenerateSecret(ctx, cptest.Who, "p", rules.GenerateOptions{ImportHash: v.given})
		if err != nil || ns.Secret.Hash != v.stored || ns.Secret.Hint != "(imported pbkdf2)" {
			t.Fatalf("pbkdf2 import: %v, stored %q, hint %q", err, ns.Secret.Hash, ns.Secret.Hint)
		}
		snap, err := ep.Svc.Snapshot(ctx)
		if err != nil || len(snap.Clients) != 1 || snap.Clients[0].Secrets[0].Hash != v.stored {
			t.Fatalf("pbkdf2 import in the snapshot: %v %+v", err, snap.Clients)
		}
	}
	e2 := k.newEnv(t)
	e2.MustClient("c")
	for name, h := range map[string]string{
		"sha256 (fast hash)":            secrethash.NewSHA256("x"),
		"garbage":                       "hunter2",
		"broken bcrypt":                 "$2b$10$tooshort",
		"broken argon2id":               "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
		"pbkdf2 over the iteration cap": "$pbkdf2-sha256$1200001$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
		"pbkdf2 key of two blocks":      "$pbkdf2-sha256$6400$0ZrzXitFSGltTQnBWOsdAw$" + strings.Repeat("A", 86),
		"pbkdf2 with sha1":              "$pbkdf2$6400$0ZrzXitFSGltTQnBWOsdAw$Y11AchqV4b0sUisdZd0Xr97KWoymNE0LNNrnEgY4H9M",
	} {
		if _, err := e2.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: h}); !errors.Is(err, rules.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := e2.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: string(bc), ImportSecret: "x"}); !errors.Is(err, rules.ErrInvalid) {
		t.Errorf("hash and secret together: %v", err)
	}
	if e2.ActiveCount("c") != 0 {
		t.Fatal("a refused import was stored")
	}
}

func testImportPlaintext(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	const legacy = "legacy-plaintext-secret-42"
	ns, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportSecret: legacy})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Plaintext != "" {
		t.Fatal("the imported plaintext is echoed back")
	}
	h, err := secrethash.Parse(ns.Secret.Hash)
	if err != nil || h.Scheme != secrethash.Argon2id {
		t.Fatalf("stored hash scheme %v (%v), want argon2id", h.Scheme, err)
	}
	if !h.Verify([]byte(legacy)) || h.Verify([]byte("wrong")) {
		t.Fatal("stored hash does not verify the imported secret")
	}
	if ns.Secret.Hint != "…t-42" {
		t.Fatalf("hint %q", ns.Secret.Hint)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportSecret: strings.Repeat("x", rules.MaxImportSecretLen+1)}); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("oversized import: %v", err)
	}
	if len(ns.Warnings) != 0 {
		t.Fatalf("warnings for a plain secret: %q", ns.Warnings)
	}
}

// Plaintext imports that some clients send differently in HTTP Basic auth
// get warnings, in the answer and in the audit log at warn level, that
// never hold the secret.
func TestImportWarnings(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		secret string
		want   int
	}{
		{"legacy_secret-42.~", 0},
		{"with spaces is printable", 0},
		{"legacy+secret", 1},
		{"legacy%2Bsecret", 1},
		{"caf\u00e9-secret", 1},
		{"tab\tsecret", 1},
		{"caf\u00e9+secret", 2},
	} {
		e := newEnv(t)
		e.MustClient("c")
		ns, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportSecret: c.secret})
		if err != nil {
			t.Fatal(err)
		}
		if len(ns.Warnings) != c.want {
			t.Errorf("%d warnings, want %d: %q", len(ns.Warnings), c.want, ns.Warnings)
		}
		entries := e.Audit.FilterField(zap.String("action", "secret.import")).All()
		if len(entries) != 1 {
			t.Fatalf("%d audit entries for the import", len(entries))
		}
		logged, ok := entries[0].ContextMap()["warnings"]
		switch {
		case c.want == 0 && (ok || entries[0].Level != zapcore.InfoLevel):
			t.Errorf("audit entry at %v with warnings %v", entries[0].Level, logged)
		case c.want > 0 && (entries[0].Level != zapcore.WarnLevel || fmt.Sprint(logged) != fmt.Sprint(ns.Warnings)):
			t.Errorf("audit entry at %v with warnings %v, want warn with %q", entries[0].Level, logged, ns.Warnings)
		}
		for _, w := range ns.Warnings {
			if strings.Contains(w, c.secret) || strings.Contains(w, "caf") || strings.Contains(w, "legacy") {
				t.Fatal("a warning quotes the secret")
			}
		}
	}
}

// generateTally counts the outcomes of generates racing for the slots
// of one client.
type generateTally struct {
	mu          sync.Mutex
	ok, refused int
}

// add counts one generate's outcome; an error other than
// ErrTooManyActive fails the test.
func (g *generateTally) add(t *testing.T, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil:
		g.ok++
	case errors.Is(err, rules.ErrTooManyActive):
		g.refused++
	default:
		t.Errorf("generate: %v", err)
	}
}

// check fails the test unless 50 generates filled the 2 slots of client c
// and were refused the rest.
func (g *generateTally) check(t *testing.T, e *env) {
	t.Helper()
	if g.ok != 2 || g.refused != 48 || e.ActiveCount("c") != 2 {
		t.Fatalf("%d generated, %d refused, %d active; want 2, 48, 2", g.ok, g.refused, e.ActiveCount("c"))
	}
}

func testConcurrentGenerateNeverExceedsMax(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	var wg sync.WaitGroup
	var tally generateTally
	for range 50 {
		wg.Go(func() {
			_, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{})
			tally.add(t, err)
		})
	}
	wg.Wait()
	tally.check(t, e)
}

// Two stores on one database (two processes, or two replicas of a fleet)
// have separate in-process locks: only the database's own locking (BEGIN
// IMMEDIATE on SQLite, the client row lock on PostgreSQL) keeps them from
// both seeing room for one more secret.
func testConcurrentGenerateAcrossInstances(t *testing.T, k storeKit) {
	ctx := context.Background()
	st1, st2 := k.openTwo(t)
	e1 := newEnvOn(t, st1, "")
	e2 := newEnvOn(t, st2, "")
	e1.MustClient("c")
	e1.MustClient("d")
	var wg sync.WaitGroup
	var tally generateTally
	for i := range 50 {
		svc := e1.Svc
		if i%2 == 1 {
			svc = e2.Svc
		}
		wg.Go(func() {
			_, err := svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{})
			tally.add(t, err)
		})
		// Rotations and generates mixed, on another client.
		wg.Go(func() {
			var err error
			if i%3 == 0 {
				_, err = svc.RotateSecret(ctx, cptest.Who, "d", time.Hour)
			} else {
				_, err = svc.GenerateSecret(ctx, cptest.Who, "d", rules.GenerateOptions{})
			}
			if err != nil && !errors.Is(err, rules.ErrTooManyActive) {
				t.Errorf("write: %v", err)
			}
		})
	}
	wg.Wait()
	tally.check(t, e2)
	if n := e1.ActiveCount("d"); n != 2 {
		t.Fatalf("%d active secrets, want 2", n)
	}
}

func testConcurrentRotateNeverExceedsMax(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	e.MustGenerate("c")
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			var err error
			switch i % 3 {
			case 0:
				_, err = e.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour)
			case 1:
				_, err = e.Svc.RotateSecret(ctx, cptest.Who, "c", 0)
			default:
				_, err = e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{})
			}
			if err != nil && !errors.Is(err, rules.ErrTooManyActive) {
				t.Errorf("write: %v", err)
			}
			if n := e.ActiveCount("c"); n > 2 {
				t.Errorf("%d active secrets seen", n)
			}
		})
	}
	wg.Wait()
	if n := e.ActiveCount("c"); n < 1 || n > 2 {
		t.Fatalf("%d active secrets at the end", n)
	}
}

func testEveryChangeIsPublished(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newEnv(t)
	steps := []struct {
		name string
		do   func() error
	}{
		{"create client", func() error { _, err := e.Svc.CreateClient(ctx, cptest.Who, "c", "n", nil); return err }},
		{"generate", func() error {
			_, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{})
			return err
		}},
		{"rotate", func() error { _, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", 0); return err }},
		{"import", func() error {
			h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
			_, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{ImportHash: string(h)})
			return err
		}},
		{"revoke", func() error {
			secrets, _ := e.Svc.ListSecrets(ctx, cptest.Who, "c")
			for _, s := range secrets {
				if s.Active(e.Clock.Now()) {
					_, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", s.ID)
					return err
				}
			}
			return errors.New("no active secret to revoke")
		}},
		{"delete client", func() error { return e.Svc.DeleteClient(ctx, cptest.Who, "c") }},
	}
	for _, s := range steps {
		epoch, rev, changed := e.Svc.Notifier().Current()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		select {
		case <-changed:
		default:
			t.Fatalf("%s was not published", s.name)
		}
		if e2, r2, _ := e.Svc.Notifier().Current(); e2 != epoch || r2 != rev+1 || e.Revision() != rev+1 {
			t.Fatalf("%s: published %d, stored %d, want %d", s.name, r2, e.Revision(), rev+1)
		}
	}
	// Usage does not move the revision.
	rev := e.Revision()
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Stamps: []wire.Stamp{{ClientID: "x", SecretID: "sec_x", LastUsedAt: e.Clock.Now()}}}); err != nil {
		t.Fatal(err)
	}
	if e.Revision() != rev {
		t.Fatal("usage moved the revision")
	}
}

func testApplyUsageMergesAndClamps(t *testing.T, k storeKit) {
	ctx := context.Background()
	e := k.newClientEnv(t)
	a := e.MustGenerate("c")
	now := e.Clock.Now()
	n, err := e.Svc.ApplyUsage(ctx, wire.Usage{Edge: "e1", Stamps: []wire.Stamp{
		{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: now.Add(-time.Hour), From: "192.0.2.1"},
		{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: now.Add(-time.Minute), From: "::ffff:192.0.2.2"},
		{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: now.Add(-2 * time.Hour), From: "192.0.2.3"},
		{ClientID: "c", SecretID: "", LastUsedAt: now},
		{ClientID: "c", SecretID: a.Secret.ID},
	}})
	if err != nil || n != 1 {
		t.Fatalf("ApplyUsage: %d updated (%v), want 1", n, err)
	}
	secrets, _ := e.Svc.ListSecrets(ctx, cptest.Who, "c")
	if s := secrets[0]; !s.LastUsedAt.Equal(now.Add(-time.Minute)) || s.LastUsedFrom != "192.0.2.2" {
		t.Fatalf("last used %v from %q", s.LastUsedAt, s.LastUsedFrom)
	}
	// A stamp from the future is recorded as now; a bad from is dropped.
	if _, err := e.Svc.ApplyUsage(ctx, wire.Usage{Stamps: []wire.Stamp{
		{ClientID: "c", SecretID: a.Secret.ID, LastUsedAt: now.Add(24 * time.Hour), From: "not an ip"},
	}}); err != nil {
		t.Fatal(err)
	}
	secrets, _ = e.Svc.ListSecrets(ctx, cptest.Who, "c")
	if s := secrets[0]; !s.LastUsedAt.Equal(now) || s.LastUsedFrom != "" {
		t.Fatalf("future stamp: last used %v from %q", s.LastUsedAt, s.LastUsedFrom)
	}
}

func TestAuditLogNamesWhoAndWhatButNoSecret(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.MustClient("c")
	ns := e.MustGenerate("c")
	rot, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "c", rules.GenerateOptions{}); !errors.Is(err, rules.ErrTooManyActive) {
		t.Fatal(err)
	}
	const legacy = "legacy-plaintext-for-audit"
	e.MustClient("d")
	if _, err := e.Svc.GenerateSecret(ctx, cptest.Who, "d", rules.GenerateOptions{ImportSecret: legacy}); err != nil {
		t.Fatal(err)
	}
	entries := e.Audit.All()
	actions := map[string]string{}
	for _, entry := range entries {
		m := entry.ContextMap()
		for _, v := range m {
			s, _ := v.(string)
			for _, secret := range []string{ns.Plaintext, rot.Plaintext, legacy, ns.Secret.Hash, rot.Secret.Hash} {
				if secret != "" && strings.Contains(s, secret) {
					t.Fatal("an audit entry holds a secret or its hash")
				}
			}
		}
		actions[m["action"].(string)+"/"+m["outcome"].(string)] = m["secret_id"].(string)
		if m["who"] == "" || m["client_id"] == "" {
			t.Fatalf("audit entry without who or client: %v", m["action"])
		}
	}
	if actions["secret.generate/ok"] != ns.Secret.ID || actions["secret.rotate/ok"] != rot.Secret.ID {
		t.Fatalf("audit actions %v", actions)
	}
	if _, ok := actions["secret.generate/too_many_active_secrets"]; !ok {
		t.Fatalf("refused generate not audited: %v", actions)
	}
	if _, ok := actions["secret.import/ok"]; !ok {
		t.Fatalf("import not audited: %v", actions)
	}
	if _, ok := actions["client.create/ok"]; !ok {
		t.Fatalf("client creation not audited: %v", actions)
	}
}

// retryingStore runs every Update twice, as PostgresStore does after a
// transient failure: the first attempt runs to its end and is rolled
// back, the second commits.
type retryingStore struct{ store.NotifyingStore }

var errRetry = errors.New("rolled back, to be retried")

func (r retryingStore) Update(ctx context.Context, fn func(store.Tx) error) (int64, error) {
	if _, err := r.NotifyingStore.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRetry
	}); !errors.Is(err, errRetry) {
		return 0, err
	}
	return r.NotifyingStore.Update(ctx, fn)
}

// What a rule reports comes from the attempt that committed only: a
// retried transaction does not report its findings twice.
func TestRetriedUpdatesReportOnce(t *testing.T) {
	ctx := context.Background()
	st, path := storetest.SQLite(t)
	e := newEnvOn(t, retryingStore{st}, path, func(so *rules.ServiceOptions, _ *Options) { so.MaxActiveSecrets = 3 })
	e.MustClient("c")
	a, b := e.MustGenerate("c"), e.MustGenerate("c")
	rot, err := e.Svc.RotateSecret(ctx, cptest.Who, "c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(rot.Expiring) != 2 || rot.Expiring[0] == rot.Expiring[1] || len(rot.Revoked) != 0 {
		t.Fatalf("rotate with grace reported expiring %v, revoked %v", rot.Expiring, rot.Revoked)
	}
	rot, err = e.Svc.RotateSecret(ctx, cptest.Who, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rot.Revoked) != 3 || len(rot.Expiring) != 0 {
		t.Fatalf("rotate without grace reported revoked %v (want 3), expiring %v", rot.Revoked, rot.Expiring)
	}
	sec, err := e.Svc.RevokeSecret(ctx, cptest.Who, "c", a.Secret.ID)
	if err != nil || sec.ID != a.Secret.ID || sec.RevokedAt == nil {
		t.Fatalf("revoke: %+v %v", sec, err)
	}
	if err := e.Svc.DeleteClient(ctx, cptest.Who, "c"); err != nil {
		t.Fatal(err)
	}
	entries := e.Audit.FilterField(zap.String("action", "client.delete")).All()
	if len(entries) != 1 || fmt.Sprint(entries[0].ContextMap()["revoked"]) != "["+rot.Secret.ID+"]" {
		t.Fatalf("delete audited %v, want the one active secret %s (b was %s)", entries[0].ContextMap()["revoked"], rot.Secret.ID, b.Secret.ID)
	}
}
