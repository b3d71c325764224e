// Package interoptest runs real OAuth clients written in other languages —
// openid-client (npm) and authlib (Debian's python3-authlib) — doing
// private_key_jwt against a token endpoint, for tests that prove rotagate
// speaks the protocol as those clients do (issue 22).
//
// Each client is skipped when its runtime or library is missing, unless CI
// is set: then a missing client fails the test. openid-client is installed
// from npm into a cache directory (ROTAGATE_INTEROP_DIR, default
// <user cache>/rotagate-interop) the first time; authlib is imported by
// /usr/bin/python3 (apt-get install python3-authlib python3-requests), or
// from ROTAGATE_AUTHLIB_PYTHONPATH when set (packages unpacked with
// dpkg-deb -x, no global install).
package interoptest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// OpenIDClientVersion is the openid-client release the tests run.
const OpenIDClientVersion = "6.9.0"

//go:embed openid_client.mjs
var openIDClientScript []byte

//go:embed authlib_client.py
var authlibScript []byte

// Client is what a client library needs to authenticate.
type Client struct {
	TokenURL string
	// Issuer is the authorization server's issuer identifier. openid-client
	// (oauth4webapi) sends it as the assertion's aud, where authlib sends
	// the token endpoint URL. Default: TokenURL, which the edge's default
	// audience accepts.
	Issuer   string
	ClientID string
	// Key is the client's private key: *ecdsa.PrivateKey, *rsa.PrivateKey
	// or ed25519.PrivateKey.
	Key crypto.Signer
	// Alg is the assertion's algorithm (ES256, ES384, RS256, PS256, EdDSA).
	Alg string
	// KeyID is the kid openid-client puts in the header; "" for none.
	// authlib 1.2.0 never sends one.
	KeyID string
	// ExpiresIn is authlib's assertion lifetime in seconds. 0 means 300,
	// the longest rotagate accepts; -1 keeps authlib's default (3600 s,
	// which rotagate refuses).
	ExpiresIn int
}

// Result is what the client saw.
type Result struct {
	// Status is the HTTP status of the token response, 0 when none came.
	Status int `json:"status"`
	// AccessToken is the token received on success.
	AccessToken string `json:"access_token"`
	// Error is the OAuth error code (or the client's failure) otherwise.
	Error string `json:"error"`
}

// OpenIDClient runs openid-client's client_credentials grant with
// PrivateKeyJwt.
func OpenIDClient(t testing.TB, c Client) Result {
	t.Helper()
	dir := nodeModules(t)
	script := filepath.Join(dir, "openid_client.mjs")
	if err := os.WriteFile(script, openIDClientScript, 0o644); err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.JSONWebKey{Key: c.Key, KeyID: c.KeyID, Algorithm: c.Alg}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	issuer := c.Issuer
	if issuer == "" {
		issuer = c.TokenURL
	}
	return runScript(t, "node", []string{script}, dir,
		"ROTAGATE_TOKEN_URL="+c.TokenURL, "ROTAGATE_ISSUER="+issuer, "ROTAGATE_CLIENT_ID="+c.ClientID,
		"ROTAGATE_PRIVATE_JWK="+string(jwk), "ROTAGATE_ALG="+c.Alg, "ROTAGATE_KID="+c.KeyID)
}

// Authlib runs authlib's OAuth2Session.fetch_token with PrivateKeyJWT.
func Authlib(t testing.TB, c Client) Result {
	t.Helper()
	python := authlibPython(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "authlib_client.py")
	if err := os.WriteFile(script, authlibScript, 0o644); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	expires := "300"
	switch {
	case c.ExpiresIn < 0:
		expires = "default"
	case c.ExpiresIn > 0:
		expires = strconv.Itoa(c.ExpiresIn)
	}
	env := []string{
		"ROTAGATE_TOKEN_URL=" + c.TokenURL, "ROTAGATE_CLIENT_ID=" + c.ClientID,
		"ROTAGATE_PRIVATE_PEM=" + string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"ROTAGATE_ALG=" + c.Alg, "ROTAGATE_EXPIRES_IN=" + expires,
	}
	if p := os.Getenv("ROTAGATE_AUTHLIB_PYTHONPATH"); p != "" {
		env = append(env, "PYTHONPATH="+p)
	}
	return runScript(t, python, []string{script}, dir, env...)
}

// skipOrFail skips a test whose client is missing, or fails it under CI.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// nodeModules answers a directory holding node_modules/openid-client,
// installing it with npm when it is not there yet.
func nodeModules(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		skipOrFail(t, "node not found: %v", err)
	}
	dir := os.Getenv("ROTAGATE_INTEROP_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			skipOrFail(t, "no cache directory for npm packages: %v", err)
		}
		dir = filepath.Join(cache, "rotagate-interop")
	}
	dir = filepath.Join(dir, "openid-client-"+OpenIDClientVersion)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openid-client", "package.json")); err == nil {
		return dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		skipOrFail(t, "npm not found: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--prefix", dir, "openid-client@"+OpenIDClientVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		skipOrFail(t, "npm install openid-client@%s: %v\n%s", OpenIDClientVersion, err, out)
	}
	return dir
}

// authlibPython answers a Python that imports authlib and requests.
func authlibPython(t testing.TB) string {
	t.Helper()
	const python = "/usr/bin/python3" // Debian's, where apt installs python3-authlib
	cmd := exec.Command(python, "-c", "import authlib, requests")
	if p := os.Getenv("ROTAGATE_AUTHLIB_PYTHONPATH"); p != "" {
		cmd.Env = append(os.Environ(), "PYTHONPATH="+p)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		skipOrFail(t, "authlib not importable by %s (apt-get install python3-authlib python3-requests): %v\n%s", python, err, out)
	}
	return python
}

// runScript runs a client script and decodes the one JSON line it prints.
func runScript(t testing.TB, name string, args []string, dir string, env ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.Bytes())
	}
	var r Result
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r); err != nil {
		t.Fatalf("%s printed %q (stderr %q): %v", name, stdout.Bytes(), stderr.Bytes(), err)
	}
	return r
}
