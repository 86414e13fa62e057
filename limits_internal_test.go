package sipws

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestClientKey checks what the per-IP cap counts as one client: IPv4 (and
// IPv4-mapped IPv6) addresses one by one, IPv6 by the configured prefix.
func TestClientKey(t *testing.T) {
	cases := []struct {
		ip   string
		bits int
		want string // the key, as named in a 503
	}{
		{"192.0.2.1", 64, "192.0.2.1"},
		{"192.0.2.1", 1, "192.0.2.1"},
		{"::ffff:192.0.2.1", 64, "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"},
		{"2001:db8:1:ff:3:4:5:6", 56, "2001:db8:1::/56"},
		{"2001:db8:1:100::1", 56, "2001:db8:1:100::/56"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"2001:db8::1", 1, "::/1"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"::1", 64, "::/64"},
	}
	for _, tc := range cases {
		k := clientKey(netip.MustParseAddr(tc.ip), tc.bits)
		assert.Equal(t, tc.want, clientKeyString(k), "%s with /%d", tc.ip, tc.bits)
	}
	// Addresses with one key count together, others apart.
	a := clientKey(netip.MustParseAddr("2001:db8:0:1::1"), 64)
	assert.Equal(t, a, clientKey(netip.MustParseAddr("2001:db8:0:1:8000::1"), 64))
	assert.NotEqual(t, a, clientKey(netip.MustParseAddr("2001:db8:0:2::1"), 64))
	assert.Equal(t, clientKey(netip.MustParseAddr("192.0.2.1"), 64), clientKey(netip.MustParseAddr("::ffff:192.0.2.1"), 64))
}

// TestParseNode checks the nodes of X-Forwarded-For, X-Real-IP and
// Forwarded's for=: an address is taken with any port dropped; anything
// else is no address.
func TestParseNode(t *testing.T) {
	good := map[string]string{
		"192.0.2.1":             "192.0.2.1",
		"192.0.2.1:4711":        "192.0.2.1",
		"192.0.2.1:_obf.port-1": "192.0.2.1",
		"[2001:db8::1]:4711":    "2001:db8::1",
		"[2001:db8::1]":         "2001:db8::1",
		"[2001:db8::1]:_x":      "2001:db8::1",
		"2001:db8::1":           "2001:db8::1",
		"::ffff:192.0.2.1":      "192.0.2.1",
		"[::ffff:192.0.2.1]:80": "192.0.2.1",
		"0.0.0.0":               "0.0.0.0",
		"[2001:db8::1]:65535":   "2001:db8::1",
	}
	for in, want := range good {
		ip, ok := parseNode(in)
		if assert.True(t, ok, "%q", in) {
			assert.Equal(t, want, ip.String(), "%q", in)
		}
	}
	for _, in := range []string{
		"", "unknown", "_hidden", "not-an-ip", "192.0.2.1:", "192.0.2.1:x",
		"192.0.2.1:_", "192.0.2.1:_a b", "192.0.2.1:123456", "192.0.2.1:1:2",
		"[192.0.2.1]", "[192.0.2.1]:80", "[2001:db8::1", "[2001:db8::1]x",
		"[2001:db8::1]:", "fe80::1%eth0", "[fe80::1%eth0]:80", "2001:db8::1:80:",
		" 192.0.2.1", "192.0.2.1 ", "192.0.2.256", "198.51.100.200:0000000",
	} {
		_, ok := parseNode(in)
		assert.False(t, ok, "%q", in)
	}
}
