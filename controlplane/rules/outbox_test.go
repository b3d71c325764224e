package rules

import (
	"testing"
	"time"
)

func TestNoticeStage(t *testing.T) {
	exp := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	rs := DefaultExpiryReminders
	for _, tc := range []struct {
		left time.Duration
		want int64
		ok   bool
	}{
		{800 * time.Hour, 0, false},
		{720 * time.Hour, (720 * time.Hour).Milliseconds(), true},
		{500 * time.Hour, (720 * time.Hour).Milliseconds(), true},
		{168 * time.Hour, (168 * time.Hour).Milliseconds(), true},
		{25 * time.Hour, (168 * time.Hour).Milliseconds(), true},
		{time.Hour, (24 * time.Hour).Milliseconds(), true},
		{0, stageExpired, true},
		{-time.Hour, stageExpired, true},
	} {
		got, ok := noticeStage(rs, exp, exp.Add(-tc.left))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s left: stage %d %v, want %d %v", tc.left, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := noticeStage(nil, exp, exp.Add(-time.Hour)); ok {
		t.Error("no reminders configured: nothing due before the expiry")
	}
	if formatOffset(168*time.Hour) != "168h" || formatOffset(90*time.Minute) != "1h30m0s" {
		t.Error("formatOffset")
	}
}

func TestValidateReminders(t *testing.T) {
	if err := validateReminders(DefaultExpiryReminders); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]time.Duration{{0}, {-time.Hour}, {time.Hour, time.Hour}, {400 * 24 * time.Hour}} {
		if err := validateReminders(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
