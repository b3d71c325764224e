package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// The leak endpoints (SPEC §12): POST /v1/leaks, in the shape of GitLab's
// token revocation API, for people and scanners with a bearer token or a
// console sign-in; and POST /v1/leaks/github, GitHub's secret scanning
// partner program, authenticated by GitHub's ECDSA signature. Neither
// ever logs or echoes a reported token: answers name tokens by their hex
// SHA-256.
const (
	leaksPath       = "/v1/leaks"
	githubLeaksPath = "/v1/leaks/github"

	// MaxLeakBodyBytes bounds a leak report's body; larger ones get 413.
	MaxLeakBodyBytes = 1 << 20
	// MaxLeakTokens bounds the tokens of one report; more get 413.
	MaxLeakTokens = 1000
	// maxLeakTokenLen: a longer token is no secret of ours, and is not
	// hashed either.
	maxLeakTokenLen = 1024

	// leakRate and leakBurst are the token bucket of the leak endpoints,
	// per caller IP: 50 reports at once, then 5 a second.
	leakRate  = 5
	leakBurst = 50
	// maxLimitedIPs bounds the limiter's memory; past it, idle buckets
	// are dropped (that only forgives).
	maxLimitedIPs = 10000
)

// Header names of GitHub's signed reports.
const (
	githubKeyIDHeader     = "Github-Public-Key-Identifier"
	githubSignatureHeader = "Github-Public-Key-Signature"
)

type (
	LeaksRequest struct {
		Tokens []LeakToken `json:"tokens"`
	}
	LeakToken struct {
		Token string `json:"token"`
		URL   string `json:"url,omitempty"`
	}
	leaksAnswer struct {
		Tokens []LeakResult `json:"tokens"`
	}
	LeakResult struct {
		TokenHash string `json:"token_hash"`
		Label     string `json:"label"`
		Action    string `json:"action"`
	}
	// githubReport is one match in GitHub's partner payload; fields
	// GitHub may add later are ignored.
	githubReport struct {
		Token  string `json:"token"`
		Type   string `json:"type"`
		URL    string `json:"url"`
		Source string `json:"source"`
	}
	// githubFeedback is GitHub's partner feedback shape, per token.
	githubFeedback struct {
		TokenHash string `json:"token_hash"`
		TokenType string `json:"token_type"`
		Label     string `json:"label"`
	}
)

// reportLeaks serves POST /v1/leaks: {"tokens":[{"token","url"}]} →
// {"tokens":[{"token_hash","label","action"}]}, in the order sent.
func (a *API) reportLeaks(r *http.Request, who rules.Actor) (any, error) {
	if !a.leaks.allow(remoteIP(r)) {
		return nil, errTooManyLeakReports
	}
	body, err := readBody(r, "request body")
	if err != nil {
		return nil, err
	}
	var req LeaksRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if len(req.Tokens) > MaxLeakTokens {
		return nil, errTooManyLeakTokens
	}
	out := leaksAnswer{Tokens: make([]LeakResult, 0, len(req.Tokens))}
	for _, t := range req.Tokens {
		res, err := a.reportOne(r, who, t.Token, t.URL)
		if err != nil {
			return nil, err
		}
		out.Tokens = append(out.Tokens, LeakResult{TokenHash: res.TokenHash, Label: res.Label, Action: res.Action})
	}
	return out, nil
}

// reportOne checks one token; one too long to be ours is a false positive
// without further work.
func (a *API) reportOne(r *http.Request, who rules.Actor, token, url string) (rules.LeakResult, error) {
	if len(token) > maxLeakTokenLen {
		sum := sha256.Sum256([]byte(token))
		return rules.LeakResult{TokenHash: fmt.Sprintf("%x", sum), Label: rules.LabelFalsePositive, Action: rules.LeakActionNone}, nil
	}
	return a.svc.ReportLeak(r.Context(), who, rules.LeakReport{Token: token, URL: url})
}

// githubLeaks serves POST /v1/leaks/github, GitHub's secret scanning
// partner endpoint: a JSON array of {token, type, url, source}, signed
// with ECDSA P-256 / SHA-256 over the raw body (Github-Public-Key-
// Signature, base64 of an ASN.1 DER signature) by the key that
// Github-Public-Key-Identifier names in the leak_report_keys file. It
// answers [{token_hash, token_type, label}] in the order sent. A missing
// or wrong signature is 401 and nothing is looked at.
func (a *API) githubLeaks(r *http.Request, _ rules.Actor) (any, error) {
	if a.githubKeys == nil {
		return nil, &apiError{status: http.StatusNotFound, code: "not_found", desc: "GitHub leak reports are off: set leak_report_keys"}
	}
	ip := remoteIP(r)
	if !a.leaks.allow(ip) {
		return nil, errTooManyLeakReports
	}
	body, err := readBody(r, "request body")
	if err != nil {
		return nil, err
	}
	if err := a.githubKeys.verify(r.Header.Get(githubKeyIDHeader), r.Header.Get(githubSignatureHeader), body); err != nil {
		if ce := a.log.Check(zap.InfoLevel, "GitHub leak report refused"); ce != nil {
			keyID := r.Header.Get(githubKeyIDHeader)
			if len(keyID) > 128 { // the caller's text: keep the log line small
				keyID = keyID[:128] + "…"
			}
			ce.Write(zap.String("remote_ip", ip), zap.String("key_id", keyID), zap.String("reason", err.Error()))
		}
		return nil, &apiError{status: http.StatusUnauthorized, code: "invalid_signature",
			desc: "the report's signature does not verify with a key of leak_report_keys"}
	}
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '[' {
		return nil, badRequest("the body must be a JSON array")
	}
	var reports []githubReport
	if err := json.Unmarshal(body, &reports); err != nil {
		return nil, badRequest("%s", describeJSONError(err).Error())
	}
	if len(reports) > MaxLeakTokens {
		return nil, errTooManyLeakTokens
	}
	who := rules.Actor{TokenID: "github-secret-scanning", Leak: true, RemoteIP: ip}
	out := make([]githubFeedback, 0, len(reports))
	for _, rep := range reports {
		res, err := a.reportOne(r, who, rep.Token, rep.URL)
		if err != nil {
			return nil, err
		}
		out = append(out, githubFeedback{TokenHash: res.TokenHash, TokenType: rep.Type, Label: res.Label})
	}
	return out, nil
}

// The leak endpoints' own refusals.
var (
	errTooManyLeakReports = &apiError{status: http.StatusTooManyRequests, code: "too_many_requests",
		desc: "too many leak reports from this address; retry later", header: map[string]string{"Retry-After": "1"}}
	errTooManyLeakTokens = &apiError{status: http.StatusRequestEntityTooLarge, code: "request_too_large",
		desc: fmt.Sprintf("at most %d tokens per report", MaxLeakTokens)}
)

// ipLimiter is a token bucket per caller IP, in bounded memory.
type ipLimiter struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	buckets map[string]*rate.Limiter
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{every: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// allow takes a token from ip's bucket.
func (l *ipLimiter) allow(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		if len(l.buckets) >= maxLimitedIPs {
			now := time.Now()
			for k, v := range l.buckets {
				if v.TokensAt(now) >= float64(l.burst) { // full again: nothing to remember
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxLimitedIPs {
				clear(l.buckets)
			}
		}
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[ip] = b
	}
	return b.Allow()
}

// keyList holds the verification keys of GitHub's reports, from a file in
// GitHub's key-list format, read again when its modification time or size
// changes (checked on each report; no network, no file watcher). A file
// that turns unreadable or invalid keeps the keys last read, with an
// error in the log.
type keyList struct {
	path string
	log  *zap.Logger

	mu    sync.Mutex
	mtime time.Time
	size  int64
	keys  map[string]*ecdsa.PublicKey
}

// githubKeyFile is GitHub's published key-list format.
type githubKeyFile struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// loadKeyList reads the key file; it must hold at least one ECDSA P-256
// key.
func loadKeyList(path string, log *zap.Logger) (*keyList, error) {
	k := &keyList{path: path, log: log}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := k.load(fi); err != nil {
		return nil, err
	}
	return k, nil
}

// load reads and parses the file whose stat is fi.
func (k *keyList) load(fi os.FileInfo) error {
	data, err := os.ReadFile(k.path)
	if err != nil {
		return err
	}
	keys, err := parseKeyFile(data)
	if err != nil {
		return fmt.Errorf("%s: %w", k.path, err)
	}
	k.keys, k.mtime, k.size = keys, fi.ModTime(), fi.Size()
	return nil
}

// parseKeyFile reads GitHub's key list. Every key, current or not, is
// kept: GitHub may still sign with a key it is phasing out. A key that is
// not ECDSA P-256 is an error, not skipped, so a wrong file is noticed.
func parseKeyFile(data []byte) (map[string]*ecdsa.PublicKey, error) {
	var f githubKeyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not GitHub's key-list JSON: %v", describeJSONError(err))
	}
	if len(f.PublicKeys) == 0 {
		return nil, errors.New(`no keys in "public_keys"`)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(f.PublicKeys))
	for i, pk := range f.PublicKeys {
		if pk.KeyIdentifier == "" {
			return nil, fmt.Errorf("key %d has no key_identifier", i+1)
		}
		block, _ := pem.Decode([]byte(pk.Key))
		if block == nil {
			return nil, fmt.Errorf("key %s is not PEM", pk.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("key %s: %v", pk.KeyIdentifier, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("key %s is not an ECDSA P-256 key", pk.KeyIdentifier)
		}
		keys[pk.KeyIdentifier] = ec
	}
	return keys, nil
}

// current returns the keys, reading the file again first when it changed.
func (k *keyList) current() map[string]*ecdsa.PublicKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	fi, err := os.Stat(k.path)
	if err != nil {
		k.log.Error("leak_report_keys: the key file cannot be read; keeping the keys read before", zap.Error(err))
		return k.keys
	}
	if fi.ModTime().Equal(k.mtime) && fi.Size() == k.size {
		return k.keys
	}
	if err := k.load(fi); err != nil {
		k.log.Error("leak_report_keys: the key file changed but is not valid; keeping the keys read before", zap.Error(err))
		// Not again until the file changes once more.
		k.mtime, k.size = fi.ModTime(), fi.Size()
		return k.keys
	}
	k.log.Info("leak_report_keys: key file read again", zap.Int("keys", len(k.keys)))
	return k.keys
}

// verify checks GitHub's signature of body.
func (k *keyList) verify(keyID, signature string, body []byte) error {
	if keyID == "" || signature == "" {
		return errors.New("no signature headers")
	}
	pub, ok := k.current()[keyID]
	if !ok {
		return errors.New("unknown key identifier")
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return errors.New("the signature is not base64")
	}
	digest := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return errors.New("the signature does not verify")
	}
	return nil
}
