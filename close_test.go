package sipws_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// This file checks OnClosed: exactly one event per connection, at once, with
// the right fields, for every way a connection can end.

const (
	// clQuiet is how long a test watches for a second OnClosed that must
	// not come.
	clQuiet = 150 * time.Millisecond
	// clPrompt bounds "at once": Kamailio fires its closed event 4–6 s late;
	// ours must come well within this after the trigger.
	clPrompt = time.Second
)

// clAddr converts a TCP address to the unmapped netip form the package uses.
func clAddr(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// clOpen opens a client offering proto and returns it with the server's Conn.
func clOpen(t *testing.T, ts *testServer, proto string) (*rawClient, *sipws.Conn) {
	t.Helper()
	c := dialWS(t, ts.Addr, proto)
	conn := ts.nextOpened(t)
	require.Equal(t, clAddr(c.conn.LocalAddr()), conn.RemoteAddr(), "Conn.RemoteAddr is the client's address")
	return c, conn
}

// clWant is what an OnClosed event must say.
type clWant struct {
	sp        sipws.Subprotocol
	secure    bool
	initiator sipws.CloseCause
	code      sipws.CloseCode
	reason    string
	anyReason bool // reason is not checked, only that it is not empty
	errNil    bool
}

// clAwait waits for the next OnClosed event and checks that it came within
// clPrompt of since.
func clAwait(t *testing.T, ts *testServer, since time.Time) sipws.CloseEvent {
	t.Helper()
	ev := ts.nextClosed(t)
	assert.Less(t, time.Since(since), clPrompt, "OnClosed came late")
	return ev
}

// clCheck checks an event against the connection it is about, then that the
// connection is gone for good and that no second event comes.
func clCheck(t *testing.T, ts *testServer, ev sipws.CloseEvent, client net.Conn, conn *sipws.Conn, w clWant) {
	t.Helper()
	clCheckFields(t, ts, ev, client, conn, w)
	ts.noMoreClosed(t, clQuiet)
}

// clCheckFields is clCheck without the wait for a second event.
func clCheckFields(t *testing.T, ts *testServer, ev sipws.CloseEvent, client net.Conn, conn *sipws.Conn, w clWant) {
	t.Helper()
	assert.Equal(t, conn.ID(), ev.ID, "ConnID")
	assert.Equal(t, clAddr(client.LocalAddr()), ev.RemoteAddr, "RemoteAddr is the client's address")
	assert.Equal(t, clAddr(client.RemoteAddr()), ev.LocalAddr, "LocalAddr is the server's address")
	assert.Equal(t, w.sp, ev.Subprotocol, "Subprotocol")
	assert.Equal(t, w.secure, ev.Secure, "Secure")
	assert.Equal(t, w.initiator, ev.Cause, "Initiator (%s)", ev.Cause)
	assert.Equal(t, w.code, ev.Code, "Code")
	if w.anyReason {
		assert.NotEmpty(t, ev.Reason, "Reason")
	} else {
		assert.Equal(t, w.reason, ev.Reason, "Reason")
	}
	if w.errNil {
		assert.NoError(t, ev.Err, "Err")
	} else {
		assert.Error(t, ev.Err, "Err")
	}
	assert.False(t, ev.Opened.IsZero(), "Opened")
	assert.True(t, ev.Opened.Equal(conn.Opened()), "Opened is Conn.Opened")
	assert.False(t, ev.Ended.IsZero(), "Ended")
	assert.False(t, ev.Ended.Before(ev.Opened), "Ended before Opened")

	// The connection is gone.
	select {
	case <-conn.Done():
	default:
		t.Error("Conn.Done() not closed after OnClosed")
	}
	assert.ErrorIs(t, conn.Send([]byte("too late")), sipws.ErrClosed, "Send after OnClosed")
	assert.ErrorIs(t, conn.Close(0, ""), sipws.ErrClosed, "Close after OnClosed")
	_, ok := ts.Registry().Get(conn.ID())
	assert.False(t, ok, "still in the Registry")
}

// clReadClose reads frames until a close frame (skipping pings and pongs)
// and returns its code and reason.
func clReadClose(t *testing.T, c *rawClient) (uint16, string) {
	t.Helper()
	for {
		f := c.mustReadFrame()
		switch f.Op {
		case 0x8:
			return f.closeCode()
		case 0x9, 0xA:
			continue
		}
		t.Fatalf("expected a close frame, got opcode %#x %q", f.Op, f.Payload)
	}
}

// clExpectGone checks that the server closed the TCP connection (a read ends
// with an error that is not a timeout) within bound; data still in flight is
// skipped.
func clExpectGone(t *testing.T, c *rawClient, bound time.Duration) {
	t.Helper()
	require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(bound)))
	_, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close TCP within %v", bound)
	}
}

func TestClosedPeerCloseFrame(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proto  string
		sp     sipws.Subprotocol
		code   uint16 // sent; 0: empty close payload
		reason string
		echo   uint16
		want   sipws.CloseCode
	}{
		{"sip", "sip", sipws.SIP, 4321, "app code", 4321, 4321},
		{"msrp", "msrp", sipws.MSRP, 1001, "going away", 1001, 1001},
		{"empty-payload", "sip", sipws.SIP, 0, "", 1000, sipws.CloseNoStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A long close timeout: the event must not wait for it.
			ts := startServer(t, sipws.Config{CloseTimeout: 5 * time.Second})
			c, conn := clOpen(t, ts, tc.proto)
			start := time.Now()
			c.sendClose(tc.code, tc.reason)
			code, _ := clReadClose(t, c)
			assert.Equal(t, tc.echo, code, "close reply")
			// The client keeps its TCP side open: the server sends its FIN,
			// and OnClosed fires without waiting for ours.
			ev := clAwait(t, ts, start)
			c.expectEOF(clPrompt)
			clCheck(t, ts, ev, c.conn, conn, clWant{sp: tc.sp, initiator: sipws.CausePeer,
				code: tc.want, reason: tc.reason, errNil: true})
		})
	}
}

func TestClosedPeerFIN(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, conn := clOpen(t, ts, "msrp")
	start := time.Now()
	require.NoError(t, c.conn.(*net.TCPConn).CloseWrite())
	ev := clAwait(t, ts, start)
	c.expectEOF(clPrompt) // the server closes its side too
	clCheck(t, ts, ev, c.conn, conn, clWant{sp: sipws.MSRP, initiator: sipws.CausePeerLost,
		code: sipws.CloseAbnormal, reason: ""})
	assert.ErrorIs(t, ev.Err, io.EOF)
}

func TestClosedPeerRST(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, conn := clOpen(t, ts, "sip")
	tcp := c.conn.(*net.TCPConn)
	require.NoError(t, tcp.SetLinger(0))
	start := time.Now()
	require.NoError(t, tcp.Close()) // RST
	ev := clAwait(t, ts, start)
	clCheck(t, ts, ev, c.conn, conn, clWant{sp: sipws.SIP, initiator: sipws.CausePeerLost,
		code: sipws.CloseAbnormal, reason: ""})
	assert.ErrorIs(t, ev.Err, syscall.ECONNRESET)
}

func TestClosedProtocolError(t *testing.T) {
	ts := startServer(t, sipws.Config{CloseTimeout: 5 * time.Second})
	c, conn := clOpen(t, ts, "sip")
	start := time.Now()
	c.writeFrame(true, 0, 0x1, []byte("OPTIONS sip:x SIP/2.0\r\n\r\n"), false) // unmasked
	code, _ := clReadClose(t, c)
	assert.Equal(t, uint16(1002), code)
	ev := clAwait(t, ts, start)
	c.expectEOF(clPrompt)
	clCheck(t, ts, ev, c.conn, conn, clWant{sp: sipws.SIP, initiator: sipws.CauseProtocolError,
		code: sipws.CloseProtocolError, anyReason: true})
	var ce *sipws.CloseError
	require.ErrorAs(t, ev.Err, &ce)
	assert.Equal(t, sipws.CloseProtocolError, ce.Code)
	assert.Equal(t, ev.Reason, ce.Reason)
	assert.Equal(t, sipws.CloseProtocolError, sipws.CloseStatus(ev.Err))
	assert.Empty(t, ts.Msgs, "the bad frame was delivered")
}

func TestClosedByHost(t *testing.T) {
	for i, tc := range []struct {
		name     string
		registry bool // Registry.Close rather than Conn.Close
		reply    bool // the client answers the close
	}{
		{"conn-reply", false, true},
		{"conn-silent", false, false},
		{"registry-reply", true, true},
		{"registry-silent", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closeTimeout := 300 * time.Millisecond
			if tc.reply {
				closeTimeout = 5 * time.Second // the reply must end it, not the timeout
			}
			ts := startServer(t, sipws.Config{CloseTimeout: closeTimeout})
			c, conn := clOpen(t, ts, "sip")
			code := sipws.CloseCode(4000 + i)
			reason := fmt.Sprintf("closed by %s", tc.name)
			start := time.Now()
			if tc.registry {
				require.NoError(t, ts.Registry().Close(conn.ID(), code, reason))
			} else {
				require.NoError(t, conn.Close(code, reason))
			}

			// While it waits for the reply: listed as CLOSING, nothing more
			// can be sent, a second close is refused, no event yet.
			d := ts.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1})
			require.Len(t, d.Conns, 1)
			assert.Equal(t, "CLOSING", d.Conns[0].State)
			assert.ErrorIs(t, conn.Send([]byte("late")), sipws.ErrClosed)
			assert.ErrorIs(t, conn.Close(0, ""), sipws.ErrClosed)
			assert.ErrorIs(t, ts.Registry().Close(conn.ID(), 0, ""), sipws.ErrClosed)
			select {
			case <-conn.Done():
				t.Error("Done closed while the close handshake is under way")
			default:
			}

			gotCode, gotReason := clReadClose(t, c)
			assert.Equal(t, uint16(code), gotCode)
			assert.Equal(t, reason, gotReason)
			want := clWant{sp: sipws.SIP, initiator: sipws.CauseHost, code: code, reason: reason, errNil: tc.reply}
			if tc.reply {
				c.sendClose(uint16(code), "")
				c.expectEOF(clPrompt)
				ev := clAwait(t, ts, start)
				clCheck(t, ts, ev, c.conn, conn, want)
				return
			}
			// No reply: the server gives up after CloseTimeout and closes
			// the socket.
			clExpectGone(t, c, closeTimeout+clPrompt)
			ev := ts.nextClosed(t)
			elapsed := time.Since(start)
			assert.GreaterOrEqual(t, elapsed, closeTimeout, "closed before CloseTimeout")
			assert.Less(t, elapsed, closeTimeout+clPrompt, "closed long after CloseTimeout")
			clCheck(t, ts, ev, c.conn, conn, want)
		})
	}
}

func TestClosedByHostDefaultCode(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, conn := clOpen(t, ts, "msrp")
	require.NoError(t, ts.Registry().Close(conn.ID(), 0, ""))
	code, reason := clReadClose(t, c)
	assert.Equal(t, uint16(1000), code)
	assert.Equal(t, "Normal closure", reason)
	c.sendClose(1000, "")
	c.expectEOF(clPrompt)
	ev := ts.nextClosed(t)
	clCheck(t, ts, ev, c.conn, conn, clWant{sp: sipws.MSRP, initiator: sipws.CauseHost,
		code: sipws.CloseNormal, reason: sipws.DefaultCloseReason, errNil: true})
}

func TestClosedInvalidHostCloseSendsNothing(t *testing.T) {
	ts := startServer(t, sipws.Config{OnMessage: func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) }})
	c, conn := clOpen(t, ts, "sip")
	assert.ErrorIs(t, conn.Close(1005, ""), sipws.ErrInvalidCloseCode)
	assert.ErrorIs(t, conn.Close(1006, ""), sipws.ErrInvalidCloseCode)
	assert.ErrorIs(t, ts.Registry().Close(conn.ID(), 999, ""), sipws.ErrInvalidCloseCode)
	assert.ErrorIs(t, conn.Close(1000, strings.Repeat("r", 124)), sipws.ErrInvalidCloseReason)
	assert.ErrorIs(t, conn.Close(1000, "\xff"), sipws.ErrInvalidCloseReason)
	// Still open: the next frame the client reads is the echo.
	c.sendText("still here")
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x1), f.Op)
	assert.Equal(t, "still here", string(f.Payload))
	ts.noMoreClosed(t, clQuiet)
}

func TestRegistryCloseUnknownID(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	err := ts.Registry().Close(12345, 0, "")
	assert.ErrorIs(t, err, sipws.ErrNotFound)

	// An ID that existed and ended is unknown too.
	c, conn := clOpen(t, ts, "sip")
	require.NoError(t, c.conn.Close())
	ev := ts.nextClosed(t)
	require.Equal(t, conn.ID(), ev.ID)
	assert.ErrorIs(t, ts.Registry().Close(conn.ID(), 0, ""), sipws.ErrNotFound)
	ts.noMoreClosed(t, clQuiet)
}

func TestClosedPanicInOnMessage(t *testing.T) {
	ts := startServer(t, sipws.Config{
		CloseTimeout: 5 * time.Second,
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if string(m.Data) == "boom" {
				panic("hook exploded")
			}
			_ = c.Send(m.Data)
		},
	})
	victim, vconn := clOpen(t, ts, "sip")
	other, oconn := clOpen(t, ts, "msrp")

	start := time.Now()
	victim.sendText("boom")
	code, reason := clReadClose(t, victim)
	assert.Equal(t, uint16(1011), code)
	ev := clAwait(t, ts, start)
	victim.expectEOF(clPrompt)
	clCheck(t, ts, ev, victim.conn, vconn, clWant{sp: sipws.SIP, initiator: sipws.CauseHost,
		code: sipws.CloseInternalError, reason: reason})
	assert.Contains(t, ev.Err.Error(), "hook exploded")

	// The other connection is untouched, and new ones are served.
	other.sendText("still fine")
	f := other.mustReadFrame()
	assert.Equal(t, "still fine", string(f.Payload))
	_, ok := ts.Registry().Get(oconn.ID())
	assert.True(t, ok)
	late, _ := clOpen(t, ts, "sip")
	late.sendText("new one")
	assert.Equal(t, "new one", string(late.mustReadFrame().Payload))
	ts.noMoreClosed(t, clQuiet)
}

func TestClosedPanicInOnOpen(t *testing.T) {
	ts := startServer(t, sipws.Config{
		CloseTimeout: 5 * time.Second,
		OnOpen: func(c *sipws.Conn) {
			if c.Subprotocol() == sipws.MSRP {
				panic("OnOpen exploded")
			}
		},
		OnMessage: func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) },
	})
	victim, vconn := clOpen(t, ts, "msrp")
	code, reason := clReadClose(t, victim)
	assert.Equal(t, uint16(1011), code)
	ev := ts.nextClosed(t)
	victim.expectEOF(clPrompt)
	clCheck(t, ts, ev, victim.conn, vconn, clWant{sp: sipws.MSRP, initiator: sipws.CauseHost,
		code: sipws.CloseInternalError, reason: reason})
	assert.Contains(t, ev.Err.Error(), "OnOpen exploded")

	other, _ := clOpen(t, ts, "sip")
	other.sendText("fine")
	assert.Equal(t, "fine", string(other.mustReadFrame().Payload))
}

func TestClosedSlowConsumer(t *testing.T) {
	ts := startServer(t, sipws.Config{SendQueueSize: 64 << 10, WriteTimeout: time.Minute})
	slow, sconn := clOpen(t, ts, "sip")
	// A small receive buffer so that the socket fills soon.
	require.NoError(t, slow.conn.(*net.TCPConn).SetReadBuffer(4096))
	healthy, hconn := clOpen(t, ts, "msrp")

	chunk := bytes.Repeat([]byte("s"), 16<<10)
	var (
		sendErr    error
		sent, seen int
		deadline   = time.Now().Add(2 * ioTimeout)
	)
	start := time.Now()
	for time.Now().Before(deadline) {
		if sendErr = sconn.Send(chunk); sendErr != nil {
			break
		}
		sent++
		// Meanwhile the healthy connection gets every message at once.
		msg := fmt.Sprintf("healthy %d", sent)
		require.NoError(t, hconn.Send([]byte(msg)))
		f := healthy.mustReadFrame()
		require.Equal(t, msg, string(f.Payload))
		seen++
	}
	require.Error(t, sendErr, "Send to a peer that never reads did not fail after %d messages (%d bytes)", sent, sent*len(chunk))
	assert.ErrorIs(t, sendErr, sipws.ErrSendQueueFull)
	assert.Positive(t, seen)
	t.Logf("slow consumer detected after %d messages of %d bytes in %v", sent, len(chunk), time.Since(start))

	ev := ts.nextClosed(t)
	clCheck(t, ts, ev, slow.conn, sconn, clWant{sp: sipws.SIP, initiator: sipws.CauseSlowConsumer,
		code: sipws.ClosePolicyViolation, anyReason: true})
	assert.ErrorIs(t, ev.Err, sipws.ErrSendQueueFull)

	// The healthy one still works afterwards.
	require.NoError(t, hconn.Send([]byte("after")))
	assert.Equal(t, "after", string(healthy.mustReadFrame().Payload))
	_, ok := ts.Registry().Get(hconn.ID())
	assert.True(t, ok)
}

func TestClosedWriteTimeout(t *testing.T) {
	writeTimeout := 200 * time.Millisecond
	ts := startServer(t, sipws.Config{SendQueueSize: 64 << 20, WriteTimeout: writeTimeout})
	c, conn := clOpen(t, ts, "sip")
	require.NoError(t, c.conn.(*net.TCPConn).SetReadBuffer(4096))
	chunk := bytes.Repeat([]byte("w"), 64<<10)
	// Far more than the socket buffers hold; all of it fits the queue, so
	// the connection ends on the write deadline, not as a slow consumer.
	var sendErr error
	for range 512 {
		if sendErr = conn.Send(chunk); sendErr != nil {
			break
		}
	}
	if sendErr != nil {
		assert.ErrorIs(t, sendErr, sipws.ErrClosed, "the only failure expected is the end of the connection")
	}
	ev := ts.nextClosed(t)
	clCheck(t, ts, ev, c.conn, conn, clWant{sp: sipws.SIP, initiator: sipws.CauseWriteFailure,
		code: sipws.CloseAbnormal, reason: ""})
	assert.ErrorIs(t, ev.Err, os.ErrDeadlineExceeded)
}

func TestClosedShutdown(t *testing.T) {
	ts := startServer(t, sipws.Config{CloseTimeout: 5 * time.Second})
	type pair struct {
		c    *rawClient
		conn *sipws.Conn
		sp   sipws.Subprotocol
	}
	var pairs []pair
	for i := range 5 {
		proto, sp := "sip", sipws.SIP
		if i%2 == 1 {
			proto, sp = "msrp", sipws.MSRP
		}
		c, conn := clOpen(t, ts, proto)
		pairs = append(pairs, pair{c, conn, sp})
	}

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- ts.Shutdown(context.Background()) }()
	for _, p := range pairs {
		code, reason := clReadClose(t, p.c)
		assert.Equal(t, uint16(1001), code)
		assert.Equal(t, "Going away", reason)
		p.c.sendClose(1001, "")
		p.c.expectEOF(clPrompt)
		require.NoError(t, p.c.conn.Close())
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
	}
	assert.Less(t, time.Since(start), clPrompt)
	// Shutdown waited for every OnClosed to return.
	require.Len(t, ts.Closed, len(pairs))
	byID := map[sipws.ConnID]sipws.CloseEvent{}
	for range pairs {
		ev := ts.nextClosed(t)
		byID[ev.ID] = ev
	}
	for _, p := range pairs {
		ev, ok := byID[p.conn.ID()]
		require.True(t, ok, "no OnClosed for connection %d", p.conn.ID())
		clCheckFields(t, ts, ev, p.c.conn, p.conn, clWant{sp: p.sp, initiator: sipws.CauseShutdown,
			code: sipws.CloseGoingAway, reason: "Going away", errNil: true})
	}
	assert.Equal(t, 0, ts.Registry().Len())
	assert.Zero(t, ts.Stats().CurrentConnections)

	// After it, handshakes are refused with 503.
	_, resp := rawDial(t, ts.Addr, handshakeRequest(ts.Addr, "sip"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	ts.noMoreClosed(t, clQuiet)
	require.NoError(t, ts.Shutdown(context.Background()), "a second Shutdown")
}

func TestClosedShutdownExpiredContext(t *testing.T) {
	closeTimeout := 5 * time.Second
	ts := startServer(t, sipws.Config{CloseTimeout: closeTimeout})
	var clients []*rawClient
	var conns []*sipws.Conn
	for range 3 {
		c, conn := clOpen(t, ts, "sip")
		clients = append(clients, c)
		conns = append(conns, conn)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	start := time.Now()
	err := ts.Shutdown(ctx) // the clients never answer
	elapsed := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, elapsed, closeTimeout, "Shutdown waited for the close replies despite its context")
	// The connections were dropped; a second Shutdown waits for their ends:
	// every OnClosed has fired (and returned) by the time it returns.
	require.NoError(t, ts.Shutdown(context.Background()))
	require.Len(t, ts.Closed, len(conns))
	assert.Equal(t, 0, ts.Registry().Len())
	assert.Zero(t, ts.Stats().CurrentConnections)
	byID := map[sipws.ConnID]sipws.CloseEvent{}
	for range conns {
		ev := ts.nextClosed(t)
		byID[ev.ID] = ev
	}
	for i, conn := range conns {
		ev, ok := byID[conn.ID()]
		require.True(t, ok, "no OnClosed for connection %d", conn.ID())
		assert.Equal(t, sipws.CauseShutdown, ev.Cause)
		assert.Equal(t, sipws.CloseGoingAway, ev.Code)
		assert.Equal(t, clAddr(clients[i].conn.LocalAddr()), ev.RemoteAddr)
		select {
		case <-conn.Done():
		default:
			t.Error("Done not closed")
		}
		assert.ErrorIs(t, conn.Send([]byte("x")), sipws.ErrClosed)
		clExpectGone(t, clients[i], clPrompt)
	}
	ts.noMoreClosed(t, clQuiet)
}

// gateClock is the real clock, except that once armed, its next Now call
// reports on entered and blocks until release is closed. The Server reads its
// clock once between writing a handshake's 101 and registering the
// connection, so a test can hold a handshake in that window (with keepalive
// off, as its workers read the clock on their own).
type gateClock struct {
	armed   chan struct{} // holds a token while armed
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGateClock() *gateClock {
	return &gateClock{armed: make(chan struct{}, 1), entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateClock) arm() { g.armed <- struct{}{} }

// open lets the held Now call return; it may be called more than once.
func (g *gateClock) open() { g.once.Do(func() { close(g.release) }) }

func (g *gateClock) Now() time.Time {
	select {
	case <-g.armed:
		close(g.entered)
		<-g.release
	default:
	}
	return time.Now()
}

func (g *gateClock) NewTicker(d time.Duration) sipws.Ticker { return gateTicker{time.NewTicker(d)} }

type gateTicker struct{ t *time.Ticker }

func (t gateTicker) C() <-chan time.Time { return t.t.C }
func (t gateTicker) Stop()               { t.t.Stop() }

// msgHandler is a slog.Handler that closes seen at the first record whose
// message is msg, and drops every record.
type msgHandler struct {
	msg  string
	seen chan struct{}
	once sync.Once
}

func (h *msgHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *msgHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *msgHandler) WithGroup(string) slog.Handler            { return h }
func (h *msgHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

// A client that has its 101 has a connection, even when Shutdown begins
// before the server has registered it: the host sees OnOpen and OnClosed,
// the client gets 1001 (or, once Shutdown's context is done, the socket is
// dropped), and Shutdown returns only after OnClosed. The handshake is held
// between its 101 and the registration; Shutdown starts meanwhile.
func TestClosedShutdownDuringHandshake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expired bool // Shutdown's context is done: connections are dropped
	}{
		{name: "close handshake"},
		{name: "context done", expired: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := newGateClock()
			logged := &msgHandler{msg: "shutting down", seen: make(chan struct{})}
			// No keepalive: its workers read the clock too.
			ts := startServer(t, sipws.WithClock(sipws.Config{CloseTimeout: 5 * time.Second, Logger: slog.New(logged),
				Keepalive: sipws.KeepaliveNone}, gate))
			// Registered after startServer's cleanup, so run before it: a
			// test that fails while the handshake is held must not leave
			// Shutdown waiting for it.
			t.Cleanup(gate.open)
			var probe *rawClient
			if tc.expired {
				// Its OnClosed tells that Shutdown has passed its deadline.
				probe, _ = clOpen(t, ts, "sip")
			}

			// The held handshake, from a goroutine: it ends at the 101.
			gate.arm()
			type dialed struct {
				c      *rawClient
				status int
				err    error
			}
			dialc := make(chan dialed, 1)
			go func() {
				nc, err := net.DialTimeout("tcp", ts.Addr, ioTimeout)
				if err != nil {
					dialc <- dialed{err: err}
					return
				}
				c := &rawClient{t: t, conn: nc, br: bufio.NewReader(nc)}
				_ = nc.SetDeadline(time.Now().Add(ioTimeout))
				if _, err = io.WriteString(nc, handshakeRequest(ts.Addr, "sip")); err != nil {
					dialc <- dialed{c: c, err: err}
					return
				}
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					dialc <- dialed{c: c, err: err}
					return
				}
				dialc <- dialed{c: c, status: resp.StatusCode}
			}()
			select {
			case <-gate.entered:
			case <-time.After(ioTimeout):
				t.Fatal("the handshake did not read the clock")
			}
			var d dialed
			select {
			case d = <-dialc:
			case <-time.After(ioTimeout):
				gate.open()
				t.Fatal("no 101 while the handshake was held: the server reads its clock before the 101, and this test no longer holds the window it is about")
			}
			t.Cleanup(func() {
				if d.c != nil {
					_ = d.c.conn.Close()
				}
			})
			require.NoError(t, d.err)
			require.Equal(t, http.StatusSwitchingProtocols, d.status)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.expired {
				cancel()
			}
			shut := make(chan error, 1)
			go func() { shut <- ts.Shutdown(ctx) }()
			var err error
			if tc.expired {
				ev := ts.nextClosed(t) // the probe, dropped after the deadline
				require.Equal(t, sipws.CauseShutdown, ev.Cause)
				clExpectGone(t, probe, clPrompt)
				// Its ctx done, Shutdown returns without waiting for
				// the held handshake.
				select {
				case err = <-shut:
				case <-time.After(ioTimeout):
					t.Fatal("Shutdown did not return once its context was done")
				}
			} else {
				// Shutdown logs this once it refuses handshakes.
				select {
				case <-logged.seen:
				case <-time.After(ioTimeout):
					t.Fatal("Shutdown did not log that it began")
				}
				select {
				case err := <-shut:
					t.Fatalf("Shutdown returned (%v) while a connection that had its 101 was not yet registered", err)
				default:
				}
			}

			gate.open()
			conn := ts.nextOpened(t)
			if tc.expired {
				// Registered after the drop, it drops itself; a second
				// Shutdown waits for its end.
				clExpectGone(t, d.c, clPrompt)
				require.NoError(t, ts.Shutdown(context.Background()))
			} else {
				code, reason := clReadClose(t, d.c)
				assert.Equal(t, uint16(1001), code)
				assert.Equal(t, "Going away", reason)
				d.c.sendClose(1001, "")
				select {
				case err = <-shut:
				case <-time.After(ioTimeout):
					t.Fatal("Shutdown did not return")
				}
			}
			// OnClosed had fired by the time Shutdown returned.
			require.Len(t, ts.Closed, 1, "OnClosed of the held connection, before Shutdown returned")
			ev := ts.nextClosed(t)
			want := clWant{sp: sipws.SIP, initiator: sipws.CauseShutdown, code: sipws.CloseGoingAway, reason: "Going away", errNil: true}
			if tc.expired {
				require.ErrorIs(t, err, context.Canceled)
				want.errNil = false
				assert.ErrorIs(t, ev.Err, context.Canceled, "Closed.Err names Shutdown's context")
			} else {
				require.NoError(t, err)
			}
			clCheck(t, ts, ev, d.c.conn, conn, want)
		})
	}
}

// The connections Shutdown dropped without a close handshake ended
// abnormally: CloseEvent.Err says so, as it does when Conn.Close gets no reply.
func TestClosedShutdownExpiredContextReportsErr(t *testing.T) {
	ts := startServer(t, sipws.Config{CloseTimeout: 5 * time.Second})
	_, conn := clOpen(t, ts, "sip")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, ts.Shutdown(ctx), context.Canceled)
	ev := ts.nextClosed(t)
	require.Equal(t, conn.ID(), ev.ID)
	// Nil only for a clean close handshake, as for Conn.Close without a
	// reply.
	assert.ErrorIs(t, ev.Err, context.Canceled)
}

func TestClosedSecureConnection(t *testing.T) {
	closed := make(chan sipws.CloseEvent, 4)
	opened := make(chan *sipws.Conn, 4)
	srv, err := sipws.New(sipws.Config{
		CloseTimeout: 5 * time.Second,
		OnOpen:       func(c *sipws.Conn) { opened <- c },
		OnClosed:     func(ev sipws.CloseEvent) { closed <- ev },
	})
	require.NoError(t, err)
	hs := httptest.NewTLSServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		hs.Close()
	})
	addr := strings.TrimPrefix(hs.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, &tls.Config{RootCAs: pool})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tc.Close() })
	c := &rawClient{t: t, conn: tc, br: bufio.NewReader(tc)}
	require.NoError(t, tc.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(tc, handshakeRequest(addr, "sip"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)

	var conn *sipws.Conn
	select {
	case conn = <-opened:
	case <-time.After(ioTimeout):
		t.Fatal("no connection opened")
	}
	assert.True(t, conn.Secure())

	start := time.Now()
	c.sendClose(1000, "bye")
	code, _ := clReadClose(t, c)
	assert.Equal(t, uint16(1000), code)
	var ev sipws.CloseEvent
	select {
	case ev = <-closed:
	case <-time.After(ioTimeout):
		t.Fatal("OnClosed did not fire")
	}
	assert.Less(t, time.Since(start), clPrompt)
	assert.True(t, ev.Secure)
	assert.Equal(t, sipws.CausePeer, ev.Cause)
	assert.Equal(t, sipws.CloseNormal, ev.Code)
	assert.Equal(t, "bye", ev.Reason)
	assert.NoError(t, ev.Err)
	assert.Equal(t, conn.ID(), ev.ID)
	assert.Equal(t, clAddr(tc.LocalAddr()), ev.RemoteAddr)
	assert.Equal(t, clAddr(tc.RemoteAddr()), ev.LocalAddr)
	select {
	case ev := <-closed:
		t.Fatalf("unexpected extra OnClosed: %+v", ev)
	case <-time.After(clQuiet):
	}
}

// TestClosedShutdownFromHook calls Shutdown from a hook of one connection
// (X), with a context that never ends and with one of 1 s, while another
// connection (Y) is open. Shutdown does not wait for its caller's own
// connection: with no deadline it returns once Y has answered its 1001 and
// ended; with 1 s and a Y that never answers, it returns the deadline's
// error and drops Y. Either way X, which got its 1001 too, ends once the
// hook has returned, and every connection has exactly one OnClosed.
func TestClosedShutdownFromHook(t *testing.T) {
	for _, hook := range []string{"OnOpen", "OnMessage", "OnClosed"} {
		for _, deadline := range []bool{false, true} {
			name := hook + "/no deadline"
			if deadline {
				name = hook + "/1s"
			}
			t.Run(name, func(t *testing.T) {
				var srv atomic.Pointer[sipws.Server]
				var xID atomic.Uint64
				shut := make(chan error, 1)
				shutdown := func() {
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if deadline {
						ctx, cancel = context.WithTimeout(ctx, time.Second)
					}
					defer cancel()
					shut <- srv.Load().Shutdown(ctx)
				}
				cfg := sipws.Config{CloseTimeout: 5 * time.Second, Keepalive: sipws.KeepaliveNone}
				isX := func(c *sipws.Conn) bool { return c.URL().Path == "/x" }
				switch hook {
				case "OnOpen":
					cfg.OnOpen = func(c *sipws.Conn) {
						if isX(c) {
							shutdown()
						}
					}
				case "OnMessage":
					cfg.OnMessage = func(c *sipws.Conn, m sipws.Message) {
						if isX(c) && string(m.Data) == "shutdown" {
							shutdown()
						}
					}
				case "OnClosed":
					cfg.OnOpen = func(c *sipws.Conn) {
						if isX(c) {
							xID.Store(uint64(c.ID()))
						}
					}
					cfg.OnClosed = func(ev sipws.CloseEvent) {
						if uint64(ev.ID) == xID.Load() {
							shutdown()
						}
					}
				}
				ts := startServer(t, cfg)
				srv.Store(ts.Server)

				y, yConn := clOpen(t, ts, "sip")
				x, resp := rawDial(t, ts.Addr, strings.Replace(handshakeRequest(ts.Addr, "sip"), "GET / ", "GET /x ", 1))
				require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
				xConn := ts.nextOpened(t)
				switch hook {
				case "OnMessage":
					x.sendText("shutdown")
				case "OnClosed":
					x.sendClose(1000, "bye")
					x.expectClose(1000, ioTimeout)
					x.expectEOF(ioTimeout)
					ev := ts.nextClosed(t)
					clCheckFields(t, ts, ev, x.conn, xConn, clWant{sp: sipws.SIP, initiator: sipws.CausePeer,
						code: sipws.CloseNormal, reason: "bye", errNil: true})
				}

				// Y gets its 1001; it answers, unless Shutdown is to pass
				// its deadline.
				code, _ := clReadClose(t, y)
				require.Equal(t, uint16(1001), code)
				if !deadline {
					y.sendClose(1001, "")
				}
				var err error
				select {
				case err = <-shut:
				case <-time.After(10 * time.Second):
					t.Fatalf("Shutdown called from %s did not return", hook)
				}
				// Y, and X, the caller's own, which had its 1001 too and
				// ends once the hook has returned. With the deadline, both
				// were dropped, and may end in either order.
				want := clWant{sp: sipws.SIP, initiator: sipws.CauseShutdown, code: sipws.CloseGoingAway, reason: "Going away", errNil: !deadline}
				check := func(ev sipws.CloseEvent) {
					t.Helper()
					switch ev.ID {
					case yConn.ID():
						clCheckFields(t, ts, ev, y.conn, yConn, want)
					case xConn.ID():
						clCheckFields(t, ts, ev, x.conn, xConn, want)
					default:
						t.Errorf("OnClosed of an unknown connection %d", ev.ID)
					}
					if deadline {
						assert.ErrorIs(t, ev.Err, context.DeadlineExceeded)
					}
				}
				xOpen := hook != "OnClosed"
				if xOpen {
					code, _ := clReadClose(t, x)
					require.Equal(t, uint16(1001), code)
				}
				if deadline {
					require.ErrorIs(t, err, context.DeadlineExceeded)
					clExpectGone(t, y, clPrompt)
					n := 1
					if xOpen {
						clExpectGone(t, x, clPrompt)
						n = 2
					}
					seen := map[sipws.ConnID]bool{}
					for range n {
						ev := ts.nextClosed(t)
						require.False(t, seen[ev.ID], "a second OnClosed for %d", ev.ID)
						seen[ev.ID] = true
						check(ev)
					}
				} else {
					require.NoError(t, err)
					// Shutdown waited for Y's end and its OnClosed.
					require.Len(t, ts.Closed, 1, "Y's OnClosed, before Shutdown returned")
					ev := ts.nextClosed(t)
					require.Equal(t, yConn.ID(), ev.ID)
					check(ev)
					if xOpen {
						x.sendClose(1001, "")
						x.expectEOF(ioTimeout)
						ev := ts.nextClosed(t)
						require.Equal(t, xConn.ID(), ev.ID)
						check(ev)
					}
				}
				ts.noMoreClosed(t, clQuiet)
				assert.Equal(t, 0, ts.Registry().Len())
			})
		}
	}
}

// TestClosedShutdownStuckHook checks that Shutdown returns when its context
// is done even though a connection's OnMessage does not return: every
// connection is dropped (the stuck one too: its peer's socket is closed),
// the idle one's OnClosed fires at once, the stuck one's once its hook
// returns, exactly once, and then nothing of the server is left running.
func TestClosedShutdownStuckHook(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	entered := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // should the test fail before
	closed := make(chan sipws.CloseEvent, 4)
	opened := make(chan *sipws.Conn, 4)
	srv, err := sipws.New(sipws.Config{
		CloseTimeout: 5 * time.Second,
		Keepalive:    sipws.KeepaliveNone,
		OnOpen:       func(c *sipws.Conn) { opened <- c },
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if string(m.Data) == "block" {
				close(entered)
				<-release
			}
		},
		OnClosed: func(ev sipws.CloseEvent) { closed <- ev },
	})
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	addr := strings.TrimPrefix(hs.URL, "http://")
	nextOpened := func() *sipws.Conn {
		select {
		case c := <-opened:
			return c
		case <-time.After(ioTimeout):
			t.Fatal("no connection opened")
			return nil
		}
	}
	nextClosed := func() sipws.CloseEvent {
		select {
		case ev := <-closed:
			return ev
		case <-time.After(ioTimeout):
			t.Fatal("OnClosed did not fire")
			return sipws.CloseEvent{}
		}
	}

	stuck := dialWS(t, addr, "sip")
	stuckConn := nextOpened()
	idle := dialWS(t, addr, "sip")
	idleConn := nextOpened()
	stuck.sendText("block")
	select {
	case <-entered:
	case <-time.After(ioTimeout):
		t.Fatal("OnMessage not entered")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err = <-shut:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return while OnMessage was stuck")
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Both peers are dropped, the stuck one too.
	clExpectGone(t, stuck, clPrompt)
	clExpectGone(t, idle, clPrompt)
	ev := nextClosed()
	assert.Equal(t, idleConn.ID(), ev.ID, "the idle connection's OnClosed")
	assert.Equal(t, sipws.CauseShutdown, ev.Cause)
	assert.ErrorIs(t, ev.Err, context.DeadlineExceeded)
	require.Empty(t, closed, "OnClosed of a connection whose OnMessage has not returned")
	select {
	case <-stuckConn.Done():
		t.Fatal("the stuck connection ended while its hook runs")
	default:
	}

	releaseOnce.Do(func() { close(release) })
	ev = nextClosed()
	assert.Equal(t, stuckConn.ID(), ev.ID, "the stuck connection's OnClosed, once its hook returned")
	assert.Equal(t, sipws.CauseShutdown, ev.Cause)
	assert.Equal(t, sipws.CloseGoingAway, ev.Code)
	assert.ErrorIs(t, ev.Err, context.DeadlineExceeded)
	select {
	case ev := <-closed:
		t.Fatalf("a second OnClosed: %+v", ev)
	case <-time.After(clQuiet):
	}

	// A second Shutdown has nothing left to wait for.
	require.NoError(t, srv.Shutdown(context.Background()))
	assert.Equal(t, 0, srv.Registry().Len())
	assert.Zero(t, srv.Stats().CurrentConnections)
	require.NoError(t, stuck.conn.Close())
	require.NoError(t, idle.conn.Close())
	hs.Close()
	goleak.VerifyNone(t, ignore)
}

// TestClosedShutdownFromTwoHooks has two connections call Shutdown from
// their OnMessage at the same time, with no deadline: neither waits for the
// other's goroutine, which is blocked in Shutdown too, so both return; then
// both connections end, once each.
func TestClosedShutdownFromTwoHooks(t *testing.T) {
	var srv atomic.Pointer[sipws.Server]
	var entered sync.WaitGroup
	entered.Add(2)
	shut := make(chan error, 2)
	ts := startServer(t, sipws.Config{
		CloseTimeout: 5 * time.Second,
		Keepalive:    sipws.KeepaliveNone,
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			entered.Done()
			entered.Wait() // both hooks run before either calls Shutdown
			shut <- srv.Load().Shutdown(context.Background())
		},
	})
	srv.Store(ts.Server)
	a, aConn := clOpen(t, ts, "sip")
	b, bConn := clOpen(t, ts, "sip")
	a.sendText("shutdown")
	b.sendText("shutdown")
	for range 2 {
		select {
		case err := <-shut:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown called from two hooks did not return")
		}
	}
	for _, p := range []struct {
		c    *rawClient
		conn *sipws.Conn
	}{{a, aConn}, {b, bConn}} {
		code, _ := clReadClose(t, p.c)
		require.Equal(t, uint16(1001), code)
		p.c.sendClose(1001, "")
		p.c.expectEOF(ioTimeout)
	}
	ended := map[sipws.ConnID]int{}
	for range 2 {
		ev := ts.nextClosed(t)
		assert.Equal(t, sipws.CauseShutdown, ev.Cause)
		assert.NoError(t, ev.Err)
		ended[ev.ID]++
	}
	assert.Equal(t, map[sipws.ConnID]int{aConn.ID(): 1, bConn.ID(): 1}, ended)
	ts.noMoreClosed(t, clQuiet)
}

func TestFrameServerClose(t *testing.T) {
	t.Run("client replies", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{CloseTimeout: 3 * time.Second})
		c, conn := frDial(t, ts)
		require.NoError(t, conn.Close(4000, "because"))
		f := c.mustReadFrame()
		frServerFrame(t, f)
		require.Equal(t, frOpClose, f.Op)
		code, reason := f.closeCode()
		assert.Equal(t, uint16(4000), code)
		assert.Equal(t, "because", reason)

		assert.ErrorIs(t, conn.Send([]byte("x")), sipws.ErrClosed)
		assert.ErrorIs(t, conn.Ping(nil), sipws.ErrClosed)
		assert.ErrorIs(t, conn.Close(1000, ""), sipws.ErrClosed)

		c.sendClose(4000, "")
		c.expectEOF(time.Second) // at once, far before CloseTimeout
		ev := frEnded(t, ts, c)
		assert.Equal(t, sipws.CauseHost, ev.Cause)
		assert.Equal(t, sipws.CloseCode(4000), ev.Code)
		assert.Equal(t, "because", ev.Reason)
		assert.NoError(t, ev.Err, "a completed close handshake")
	})
	t.Run("client never replies", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{CloseTimeout: 300 * time.Millisecond})
		c, conn := frDial(t, ts)
		start := time.Now()
		require.NoError(t, conn.Close(4000, "because"))
		f := c.mustReadFrame()
		require.Equal(t, frOpClose, f.Op)
		c.expectEOF(3 * time.Second)
		elapsed := time.Since(start)
		assert.GreaterOrEqual(t, elapsed, 250*time.Millisecond, "TCP closed before CloseTimeout")
		ev := frEnded(t, ts, c)
		assert.Equal(t, sipws.CauseHost, ev.Cause)
		assert.Equal(t, sipws.CloseCode(4000), ev.Code)
		assert.Equal(t, "because", ev.Reason)
		assert.Error(t, ev.Err, "the close handshake did not complete")
	})
	t.Run("messages after the server's close are not delivered", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{CloseTimeout: 3 * time.Second})
		c, conn := frDial(t, ts)
		c.sendText("before")
		assert.Equal(t, "before", string(ts.nextMsg(t).Msg.Data))
		require.NoError(t, conn.Close(4000, "because"))
		f := c.mustReadFrame()
		require.Equal(t, frOpClose, f.Op)
		c.sendText("late")
		c.writeFrame(true, 0, frOpBinary, []byte("late binary"), true)
		c.writeFrame(false, 0, frOpText, []byte("late "), true)
		c.writeFrame(true, 0, frOpCont, []byte("fragments"), true)
		c.sendClose(4000, "")
		c.expectEOF(time.Second)
		ev := frEnded(t, ts, c)
		assert.Equal(t, sipws.CauseHost, ev.Cause)
		assert.Zero(t, len(ts.Msgs), "a message sent after the server's close was delivered")
	})
	t.Run("default code and reason", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{})
		c, conn := frDial(t, ts)
		require.NoError(t, conn.Close(0, ""))
		f := c.mustReadFrame()
		require.Equal(t, frOpClose, f.Op)
		code, reason := f.closeCode()
		assert.Equal(t, uint16(1000), code)
		assert.Equal(t, sipws.DefaultCloseReason, reason)
		c.sendClose(1000, "")
		c.expectEOF(time.Second)
	})
}

func TestFrameServerCloseInvalidSendsNothing(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, conn := frDial(t, ts)
	for _, code := range []sipws.CloseCode{1005, 1006, 1015, 999, 1004, 1016, 2000, 2999, 5000} {
		err := conn.Close(code, "x")
		assert.ErrorIs(t, err, sipws.ErrInvalidCloseCode, "code %d", code)
	}
	err := conn.Close(1000, strings.Repeat("r", 124))
	assert.ErrorIs(t, err, sipws.ErrInvalidCloseReason)
	err = conn.Close(1000, "bad \xff")
	assert.ErrorIs(t, err, sipws.ErrInvalidCloseReason)

	// Nothing went out and the connection is open: the next frame the
	// client reads is this message, and a valid close still works.
	require.NoError(t, conn.Send([]byte("marker")))
	f := c.mustReadFrame()
	require.Equal(t, frOpText, f.Op)
	assert.Equal(t, "marker", string(f.Payload))
	c.sendText("client still heard")
	assert.Equal(t, "client still heard", string(ts.nextMsg(t).Msg.Data))

	reason := strings.Repeat("r", 123)
	require.NoError(t, conn.Close(3000, reason))
	f = c.mustReadFrame()
	require.Equal(t, frOpClose, f.Op)
	code, got := f.closeCode()
	assert.Equal(t, uint16(3000), code)
	assert.Equal(t, reason, got)
}

// RFC 6455 §5.5.2: a Ping is answered "unless it already received a Close
// frame" — having sent one is no exception (§5.5.1 forbids only data frames
// after a Close).
func TestFramePingAnsweredAfterServerClose(t *testing.T) {
	ts := startServer(t, sipws.Config{CloseTimeout: 3 * time.Second})
	c, conn := frDial(t, ts)
	require.NoError(t, conn.Close(4000, "because"))
	f := c.mustReadFrame()
	require.Equal(t, frOpClose, f.Op)
	c.writeFrame(true, 0, frOpPing, []byte("still there?"), true)
	c.sendClose(4000, "")
	f, err := c.readFrame()
	require.NoError(t, err, "no pong before the server closed TCP")
	require.Equal(t, frOpPong, f.Op)
	assert.Equal(t, "still there?", string(f.Payload))
	c.expectEOF(time.Second)
}
