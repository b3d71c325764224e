package rules

import (
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// MaxAllowedCIDRs bounds the allowed networks of one client, after
// canonicalisation.
const MaxAllowedCIDRs = 256

// NormalizeCIDRs checks and canonicalises a client's allowed networks:
// IPv4 and IPv6 prefixes in CIDR notation, or bare addresses (one
// address: /32 or /128). A prefix with host bits set is refused rather
// than guessed at (10.0.0.1/8 may mean 10.0.0.0/8 or 10.0.0.1/32);
// IPv4-mapped IPv6 prefixes become their IPv4 form, since the edge matches
// IPv4-mapped callers as IPv4. The result is the smallest sorted set of
// prefixes covering exactly the same addresses (duplicates and prefixes
// inside others dropped, adjacent ones merged), IPv4 first; empty means
// anywhere.
func NormalizeCIDRs(in []string) ([]string, error) {
	var b netipx.IPSetBuilder
	for _, s := range in {
		p, err := parseNetwork(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		b.AddPrefix(p)
	}
	set, err := b.IPSet()
	if err != nil {
		return nil, err
	}
	out := prefixStrings(set.Prefixes())
	if len(out) > MaxAllowedCIDRs {
		return nil, invalidf("allowed_cidrs: at most %d networks (after merging), not %d", MaxAllowedCIDRs, len(out))
	}
	return out, nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, invalidf("allowed_cidrs: %q is not an IP address or CIDR prefix", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalidf("allowed_cidrs: %q is not a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, invalidf("allowed_cidrs: %q has host bits set; write %s for the network, or %s for the one address",
			s, p.Masked(), netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, invalidf("allowed_cidrs: %q mixes IPv4-mapped and other IPv6 addresses", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// SuggestNetworks is the smallest set of prefixes that covers exactly the
// given caller addresses: each address is its own /32 (IPv4) or /128
// (IPv6), and addresses merge into a shorter prefix only when every
// address of that prefix is among them (192.0.2.0 and 192.0.2.1 make
// 192.0.2.0/31; 192.0.2.1 and 192.0.2.2 stay two /32s). So it never allows
// an address that was not seen. IPv4-mapped addresses count as IPv4;
// strings that are no address are skipped.
func SuggestNetworks(ips []string) []string {
	var b netipx.IPSetBuilder
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			b.Add(a.WithZone("").Unmap())
		}
	}
	set, _ := b.IPSet() // only valid addresses were added
	return prefixStrings(set.Prefixes())
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
