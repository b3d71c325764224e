package cutover

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// story is a rotation in which every condition holds at now: the newest
// secret was created at t0 and first used at t0+1m; the older secret's
// callers .1 and .2 both moved (their last use of it is before their first
// use of the newest), and its last use was at t0+2m, an hour and more
// before now.
func story() (p Policy, newest, older Secret, now time.Time) {
	p = Policy{Auto: true, Quiet: time.Hour, Lookback: 24 * time.Hour, Deadline: 48 * time.Hour, OnDeadline: Keep}
	newest = Secret{ID: "sec_new", CreatedAt: t0, FirstUsedAt: at(time.Minute), LastUsedAt: at(3 * time.Hour), Callers: []Caller{
		{IP: "10.0.0.1", FirstSeen: at(time.Minute), LastSeen: at(3 * time.Hour)},
		{IP: "10.0.0.2", FirstSeen: at(3 * time.Minute), LastSeen: at(3 * time.Hour)},
	}}
	older = Secret{ID: "sec_old", CreatedAt: at(-90 * 24 * time.Hour), FirstUsedAt: at(-90 * 24 * time.Hour), LastUsedAt: at(2 * time.Minute), Callers: []Caller{
		{IP: "10.0.0.1", FirstSeen: at(-90 * 24 * time.Hour), LastSeen: at(30 * time.Second)},
		{IP: "10.0.0.2", FirstSeen: at(-90 * 24 * time.Hour), LastSeen: at(2 * time.Minute)},
		// Gone long before the rotation: outside the lookback.
		{IP: "10.0.0.9", FirstSeen: at(-80 * 24 * time.Hour), LastSeen: at(-30 * 24 * time.Hour)},
	}}
	return p, newest, older, at(2*time.Minute + time.Hour)
}

func TestAllConditionsFinish(t *testing.T) {
	p, newest, older, now := story()
	v := Evaluate(p, newest, older, now)
	if v.State != Finished || v.Action != RevokeFinished || len(v.NotMoved) != 0 || v.Unlisted || v.NewestUnused {
		t.Fatalf("verdict = %+v, want finished and revoke", v)
	}
	if !v.QuietUntil.Equal(at(2*time.Minute+time.Hour)) || !v.DeadlineAt.Equal(at(48*time.Hour)) || !v.LastUsedAt.Equal(older.LastUsedAt) {
		t.Fatalf("times = quiet %v deadline %v last %v", v.QuietUntil, v.DeadlineAt, v.LastUsedAt)
	}
	p.Auto = false
	if v := Evaluate(p, newest, older, now); v.State != Finished || v.Action != None {
		t.Fatalf("manual verdict = %+v, want finished with no action", v)
	}
}

// Each condition, broken alone, keeps the secret waiting.
func TestEachConditionAloneBlocks(t *testing.T) {
	cases := map[string]func(p *Policy, newest, older *Secret, now *time.Time){
		"newest never used": func(_ *Policy, newest, _ *Secret, _ *time.Time) {
			newest.FirstUsedAt, newest.LastUsedAt, newest.Callers = time.Time{}, time.Time{}, nil
		},
		"a caller never seen on newest": func(_ *Policy, newest, _ *Secret, _ *time.Time) {
			newest.Callers = newest.Callers[:1]
		},
		"a caller used older after its first use of newest": func(_ *Policy, _, older *Secret, _ *time.Time) {
			older.Callers[0].LastSeen = at(2 * time.Minute)
		},
		"a new caller of older after the rotation": func(_ *Policy, _, older *Secret, _ *time.Time) {
			older.Callers = append(older.Callers, Caller{IP: "10.0.0.3", FirstSeen: at(time.Minute), LastSeen: at(time.Minute)})
		},
		"not quiet long enough": func(_ *Policy, _ *Secret, _ *Secret, now *time.Time) {
			*now = now.Add(-time.Second)
		},
		"unlisted callers after newest's first use": func(_ *Policy, _, older *Secret, _ *time.Time) {
			older.Callers = append(older.Callers, Caller{IP: "", FirstSeen: at(time.Minute), LastSeen: at(time.Minute)})
		},
		"a caller within a longer lookback": func(p *Policy, _, _ *Secret, _ *time.Time) {
			p.Lookback = 40 * 24 * time.Hour
		},
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			p, newest, older, now := story()
			breakIt(&p, &newest, &older, &now)
			v := Evaluate(p, newest, older, now)
			if v.State != Waiting || v.Action != None {
				t.Fatalf("verdict = %+v, want waiting with no action", v)
			}
		})
	}
}

func TestNotMovedNamesTheCallers(t *testing.T) {
	p, newest, older, now := story()
	newest.Callers = nil
	newest.FirstUsedAt = at(time.Minute) // used, but from elsewhere (say a NAT address change)
	older.Callers = append(older.Callers, Caller{IP: "10.0.0.2", FirstSeen: at(time.Hour), LastSeen: at(time.Hour)})
	v := Evaluate(p, newest, older, now)
	if want := []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(v.NotMoved, want) {
		t.Fatalf("NotMoved = %v, want %v (sorted, once each, the gone caller left out)", v.NotMoved, want)
	}
	if len(v.Moved) != 0 {
		t.Fatalf("Moved = %v, want none", v.Moved)
	}
	_, newest, older, _ = story()
	if v := Evaluate(p, newest, older, now); !slices.Equal(v.Moved, []string{"10.0.0.1", "10.0.0.2"}) || len(v.NotMoved) != 0 {
		t.Fatalf("Moved = %v, NotMoved = %v, want both callers moved (the gone one not counted)", v.Moved, v.NotMoved)
	}
}

// Unlisted callers of older before newest's first use say nothing about the
// move; neither do unlisted callers of newest.
func TestUnlistedBeforeTheRotationDoesNotBlock(t *testing.T) {
	p, newest, older, now := story()
	older.Callers = append(older.Callers, Caller{IP: "", FirstSeen: at(-time.Hour), LastSeen: at(30 * time.Second)})
	newest.Callers = append(newest.Callers, Caller{IP: "", FirstSeen: at(time.Hour), LastSeen: at(time.Hour)})
	if v := Evaluate(p, newest, older, now); v.State != Finished || v.Unlisted {
		t.Fatalf("verdict = %+v, want finished", v)
	}
}

func TestNeverUsedOlderIsQuiet(t *testing.T) {
	p, newest, older, now := story()
	older.FirstUsedAt, older.LastUsedAt, older.Callers = time.Time{}, time.Time{}, nil
	v := Evaluate(p, newest, older, now)
	if v.State != Finished || !v.QuietUntil.IsZero() {
		t.Fatalf("verdict = %+v, want finished with no quiet time", v)
	}
}

func TestNewestIsNeverJudged(t *testing.T) {
	p, newest, _, now := story()
	if v := Evaluate(p, newest, newest, now.Add(365*24*time.Hour)); v.State != Waiting || v.Action != None {
		t.Fatalf("verdict for the newest secret = %+v, want waiting with no action", v)
	}
}

func TestDeadline(t *testing.T) {
	p, newest, older, _ := story()
	newest.Callers = newest.Callers[:1] // 10.0.0.2 never moves
	before, deadline := at(48*time.Hour-time.Millisecond), at(48*time.Hour)
	if v := Evaluate(p, newest, older, before); v.State != Waiting {
		t.Fatalf("before the deadline: %+v, want waiting", v)
	}
	v := Evaluate(p, newest, older, deadline)
	if v.State != Stalled || v.Action != None || !slices.Equal(v.NotMoved, []string{"10.0.0.2"}) {
		t.Fatalf("at the deadline with keep: %+v, want stalled, no action, 10.0.0.2 not moved", v)
	}
	p.OnDeadline = Revoke
	if v := Evaluate(p, newest, older, deadline); v.State != Stalled || v.Action != RevokeAtDeadline {
		t.Fatalf("at the deadline with revoke: %+v, want stalled and revoke", v)
	}
	p.Auto = false
	if v := Evaluate(p, newest, older, deadline); v.State != Stalled || v.Action != None {
		t.Fatalf("manual at the deadline: %+v, want stalled with no action", v)
	}
	p.Auto, p.Deadline = true, 0
	if v := Evaluate(p, newest, older, at(1000*24*time.Hour)); v.State != Waiting || !v.DeadlineAt.IsZero() {
		t.Fatalf("no deadline: %+v, want waiting forever", v)
	}
}

// A rotation whose newest secret is never used stalls at its deadline and
// names the older secret's recent callers.
func TestNewestUnusedStalls(t *testing.T) {
	p, newest, older, _ := story()
	newest.FirstUsedAt, newest.LastUsedAt, newest.Callers = time.Time{}, time.Time{}, nil
	v := Evaluate(p, newest, older, at(48*time.Hour))
	if v.State != Stalled || !v.NewestUnused || !slices.Equal(v.NotMoved, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Fatalf("verdict = %+v, want stalled, newest unused, .1 and .2 not moved", v)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"2s": 2 * time.Second, "1h": time.Hour, "14d": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour, "0": 0,
	} {
		got, err := ParseDuration("quiet", in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
		if in != "0" && in != "1d12h" {
			if f := FormatDuration(got); f != in {
				t.Errorf("FormatDuration(%v) = %q, want %q", got, f, in)
			}
		}
	}
	for _, in := range []string{"", "soon", "-1h", "1x"} {
		_, err := ParseDuration("lookback", in)
		var fe FieldError
		if !errors.As(err, &fe) || fe.Field() != "lookback" || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDuration(%q) error = %v, want a lookback field error", in, err)
		}
	}
	for d, want := range map[time.Duration]string{90 * time.Minute: "1h30m", 36 * time.Hour: "36h", 0: "0s", 1500 * time.Millisecond: "1.5s"} {
		if f := FormatDuration(d); f != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, f, want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Default.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, p := range map[string]Policy{
		"quiet":       {Quiet: -1, OnDeadline: Keep},
		"lookback":    {Lookback: -1, OnDeadline: Keep},
		"deadline":    {Deadline: -1, OnDeadline: Keep},
		"on_deadline": {OnDeadline: "delete"},
	} {
		var fe FieldError
		if err := p.Validate(); !errors.As(err, &fe) || fe.Field() != field {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", p, err, field)
		}
	}
}
