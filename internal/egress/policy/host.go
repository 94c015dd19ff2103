package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// hostPattern is a compiled Rule.Host: a name, a "*." suffix or an IP
// prefix (a bare IP is a /32 or /128).
type hostPattern struct {
	name     string // exact name, or the suffix ".example.com" for wildcards
	wildcard bool
	prefix   netip.Prefix
}

func parseHost(s string) (hostPattern, error) {
	h := NormalizeHost(s)
	if h == "" {
		return hostPattern{}, fmt.Errorf("host is empty")
	}
	if p, err := netip.ParsePrefix(h); err == nil {
		return hostPattern{prefix: netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()}, nil
	}
	if a, err := netip.ParseAddr(h); err == nil {
		a = a.Unmap()
		return hostPattern{prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		if !validName(rest) || !strings.Contains(rest, ".") {
			return hostPattern{}, fmt.Errorf("%q: a wildcard needs a domain with at least two labels after \"*.\"", s)
		}
		return hostPattern{name: "." + rest, wildcard: true}, nil
	}
	if !validName(h) {
		return hostPattern{}, fmt.Errorf("%q is not a DNS name, IP or CIDR", s)
	}
	return hostPattern{name: h}, nil
}

// NormalizeHost lowercases a host, drops a trailing dot and IPv6
// brackets, so "GitHub.com." and "github.com" compare equal.
func NormalizeHost(s string) string {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimSuffix(h, ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return h
}

// validName accepts LDH names (plus '_', which real zones use), labels of
// 1-63 bytes, 253 bytes in all.
func validName(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// match reports whether the pattern covers a normalized host, or, for IP
// patterns, the address being dialed.
func (p hostPattern) match(host string, hostIP, dialIP netip.Addr) bool {
	if p.prefix.IsValid() {
		if hostIP.IsValid() {
			return p.prefix.Contains(hostIP)
		}
		return dialIP.IsValid() && p.prefix.Contains(dialIP.Unmap())
	}
	if hostIP.IsValid() {
		return false
	}
	if p.wildcard {
		return len(host) > len(p.name) && strings.HasSuffix(host, p.name)
	}
	return host == p.name
}
