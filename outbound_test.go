package sipws_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCRLFKeepaliveAnswered(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c := dialWS(t, ts.Addr, "sip")
	ts.nextOpened(t)
	for _, op := range []byte{0x1, 0x2} {
		c.writeFrame(true, 0, op, []byte("\r\n\r\n"), true)
		f := c.mustReadFrame()
		assert.Equal(t, op, f.Op, "same frame type")
		assert.Equal(t, "\r\n", string(f.Payload))
	}
	ts.noMsg(t, quiet)
	// Anything else is delivered as it is.
	c.sendText("\r\n")
	assert.Equal(t, "\r\n", string(ts.nextMsg(t).Msg.Data))
}

func TestCRLFOnMSRPIsAMessage(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c := dialWS(t, ts.Addr, "msrp")
	ts.nextOpened(t)
	c.sendText("\r\n\r\n")
	assert.Equal(t, "\r\n\r\n", string(ts.nextMsg(t).Msg.Data))
}

func TestByRemoteAddr(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	a, _ := dialFrom(t, ts.Addr, "127.0.0.2")
	ca := ts.nextOpened(t)
	_, _ = dialFrom(t, ts.Addr, "127.0.0.3")
	cb := ts.nextOpened(t)

	local := a.conn.LocalAddr().String()
	ap := netip.MustParseAddrPort(local)
	got, ok := ts.Registry().ByRemoteAddr(ap)
	require.True(t, ok)
	assert.Equal(t, ca.ID(), got.ID())
	mapped := netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	got, ok = ts.Registry().ByRemoteAddr(mapped)
	require.True(t, ok, "IPv4-mapped form matches")
	assert.Equal(t, ca.ID(), got.ID())
	got, ok = ts.Registry().ByRemoteAddr(cb.RemoteAddr())
	require.True(t, ok)
	assert.Equal(t, cb.ID(), got.ID())

	a.sendClose(1000, "")
	a.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, ok = ts.Registry().ByRemoteAddr(ap)
	assert.False(t, ok, "gone with the connection")
}

const (
	obAlice = "sip:alice@example.com"
	obInst  = `"<urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>"`
)

// obStillOpen checks that conn was not closed: a message sent on it arrives.
func obStillOpen(t *testing.T, conn *sipws.Conn, client *rawClient) {
	t.Helper()
	require.NoError(t, conn.Send([]byte("still open")))
	f := client.mustReadFrame()
	require.Equal(t, byte(0x1), f.Op)
	require.Equal(t, "still open", string(f.Payload))
}

func TestBindInstanceReplacesOldFlow(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	old := dialWS(t, ts.Addr, "sip")
	co := ts.nextOpened(t)
	replaced, err := co.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	assert.Nil(t, replaced)
	got, ok := ts.Registry().ByInstance(`"Alice" <sip:alice@EXAMPLE.com>;tag=1928301774`, "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>", 1)
	require.True(t, ok, "AOR and instance compare without regard to display name, brackets, tag, host case, quotes or UUID case")
	assert.Equal(t, co.ID(), got.ID())

	// Another reg-id of the same instance is another flow: both live.
	other := dialWS(t, ts.Addr, "sip")
	c2 := ts.nextOpened(t)
	replaced, err = c2.BindInstance(obAlice, obInst, 2)
	require.NoError(t, err)
	assert.Nil(t, replaced)

	// The phone reconnects on reg-id 1: the old connection is closed.
	newc := dialWS(t, ts.Addr, "sip")
	cn := ts.nextOpened(t)
	replaced, err = cn.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	require.NotNil(t, replaced)
	assert.Equal(t, co.ID(), replaced.ID())
	f := old.mustReadFrame()
	require.Equal(t, byte(0x8), f.Op)
	code, reason := f.closeCode()
	assert.Equal(t, uint16(1000), code)
	assert.Equal(t, sipws.ReplacedReason, reason)
	old.sendClose(code, "")
	old.expectEOF(time.Second)
	ev := ts.nextClosed(t)
	assert.Equal(t, co.ID(), ev.ID)
	assert.Equal(t, sipws.CauseReplaced, ev.Cause)
	assert.False(t, sipws.CauseFailed(ev.Cause))
	obStillOpen(t, c2, other)

	got, ok = ts.Registry().ByInstance(obAlice, obInst, 1)
	require.True(t, ok)
	assert.Equal(t, cn.ID(), got.ID())

	// When the new one ends, the binding goes with it.
	newc.sendClose(1000, "")
	newc.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, ok = ts.Registry().ByInstance(obAlice, obInst, 1)
	assert.False(t, ok)
	_, ok = ts.Registry().ByInstance(obAlice, obInst, 2)
	assert.True(t, ok)

	// A connection that has ended cannot be bound.
	_, err = cn.BindInstance(obAlice, obInst, 1)
	assert.ErrorIs(t, err, sipws.ErrClosed)
}

// Mallory registers her own AOR with alice's +sip.instance and reg-id: a
// flow is per AOR, instance and reg-id (RFC 5626 §6), so alice's connection
// is neither closed nor taken over.
func TestBindInstanceOtherAORNeverReplaces(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	aliceClient := dialWS(t, ts.Addr, "sip")
	alice := ts.nextOpened(t)
	dialWS(t, ts.Addr, "sip")
	mallory := ts.nextOpened(t)

	replaced, err := alice.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	require.Nil(t, replaced)
	for _, aor := range []string{"sip:mallory@example.com", "sips:alice@example.com", "sip:alice@example.com:5060", "sip:Alice@example.com", "sip:alice@example.org"} {
		replaced, err = mallory.BindInstance(aor, obInst, 1)
		require.NoError(t, err, aor)
		if replaced != nil {
			t.Fatalf("binding %s replaced connection %d (alice is %d)", aor, replaced.ID(), alice.ID())
		}
		got, ok := ts.Registry().ByInstance(obAlice, obInst, 1)
		require.True(t, ok, aor)
		assert.Equal(t, alice.ID(), got.ID(), "ByInstance of alice after %s", aor)
		got, ok = ts.Registry().ByInstance(aor, obInst, 1)
		require.True(t, ok, aor)
		assert.Equal(t, mallory.ID(), got.ID(), aor)
	}
	obStillOpen(t, alice, aliceClient)
}

// Spellings of one AOR are one flow; what RFC 3261 §19.1.4 tells apart is
// another.
func TestBindInstanceAORNormalization(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	dialWS(t, ts.Addr, "sip")
	c := ts.nextOpened(t)
	const inst = "urn:uuid:00000000-0000-0000-0000-000000000001"
	_, err := c.BindInstance("sip:al%69ce;day=x@Example.COM:05060;user=phone?subject=y", inst, 1)
	require.NoError(t, err)
	same := []string{
		"sip:alice;day=x@example.com:5060",
		"SIP:alice;day=x@EXAMPLE.COM:5060",
		"<sip:alice;day=x@example.com:5060;transport=ws>",
		`"Alice" <sip:%61lice;day=x@example.com:5060>;tag=abc`,
		"Alice <sip:alice;day%3dx@example.com:5060>",
		"  sip:alice;day=x@example.com:5060;lr",
	}
	for _, aor := range same {
		got, ok := ts.Registry().ByInstance(aor, inst, 1)
		if assert.True(t, ok, aor) {
			assert.Equal(t, c.ID(), got.ID(), aor)
		}
	}
	different := []string{
		"sip:alice;day=x@example.com",       // no port is not port 5060
		"sips:alice;day=x@example.com:5060", // sips is not sip
		"sip:Alice;day=x@example.com:5060",  // the user part keeps its case
		"sip:alice;day=X@example.com:5060",
		"sip:alice@example.com:5060",
		"sip:alice;day=x:pw@example.com:5060", // a password is part of it
		"sip:example.com:5060",
	}
	for _, aor := range different {
		_, ok := ts.Registry().ByInstance(aor, inst, 1)
		assert.False(t, ok, aor)
	}
	// An IPv6 host, and escapes that stay escaped.
	_, err = c.BindInstance("sip:a%20b@[2001:DB8::1]:5061", inst, 1)
	require.NoError(t, err)
	got, ok := ts.Registry().ByInstance("<sip:a%20b@[2001:db8::1]:5061;transport=ws>", inst, 1)
	require.True(t, ok)
	assert.Equal(t, c.ID(), got.ID())
}

// The +sip.instance is compared as its URN: quotes, brackets and white
// space go, and so does the case of "urn:", of the namespace and of a UUID;
// the rest of another URN keeps its case.
func TestBindInstanceInstanceNormalization(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	dialWS(t, ts.Addr, "sip")
	c := ts.nextOpened(t)
	_, err := c.BindInstance(obAlice, ` "<URN:UUID:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>" `, 1)
	require.NoError(t, err)
	for _, inst := range []string{"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "<urn:UUID:f81d4fae-7dec-11d0-A765-00a0c91e6bf6>", obInst} {
		got, ok := ts.Registry().ByInstance(obAlice, inst, 1)
		if assert.True(t, ok, inst) {
			assert.Equal(t, c.ID(), got.ID(), inst)
		}
	}
	_, err = c.BindInstance("sip:bob@example.com", `"<urn:Example:Phone-AB>"`, 1)
	require.NoError(t, err)
	_, ok := ts.Registry().ByInstance("sip:bob@example.com", "URN:example:Phone-AB", 1)
	assert.True(t, ok, "urn and the namespace are case-insensitive")
	_, ok = ts.Registry().ByInstance("sip:bob@example.com", "urn:example:phone-ab", 1)
	assert.False(t, ok, "the rest of a non-UUID URN keeps its case")
}

func TestBindInstanceBadArguments(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	dialWS(t, ts.Addr, "sip")
	c := ts.nextOpened(t)
	long := strings.Repeat("a", 260)
	cases := []struct{ aor, inst, want string }{
		{"", obInst, "AOR"},
		{"tel:+15551234567", obInst, "not a sip or sips URI"},
		{"alice@example.com", obInst, "not a sip or sips URI"},
		{"sip:@example.com", obInst, "empty user part"},
		{"sip:alice@", obInst, "bad host"},
		{"sip:alice@exa mple.com", obInst, "white space"},
		{"sip:alice@example.com, sip:bob@example.com", obInst, "comma"},
		{"Alice <sip:alice@example.com", obInst, "no URI"},
		{"sip:alice@example.com:http", obInst, "bad port"},
		{"sip:alice@example.com:65536", obInst, "bad port"},
		{"sip:alice@[2001:db8::1", obInst, "bad IPv6"},
		{"sip:al%6@example.com", obInst, "bad escape"},
		{"sip:al{ce@example.com", obInst, "character"},
		{"sip:alice@ex_ample.com", obInst, "bad host"},
		{"sip:" + long + "@example.com", obInst, "limit is 256"},
		{obAlice, "", "empty +sip.instance"},
		{obAlice, `" <> "`, "empty +sip.instance"},
		{obAlice, "urn:x:" + long, "limit is 256"},
	}
	for _, tc := range cases {
		_, err := c.BindInstance(tc.aor, tc.inst, 1)
		require.Error(t, err, "%q %q", tc.aor, tc.inst)
		assert.Contains(t, err.Error(), tc.want, "%q %q", tc.aor, tc.inst)
		_, ok := ts.Registry().ByInstance(tc.aor, tc.inst, 1)
		assert.False(t, ok)
	}
	_, err := c.BindInstance(obAlice, obInst, -1)
	assert.ErrorContains(t, err, "negative reg-id")
}

// One connection may carry the flows of several AORs, each keeping its own
// binding; a second binding for the same AOR moves that AOR's flow; past 16
// AORs binding fails, and nothing else changes.
func TestBindInstanceSeveralAORs(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	client := dialWS(t, ts.Addr, "sip")
	c := ts.nextOpened(t)
	aor := func(i int) string { return fmt.Sprintf("sip:user%d@example.com", i) }
	for i := range 16 {
		replaced, err := c.BindInstance(aor(i), obInst, 1)
		require.NoError(t, err)
		require.Nil(t, replaced)
	}
	for i := range 16 {
		got, ok := ts.Registry().ByInstance(aor(i), obInst, 1)
		require.True(t, ok, aor(i))
		assert.Equal(t, c.ID(), got.ID())
	}
	_, err := c.BindInstance(aor(16), obInst, 1)
	require.ErrorContains(t, err, "16 AORs")
	_, ok := ts.Registry().ByInstance(aor(16), obInst, 1)
	assert.False(t, ok)

	// Binding again for a bound AOR is fine, the same flow or another.
	replaced, err := c.BindInstance(aor(3), obInst, 1)
	require.NoError(t, err)
	assert.Nil(t, replaced)
	replaced, err = c.BindInstance(aor(3), obInst, 2)
	require.NoError(t, err)
	assert.Nil(t, replaced)
	_, ok = ts.Registry().ByInstance(aor(3), obInst, 1)
	assert.False(t, ok, "the flow of that AOR moved to reg-id 2")
	_, ok = ts.Registry().ByInstance(aor(3), obInst, 2)
	assert.True(t, ok)
	obStillOpen(t, c, client)

	// Unbinding one makes room for another.
	c.UnbindInstance(aor(0), obInst, 1)
	_, err = c.BindInstance(aor(16), obInst, 1)
	require.NoError(t, err)
}

// UnbindInstance removes a connection's own binding and leaves the
// connection open; a connection whose flow was taken over cannot unbind the
// new owner.
func TestUnbindInstance(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	firstClient := dialWS(t, ts.Addr, "sip")
	first := ts.nextOpened(t)
	secondClient := dialWS(t, ts.Addr, "sip")
	second := ts.nextOpened(t)

	_, err := first.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	first.UnbindInstance("<sip:alice@EXAMPLE.com>", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", 1)
	_, ok := ts.Registry().ByInstance(obAlice, obInst, 1)
	assert.False(t, ok)
	obStillOpen(t, first, firstClient)

	// Unbinding what is not bound, or with bad arguments, does nothing.
	first.UnbindInstance(obAlice, obInst, 1)
	first.UnbindInstance("tel:1", "", -1)

	// first binds again, then second takes the flow over; first's late
	// unbinding leaves second's binding alone.
	_, err = first.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	replaced, err := second.BindInstance(obAlice, obInst, 1)
	require.NoError(t, err)
	require.NotNil(t, replaced)
	assert.Equal(t, first.ID(), replaced.ID())
	first.UnbindInstance(obAlice, obInst, 1)
	got, ok := ts.Registry().ByInstance(obAlice, obInst, 1)
	require.True(t, ok)
	assert.Equal(t, second.ID(), got.ID())
	obStillOpen(t, second, secondClient)
	second.UnbindInstance(obAlice, obInst, 1)
	_, ok = ts.Registry().ByInstance(obAlice, obInst, 1)
	assert.False(t, ok)
}

func TestMSRPSessionMapping(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	a := dialWS(t, ts.Addr, "msrp")
	ca := ts.nextOpened(t)
	dialWS(t, ts.Addr, "msrp")
	cb := ts.nextOpened(t)

	require.NoError(t, ca.MapMSRPSession("s1a"))
	require.NoError(t, ca.MapMSRPSession("s1b"))
	require.NoError(t, ca.MapMSRPSession("s1a"), "mapping again to the same connection is fine")
	require.ErrorIs(t, cb.MapMSRPSession("s1a"), sipws.ErrMSRPSessionTaken)
	require.NoError(t, cb.MapMSRPSession("s2"))
	assert.Error(t, cb.MapMSRPSession(""))

	for sess, want := range map[string]sipws.ConnID{"s1a": ca.ID(), "s1b": ca.ID(), "s2": cb.ID()} {
		got, ok := ts.Registry().ByMSRPSession(sess)
		require.True(t, ok, sess)
		assert.Equal(t, want, got.ID(), sess)
	}
	ca.UnmapMSRPSession("s1b")
	_, ok := ts.Registry().ByMSRPSession("s1b")
	assert.False(t, ok)

	a.sendClose(1000, "")
	a.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, ok = ts.Registry().ByMSRPSession("s1a")
	assert.False(t, ok, "the mapping dies with the connection")
	_, ok = ts.Registry().ByMSRPSession("s2")
	assert.True(t, ok)
	assert.ErrorIs(t, ca.MapMSRPSession("s3"), sipws.ErrClosed)
}
