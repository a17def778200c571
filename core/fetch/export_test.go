package fetch

import "net/netip"

// BlockedReason exposes the address classification to the black-box tests,
// which cannot reach public addresses offline.
func BlockedReason(ip netip.Addr) string { return blockedReason(ip) }
