package sipws_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fcToken returns c's flow token, failing the test on an error.
func fcToken(t *testing.T, c *sipws.Conn) string {
	t.Helper()
	tok, err := c.FlowToken()
	require.NoError(t, err)
	require.NotEmpty(t, tok)
	return tok
}

func TestResolveFlow(t *testing.T) {
	keyA := bytes.Repeat([]byte("a"), 32)
	keyB := bytes.Repeat([]byte("b"), 32)
	ft, err := sipws.NewFlowTokens("edge1", keyA)
	require.NoError(t, err)
	ts := startServer(t, sipws.Config{FlowTokens: ft})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	assert.Same(t, ts.Server, conn.Server())

	tok := fcToken(t, conn)
	uri := sipws.FlowURI(tok, "edge1.example.com", 443, true)
	got, ok := sipws.FlowTokenFromURI("<" + uri + ">")
	require.True(t, ok)
	require.Equal(t, tok, got)
	back, err := ts.Registry().ResolveFlow(got)
	require.NoError(t, err)
	assert.Equal(t, conn.ID(), back.ID())

	// Tampered: any changed character fails.
	bad := []byte(tok)
	bad[len(bad)/2] ^= 1
	_, err = ts.Registry().ResolveFlow(string(bad))
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)

	// A token of another node signed with our key is foreign.
	other, err := sipws.NewFlowTokens("edge2", keyA)
	require.NoError(t, err)
	_, err = ts.Registry().ResolveFlow(sipws.NewFlowIssuer(other).Token(conn.ID()))
	assert.ErrorIs(t, err, sipws.ErrFlowForeign)

	// Rotation: tokens signed with the old key still resolve.
	require.NoError(t, ts.SetFlowKeys(keyB, keyA))
	back, err = ts.Registry().ResolveFlow(tok)
	require.NoError(t, err)
	assert.Equal(t, conn.ID(), back.ID())
	assert.NotEqual(t, tok, fcToken(t, conn), "new tokens use the new key")
	require.NoError(t, ts.SetFlowKeys(keyB))
	_, err = ts.Registry().ResolveFlow(tok)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid, "the old key was dropped")
	tok = fcToken(t, conn)

	// Gone: the connection ended.
	c.sendClose(1000, "")
	c.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, err = ts.Registry().ResolveFlow(tok)
	assert.ErrorIs(t, err, sipws.ErrFlowGone)
}

// Without Config.FlowTokens a connection has no token: asking for one is an
// error, so that no Path or Record-Route is built without it.
func TestResolveFlowWithoutTokens(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	tok, err := conn.FlowToken()
	require.ErrorIs(t, err, sipws.ErrNoFlowTokens)
	assert.Empty(t, tok)
	assert.Contains(t, err.Error(), fmt.Sprintf("connection %d", conn.ID()))
	_, err = ts.Registry().ResolveFlow("anything")
	assert.ErrorIs(t, err, sipws.ErrNoFlowTokens)
	assert.ErrorIs(t, ts.SetFlowKeys(bytes.Repeat([]byte("k"), 32)), sipws.ErrNoFlowTokens)
}

// Two Servers share one FlowTokens (one node name, one key) and each has a
// connection 1. A token of A's connection 1 is not a token of B's: B
// reports it as ErrFlowStale and never returns its own connection 1, also
// after B rotates its keys; each still resolves its own.
func TestResolveFlowTokenOfAnotherServer(t *testing.T) {
	keyA := bytes.Repeat([]byte("a"), 32)
	ft, err := sipws.NewFlowTokens("edge1", keyA)
	require.NoError(t, err)
	a := startServer(t, sipws.Config{FlowTokens: ft})
	b := startServer(t, sipws.Config{FlowTokens: ft})
	dialWS(t, a.Addr, "sip")
	connA := a.nextOpened(t)
	dialWS(t, b.Addr, "sip")
	connB := b.nextOpened(t)
	require.Equal(t, connA.ID(), connB.ID(), "both are connection 1 of their Server")
	tokA, tokB := fcToken(t, connA), fcToken(t, connB)
	assert.NotEqual(t, tokA, tokB)

	check := func(when string) {
		t.Helper()
		got, err := b.Registry().ResolveFlow(tokA)
		require.ErrorIs(t, err, sipws.ErrFlowStale, when)
		assert.True(t, got == nil, "%s: A's token resolved on B to connection %v", when, got)
		got, err = a.Registry().ResolveFlow(tokB)
		require.ErrorIs(t, err, sipws.ErrFlowStale, when)
		assert.True(t, got == nil, "%s: B's token resolved on A", when)
		got, err = a.Registry().ResolveFlow(tokA)
		require.NoError(t, err, when)
		assert.True(t, got == connA, when)
		got, err = b.Registry().ResolveFlow(tokB)
		require.NoError(t, err, when)
		assert.True(t, got == connB, when)
	}
	check("shared FlowTokens")
	// B rotates to a new key and keeps the old one: its run is unchanged,
	// A's tokens (signed with the old key) are still another Server's.
	require.NoError(t, b.SetFlowKeys(bytes.Repeat([]byte("b"), 32), keyA))
	check("after B's rotation")
	tokB2 := fcToken(t, connB)
	_, err = a.Registry().ResolveFlow(tokB2)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid, "A does not know B's new key")
}

// A FlowTokens reused after Shutdown and New: the old Server's token for its
// connection 1 is ErrFlowStale on the new Server, whose connection 1 is
// someone else.
func TestResolveFlowAfterShutdownAndNew(t *testing.T) {
	ft, err := sipws.NewFlowTokens("edge1", bytes.Repeat([]byte("a"), 32))
	require.NoError(t, err)
	first := startServer(t, sipws.Config{FlowTokens: ft})
	oldClient := dialWS(t, first.Addr, "sip")
	oldConn := first.nextOpened(t)
	oldTok := fcToken(t, oldConn)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- first.Shutdown(ctx)
	}()
	f := oldClient.mustReadFrame()
	require.Equal(t, byte(0x8), f.Op)
	code, _ := f.closeCode()
	require.Equal(t, uint16(1001), code)
	oldClient.sendClose(1001, "") // answered: Shutdown need not wait for CloseTimeout
	oldClient.expectEOF(ioTimeout)
	require.NoError(t, <-done)
	first.nextClosed(t)

	second := startServer(t, sipws.Config{FlowTokens: ft})
	dialWS(t, second.Addr, "sip")
	newConn := second.nextOpened(t)
	require.Equal(t, oldConn.ID(), newConn.ID(), "the new Server starts at connection 1 again")
	got, err := second.Registry().ResolveFlow(oldTok)
	require.ErrorIs(t, err, sipws.ErrFlowStale)
	assert.True(t, got == nil, "the old token resolved to the new connection %v", got)
	got, err = second.Registry().ResolveFlow(fcToken(t, newConn))
	require.NoError(t, err)
	assert.True(t, got == newConn)
}

func TestFlowStatus(t *testing.T) {
	cases := []struct {
		err    error
		code   int
		reason string
	}{
		{nil, 0, ""},
		{fmt.Errorf("%w (connection 7)", sipws.ErrFlowGone), 430, "Flow Failed"},
		{fmt.Errorf("%w: node \"edge1\", connection 1", sipws.ErrFlowStale), 430, "Flow Failed"},
		{fmt.Errorf("%w (connection 7)", sipws.ErrClosed), 430, "Flow Failed"},
		{sipws.ErrSendQueueFull, 430, "Flow Failed"},
		{fmt.Errorf("%w: MAC mismatch", sipws.ErrFlowInvalid), 403, "Forbidden"},
		{&sipws.ForeignFlowError{Node: "edge2"}, 403, "Forbidden"},
		{fmt.Errorf("%w: 70000 bytes", sipws.ErrMessageTooBig), 513, "Message Too Large"},
		{sipws.ErrNoFlowTokens, 500, "Server Internal Error"},
		{errors.New("something else"), 500, "Server Internal Error"},
	}
	for _, tc := range cases {
		code, reason := sipws.FlowStatus(tc.err)
		assert.Equal(t, tc.code, code, "%v", tc.err)
		assert.Equal(t, tc.reason, reason, "%v", tc.err)
	}
}

// FlowStatus on what ResolveFlow and Send really return.
func TestFlowStatusOfResolveFlow(t *testing.T) {
	key := bytes.Repeat([]byte("a"), 32)
	ft, err := sipws.NewFlowTokens("edge1", key)
	require.NoError(t, err)
	ts := startServer(t, sipws.Config{FlowTokens: ft, MaxMessageSize: 1024})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	tok := fcToken(t, conn)

	got, err := ts.Registry().ResolveFlow(tok)
	require.NoError(t, err)
	code, _ := sipws.FlowStatus(err)
	assert.Equal(t, 0, code)
	code, _ = sipws.FlowStatus(got.Send(make([]byte, 2048)))
	assert.Equal(t, 513, code)

	_, err = ts.Registry().ResolveFlow(tok[:len(tok)-1])
	code, _ = sipws.FlowStatus(err)
	assert.Equal(t, 403, code, "truncated token: %v", err)

	other, err := sipws.NewFlowTokens("edge2", key)
	require.NoError(t, err)
	_, err = ts.Registry().ResolveFlow(sipws.NewFlowIssuer(other).Token(conn.ID()))
	var fe *sipws.ForeignFlowError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "edge2", fe.Node)
	code, _ = sipws.FlowStatus(err)
	assert.Equal(t, 403, code)

	_, err = ts.Registry().ResolveFlow(sipws.NewFlowIssuer(ft).Token(conn.ID()))
	code, _ = sipws.FlowStatus(err)
	assert.Equal(t, 430, code, "another run: %v", err)

	c.sendClose(1000, "")
	c.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, err = ts.Registry().ResolveFlow(tok)
	code, _ = sipws.FlowStatus(err)
	assert.Equal(t, 430, code, "gone: %v", err)
	code, _ = sipws.FlowStatus(got.Send([]byte("OPTIONS")))
	assert.Equal(t, 430, code, "sending on the ended connection")
}
