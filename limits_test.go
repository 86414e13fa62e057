package sipws_test

import (
	"bufio"
	"context"
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
	c := &rawClient{t: t, conn: conn}
	c.br = bufio.NewReader(conn)
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = conn.Write([]byte(req))
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
func dialWhenFree(t testing.TB, addr, src string) *rawClient {
	t.Helper()
	var c *rawClient
	require.Eventually(t, func() bool {
		cl, resp := dialFrom(t, addr, src)
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
		require.Equal(t, sipws.InitiatorPeer, ev.Initiator)
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

func TestTrustedProxyForwardedFor(t *testing.T) {
	cases := []struct {
		name    string
		trusted []string
		src     string
		headers []string
		want    string
		secure  bool
	}{
		{
			name:    "untrusted peer: headers ignored",
			trusted: nil,
			src:     "127.0.0.5",
			headers: []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"},
			want:    "127.0.0.5",
		},
		{
			name:    "peer not in the trusted networks",
			trusted: []string{"127.0.0.9/32"},
			src:     "127.0.0.5",
			headers: []string{"X-Forwarded-For: 203.0.113.7"},
			want:    "127.0.0.5",
		},
		{
			name:    "trusted proxy, X-Forwarded-For",
			trusted: []string{"127.0.0.5/32"},
			src:     "127.0.0.5",
			headers: []string{"X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"},
			want:    "203.0.113.7",
			secure:  true,
		},
		{
			name:    "spoofed first entry is skipped: the nearest untrusted hop wins",
			trusted: []string{"127.0.0.0/8"},
			src:     "127.0.0.5",
			headers: []string{"X-Forwarded-For: 198.51.100.66, 203.0.113.7, 127.0.0.6"},
			want:    "203.0.113.7",
		},
		{
			name:    "RFC 7239 Forwarded with port and proto",
			trusted: []string{"127.0.0.5/32"},
			src:     "127.0.0.5",
			headers: []string{`Forwarded: for="[2001:db8::7]:4711";proto=https`},
			want:    "[2001:db8::7]:4711",
			secure:  true,
		},
		{
			name:    "Forwarded wins over X-Forwarded-For",
			trusted: []string{"127.0.0.5/32"},
			src:     "127.0.0.5",
			headers: []string{"Forwarded: for=192.0.2.60", "X-Forwarded-For: 203.0.113.7"},
			want:    "192.0.2.60",
		},
		{
			name:    "garbage keeps the peer",
			trusted: []string{"127.0.0.5/32"},
			src:     "127.0.0.5",
			headers: []string{"X-Forwarded-For: not-an-ip"},
			want:    "127.0.0.5",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var nets []netip.Prefix
			for _, s := range tc.trusted {
				nets = append(nets, netip.MustParsePrefix(s))
			}
			ts := startServer(t, sipws.Config{TrustedProxies: nets})
			_, resp := dialFrom(t, ts.Addr, tc.src, tc.headers...)
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			conn := ts.nextOpened(t)
			got := conn.RemoteAddr()
			if want, err := netip.ParseAddrPort(tc.want); err == nil {
				assert.Equal(t, want, got)
			} else {
				assert.Equal(t, netip.MustParseAddr(tc.want), got.Addr())
				assert.NotZero(t, got.Port(), "the proxy connection's port is kept")
			}
			assert.Equal(t, tc.secure, conn.Secure())
			d := ts.Registry().Query(sipws.DumpQuery{RemoteIP: got.Addr()})
			assert.Equal(t, 1, d.Total, "lookups see the forwarded client")
		})
	}
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
	} {
		_, err := sipws.New(cfg)
		var ce *sipws.ConfigError
		assert.ErrorAs(t, err, &ce)
	}
}
