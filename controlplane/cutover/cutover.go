// Package cutover decides when a rotation is finished: when every caller of
// an older active secret has moved to the client's newest one, so that the
// older secret can be revoked without breaking anybody (docs/design.md,
// "Automatic cut-over"). It is pure: the control plane gives it what the
// store knows of two secrets and their callers, and it answers what state
// the older one is in and what, if anything, to do about it.
package cutover

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// OnDeadline says what happens to an older secret that is not finished
// when the rotation's deadline passes.
type OnDeadline string

const (
	// Keep leaves the secret active; its own expiry still applies.
	Keep OnDeadline = "keep"
	// Revoke revokes it (reason cutover_deadline).
	Revoke OnDeadline = "revoke"
)

// Policy is a client's cut-over policy.
type Policy struct {
	// Auto revokes an older secret once it is finished. Off, nothing is
	// ever done: the states are only shown.
	Auto bool
	// Quiet is how long the older secret must have gone without an
	// accepted use.
	Quiet time.Duration
	// Lookback is how far before the newest secret's first use a caller
	// of the older secret counts as one that must move.
	Lookback time.Duration
	// Deadline, counted from the newest secret's creation, is when an
	// unfinished rotation is reported stalled (0: never).
	Deadline time.Duration
	// OnDeadline is what a stalled rotation does to the older secret.
	OnDeadline OnDeadline
}

// Default is the policy of a client and a control plane that set none:
// auto off, quiet 1h, lookback 14d, deadline 7d, keep.
var Default = Policy{
	Quiet:      time.Hour,
	Lookback:   14 * 24 * time.Hour,
	Deadline:   7 * 24 * time.Hour,
	OnDeadline: Keep,
}

// Validate reports the first field that is out of range, by its JSON name.
func (p Policy) Validate() error {
	switch {
	case p.Quiet < 0:
		return fieldError{"quiet", "must not be negative"}
	case p.Lookback < 0:
		return fieldError{"lookback", "must not be negative"}
	case p.Deadline < 0:
		return fieldError{"deadline", "must not be negative"}
	case p.OnDeadline != Keep && p.OnDeadline != Revoke:
		return fieldError{"on_deadline", `must be "keep" or "revoke"`}
	}
	return nil
}

// FieldError is an invalid policy field; Field is its JSON name.
type FieldError interface {
	error
	Field() string
}

type fieldError struct{ field, problem string }

func (e fieldError) Error() string   { return e.field + " " + e.problem }
func (e fieldError) Field() string   { return e.field }
func (e fieldError) Is(t error) bool { return t == ErrInvalid }

// ErrInvalid matches every error of Validate and ParseDuration.
var ErrInvalid = errors.New("invalid cut-over policy")

// ParseDuration reads a policy duration of field: a Go duration, with d
// for days also accepted ("14d", "1d12h", "2s", as Caddy reads them);
// negative ones are refused.
func ParseDuration(field, s string) (time.Duration, error) {
	d, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, fieldError{field, fmt.Sprintf("%q is not a duration (e.g. \"1h\", \"14d\")", s)}
	}
	if d < 0 {
		return 0, fieldError{field, "must not be negative"}
	}
	return d, nil
}

// FormatDuration writes d as ParseDuration reads it, without the zero
// units Go's String adds ("1h", not "1h0m0s"; "14d" for whole days).
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Caller is one caller IP of a secret: the first and last time it
// presented the secret and was accepted. IP "" stands for the requests an
// edge counted without listing their IPs.
type Caller struct {
	IP                  string
	FirstSeen, LastSeen time.Time
}

// Secret is what the rule needs to know of one active secret.
type Secret struct {
	ID        string
	CreatedAt time.Time
	// FirstUsedAt and LastUsedAt are its first and newest accepted use
	// (zero: never used).
	FirstUsedAt, LastUsedAt time.Time
	Callers                 []Caller
}

// State is where an older secret's cut-over stands.
type State string

const (
	// Waiting: some condition is not met yet, and the deadline has not
	// passed.
	Waiting State = "waiting"
	// Finished: every condition is met; the secret may be revoked.
	Finished State = "finished"
	// Stalled: not finished at the deadline.
	Stalled State = "stalled"
)

// Action is what the control plane does about an older secret.
type Action string

const (
	// None: nothing to do now.
	None Action = ""
	// RevokeFinished revokes a finished secret (reason cutover).
	RevokeFinished Action = "cutover"
	// RevokeAtDeadline revokes a stalled secret (reason cutover_deadline).
	RevokeAtDeadline Action = "cutover_deadline"
)

// Verdict is the state of one older secret and what to do about it.
type Verdict struct {
	SecretID string
	State    State
	// NotMoved are the caller IPs that must still move, sorted.
	NotMoved []string
	// Moved are the caller IPs that had to move and did, sorted: with
	// NotMoved, every caller the rule counts.
	Moved []string
	// Unlisted: an edge counted callers of the older secret after the
	// newest one's first use without listing their IPs, so nobody can
	// tell whether they moved.
	Unlisted bool
	// NewestUnused: the newest secret has never been accepted.
	NewestUnused bool
	// LastUsedAt is the older secret's newest accepted use (zero: never).
	LastUsedAt time.Time
	// QuietUntil is when the older secret will have been quiet long
	// enough (zero: never used, so already quiet).
	QuietUntil time.Time
	// DeadlineAt is when the rotation stalls (zero: no deadline).
	DeadlineAt time.Time
	Action     Action
}

// Evaluate judges older, an active secret of a client whose newest active
// secret is newest, at now. The newest secret itself is never judged: the
// caller must not pass it as older (Evaluate answers Waiting for it).
//
// older is finished when all of these hold:
//   - newest was accepted at least once;
//   - every caller IP that presented older within p.Lookback before
//     newest's first use (or at any time since; while newest is unused,
//     before its creation) has moved: it presented
//     newest, and has not presented older since its first use of newest;
//   - older had no accepted use for p.Quiet;
//   - no edge reported unlisted callers of older after newest's first use.
//
// With p.Auto, a finished secret is to be revoked; an unfinished one at
// the deadline is Stalled, and revoked when p.OnDeadline is Revoke.
// Without p.Auto the verdict only describes (Action is always None).
func Evaluate(p Policy, newest, older Secret, now time.Time) Verdict {
	v := Verdict{SecretID: older.ID, State: Waiting, LastUsedAt: older.LastUsedAt}
	if p.Deadline > 0 {
		v.DeadlineAt = newest.CreatedAt.Add(p.Deadline)
	}
	if !older.LastUsedAt.IsZero() {
		v.QuietUntil = older.LastUsedAt.Add(p.Quiet)
	}
	if older.ID == newest.ID {
		return v
	}
	v.NewestUnused = newest.FirstUsedAt.IsZero()
	// Callers of older count from lookback before newest's first use; while
	// newest is unused, from lookback before its creation.
	from := newest.FirstUsedAt
	if v.NewestUnused {
		from = newest.CreatedAt
	}
	from = from.Add(-p.Lookback)

	firstOnNewest := make(map[string]time.Time, len(newest.Callers))
	for _, c := range newest.Callers {
		if c.IP != "" {
			firstOnNewest[c.IP] = c.FirstSeen
		}
	}
	for _, c := range older.Callers {
		if c.LastSeen.Before(from) {
			continue
		}
		if c.IP == "" {
			if !v.NewestUnused && !c.LastSeen.Before(newest.FirstUsedAt) {
				v.Unlisted = true
			}
			continue
		}
		if first, ok := firstOnNewest[c.IP]; !ok || !c.LastSeen.Before(first) {
			v.NotMoved = append(v.NotMoved, c.IP)
		} else {
			v.Moved = append(v.Moved, c.IP)
		}
	}
	slices.Sort(v.NotMoved)
	v.NotMoved = slices.Compact(v.NotMoved)
	slices.Sort(v.Moved)
	v.Moved = slices.Compact(v.Moved)

	quiet := v.QuietUntil.IsZero() || !now.Before(v.QuietUntil)
	if !v.NewestUnused && len(v.NotMoved) == 0 && !v.Unlisted && quiet {
		v.State = Finished
		if p.Auto {
			v.Action = RevokeFinished
		}
		return v
	}
	if !v.DeadlineAt.IsZero() && !now.Before(v.DeadlineAt) {
		v.State = Stalled
		if p.Auto && p.OnDeadline == Revoke {
			v.Action = RevokeAtDeadline
		}
	}
	return v
}
