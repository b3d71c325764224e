package rules

import (
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour:                 "1 hour",
		720 * time.Hour:           "30 days",
		36 * time.Hour:            "1 day 12 hours",
		90 * time.Second:          "1 minute 30 seconds",
		2*time.Hour + time.Second: "2 hours",
		time.Second:               "1 second",
		500 * time.Millisecond:    "500ms",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
