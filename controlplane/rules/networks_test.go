package rules

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestNormalizeCIDRs(t *testing.T) {
	for _, tt := range []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{"10.0.0.0/8", " 192.0.2.7 ", "2001:db8::/32"}, []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}},
		{[]string{"10.1.0.0/16", "10.0.0.0/8", "10.0.0.0/8"}, []string{"10.0.0.0/8"}},                 // inside another, repeated
		{[]string{"192.0.2.0/25", "192.0.2.128/25"}, []string{"192.0.2.0/24"}},                        // adjacent halves merge
		{[]string{"::ffff:10.0.0.0/104", "::ffff:192.0.2.1"}, []string{"10.0.0.0/8", "192.0.2.1/32"}}, // IPv4-mapped
		{[]string{"2001:DB8:0::1"}, []string{"2001:db8::1/128"}},
		{[]string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}},
	} {
		got, err := NormalizeCIDRs(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("NormalizeCIDRs(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", "example.com", "10.0.0.0/8x", "fe80::1%eth0", "::ffff:0:0/95", ""} {
		if _, err := NormalizeCIDRs([]string{bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeCIDRs(%q): %v, want ErrInvalid", bad, err)
		}
	}
	var many []string
	for i := range MaxAllowedCIDRs + 1 {
		many = append(many, fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	if _, err := NormalizeCIDRs(many); !errors.Is(err, ErrInvalid) {
		t.Errorf("%d networks accepted", len(many))
	}
}

func TestSuggestNetworks(t *testing.T) {
	for _, tt := range []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{"192.0.2.1"}, []string{"192.0.2.1/32"}},
		{[]string{"192.0.2.0", "192.0.2.1"}, []string{"192.0.2.0/31"}},                 // a full /31
		{[]string{"192.0.2.1", "192.0.2.2"}, []string{"192.0.2.1/32", "192.0.2.2/32"}}, // adjacent, but no block is full
		{[]string{"192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.5"}, []string{"192.0.2.0/30", "192.0.2.5/32"}},
		{[]string{"192.0.2.1", "192.0.2.1", "::ffff:192.0.2.1"}, []string{"192.0.2.1/32"}}, // repeats and the IPv4-mapped form
		{[]string{"2001:db8::1", "2001:db8::"}, []string{"2001:db8::/127"}},
		{[]string{"2001:db8::2", "2001:db8::1"}, []string{"2001:db8::1/128", "2001:db8::2/128"}},
		{[]string{"2001:db8::1%eth0", "127.0.0.3", "not an ip", "127.0.0.1"}, []string{"127.0.0.1/32", "127.0.0.3/32", "2001:db8::1/128"}},
	} {
		if got := SuggestNetworks(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("SuggestNetworks(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// A full /24 of callers is one prefix.
	var all []string
	for i := range 256 {
		all = append(all, fmt.Sprintf("198.51.100.%d", i))
	}
	if got := SuggestNetworks(all); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("a full /24: %q", got)
	}
	// The suggestion allows every caller and nothing else.
	if got := SuggestNetworks(all[1:]); len(got) != 8 || slices.Contains(got, "198.51.100.0/32") {
		t.Errorf("a /24 less its first address: %q", got)
	}
}
