package sipws_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dialFrom sends a handshake offering sip from the loopback address src.
func dialFrom(t testing.TB, addr, src string, extra ...string) (*rawClient, *http.Response) {
	t.Helper()
	return rawDialFrom(t, addr, src, handshakeRequest(addr, "sip", extra...))
}

func rawDialFrom(t testing.TB, addr, src, req string) (*rawClient, *http.Response) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: ioTimeout}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return handshakeOn(t, conn, req)
}

// handshakeOn sends req on an open connection and reads the response.
func handshakeOn(t testing.TB, conn net.Conn, req string) (*rawClient, *http.Response) {
	t.Helper()
	c := &rawClient{t: t, conn: conn}
	c.br = bufio.NewReader(conn)
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	_, err := conn.Write([]byte(req))
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.br, nil)
	require.NoError(t, err)
	c.resp = resp
	return c, resp
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxConns: 3})
	clients := make([]*rawClient, 3)
	for i := range clients {
		clients[i] = dialWS(t, ts.Addr, "sip")
		ts.nextOpened(t)
	}
	before := ts.Stats()
	_, resp := rawDial(t, ts.Addr, handshakeRequest(ts.Addr, "sip"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Equal(t, before.FailedHandshakes+1, ts.Stats().FailedHandshakes)
	assert.Equal(t, 3, ts.Registry().Len())

	// A connection that ends gives its slot back once its socket is closed.
	clients[0].sendClose(1000, "")
	clients[0].expectClose(1000, time.Second)
	ts.nextClosed(t)
	_ = clients[0].conn.Close()
	dialWhenFree(t, ts.Addr, "127.0.0.1")
	ts.nextOpened(t)
	assert.Equal(t, 3, ts.Registry().Len())
}

// dialWhenFree dials from src until the handshake is accepted: a slot given
// back when a socket closes is free a moment after the client closed it.
func dialWhenFree(t testing.TB, addr, src string, extra ...string) *rawClient {
	t.Helper()
	var c *rawClient
	require.Eventually(t, func() bool {
		cl, resp := dialFrom(t, addr, src, extra...)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			_ = cl.conn.Close()
			return false
		}
		c = cl
		return true
	}, ioTimeout, 5*time.Millisecond, "no slot came free for %s", src)
	return c
}

// A connection keeps its slot under the caps until its socket is closed, not
// only until the close handshake ends: a peer that completes the handshake
// and never sends its FIN holds it (for at most CloseTimeout).
func TestCapsHeldUntilSocketClosed(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxConns: 3, MaxConnsPerIP: 2, CloseTimeout: time.Minute})
	lingering := make([]*rawClient, 2)
	for i := range lingering {
		c, resp := dialFrom(t, ts.Addr, "127.0.0.2")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		ts.nextOpened(t)
		// The close handshake completes, the server's FIN comes; the
		// client keeps its socket open and sends no FIN.
		c.sendClose(1000, "")
		c.expectClose(1000, ioTimeout)
		ev := ts.nextClosed(t)
		require.Equal(t, sipws.CausePeer, ev.Cause)
		lingering[i] = c
	}
	require.Zero(t, ts.Registry().Len())

	_, resp := dialFrom(t, ts.Addr, "127.0.0.2")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "per-IP cap while both sockets are open")
	_, resp = dialFrom(t, ts.Addr, "127.0.0.3")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	ts.nextOpened(t)
	_, resp = dialFrom(t, ts.Addr, "127.0.0.4")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "total cap while both sockets are open")

	// The peer's FIN ends the linger: the socket is closed, the slot is back.
	_ = lingering[0].conn.Close()
	dialWhenFree(t, ts.Addr, "127.0.0.2")
	ts.nextOpened(t)
	_, resp = dialFrom(t, ts.Addr, "127.0.0.4")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "one slot came back, not more")
}

func TestMaxConnsPerIP(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxConnsPerIP: 2})
	for range 2 {
		_, resp := dialFrom(t, ts.Addr, "127.0.0.2")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		ts.nextOpened(t)
	}
	_, resp := dialFrom(t, ts.Addr, "127.0.0.2")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	// Another IP is not affected.
	_, resp = dialFrom(t, ts.Addr, "127.0.0.3")
	assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	ts.nextOpened(t)
}

func TestRefusedHandshakeGivesSlotBack(t *testing.T) {
	ts := startServer(t, sipws.Config{
		MaxConns:    1,
		CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") != "https://evil.test" },
	})
	for range 3 {
		_, resp := rawDial(t, ts.Addr, handshakeRequest(ts.Addr, "sip", "Origin: https://evil.test"))
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	}
	dialWS(t, ts.Addr, "sip")
	ts.nextOpened(t)
}

// TestTrustedProxyForwardedFor runs handshakes from a loopback "proxy" with
// forwarding headers and checks the client the server believes: only the one
// header Config.ForwardedHeader names is read, the chain is walked from the
// nearest hop to the right-most untrusted one, a hop that cannot be parsed
// stops the walk, and the port is always the TCP peer's.
func TestTrustedProxyForwardedFor(t *testing.T) {
	cases := []struct {
		name    string
		trusted []string
		header  string // Config.ForwardedHeader
		headers []string
		want    string // the client IP; its port must be the TCP peer's
		secure  bool
	}{
		{
			name:    "untrusted peer: headers ignored",
			headers: []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"},
			want:    "127.0.0.5",
		},
		{
			name:    "peer not in the trusted networks",
			trusted: []string{"127.0.0.9/32"},
			headers: []string{"X-Forwarded-For: 203.0.113.7", "Forwarded: for=203.0.113.8"},
			want:    "127.0.0.5",
		},
		{
			name:    "trusted proxy, X-Forwarded-For",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"},
			want:    "203.0.113.7",
			secure:  true,
		},
		{
			name:    "spoofed first entry is skipped: the nearest untrusted hop wins",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{"X-Forwarded-For: 198.51.100.66, 203.0.113.7, 127.0.0.6"},
			want:    "203.0.113.7",
		},
		{
			name:    "several X-Forwarded-For lines are one list, in order",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{"X-Forwarded-For: 198.51.100.66", "X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 127.0.0.6"},
			want:    "203.0.113.7",
		},
		{
			name:    "by default a client's own Forwarded is ignored",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{`Forwarded: for="192.0.2.60:5060";proto=https`, "X-Forwarded-For: 203.0.113.7"},
			want:    "203.0.113.7",
		},
		{
			name:    "by default Forwarded alone names nobody",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{`Forwarded: for=192.0.2.60;proto=https`},
			want:    "127.0.0.5",
		},
		{
			name:    "a port in X-Forwarded-For is not taken",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: 203.0.113.7:5060"},
			want:    "203.0.113.7",
		},
		{
			name:    "bare IPv6 in X-Forwarded-For",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: 2001:db8::7"},
			want:    "2001:db8::7",
		},
		{
			name:    "IPv4-mapped IPv6 is IPv4",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: [::ffff:203.0.113.7]:4711"},
			want:    "203.0.113.7",
		},
		{
			name:    "garbage keeps the peer",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: not-an-ip"},
			want:    "127.0.0.5",
		},
		{
			name:    "a zone is not an address",
			trusted: []string{"127.0.0.5/32"},
			headers: []string{"X-Forwarded-For: fe80::1%eth0"},
			want:    "127.0.0.5",
		},
		{
			name:    "garbage stops the walk at the last trusted hop",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{"X-Forwarded-For: 203.0.113.7, garbage, 127.0.0.6"},
			want:    "127.0.0.6",
		},
		{
			name:    "an empty element stops the walk",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{"X-Forwarded-For: 203.0.113.7,, 127.0.0.6"},
			want:    "127.0.0.6",
		},
		{
			name:    "all hops trusted: the farthest",
			trusted: []string{"127.0.0.0/8"},
			headers: []string{"X-Forwarded-For: 127.0.0.1, 127.0.0.6"},
			want:    "127.0.0.1",
		},
		{
			name:    "RFC 7239 Forwarded when named: its port is not taken",
			trusted: []string{"127.0.0.5/32"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for="[2001:db8::7]:4711";proto=https`},
			want:    "2001:db8::7",
			secure:  true,
		},
		{
			name:    "Forwarded named in any case; X-Forwarded-For and -Proto ignored",
			trusted: []string{"127.0.0.5/32"},
			header:  "forwarded",
			headers: []string{"Forwarded: for=192.0.2.60", "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"},
			want:    "192.0.2.60",
		},
		{
			name:    "Forwarded: the right-most untrusted element, across lines",
			trusted: []string{"127.0.0.0/8"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=198.51.100.66, for="203.0.113.7:1"`, `Forwarded: for=127.0.0.6;by=127.0.0.5`},
			want:    "203.0.113.7",
		},
		{
			name:    "Forwarded: proto is the chosen element's, not a spoofed one",
			trusted: []string{"127.0.0.0/8"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=198.51.100.66;proto=https, for=203.0.113.7;proto=http`},
			want:    "203.0.113.7",
		},
		{
			name:    "Forwarded: proto is the chosen element's, not the nearest proxy's",
			trusted: []string{"127.0.0.0/8"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=203.0.113.7;proto=https, for=127.0.0.6;proto=http`},
			want:    "203.0.113.7",
			secure:  true,
		},
		{
			name:    "Forwarded: unknown stops the walk",
			trusted: []string{"127.0.0.0/8"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=203.0.113.7, for=unknown, for=127.0.0.6`},
			want:    "127.0.0.6",
		},
		{
			name:    "Forwarded: an obfuscated node stops the walk",
			trusted: []string{"127.0.0.5/32"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=203.0.113.7, for=_hidden`},
			want:    "127.0.0.5",
		},
		{
			name:    "Forwarded: an element without for stops the walk",
			trusted: []string{"127.0.0.5/32"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=203.0.113.7, proto=https`},
			want:    "127.0.0.5",
		},
		{
			name:    "Forwarded: an unterminated quote stops the walk",
			trusted: []string{"127.0.0.5/32"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for="203.0.113.7`},
			want:    "127.0.0.5",
		},
		{
			name:    "Forwarded: two for= in one element stop the walk",
			trusted: []string{"127.0.0.5/32"},
			header:  "Forwarded",
			headers: []string{`Forwarded: for=203.0.113.7;for=198.51.100.66`},
			want:    "127.0.0.5",
		},
		{
			name:    "X-Real-IP when named",
			trusted: []string{"127.0.0.5/32"},
			header:  "X-Real-IP",
			headers: []string{"X-Real-IP: 203.0.113.7", "X-Forwarded-For: 198.51.100.66", "X-Forwarded-Proto: https"},
			want:    "203.0.113.7",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var nets []netip.Prefix
			for _, s := range tc.trusted {
				nets = append(nets, netip.MustParsePrefix(s))
			}
			ts := startServer(t, sipws.Config{TrustedProxies: nets, ForwardedHeader: tc.header})
			c, resp := dialFrom(t, ts.Addr, "127.0.0.5", tc.headers...)
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			conn := ts.nextOpened(t)
			peer := netip.MustParseAddrPort(c.conn.LocalAddr().String())
			want := netip.AddrPortFrom(netip.MustParseAddr(tc.want), peer.Port())
			assert.Equal(t, want.String(), conn.RemoteAddr().String(), "the client, with the TCP peer's port")
			assert.Equal(t, tc.secure, conn.Secure())
			d := ts.Registry().Dump(sipws.DumpQuery{RemoteIP: want.Addr()})
			require.Equal(t, 1, d.Total, "lookups see the forwarded client")
			assert.Equal(t, want.String(), d.Conns[0].RemoteAddr.String())
			got, ok := ts.Registry().ByRemoteAddr(want)
			require.True(t, ok)
			assert.Equal(t, conn.ID(), got.ID())
		})
	}
}

// TestClientForwardedBehindAppendingProxy is the attack of a client behind
// nginx or HAProxy, which append X-Forwarded-For and pass the client's own
// Forwarded through: with the default ForwardedHeader the client's Forwarded
// names nobody, so the per-IP cap holds and the dump shows the real client.
func TestClientForwardedBehindAppendingProxy(t *testing.T) {
	for _, realIP := range []string{"127.0.0.1", "198.51.100.7"} {
		t.Run(realIP, func(t *testing.T) {
			ts := startServer(t, sipws.Config{
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
				MaxConnsPerIP:  5,
			})
			upgraded := 0
			for i := range 10 {
				c, resp := dialFrom(t, ts.Addr, "127.0.0.5",
					fmt.Sprintf(`Forwarded: for="203.0.113.%d:5060"`, i+1),
					"X-Forwarded-For: "+realIP)
				if i < 5 {
					require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, "handshake %d", i+1)
					upgraded++
					conn := ts.nextOpened(t)
					peer := netip.MustParseAddrPort(c.conn.LocalAddr().String())
					assert.Equal(t, netip.AddrPortFrom(netip.MustParseAddr(realIP), peer.Port()).String(), conn.RemoteAddr().String())
					continue
				}
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "handshake %d past the per-IP cap of 5", i+1)
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				assert.Equal(t, "too many connections from "+realIP+"\n", string(body))
			}
			assert.Equal(t, 5, upgraded)
			d := ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1})
			require.Equal(t, 5, d.Total)
			for _, ci := range d.Conns {
				assert.Equal(t, realIP, ci.RemoteAddr.Addr().String())
				assert.NotEqual(t, uint16(5060), ci.RemoteAddr.Port())
			}
		})
	}
}

// TestPerIPCapIPv6Prefix checks that the per-IP cap counts an IPv6 client by
// its prefix (a /64 by default), an IPv4 one by its address, and an
// IPv4-mapped IPv6 address as IPv4. The clients are forwarded by a trusted
// proxy, since one host cannot have many loopback addresses of one /64.
func TestPerIPCapIPv6Prefix(t *testing.T) {
	type try struct {
		client string
		want   int    // HTTP status
		from   string // the 503's client, when refused
	}
	cases := []struct {
		name string
		bits int // Config.IPv6PrefixLen
		seq  []try
	}{
		{
			name: "default /64",
			seq: []try{
				{"2001:db8:1:2::1", 101, ""},
				{"2001:db8:1:2:ffff:ffff:ffff:ffff", 101, ""},
				{"2001:db8:1:2:abcd::9", 503, "2001:db8:1:2::/64"},
				{"2001:db8:1:3::1", 101, ""},
				{"2001:db8:1:3::2", 101, ""},
				{"2001:db8:1:3::3", 503, "2001:db8:1:3::/64"},
			},
		},
		{
			name: "/48",
			bits: 48,
			seq: []try{
				{"2001:db8:1:2::1", 101, ""},
				{"2001:db8:1:ffff::1", 101, ""},
				{"2001:db8:1:3::1", 503, "2001:db8:1::/48"},
				{"2001:db8:2::1", 101, ""},
			},
		},
		{
			name: "/128 counts addresses",
			bits: 128,
			seq: []try{
				{"2001:db8::1", 101, ""},
				{"2001:db8::1", 101, ""},
				{"2001:db8::2", 101, ""},
				{"2001:db8::1", 503, "2001:db8::1/128"},
			},
		},
		{
			name: "IPv4 counts addresses; mapped is IPv4",
			seq: []try{
				{"198.51.100.1", 101, ""},
				{"::ffff:198.51.100.1", 101, ""},
				{"198.51.100.2", 101, ""},
				{"198.51.100.1", 503, "198.51.100.1"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")},
				MaxConnsPerIP:  2,
				IPv6PrefixLen:  tc.bits,
			})
			for i, tr := range tc.seq {
				_, resp := dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: "+tr.client)
				require.Equal(t, tr.want, resp.StatusCode, "handshake %d from %s", i+1, tr.client)
				if tr.want == http.StatusSwitchingProtocols {
					ts.nextOpened(t)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				assert.Equal(t, "too many connections from "+tr.from+"\n", string(body))
			}
		})
	}
}

// TestPerIPv6PrefixSlotGivenBack checks that a connection counted by its
// /64 gives its slot back to that /64 when it ends.
func TestPerIPv6PrefixSlotGivenBack(t *testing.T) {
	ts := startServer(t, sipws.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")},
		MaxConnsPerIP:  1,
	})
	c, resp := dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 2001:db8::1")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	ts.nextOpened(t)
	_, resp = dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 2001:db8::2")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	c.sendClose(1000, "")
	c.expectClose(1000, time.Second)
	ts.nextClosed(t)
	// The slot is held until the socket is closed (after the close
	// handshake, the server waits for our FIN).
	_ = c.conn.Close()
	require.Eventually(t, func() bool {
		cl, resp := dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 2001:db8::2")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			_ = cl.conn.Close()
			return false
		}
		return true
	}, ioTimeout, 5*time.Millisecond, "the /64's slot never came back")
	ts.nextOpened(t)
}

func TestPerIPCapUsesForwardedClient(t *testing.T) {
	ts := startServer(t, sipws.Config{
		MaxConnsPerIP:  1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")},
	})
	_, resp := dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 203.0.113.1")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_, resp = dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 203.0.113.2")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, "another client behind the same proxy")
	_, resp = dialFrom(t, ts.Addr, "127.0.0.5", "X-Forwarded-For: 203.0.113.1")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

func TestLimitConfigErrors(t *testing.T) {
	for _, cfg := range []sipws.Config{
		{MaxConns: -1},
		{MaxConnsPerIP: -1},
		{TrustedProxies: []netip.Prefix{{}}},
		{ForwardedHeader: "X-Client-IP"},
		{ForwardedHeader: "X-Forwarded-Proto"},
		{ForwardedHeader: " Forwarded"},
		{IPv6PrefixLen: -1},
		{IPv6PrefixLen: 129},
	} {
		_, err := sipws.New(cfg)
		var ce *sipws.ConfigError
		assert.ErrorAs(t, err, &ce, "ForwardedHeader %q, IPv6PrefixLen %d", cfg.ForwardedHeader, cfg.IPv6PrefixLen)
	}
	for _, cfg := range []sipws.Config{
		{ForwardedHeader: "x-forwarded-for"},
		{ForwardedHeader: "FORWARDED"},
		{ForwardedHeader: "X-Real-Ip"},
		{IPv6PrefixLen: 1},
		{IPv6PrefixLen: 128},
	} {
		_, err := sipws.New(cfg)
		assert.NoError(t, err, "ForwardedHeader %q, IPv6PrefixLen %d", cfg.ForwardedHeader, cfg.IPv6PrefixLen)
	}
}
