package sipws

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzForwardedClient gives clientOf a forwarding header whose left part a
// client wrote (any bytes a header line can hold) and to which the trusted
// proxy appended the client's real address, on the same line or a line of
// its own, as nginx and HAProxy do. Whatever the client wrote, the server
// must see the real address, with the proxy connection's port, and never
// panic.
func FuzzForwardedClient(f *testing.F) {
	for _, seed := range []string{
		"", "203.0.113.1", "203.0.113.1, 10.0.0.1", `for="203.0.113.1:5060"`,
		`for=203.0.113.1;proto=https, for=10.0.0.1`, `for="[2001:db8::1]:1`,
		"unknown", "_hidden", ",,,", `"`, ";;", "for=a=b", "[", "fe80::1%eth0",
		"127.0.0.1", "::ffff:10.0.0.1",
	} {
		for h := range 3 {
			f.Add(seed, uint8(h), false)
			f.Add(seed, uint8(h), true)
		}
	}
	const peerPort = 34567
	const realClient = "198.51.100.9"
	servers := map[string]*Server{}
	for _, h := range []string{headerXForwardedFor, headerForwarded, headerXRealIP} {
		s, err := New(Config{
			ForwardedHeader: h,
			TrustedProxies:  []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		})
		if err != nil {
			f.Fatal(err)
		}
		servers[h] = s
	}
	f.Fuzz(func(t *testing.T, spoof string, header uint8, ownLine bool) {
		if strings.ContainsAny(spoof, "\r\n\x00") {
			return // not a header line
		}
		name := []string{headerXForwardedFor, headerForwarded, headerXRealIP}[header%3]
		s := servers[name]
		added := realClient
		if name == headerForwarded {
			added = "for=" + realClient
		}
		r := &http.Request{Header: http.Header{}, RemoteAddr: "127.0.0.5:34567"}
		if ownLine {
			r.Header.Add(name, spoof)
			r.Header.Add(name, added)
		} else {
			r.Header.Add(name, spoof+", "+added)
		}
		// The other headers, spoofed too, must change nothing.
		for _, other := range []string{headerXForwardedFor, headerForwarded, headerXRealIP} {
			if other != name {
				r.Header.Add(other, spoof)
			}
		}
		cl := s.clientOf(r)
		want := netip.AddrPortFrom(netip.MustParseAddr(realClient), peerPort)
		if cl.addr != want {
			t.Fatalf("%s %q (own line %v): client %v, want %v", name, spoof, ownLine, cl.addr, want)
		}
	})
}
