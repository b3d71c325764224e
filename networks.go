package rotagate

import (
	"fmt"
	"net/netip"

	"go4.org/netipx"
)

// parseNetworks reads a client's allowed networks from the snapshot: nil
// (anywhere) when there are none. A prefix that does not parse rejects the
// snapshot, like any other fault in it.
func parseNetworks(cidrs []string) (*netipx.IPSet, error) {
	if len(cidrs) == 0 {
		return nil, nil
	}
	var b netipx.IPSetBuilder
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("allowed network %q: %v", s, err)
		}
		b.AddPrefix(p.Masked())
	}
	return b.IPSet()
}

// allows reports whether a request from ip (Caddy's client IP) may use the
// client: the client has no allowed networks, or ip is in one of them. An
// IPv4-mapped IPv6 address counts as its IPv4 address, and a zone is
// ignored; an address that does not parse is outside every network.
func (c *client) allows(ip string) bool {
	if c.networks == nil {
		return true
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return c.networks.Contains(a.WithZone("").Unmap())
}
