package sipws_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks the Registry: lookups, ws.dump (Dump), the RPCs
// ws.ping, ws.pong and ws.close, and connection IDs.

// rgClock is a manual sipws.Clock: Now returns what the test set, and its
// tickers tick only when the test says so.
type rgClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*rgTicker
	// When hold is set, the next call of Now signals entered and waits for
	// release (once).
	hold             bool
	entered, release chan struct{}
}

func newRgClock() *rgClock { return &rgClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *rgClock) Now() time.Time {
	c.mu.Lock()
	if c.hold {
		c.hold = false
		entered, release := c.entered, c.release
		c.mu.Unlock()
		close(entered)
		<-release
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	return c.now
}

// holdNext makes the next call of Now wait until release is closed; entered
// is closed when that call starts.
func (c *rgClock) holdNext() (entered, release chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = true
	c.entered, c.release = make(chan struct{}), make(chan struct{})
	return c.entered, c.release
}

func (c *rgClock) NewTicker(time.Duration) sipws.Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	tk := &rgTicker{c: make(chan time.Time, 1)}
	c.tickers = append(c.tickers, tk)
	return tk
}

// set moves the clock to t.
func (c *rgClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// add moves the clock forward by d and returns the new time.
func (c *rgClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

type rgTicker struct{ c chan time.Time }

func (t *rgTicker) C() <-chan time.Time { return t.c }
func (t *rgTicker) Stop()               {}

// rgOpen opens n clients offering proto and returns them with their Conns,
// in order.
func rgOpen(t *testing.T, ts *testServer, n int, proto string) ([]*rawClient, []*sipws.Conn) {
	t.Helper()
	var cs []*rawClient
	var conns []*sipws.Conn
	for range n {
		cs = append(cs, dialWS(t, ts.Addr, proto))
		conns = append(conns, ts.nextOpened(t))
	}
	return cs, conns
}

// rgDialFrom opens a WebSocket connection from the local IP ip.
func rgDialFrom(t *testing.T, addr string, ip netip.Addr, proto string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))}
	conn, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(conn, handshakeRequest(addr, proto))
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	c.resp = resp
	return c
}

// rgInfo returns the Dump entry of connection id.
func rgInfo(t *testing.T, reg *sipws.Registry, id sipws.ConnID) sipws.ConnInfo {
	t.Helper()
	for _, ci := range reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1}).Conns {
		if ci.ID == id {
			return ci
		}
	}
	t.Fatalf("connection %d not in the dump", id)
	return sipws.ConnInfo{}
}

// rgIDs returns the IDs of a dump, in its order.
func rgIDs(cis []sipws.ConnInfo) []sipws.ConnID {
	ids := make([]sipws.ConnID, len(cis))
	for i, ci := range cis {
		ids[i] = ci.ID
	}
	return ids
}

// rgSortedIDs returns the IDs of conns in ascending order.
func rgSortedIDs(conns []*sipws.Conn) []sipws.ConnID {
	ids := make([]sipws.ConnID, len(conns))
	for i, c := range conns {
		ids[i] = c.ID()
	}
	slices.Sort(ids)
	return ids
}

func TestRegistryGetAndLen(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	assert.Equal(t, 0, reg.Len())
	cs, conns := rgOpen(t, ts, 3, "sip")
	assert.Equal(t, 3, reg.Len())
	for i, conn := range conns {
		got, ok := reg.Get(conn.ID())
		require.True(t, ok)
		assert.Same(t, conn, got)
		assert.Equal(t, clAddr(cs[i].conn.LocalAddr()), got.RemoteAddr())
	}
	got, ok := reg.Get(conns[2].ID() + 1000)
	assert.False(t, ok)
	assert.Nil(t, got)

	require.NoError(t, cs[1].conn.Close())
	ev := ts.nextClosed(t)
	require.Equal(t, conns[1].ID(), ev.ID)
	assert.Equal(t, 2, reg.Len())
	_, ok = reg.Get(conns[1].ID())
	assert.False(t, ok)
	_, ok = reg.Get(conns[0].ID())
	assert.True(t, ok)
}

func TestRegistryDumpDefaultLimit(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	const n = 60
	cs, conns := rgOpen(t, ts, n, "sip")
	all := rgSortedIDs(conns)

	d := reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0})
	assert.Equal(t, n, d.Total)
	assert.True(t, d.Truncated)
	require.Len(t, d.Conns, sipws.DefaultDumpLimit)
	require.Equal(t, 50, sipws.DefaultDumpLimit, "ws.dump lists 50 by default")
	assert.Equal(t, all[:50], rgIDs(d.Conns))

	d = reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1})
	assert.Equal(t, n, d.Total)
	assert.False(t, d.Truncated)
	assert.Equal(t, all, rgIDs(d.Conns))

	d = reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: n})
	assert.False(t, d.Truncated)
	assert.Len(t, d.Conns, n)

	d = reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 7})
	assert.True(t, d.Truncated)
	assert.Equal(t, all[:7], rgIDs(d.Conns))

	// Each entry describes its connection.
	byID := map[sipws.ConnID]int{}
	for i, c := range conns {
		byID[c.ID()] = i
	}
	for _, ci := range reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1}).Conns {
		i := byID[ci.ID]
		assert.Equal(t, clAddr(cs[i].conn.LocalAddr()), ci.RemoteAddr)
		assert.Equal(t, clAddr(cs[i].conn.RemoteAddr()), ci.LocalAddr)
		assert.Equal(t, sipws.SIP, ci.Subprotocol)
		assert.False(t, ci.Secure)
		assert.Equal(t, "OPEN", ci.State)
		assert.True(t, ci.Opened.Equal(conns[i].Opened()))
		assert.False(t, ci.AwaitingPong)
		assert.Zero(t, ci.RTT)
	}
}

func TestRegistryDumpOrders(t *testing.T) {
	clk := newRgClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{Keepalive: sipws.KeepaliveNone}, clk))
	reg := ts.Registry()
	t0 := clk.Now()

	// Five connections opened a second apart (clock time).
	const n = 5
	var cs []*rawClient
	var conns []*sipws.Conn
	lastUsed := map[sipws.ConnID]time.Time{}
	opened := map[sipws.ConnID]time.Time{}
	for i := range n {
		now := t0.Add(time.Duration(i) * time.Second)
		clk.set(now)
		c, conn := rgOpen(t, ts, 1, "sip")
		cs, conns = append(cs, c[0]), append(conns, conn[0])
		lastUsed[conn[0].ID()] = now
		opened[conn[0].ID()] = now
	}
	// Then activity on some of them, in an order unrelated to their IDs:
	// each sends a frame at its own clock time.
	for k, i := range []int{2, 0, 3} {
		now := clk.add(time.Duration(10+k) * time.Second)
		cs[i].sendText(fmt.Sprintf("activity %d", k))
		m := ts.nextMsg(t) // the frame has been read at clock time now
		require.Equal(t, conns[i].ID(), m.Conn.ID())
		lastUsed[conns[i].ID()] = now
	}
	// A ping counts as activity too.
	now := clk.add(30 * time.Second)
	cs[4].writeFrame(true, 0, 0x9, []byte("rg"), true)
	f := cs[4].mustReadFrame()
	require.Equal(t, byte(0xA), f.Op)
	lastUsed[conns[4].ID()] = now
	clk.add(time.Minute)

	for _, c := range conns {
		assert.True(t, lastUsed[c.ID()].Equal(c.LastUsed()), "Conn.LastUsed of %d: %v, want %v", c.ID(), c.LastUsed(), lastUsed[c.ID()])
	}

	// The expected orders, from the times the test set.
	byID := rgSortedIDs(conns)
	lru := slices.Clone(byID)
	slices.SortFunc(lru, func(a, b sipws.ConnID) int { return lastUsed[a].Compare(lastUsed[b]) })
	mru := slices.Clone(lru)
	slices.Reverse(mru)
	require.NotEqual(t, byID, lru, "the test must make activity differ from ID order")

	for _, tc := range []struct {
		order sipws.DumpOrder
		want  []sipws.ConnID
	}{
		{sipws.DumpByID, byID},
		{sipws.DumpLeastRecentlyUsed, lru},
		{sipws.DumpMostRecentlyUsed, mru},
	} {
		d := reg.Dump(sipws.DumpQuery{Order: tc.order, Limit: 0})
		assert.Equal(t, tc.want, rgIDs(d.Conns), "order %s", tc.order)
		assert.Equal(t, n, d.Total)
		assert.False(t, d.Truncated)
		for _, ci := range d.Conns {
			assert.True(t, lastUsed[ci.ID].Equal(ci.LastUsed), "LastUsed of %d", ci.ID)
			assert.True(t, opened[ci.ID].Equal(ci.Opened), "Opened of %d", ci.ID)
		}
		d = reg.Dump(sipws.DumpQuery{Order: tc.order, Limit: 2})
		assert.Equal(t, tc.want[:2], rgIDs(d.Conns), "order %s, limit 2", tc.order)
		assert.True(t, d.Truncated)
	}
	// Kamailio's used_desc lists the longest idle first: its first entry has
	// the oldest LastUsed.
	d := reg.Dump(sipws.DumpQuery{Order: sipws.DumpLeastRecentlyUsed, Limit: 0})
	assert.True(t, d.Conns[0].LastUsed.Before(d.Conns[n-1].LastUsed))
}

func TestParseDumpOrder(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sipws.DumpOrder
	}{
		{"id_hash", sipws.DumpByID},
		{"used_desc", sipws.DumpLeastRecentlyUsed},
		{"used_asc", sipws.DumpMostRecentlyUsed},
		{"", sipws.DumpByID},
	} {
		got, err := sipws.ParseDumpOrder(tc.in)
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
		if tc.in != "" {
			assert.Equal(t, tc.in, got.String(), "String round trip")
		}
	}
	for _, bad := range []string{"bogus", "used", "id", "used_descending"} {
		_, err := sipws.ParseDumpOrder(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestRegistryQueryPaging(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	const n, page = 120, 25
	_, conns := rgOpen(t, ts, n, "sip")
	all := rgSortedIDs(conns)

	seen := map[sipws.ConnID]int{}
	var walked []sipws.ConnID
	pages := 0
	for off := 0; ; off += page {
		d := reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Offset: off, Limit: page})
		assert.Equal(t, n, d.Total, "Total at offset %d", off)
		pages++
		for _, ci := range d.Conns {
			seen[ci.ID]++
			walked = append(walked, ci.ID)
		}
		if !d.Truncated {
			assert.Equal(t, n-off, len(d.Conns), "last page")
			break
		}
		require.Len(t, d.Conns, page, "page at offset %d", off)
		require.Less(t, pages, n, "paging does not end")
	}
	assert.Equal(t, (n+page-1)/page, pages)
	assert.Len(t, seen, n)
	for id, k := range seen {
		assert.Equal(t, 1, k, "connection %d listed %d times", id, k)
	}
	assert.Equal(t, all, walked, "pages in ID order, contiguous")

	// Past the end: nothing, not truncated.
	d := reg.Dump(sipws.DumpQuery{Offset: n + 5, Limit: page})
	assert.Empty(t, d.Conns)
	assert.Equal(t, n, d.Total)
	assert.False(t, d.Truncated)
	// Limit 0 is the default 50, also with an offset.
	d = reg.Dump(sipws.DumpQuery{Offset: 100})
	assert.Equal(t, all[100:], rgIDs(d.Conns))
	d = reg.Dump(sipws.DumpQuery{Offset: 10})
	assert.Equal(t, all[10:60], rgIDs(d.Conns))
	assert.True(t, d.Truncated)
}

func TestRegistryQuerySubprotocolFilter(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	var sipConns, msrpConns []*sipws.Conn
	for i := range 11 {
		if i%3 == 0 {
			_, c := rgOpen(t, ts, 1, "msrp")
			msrpConns = append(msrpConns, c[0])
		} else {
			_, c := rgOpen(t, ts, 1, "sip")
			sipConns = append(sipConns, c[0])
		}
	}
	for _, tc := range []struct {
		filter sipws.Subprotocol
		want   []sipws.ConnID
	}{
		{sipws.SIP, rgSortedIDs(sipConns)},
		{sipws.MSRP, rgSortedIDs(msrpConns)},
		{sipws.SIP | sipws.MSRP, rgSortedIDs(append(slices.Clone(sipConns), msrpConns...))},
		{0, rgSortedIDs(append(slices.Clone(sipConns), msrpConns...))},
	} {
		d := reg.Dump(sipws.DumpQuery{Subprotocol: tc.filter, Limit: -1})
		assert.Equal(t, tc.want, rgIDs(d.Conns), "filter %s", tc.filter)
		assert.Equal(t, len(tc.want), d.Total, "filter %s", tc.filter)
		assert.False(t, d.Truncated)
		for _, ci := range d.Conns {
			if tc.filter != 0 {
				assert.NotZero(t, ci.Subprotocol&tc.filter)
			}
		}
	}
	// Filtering and paging together.
	d := reg.Dump(sipws.DumpQuery{Subprotocol: sipws.SIP, Limit: 3, Offset: 2})
	assert.Equal(t, rgSortedIDs(sipConns)[2:5], rgIDs(d.Conns))
	assert.Equal(t, len(sipConns), d.Total)
	assert.True(t, d.Truncated)
}

func TestRegistryQueryRemoteIPFilter(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	ip1 := netip.MustParseAddr("127.0.0.1")
	ip2 := netip.MustParseAddr("127.0.0.2")
	want := map[netip.Addr][]sipws.ConnID{}
	for i := range 7 {
		ip := ip1
		if i%2 == 0 {
			ip = ip2
		}
		c := rgDialFrom(t, ts.Addr, ip, "sip")
		conn := ts.nextOpened(t)
		require.Equal(t, ip, conn.RemoteAddr().Addr())
		require.Equal(t, clAddr(c.conn.LocalAddr()), conn.RemoteAddr())
		want[ip] = append(want[ip], conn.ID())
	}
	for _, ip := range []netip.Addr{ip1, ip2} {
		d := reg.Dump(sipws.DumpQuery{RemoteIP: ip, Limit: -1})
		assert.Equal(t, want[ip], rgIDs(d.Conns), "from %s", ip)
		assert.Equal(t, len(want[ip]), d.Total)
		for _, ci := range d.Conns {
			assert.Equal(t, ip, ci.RemoteAddr.Addr())
		}
	}
	// The IPv4-mapped form of an address matches it too.
	d := reg.Dump(sipws.DumpQuery{RemoteIP: netip.AddrFrom16(ip2.As16()), Limit: -1})
	assert.Equal(t, want[ip2], rgIDs(d.Conns))
	// An address nobody came from.
	d = reg.Dump(sipws.DumpQuery{RemoteIP: netip.MustParseAddr("127.0.0.3"), Limit: -1})
	assert.Empty(t, d.Conns)
	assert.Zero(t, d.Total)
	// Combined with the sub-protocol filter.
	d = reg.Dump(sipws.DumpQuery{RemoteIP: ip2, Subprotocol: sipws.MSRP, Limit: -1})
	assert.Empty(t, d.Conns)
	// No filter: everyone.
	assert.Equal(t, 7, reg.Dump(sipws.DumpQuery{Limit: -1}).Total)
}

func TestRegistryPingAwaitsPong(t *testing.T) {
	clk := newRgClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{Keepalive: sipws.KeepaliveNone, PingData: []byte("rg-ping-data")}, clk))
	reg := ts.Registry()
	c, conn := clOpen(t, ts, "sip")
	other, oconn := clOpen(t, ts, "sip")

	ci := rgInfo(t, reg, conn.ID())
	assert.False(t, ci.AwaitingPong)
	assert.Zero(t, ci.RTT)

	require.NoError(t, reg.Ping(conn.ID()))
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x9), f.Op, "a Ping")
	assert.True(t, f.Fin)
	assert.Equal(t, "rg-ping-data", string(f.Payload), "Config.PingData")
	assert.True(t, rgInfo(t, reg, conn.ID()).AwaitingPong)
	assert.False(t, rgInfo(t, reg, oconn.ID()).AwaitingPong, "only the pinged connection awaits a pong")

	// Something else than a pong does not answer it.
	clk.add(100 * time.Millisecond)
	c.sendText("not a pong")
	ts.nextMsg(t)
	assert.True(t, rgInfo(t, reg, conn.ID()).AwaitingPong)

	// The pong comes 250 ms (clock time) after the ping.
	clk.add(150 * time.Millisecond)
	c.writeFrame(true, 0, 0xA, f.Payload, true)
	c.sendText("after the pong") // read in order: once delivered, the pong was handled
	ts.nextMsg(t)
	ci = rgInfo(t, reg, conn.ID())
	assert.False(t, ci.AwaitingPong)
	assert.Equal(t, 250*time.Millisecond, ci.RTT)
	assert.Positive(t, ci.RTT)

	// The other connection saw nothing.
	other.sendText("x")
	assert.Equal(t, oconn.ID(), ts.nextMsg(t).Conn.ID())
	assert.Zero(t, rgInfo(t, reg, oconn.ID()).RTT)
}

func TestRegistryPongUnsolicited(t *testing.T) {
	ts := startServer(t, sipws.Config{Keepalive: sipws.KeepaliveNone, PingData: []byte("rg-pong-data"),
		OnMessage: func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) }})
	reg := ts.Registry()
	c, conn := clOpen(t, ts, "msrp")
	require.NoError(t, reg.Pong(conn.ID()))
	f := c.mustReadFrame()
	assert.Equal(t, byte(0xA), f.Op, "a Pong")
	assert.True(t, f.Fin)
	assert.Equal(t, "rg-pong-data", string(f.Payload))
	ci := rgInfo(t, reg, conn.ID())
	assert.False(t, ci.AwaitingPong)
	// Nothing else was sent, and the connection goes on.
	c.sendText("echo")
	f = c.mustReadFrame()
	assert.Equal(t, byte(0x1), f.Op)
	assert.Equal(t, "echo", string(f.Payload))
}

func TestRegistryUnknownIDs(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	c, conn := clOpen(t, ts, "sip")
	gone := conn.ID()
	require.NoError(t, c.conn.Close())
	require.Equal(t, gone, ts.nextClosed(t).ID)
	_, live := clOpen(t, ts, "sip")

	for _, id := range []sipws.ConnID{0, gone, live.ID() + 1, 1 << 40} {
		assert.ErrorIs(t, reg.Ping(id), sipws.ErrNotFound, "Ping(%d)", id)
		assert.ErrorIs(t, reg.Pong(id), sipws.ErrNotFound, "Pong(%d)", id)
		assert.ErrorIs(t, reg.Close(id, 0, ""), sipws.ErrNotFound, "Close(%d)", id)
		_, ok := reg.Get(id)
		assert.False(t, ok, "Get(%d)", id)
	}
	// The live one is untouched.
	_, ok := reg.Get(live.ID())
	assert.True(t, ok)
	ts.noMoreClosed(t, clQuiet)
}

func TestRegistryIDsNeverReused(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	reg := ts.Registry()
	const cycles = 200
	seen := map[sipws.ConnID]bool{}
	var prev sipws.ConnID
	// One connection stays open throughout.
	_, keep := clOpen(t, ts, "msrp")
	seen[keep.ID()] = true
	prev = keep.ID()
	for i := range cycles {
		proto := "sip"
		if i%2 == 1 {
			proto = "msrp"
		}
		c, conn := clOpen(t, ts, proto)
		id := conn.ID()
		require.False(t, seen[id], "ID %d reused (cycle %d)", id, i)
		require.Greater(t, id, prev, "IDs increase")
		seen[id] = true
		prev = id
		if i%2 == 0 {
			require.NoError(t, c.conn.Close())
		} else {
			require.NoError(t, reg.Close(id, 0, ""))
			clReadClose(t, c)
			c.sendClose(1000, "")
			c.expectEOF(ioTimeout)
		}
		ev := ts.nextClosed(t)
		require.Equal(t, id, ev.ID)
		_, ok := reg.Get(id)
		require.False(t, ok)
	}
	assert.Len(t, seen, cycles+1)
	assert.Equal(t, 1, reg.Len())
	assert.Equal(t, []sipws.ConnID{keep.ID()}, rgIDs(reg.Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}).Conns))
}

// Registry.Ping notes the Ping (its time, AwaitingPong) before the frame can
// go out, so that a Pong, however fast, always finds it: while the Ping's
// clock reading is held, nothing is on the wire yet.
func TestRegistryPingAnsweredBeforePingReturns(t *testing.T) {
	clk := newRgClock()
	ts := startServer(t, sipws.WithClock(sipws.Config{Keepalive: sipws.KeepaliveNone, PingData: []byte("rg-early")}, clk))
	reg := ts.Registry()
	c, conn := clOpen(t, ts, "sip")

	entered, release := clk.holdNext()
	pinged := make(chan error, 1)
	go func() { pinged <- reg.Ping(conn.ID()) }()
	select {
	case <-entered:
	case <-time.After(ioTimeout):
		t.Fatal("Registry.Ping did not read the clock")
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(clQuiet))
	_, err := c.br.Peek(1)
	require.Error(t, err, "the Ping went out before it was noted")
	close(release)
	require.NoError(t, <-pinged)

	f := c.mustReadFrame()
	require.Equal(t, byte(0x9), f.Op)
	c.writeFrame(true, 0, 0xA, f.Payload, true)
	c.sendText("after the pong")
	ts.nextMsg(t)
	assert.False(t, rgInfo(t, reg, conn.ID()).AwaitingPong)
}

// rgDialSamePort opens n TCP connections to addr from 127.0.0.10,
// 127.0.0.11, … all from one source port, so that behind a trusted proxy
// with one X-Forwarded-For they are clients with one address (the client's
// IP, the proxy connection's port). A port already taken on one of the
// source addresses makes it try another, a bounded number of times.
func rgDialSamePort(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var lastErr error
	for range 20 {
		conns := make([]net.Conn, 0, n)
		var port int
		for i := range n {
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i)), Port: port}
			d := net.Dialer{LocalAddr: src, Timeout: ioTimeout}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				lastErr = err
				break
			}
			conns = append(conns, c)
			port = c.LocalAddr().(*net.TCPAddr).Port
		}
		if len(conns) == n {
			for _, c := range conns {
				t.Cleanup(func() { _ = c.Close() })
			}
			return conns
		}
		for _, c := range conns {
			_ = c.Close()
		}
	}
	t.Fatalf("no common source port for %d connections: %v", n, lastErr)
	return nil
}

// TestRegistryByRemoteAddrShared checks that connections sharing one remote
// address (clients behind a NAT, through several proxies) are each found by
// ByRemoteAddr as long as one is open: the most recent open one is returned,
// and one that ends never takes another's entry with it.
func TestRegistryByRemoteAddrShared(t *testing.T) {
	ts := startServer(t, sipws.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	reg := ts.Registry()
	tcp := rgDialSamePort(t, ts.Addr, 4)
	clients := make([]*rawClient, len(tcp))
	conns := make([]*sipws.Conn, len(tcp))
	for i, nc := range tcp {
		var resp *http.Response
		clients[i], resp = handshakeOn(t, nc, handshakeRequest(ts.Addr, "sip", "X-Forwarded-For: 203.0.113.7"))
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		conns[i] = ts.nextOpened(t)
	}
	shared := conns[0].RemoteAddr()
	for _, c := range conns {
		require.Equal(t, shared, c.RemoteAddr(), "one address for all")
	}
	assert.Equal(t, len(conns), reg.Dump(sipws.DumpQuery{RemoteIP: shared.Addr()}).Total)

	lookup := func() sipws.ConnID {
		t.Helper()
		c, ok := reg.ByRemoteAddr(shared)
		if !ok {
			return 0
		}
		return c.ID()
	}
	end := func(i int) {
		t.Helper()
		clients[i].sendClose(1000, "")
		clients[i].expectClose(1000, time.Second)
		assert.Equal(t, conns[i].ID(), ts.nextClosed(t).ID)
	}
	assert.Equal(t, conns[3].ID(), lookup(), "the most recent")
	end(1) // one in the middle
	assert.Equal(t, conns[3].ID(), lookup())
	end(3) // the most recent
	assert.Equal(t, conns[2].ID(), lookup(), "the most recent still open")
	end(0) // the oldest
	assert.Equal(t, conns[2].ID(), lookup())
	end(2)
	_, ok := reg.ByRemoteAddr(shared)
	assert.False(t, ok, "gone with the last of them")
}
