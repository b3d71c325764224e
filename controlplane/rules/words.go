package rules

import (
	"fmt"
	"time"
)

// HumanDuration words d for people, as the console and the audit log
// show it: "1 hour", "30 days", "1 day 12 hours" — the largest unit and
// the next one when it is not zero. Below a second it is Go's form.
func HumanDuration(d time.Duration) string {
	units := []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}}
	for i, u := range units {
		if d < u.size {
			continue
		}
		out := Plural(int64(d/u.size), u.name, u.name+"s")
		if i+1 < len(units) {
			if rest := (d % u.size) / units[i+1].size; rest > 0 {
				out += " " + Plural(int64(rest), units[i+1].name, units[i+1].name+"s")
			}
		}
		return out
	}
	return d.String()
}

// Plural is "1 secret", "2 secrets": n and the word that goes with it.
func Plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
