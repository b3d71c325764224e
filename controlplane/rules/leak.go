package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/secrethash"
	"github.com/rotagate/rotagate/internal/wire"
)

// The leak loop (SPEC §12), the rules' side: dead secrets that edges saw
// presented, and leak reports that revoke.

// What a leak report of an active secret does (the leak_action option).
const (
	// LeakRevoke revokes the secret at once: every edge refuses it
	// within revocation_delay.
	LeakRevoke = "revoke"
	// LeakFlag records the report (audit trail, leak_reported_at) and
	// leaves the secret working, for operators who decide themselves.
	LeakFlag = "flag"
)

// Labels of a leak report's answer, in the words of GitHub's secret
// scanning partner program.
const (
	LabelTruePositive  = "true_positive"
	LabelFalsePositive = "false_positive"
)

// What was done about one reported token.
const (
	LeakActionRevoked = "revoked"
	LeakActionFlagged = "flagged"
	// LeakActionNone: not ours, or already revoked or expired.
	LeakActionNone = "none"
)

// Limits of leak reports.
const (
	// maxLeakURLLen bounds the URL kept from a report, in bytes.
	maxLeakURLLen = 2048
	// maxRevokedUseCount bounds one report's count, so that sums cannot
	// overflow.
	maxRevokedUseCount = 1 << 40
)

// LeakReport is one token that a person or a scanner found exposed, and
// where.
type LeakReport struct {
	Token string
	URL   string
}

// LeakResult is what a report of one token found and did. It never holds
// the token: TokenHash is the hex SHA-256 of it, as GitHub's partner
// program expects.
type LeakResult struct {
	TokenHash string
	Label     string
	Action    string
}

// ReportLeak handles one reported token. A token that is not shaped like
// a generated secret with a valid checksum (any valid prefix, so that
// secrets issued under an earlier secret_prefix are found too) is a false
// positive, decided offline without any store query. Otherwise the secret
// is looked up by its sha256 hash: unknown, or of a client the actor may
// not manage (a user who owns other clients), is a false positive as
// well, so the answer reveals nothing. A known secret is a true positive;
// when it is active, it is revoked (or flagged, per leak_action) in one
// transaction, with an audit entry that names the report's URL and the
// events secret.leak_reported (and secret.revoked, reason leak_report). A
// secret already revoked or expired needs nothing.
func (s *Service) ReportLeak(ctx context.Context, who Actor, r LeakReport) (res LeakResult, err error) {
	sum := sha256.Sum256([]byte(r.Token))
	res = LeakResult{TokenHash: hex.EncodeToString(sum[:]), Label: LabelFalsePositive, Action: LeakActionNone}
	defer func() {
		if err == nil {
			Metrics.LeakReports.WithLabelValues(res.Label, res.Action).Inc()
		}
	}()
	if !generatedShape(r.Token) {
		return res, nil
	}
	sec, err := s.store.SecretByHash(ctx, secrethash.NewSHA256(r.Token))
	if errors.Is(err, store.ErrNotFound) {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	if !who.Admin && !who.Leak {
		c, err := s.store.Client(ctx, sec.ClientID)
		if errors.Is(err, store.ErrNotFound) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		if !who.mayManage(c) {
			return res, nil
		}
	}
	res.Label = LabelTruePositive
	now := s.Now()
	if !sec.Active(now) {
		return res, nil
	}
	url := cleanLeakURL(r.URL)
	action := LeakActionFlagged
	if s.leakAction == LeakRevoke {
		action = LeakActionRevoked
	}
	defer func() {
		if res.Action != LeakActionNone || err != nil {
			s.logAt(zap.WarnLevel, who, "secret.leak_report", sec.ClientID, sec.ID, err,
				zap.String("leak_action", res.Action), zap.String("url", url))
		}
	}()
	res.Action, err = update(ctx, s, func(tx store.Tx) (string, error) {
		if _, err := tx.LockClient(ctx, sec.ClientID); errors.Is(err, store.ErrNotFound) {
			return LeakActionNone, nil // deleted meanwhile: its secrets are gone
		} else if err != nil {
			return "", err
		}
		secrets, err := tx.Secrets(ctx, sec.ClientID)
		if err != nil {
			return "", err
		}
		i := slices.IndexFunc(secrets, func(s store.Secret) bool { return s.ID == sec.ID })
		if i < 0 || !secrets[i].Active(now) {
			return LeakActionNone, nil // revoked or expired meanwhile
		}
		if err := tx.FlagLeak(ctx, sec.ID, now); err != nil {
			return "", err
		}
		hint := secrets[i].Hint
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretLeakReported, ClientID: sec.ClientID, SecretID: sec.ID, Hint: hint,
			Data: map[string]any{"url": url, "action": action, "reported_by": who.TokenID}}); err != nil {
			return "", err
		}
		detail := "reason: leak_report; url: " + orNone(url)
		if action == LeakActionFlagged {
			return action, s.record(ctx, tx, who, "secret.leak_flag", sec.ClientID, sec.ID, detail)
		}
		if err := tx.Revoke(ctx, sec.ID, now); err != nil {
			return "", err
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: sec.ClientID, SecretID: sec.ID, Hint: hint,
			Data: map[string]any{"revoked_at": now, "reason": "leak_report"}}); err != nil {
			return "", err
		}
		return action, s.record(ctx, tx, who, "secret.revoke", sec.ClientID, sec.ID, detail)
	})
	if err != nil {
		res.Action = LeakActionNone
		return res, err
	}
	return res, nil
}

// generatedShape reports whether token is a generated secret of any
// valid prefix with a valid checksum: prefix, 43 base62 digits, 6 check
// digits.
func generatedShape(token string) bool {
	n := len(token) - secretBodyLen - secretCheckLen
	return n >= 1 && n <= maxPrefixLen && CheckSecret(token, token[:n])
}

// cleanLeakURL keeps a report's URL fit for the audit trail: no control
// characters, at most maxLeakURLLen bytes of valid UTF-8.
func cleanLeakURL(u string) string {
	u = strings.ToValidUTF8(u, "")
	u = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(u))
	if len(u) > maxLeakURLLen {
		u = strings.ToValidUTF8(u[:maxLeakURLLen], "")
	}
	return u
}

func orNone(s string) string {
	if s == "" {
		return "(none given)"
	}
	return s
}

// ApplyRevokedUses records the presented-after-revoke reports of one
// usage batch from an edge: reports for the same secret are merged first
// (counts added, the newest time and caller kept), so the store makes one
// write per secret, all in one transaction that does not move the
// revision. Reports of unknown secrets, of another client's, or of
// secrets that were neither revoked nor expired at the reported time are
// ignored. Each secret recorded gets one secret.presented_after_revoke
// event (in the same transaction), counts in the metric and gets one warn
// line. Counts add up: a batch that an edge sends again after an
// ambiguous failure (the control plane applied it, the answer was lost)
// counts twice.
func (s *Service) ApplyRevokedUses(ctx context.Context, edge string, uses []wire.RevokedUse) ([]store.RecordedRevokedUse, error) {
	now := s.Now()
	merged := make(map[[2]string]wire.RevokedUse, len(uses))
	for _, u := range uses {
		if u.SecretID == "" || u.ClientID == "" || u.Count <= 0 || u.LastAt.IsZero() {
			continue
		}
		u.Count = min(u.Count, maxRevokedUseCount)
		if u.LastAt.After(now) { // a skewed edge clock cannot pin it ahead
			u.LastAt = now
		}
		u.LastAt = u.LastAt.UTC().Truncate(time.Millisecond)
		u.From = cleanIP(u.From)
		key := [2]string{u.ClientID, u.SecretID}
		if cur, ok := merged[key]; ok {
			u.Count = min(u.Count+cur.Count, maxRevokedUseCount)
			if cur.LastAt.After(u.LastAt) {
				u.LastAt, u.From = cur.LastAt, cur.From
			}
		}
		merged[key] = u
	}
	if len(merged) == 0 {
		return nil, nil
	}
	list := make([]wire.RevokedUse, 0, len(merged))
	for _, u := range merged {
		list = append(list, u)
	}
	// A stable order keeps lock order and tests deterministic.
	sort.Slice(list, func(i, j int) bool { return list[i].SecretID < list[j].SecretID })
	recorded, err := update(ctx, s, func(tx store.Tx) ([]store.RecordedRevokedUse, error) {
		var out []store.RecordedRevokedUse
		for _, u := range list {
			r, err := tx.RecordRevokedUse(ctx, u)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretPresentedAfterRevoke, ClientID: r.ClientID, SecretID: r.SecretID, Hint: r.Hint,
				Data: map[string]any{"count": r.Count, "total": r.Total, "last_presented_at": r.LastAt, "from": r.From, "edge": edge}}); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range recorded {
		Metrics.PresentedAfterRevoke.Add(float64(r.Count))
		s.logger.Warn("a revoked or expired secret was presented at an edge",
			zap.String("client_id", r.ClientID), zap.String("secret_id", r.SecretID),
			zap.Int64("count", r.Count), zap.Time("last_presented_at", r.LastAt),
			zap.String("from", r.From), zap.Int64("total", r.Total), zap.String("edge", edge))
	}
	return recorded, nil
}
