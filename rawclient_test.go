package sipws_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/require"
)

// This file is the test suite's own RFC 6455 client, written from the RFC so
// that tests can send what no library would: malformed frames, bad masks,
// fragments in any order. It shares no code with the package.

// ioTimeout bounds every wait of a test on the network.
const ioTimeout = 5 * time.Second

// testServer is a sipws server on a loopback httptest server, with every
// event recorded.
type testServer struct {
	*sipws.Server
	HTTP   *httptest.Server
	Addr   string // host:port
	Opened chan *sipws.Conn
	Msgs   chan recvMsg
	Closed chan sipws.CloseEvent
}

type recvMsg struct {
	Conn *sipws.Conn
	Msg  sipws.Message
}

// startServer starts a server with cfg. Hooks already set in cfg are called
// after the recording ones. The server is shut down when the test ends.
func startServer(t testing.TB, cfg sipws.Config) *testServer {
	t.Helper()
	return startServerOn(t, cfg, httptest.NewServer)
}

// startServerOn is startServer with the HTTP server that start starts.
func startServerOn(t testing.TB, cfg sipws.Config, start func(http.Handler) *httptest.Server) *testServer {
	t.Helper()
	ts := &testServer{
		Opened: make(chan *sipws.Conn, 1024),
		Msgs:   make(chan recvMsg, 4096),
		Closed: make(chan sipws.CloseEvent, 1024),
	}
	onOpen, onMsg, onClosed := cfg.OnOpen, cfg.OnMessage, cfg.OnClosed
	cfg.OnOpen = func(c *sipws.Conn) {
		ts.Opened <- c
		if onOpen != nil {
			onOpen(c)
		}
	}
	cfg.OnMessage = func(c *sipws.Conn, m sipws.Message) {
		ts.Msgs <- recvMsg{c, m}
		if onMsg != nil {
			onMsg(c, m)
		}
	}
	cfg.OnClosed = func(ev sipws.CloseEvent) {
		ts.Closed <- ev
		if onClosed != nil {
			onClosed(ev)
		}
	}
	srv, err := sipws.New(cfg)
	require.NoError(t, err)
	ts.Server = srv
	ts.HTTP = start(srv)
	ts.Addr = ts.HTTP.Listener.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		ts.HTTP.Close()
	})
	return ts
}

// nextOpened waits for the next connection to open.
func (ts *testServer) nextOpened(t testing.TB) *sipws.Conn {
	t.Helper()
	select {
	case c := <-ts.Opened:
		return c
	case <-time.After(ioTimeout):
		t.Fatal("no connection opened")
		return nil
	}
}

// nextMsg waits for the next delivered message.
func (ts *testServer) nextMsg(t testing.TB) recvMsg {
	t.Helper()
	select {
	case m := <-ts.Msgs:
		return m
	case <-time.After(ioTimeout):
		t.Fatal("no message delivered")
		return recvMsg{}
	}
}

// nextClosed waits for the next OnClosed event.
func (ts *testServer) nextClosed(t testing.TB) sipws.CloseEvent {
	t.Helper()
	select {
	case ev := <-ts.Closed:
		return ev
	case <-time.After(ioTimeout):
		t.Fatal("OnClosed did not fire")
		return sipws.CloseEvent{}
	}
}

// noMoreClosed checks that no further OnClosed event comes within d.
func (ts *testServer) noMoreClosed(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev := <-ts.Closed:
		t.Fatalf("unexpected extra OnClosed: %+v", ev)
	case <-time.After(d):
	}
}

// noMsg checks that no message is delivered within d.
func (ts *testServer) noMsg(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-ts.Msgs:
		t.Fatalf("unexpected message delivered: %q", m.Msg.Data)
	case <-time.After(d):
	}
}

// rawClient is a WebSocket client on a raw TCP socket.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	resp *http.Response
}

// handshakeRequest builds a correct handshake request for path with the
// given Sec-WebSocket-Protocol (omitted when ""), and extra header lines.
func handshakeRequest(addr, protocols string, extra ...string) string {
	var b strings.Builder
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(&b, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", addr)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", base64.StdEncoding.EncodeToString(key))
	if protocols != "" {
		fmt.Fprintf(&b, "Sec-WebSocket-Protocol: %s\r\n", protocols)
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawDial connects to addr and sends req; it returns the client and the
// parsed HTTP response.
func rawDial(t testing.TB, addr, req string) (*rawClient, *http.Response) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(conn, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.br, nil)
	require.NoError(t, err)
	c.resp = resp
	return c, resp
}

// dialWS opens a WebSocket connection offering protocols and checks the 101.
func dialWS(t testing.TB, addr, protocols string, extra ...string) *rawClient {
	t.Helper()
	c, resp := rawDial(t, addr, handshakeRequest(addr, protocols, extra...))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, "handshake status")
	return c
}

// writeFrame sends one frame. A nil mask sends it unmasked; otherwise the
// payload is masked with a random key.
func (c *rawClient) writeFrame(fin bool, rsv, op byte, payload []byte, masked bool) {
	c.t.Helper()
	c.writeRaw(encodeFrame(fin, rsv, op, payload, masked))
}

// encodeFrame builds a client frame with the minimal length encoding.
func encodeFrame(fin bool, rsv, op byte, payload []byte, masked bool) []byte {
	b0 := rsv<<4 | op&0x0f
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n <= 0xffff:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		var key [4]byte
		_, _ = rand.Read(key[:])
		b = append(b, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(b, p...)
}

// writeRaw sends bytes as they are.
func (c *rawClient) writeRaw(b []byte) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetWriteDeadline(time.Now().Add(ioTimeout)))
	_, err := c.conn.Write(b)
	require.NoError(c.t, err)
}

// sendText sends a masked, final text frame.
func (c *rawClient) sendText(s string) { c.t.Helper(); c.writeFrame(true, 0, 0x1, []byte(s), true) }

// sendClose sends a masked close frame with a code (0: no payload) and reason.
func (c *rawClient) sendClose(code uint16, reason string) {
	c.t.Helper()
	var p []byte
	if code != 0 {
		p = binary.BigEndian.AppendUint16(nil, code)
		p = append(p, reason...)
	}
	c.writeFrame(true, 0, 0x8, p, true)
}

// frame is a frame read from the server.
type frame struct {
	Fin     bool
	Rsv     byte
	Op      byte
	Masked  bool
	Payload []byte
}

// closeCode returns the code and reason of a close frame.
func (f frame) closeCode() (uint16, string) {
	if len(f.Payload) < 2 {
		return 0, ""
	}
	return binary.BigEndian.Uint16(f.Payload), string(f.Payload[2:])
}

// readFrame reads one frame from the server.
func (c *rawClient) readFrame() (frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{Fin: h[0]&0x80 != 0, Rsv: h[0] >> 4 & 7, Op: h[0] & 0x0f, Masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(c.br, x[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(c.br, x[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	if n > 64<<20 {
		return f, fmt.Errorf("frame of %d bytes", n)
	}
	f.Payload = make([]byte, n)
	_, err := io.ReadFull(c.br, f.Payload)
	return f, err
}

// mustReadFrame reads one frame and fails the test on error.
func (c *rawClient) mustReadFrame() frame {
	c.t.Helper()
	f, err := c.readFrame()
	require.NoError(c.t, err, "reading a frame")
	return f
}

// expectClose reads frames until a close frame (failing on data frames) and
// checks its code; then it checks that the server closes TCP within bound.
func (c *rawClient) expectClose(code uint16, bound time.Duration) frame {
	c.t.Helper()
	for {
		f := c.mustReadFrame()
		if f.Op == 0x8 {
			got, reason := f.closeCode()
			require.Equal(c.t, code, got, "close code (reason %q)", reason)
			c.expectEOF(bound)
			return f
		}
		if f.Op != 0x9 && f.Op != 0xA {
			c.t.Fatalf("expected a close frame, got opcode %#x %q", f.Op, f.Payload)
		}
	}
}

// expectEOF checks that the server closes the TCP connection within bound,
// sending nothing more.
func (c *rawClient) expectEOF(bound time.Duration) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(bound))
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("expected the server to close TCP, got byte %#x", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("server did not close TCP within %v", bound)
	}
}

// concurrently runs f n times in parallel and waits.
func concurrently(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}
