package sipws_test

import (
	"net/netip"
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

func TestBindInstanceReplacesOldFlow(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	const inst = `"<urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>"`
	old := dialWS(t, ts.Addr, "sip")
	co := ts.nextOpened(t)
	replaced, err := ts.BindInstance(co, inst, 1)
	require.NoError(t, err)
	assert.Nil(t, replaced)
	got, ok := ts.Registry().ByInstance("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>", 1)
	require.True(t, ok, "instance compares without regard to case, quotes or brackets")
	assert.Equal(t, co.ID(), got.ID())

	// Another reg-id of the same instance is another flow: both live.
	other := dialWS(t, ts.Addr, "sip")
	c2 := ts.nextOpened(t)
	replaced, err = ts.BindInstance(c2, inst, 2)
	require.NoError(t, err)
	assert.Nil(t, replaced)

	// The phone reconnects on reg-id 1: the old connection is closed.
	_ = other
	newc := dialWS(t, ts.Addr, "sip")
	cn := ts.nextOpened(t)
	replaced, err = ts.BindInstance(cn, inst, 1)
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
	assert.Equal(t, co.ID(), ev.ConnID)
	assert.Equal(t, sipws.InitiatorReplaced, ev.Initiator)
	assert.False(t, ev.Initiator.Failed())

	got, ok = ts.Registry().ByInstance(inst, 1)
	require.True(t, ok)
	assert.Equal(t, cn.ID(), got.ID())

	// When the new one ends, the binding goes with it.
	newc.sendClose(1000, "")
	newc.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, ok = ts.Registry().ByInstance(inst, 1)
	assert.False(t, ok)
	_, ok = ts.Registry().ByInstance(inst, 2)
	assert.True(t, ok)

	// A connection that has ended cannot be bound.
	_, err = ts.BindInstance(cn, inst, 1)
	assert.ErrorIs(t, err, sipws.ErrClosed)
	_, err = ts.BindInstance(c2, "  ", 1)
	assert.Error(t, err)
}

func TestMSRPSessionMapping(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	a := dialWS(t, ts.Addr, "msrp")
	ca := ts.nextOpened(t)
	dialWS(t, ts.Addr, "msrp")
	cb := ts.nextOpened(t)

	require.NoError(t, ts.MapMSRPSession(ca, "s1a"))
	require.NoError(t, ts.MapMSRPSession(ca, "s1b"))
	require.NoError(t, ts.MapMSRPSession(ca, "s1a"), "mapping again to the same connection is fine")
	require.ErrorIs(t, ts.MapMSRPSession(cb, "s1a"), sipws.ErrMSRPSessionTaken)
	require.NoError(t, ts.MapMSRPSession(cb, "s2"))
	assert.Error(t, ts.MapMSRPSession(cb, ""))

	for sess, want := range map[string]sipws.ConnID{"s1a": ca.ID(), "s1b": ca.ID(), "s2": cb.ID()} {
		got, ok := ts.Registry().ByMSRPSession(sess)
		require.True(t, ok, sess)
		assert.Equal(t, want, got.ID(), sess)
	}
	ts.UnmapMSRPSession("s1b")
	_, ok := ts.Registry().ByMSRPSession("s1b")
	assert.False(t, ok)

	a.sendClose(1000, "")
	a.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, ok = ts.Registry().ByMSRPSession("s1a")
	assert.False(t, ok, "the mapping dies with the connection")
	_, ok = ts.Registry().ByMSRPSession("s2")
	assert.True(t, ok)
	assert.ErrorIs(t, ts.MapMSRPSession(ca, "s3"), sipws.ErrClosed)
}
