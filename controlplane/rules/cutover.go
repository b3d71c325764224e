package rules

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/store"
)

// The automatic cut-over (SPEC §14, docs/cutover.md), the rules' side:
// each client's policy, the state of its rotation, and the pass that
// revokes finished older secrets and reports stalled ones. The rule itself
// is controlplane/cutover.

// CutoverEvery is the longest time between two cut-over passes; a usage
// batch, and the earliest quiet or deadline time a pass saw coming, bring
// the next one forward.
const CutoverEvery = 10 * time.Second

// cutoverActor is who the audit trail names for what a pass does.
var cutoverActor = Actor{TokenID: "cutover", Admin: true}

// CutoverState is a client's cut-over policy in force and where its
// rotation stands.
type CutoverState struct {
	ClientID string
	// Policy is the client's own policy over the control plane's default.
	Policy cutover.Policy
	// Newest is the client's newest active secret ("" when it has none).
	Newest string
	// Secrets are the verdicts on its other active secrets, oldest first:
	// none when no rotation is in progress.
	Secrets []cutover.Verdict
}

// CutoverPolicy returns the policy in force for a client that set p: p's
// fields over the control plane's default, with auto on for a client whose
// sink rotates it on a schedule unless the client set auto itself.
func (s *Service) CutoverPolicy(p store.CutoverPolicy) cutover.Policy {
	out := s.cutover
	switch {
	case p.Auto != nil:
		out.Auto = *p.Auto
	case p.Scheduled:
		out.Auto = true // a client rotated on a schedule is cut over unless set off (SPEC §15)
	}
	if p.Quiet != nil {
		out.Quiet = *p.Quiet
	}
	if p.Lookback != nil {
		out.Lookback = *p.Lookback
	}
	if p.Deadline != nil {
		out.Deadline = *p.Deadline
	}
	if p.OnDeadline != "" {
		out.OnDeadline = cutover.OnDeadline(p.OnDeadline)
	}
	return out
}

// GetCutover returns a client's cut-over policy and the state of its
// rotation. Owners of the client may read it.
func (s *Service) GetCutover(ctx context.Context, who Actor, clientID string) (CutoverState, error) {
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return CutoverState{}, err
	}
	own, err := s.store.CutoverPolicy(ctx, clientID)
	if err != nil {
		return CutoverState{}, err
	}
	secrets, err := s.store.Secrets(ctx, clientID)
	if err != nil {
		return CutoverState{}, err
	}
	now := s.Now()
	active := secrets[:0]
	for _, sec := range secrets {
		if sec.Active(now) {
			active = append(active, sec)
		}
	}
	st := CutoverState{ClientID: clientID, Policy: s.CutoverPolicy(own), Secrets: []cutover.Verdict{}}
	callers := map[string][]store.Caller{}
	if since, keep := s.callersSince(now); keep && len(active) > 1 {
		ids := make([]string, len(active))
		for i := range active {
			ids[i] = active[i].ID
		}
		if callers, err = s.store.Callers(ctx, ids, since); err != nil {
			return CutoverState{}, err
		}
	}
	st.Newest, st.Secrets = verdicts(st.Policy, active, callers, now)
	return st, nil
}

// SetCutover changes the fields of a client's cut-over policy that change
// sets (the others stay as they were), checks the policy in force that
// results, and returns the new state. Owners of the client may set it; the
// change is audited as client.cutover.
func (s *Service) SetCutover(ctx context.Context, who Actor, clientID string, change store.CutoverPolicy) (st CutoverState, err error) {
	defer func() {
		if err != nil {
			s.log(who, "client.cutover", clientID, "", err)
			return
		}
		s.log(who, "client.cutover", clientID, "", nil, zap.String("policy", policyDetail(st.Policy)))
	}()
	if err := ValidateClientID(clientID); err != nil {
		return CutoverState{}, invalidError(err.Error())
	}
	_, err = update(ctx, s, func(tx store.Tx) (nothing, error) {
		if _, err := lockManaged(ctx, tx, who, clientID); err != nil {
			return nothing{}, err
		}
		own, err := s.store.CutoverPolicy(ctx, clientID)
		if err != nil {
			return nothing{}, err
		}
		if change.Auto != nil {
			own.Auto = change.Auto
		}
		if change.Quiet != nil {
			own.Quiet = change.Quiet
		}
		if change.Lookback != nil {
			own.Lookback = change.Lookback
		}
		if change.Deadline != nil {
			own.Deadline = change.Deadline
		}
		if change.OnDeadline != "" {
			own.OnDeadline = change.OnDeadline
		}
		p := s.CutoverPolicy(own)
		if err := p.Validate(); err != nil {
			return nothing{}, invalidError(err.Error())
		}
		if err := tx.SetCutoverPolicy(ctx, clientID, own); err != nil {
			return nothing{}, err
		}
		return nothing{}, s.record(ctx, tx, who, "client.cutover", clientID, "", policyDetail(p))
	})
	if err != nil {
		return CutoverState{}, err
	}
	return s.GetCutover(ctx, who, clientID)
}

// policyDetail writes a policy for the audit trail.
func policyDetail(p cutover.Policy) string {
	auto := "off"
	if p.Auto {
		auto = "on"
	}
	return fmt.Sprintf("auto %s; quiet %s; lookback %s; deadline %s; on_deadline %s", auto,
		cutover.FormatDuration(p.Quiet), cutover.FormatDuration(p.Lookback), cutover.FormatDuration(p.Deadline), p.OnDeadline)
}

// cutoverSecret is what the rule needs of a stored secret and its callers.
func cutoverSecret(sec store.Secret, callers []store.Caller) cutover.Secret {
	out := cutover.Secret{ID: sec.ID, CreatedAt: sec.CreatedAt, Callers: make([]cutover.Caller, len(callers))}
	if sec.FirstUsedAt != nil {
		out.FirstUsedAt = *sec.FirstUsedAt
	}
	if sec.LastUsedAt != nil {
		out.LastUsedAt = *sec.LastUsedAt
	}
	for i, c := range callers {
		out.Callers[i] = cutover.Caller{IP: c.IP, FirstSeen: c.FirstSeen, LastSeen: c.LastSeen}
	}
	return out
}

// verdicts judges each of a client's active secrets but its newest, and
// returns the newest's id with the verdicts, oldest first.
func verdicts(p cutover.Policy, active []store.Secret, callers map[string][]store.Caller, now time.Time) (string, []cutover.Verdict) {
	newest := newestActive(active, now)
	out := []cutover.Verdict{}
	if newest == "" {
		return "", out
	}
	var n cutover.Secret
	for _, sec := range active {
		if sec.ID == newest {
			n = cutoverSecret(sec, callers[sec.ID])
		}
	}
	for _, sec := range active {
		if sec.ID != newest {
			out = append(out, cutover.Evaluate(p, n, cutoverSecret(sec, callers[sec.ID]), now))
		}
	}
	return newest, out
}

// CutoverPass is what one pass found and did.
type CutoverPass struct {
	// Rotations is how many clients had a rotation in progress.
	Rotations int
	// Revoked are the secrets revoked, Stalled those reported stalled.
	Revoked, Stalled []string
	// Next is the earliest time a waiting secret becomes quiet or stalls
	// (zero: none comes): the next pass is due then at the latest.
	Next time.Time
}

// RunCutover runs one cut-over pass over the clients with a rotation in
// progress (Store.Rotations: bounded by them, not by all clients). For
// those with auto on, it revokes each finished older secret (audit
// secret.revoke by cutover, reason cutover; events secret.revoked and
// secret.cutover_completed) and reports each one unfinished at its
// deadline once (secret.cutover_stalled; revoked with reason
// cutover_deadline when on_deadline is revoke). Each action runs in a
// transaction of its own that locks the client and judges the secret
// again on what it reads there: two control planes on one database never
// revoke or report a secret twice. Clients found with fewer than two
// active secrets leave the set. A failure on one client is logged and
// does not stop the others. With tombstone_window 0 no callers are kept,
// so nothing tells who moved: the pass does nothing.
func (s *Service) RunCutover(ctx context.Context) (CutoverPass, error) {
	now := s.Now()
	since, keep := s.callersSince(now)
	if !keep {
		// tombstone_window 0 keeps no callers: nobody can tell who moved.
		return CutoverPass{}, nil
	}
	rots, err := s.store.Rotations(ctx, now, since)
	if err != nil {
		return CutoverPass{}, err
	}
	pass := CutoverPass{Rotations: len(rots)}
	var ended []string
	for _, r := range rots {
		if len(r.Secrets) < 2 {
			ended = append(ended, r.ClientID)
			continue
		}
		p := s.CutoverPolicy(r.Policy)
		if !p.Auto {
			continue
		}
		stalledBefore := map[string]bool{}
		for _, sec := range r.Secrets {
			stalledBefore[sec.ID] = sec.CutoverStalledAt != nil
		}
		_, vs := verdicts(p, r.Secrets, r.Callers, now)
		for _, v := range vs {
			if v.Action == cutover.None && (v.State != cutover.Stalled || stalledBefore[v.SecretID]) {
				pass.Next = earliestAfter(pass.Next, now, v.QuietUntil, v.DeadlineAt)
				continue
			}
			did, err := s.cutover1(ctx, r.ClientID, v.SecretID, p, now, since)
			if err != nil {
				s.logger.Error("cut-over failed", zap.String("client_id", r.ClientID), zap.String("secret_id", v.SecretID), zap.Error(err))
				continue
			}
			if did.revoked {
				pass.Revoked = append(pass.Revoked, v.SecretID)
			}
			if did.stalled {
				pass.Stalled = append(pass.Stalled, v.SecretID)
			}
		}
	}
	if len(ended) > 0 {
		if err := s.endRotations(ctx, ended, now); err != nil {
			return pass, err
		}
	}
	return pass, nil
}

// earliestAfter returns the earliest of next and the times after now
// (zero times are none).
func earliestAfter(next, now time.Time, ts ...time.Time) time.Time {
	for _, t := range ts {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// cutoverDone is what cutover1 did.
type cutoverDone struct{ revoked, stalled bool }

// cutover1 acts on one older secret in one transaction: it locks the
// client, judges the secret again on what it reads under the lock, and
// does what the verdict says, unless done already.
func (s *Service) cutover1(ctx context.Context, clientID, secretID string, p cutover.Policy, now, since time.Time) (done cutoverDone, err error) {
	var reason cutover.Action
	defer func() {
		if done.revoked || err != nil {
			s.log(cutoverActor, "secret.revoke", clientID, secretID, err, zap.String("reason", string(reason)))
		}
		if done.stalled {
			s.logAt(zap.WarnLevel, cutoverActor, "secret.cutover_stalled", clientID, secretID, nil)
		}
	}()
	type found struct {
		done   cutoverDone
		reason cutover.Action
	}
	f, err := update(ctx, s, func(tx store.Tx) (found, error) {
		var f found
		if _, err := tx.LockClient(ctx, clientID); errors.Is(err, store.ErrNotFound) {
			return f, nil // deleted meanwhile
		} else if err != nil {
			return f, err
		}
		secrets, err := tx.Secrets(ctx, clientID)
		if err != nil {
			return f, err
		}
		active := secrets[:0]
		ids := []string{}
		var old *store.Secret
		for _, sec := range secrets {
			if sec.Active(now) {
				active = append(active, sec)
				ids = append(ids, sec.ID)
			}
		}
		for i := range active {
			if active[i].ID == secretID {
				old = &active[i]
			}
		}
		if old == nil {
			return f, nil // revoked or expired meanwhile (by another replica, say)
		}
		callers, err := tx.Callers(ctx, ids, since)
		if err != nil {
			return f, err
		}
		newest, vs := verdicts(p, active, callers, now)
		var v cutover.Verdict
		for _, x := range vs {
			if x.SecretID == secretID {
				v = x
			}
		}
		if v.SecretID == "" {
			return f, nil // it became the newest: never revoked by a cut-over
		}
		if v.State == cutover.Stalled {
			first, err := tx.MarkStalled(ctx, secretID, now)
			if err != nil {
				return f, err
			}
			if first {
				data := map[string]any{"newest_secret_id": newest, "not_moved": nonNil(v.NotMoved), "last_used_at": timeOrNil(v.LastUsedAt)}
				if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretCutoverStalled, ClientID: clientID, SecretID: secretID, Hint: old.Hint, Data: data}); err != nil {
					return f, err
				}
				f.done.stalled = true
			}
		}
		if v.Action == cutover.None {
			return f, nil
		}
		f.reason = v.Action
		if err := tx.Revoke(ctx, secretID, now); err != nil {
			return f, err
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: secretID, Hint: old.Hint,
			Data: map[string]any{"revoked_at": now, "reason": string(v.Action)}}); err != nil {
			return f, err
		}
		if v.Action == cutover.RevokeFinished {
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretCutoverCompleted, ClientID: clientID, SecretID: secretID, Hint: old.Hint,
				Data: map[string]any{"newest_secret_id": newest, "callers": nonNil(v.Moved)}}); err != nil {
				return f, err
			}
		}
		f.done.revoked = true
		return f, s.record(ctx, tx, cutoverActor, "secret.revoke", clientID, secretID, "reason: "+string(v.Action))
	})
	return f.done, err
}

// endRotations takes the clients that a pass found with fewer than two
// active secrets out of the rotations in progress, each checked again
// under its lock, in one transaction.
func (s *Service) endRotations(ctx context.Context, clientIDs []string, now time.Time) error {
	_, err := update(ctx, s, func(tx store.Tx) (nothing, error) {
		for _, id := range clientIDs {
			if _, err := tx.LockClient(ctx, id); errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return nothing{}, err
			}
			secrets, err := tx.Secrets(ctx, id)
			if err != nil {
				return nothing{}, err
			}
			n := 0
			for i := range secrets {
				if secrets[i].Active(now) {
					n++
				}
			}
			if n < 2 {
				if err := tx.EndRotation(ctx, id); err != nil {
					return nothing{}, err
				}
			}
		}
		return nothing{}, nil
	})
	return err
}

// KickCutover asks for a cut-over pass soon (after a usage batch). It
// never blocks.
func (s *Service) KickCutover() {
	select {
	case s.cutoverKick <- struct{}{}:
	default:
	}
}

// RunCutoverLoop runs cut-over passes until ctx ends: one at once, then
// after each usage batch (KickCutover), at the earliest quiet or deadline
// time the last pass saw coming, and at least every CutoverEvery. A
// failed or panicking pass is logged and the loop goes on.
func (s *Service) RunCutoverLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.cutoverKick:
		}
		wait := CutoverEvery
		if next := s.cutoverPassLogged(ctx); !next.IsZero() {
			// A millisecond late, so that the time has passed on the
			// service's millisecond clock.
			wait = min(wait, max(next.Sub(s.Now()), 0)+time.Millisecond)
		}
		timer.Reset(wait)
	}
}

// cutoverPassLogged runs one pass, logging what it did and any failure or
// panic, and returns its Next.
func (s *Service) cutoverPassLogged(ctx context.Context) (next time.Time) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("cut-over pass panicked", zap.Any("panic", r), zap.String("stack", string(debug.Stack())))
		}
	}()
	pass, err := s.RunCutover(ctx)
	if err != nil && ctx.Err() == nil {
		s.logger.Error("cut-over pass failed", zap.Error(err))
	}
	if len(pass.Revoked)+len(pass.Stalled) > 0 {
		s.logger.Info("cut-over pass", zap.Int("rotations", pass.Rotations),
			zap.String("revoked", strings.Join(pass.Revoked, ",")), zap.String("stalled", strings.Join(pass.Stalled, ",")))
	}
	return pass.Next
}

// nonNil is s, or an empty list for nil (JSON [] rather than null).
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
