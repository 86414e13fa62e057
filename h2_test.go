package sipws_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
)

// Go's HTTP/2 server offers Extended CONNECT (RFC 8441) only when the
// process starts with GODEBUG=http2xconnect=1: net/http reads it from the
// environment once, when it starts, and no //go:debug directive sets it.
// The tests of WebSocket over HTTP/2 run in a child process of the test
// binary started with it (inXConnect), so that the rest of the package,
// TestHTTP2BrowsersUseHTTP1 included, runs with Go's default.

// xconnectEnv is the GODEBUG setting the child process starts with.
const xconnectEnv = "http2xconnect=1"

// inXConnect reports whether this process offers Extended CONNECT, so that
// the calling test runs here. When it does not, it runs the calling test in
// a child process of the test binary that does, requires that it ran and
// passed, and returns false: the caller then returns.
func inXConnect(t *testing.T) bool {
	t.Helper()
	if strings.Contains(os.Getenv("GODEBUG"), xconnectEnv) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=1m")
	godebug := xconnectEnv
	if v := os.Getenv("GODEBUG"); v != "" {
		godebug = v + "," + xconnectEnv
	}
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug)
	out, err := cmd.CombinedOutput()
	t.Logf("child process with GODEBUG=%s:\n%s", godebug, out)
	require.NoError(t, err, "the test in the child process")
	require.Contains(t, string(out), "--- PASS: "+t.Name()+" ", "the child process ran the test")
	return false
}

// startH2Server is startServer on a TLS listener that offers HTTP/2, with
// the http.Server's ReadTimeout and WriteTimeout set to httpTimeout, which
// Go's HTTP/2 server applies to each stream.
func startH2Server(t *testing.T, cfg sipws.Config) *testServer {
	return startServerOn(t, cfg, func(h http.Handler) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.Config.ReadTimeout = httpTimeout
		s.Config.WriteTimeout = httpTimeout
		s.EnableHTTP2 = true
		s.StartTLS()
		return s
	})
}

// httpTimeout is the http.Server's ReadTimeout and WriteTimeout in the
// tests over HTTP/2: a handshake's, which must not bound the connection.
const httpTimeout = 300 * time.Millisecond

// h2Client returns an HTTP client of ts that speaks HTTP/2 only, with the
// client side of Extended CONNECT (golang.org/x/net/http2's Transport: the
// one in net/http refuses a :protocol header). Its connections are closed
// when the test ends.
func h2Client(t *testing.T, ts *testServer) *http.Client {
	tr := &http2.Transport{TLSClientConfig: ts.HTTP.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}
	tr.TLSClientConfig.NextProtos = []string{"h2"}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h2Stream is a WebSocket over an HTTP/2 stream, the client's side.
type h2Stream struct {
	resp *http.Response
	out  *io.PipeWriter
}

// dialH2 sends an Extended CONNECT for a WebSocket (RFC 8441 §5) with the
// headers in hdr, and returns the response and, on a 200, the stream.
func dialH2(t *testing.T, ts *testServer, hdr http.Header) (*http.Response, *h2Stream) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, ts.HTTP.URL+"/sip?x=1", pr)
	require.NoError(t, err)
	req.Header = hdr.Clone()
	req.Header.Set(":protocol", "websocket")
	resp, err := h2Client(t, ts).Do(req)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = pw.Close()
		_ = resp.Body.Close()
	})
	require.Equal(t, 2, resp.ProtoMajor)
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	return resp, &h2Stream{resp: resp, out: pw}
}

// sipHeader is the header of a browser's handshake for SIP over HTTP/2.
func sipHeader() http.Header {
	return http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {"sip"}, "Origin": {"https://phone.example"}}
}

// send sends one masked frame.
func (s *h2Stream) send(t *testing.T, op ws.OpCode, p []byte) {
	t.Helper()
	f := ws.MaskFrame(ws.NewFrame(op, true, p))
	require.NoError(t, ws.WriteFrame(s.out, f))
}

// next reads the server's next frame.
func (s *h2Stream) next(t *testing.T) ws.Frame {
	t.Helper()
	f, err := ws.ReadFrame(s.resp.Body)
	require.NoError(t, err)
	assert.False(t, f.Header.Masked, "a server's frame is not masked")
	return f
}

// TestHTTP2WebSocket: with Extended CONNECT offered, a WebSocket handshake
// sent as an HTTP/2 CONNECT with :protocol websocket gets 200 with the
// sub-protocol (RFC 8441 §5), and the connection runs on the stream as one
// over HTTP/1.1 does: OnOpen with Conn.HTTP2 true and the request's URL and
// headers, a message each way after the http.Server's ReadTimeout and
// WriteTimeout have passed, the registry, and the close handshake the
// client starts, which ends the stream.
func TestHTTP2WebSocket(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{})
	resp, s := dialH2(t, ts, sipHeader())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "sip", resp.Header.Get("Sec-WebSocket-Protocol"))
	assert.Empty(t, resp.Header.Get("Sec-WebSocket-Accept"))

	c := ts.nextOpened(t)
	assert.True(t, c.HTTP2())
	assert.True(t, c.Secure())
	assert.Equal(t, "/sip?x=1", c.URL().String())
	assert.Equal(t, "https://phone.example", c.Header().Get("Origin"))
	d := ts.Registry().Dump(sipws.DumpQuery{})
	require.Len(t, d.Conns, 1)
	assert.True(t, d.Conns[0].HTTP2, "the dump says what carried it")

	// Past the http.Server's timeouts, which bound the stream's handshake
	// and not the connection.
	time.Sleep(2 * httpTimeout)
	s.send(t, ws.OpText, []byte("REGISTER sip:example.com SIP/2.0\r\n\r\n"))
	m := ts.nextMsg(t)
	assert.Same(t, c, m.Conn)
	assert.Equal(t, "REGISTER sip:example.com SIP/2.0\r\n\r\n", string(m.Msg.Data))
	require.NoError(t, c.Send([]byte("SIP/2.0 200 OK\r\n\r\n")))
	f := s.next(t)
	assert.Equal(t, ws.OpText, f.Header.OpCode)
	assert.Equal(t, "SIP/2.0 200 OK\r\n\r\n", string(f.Payload))

	s.send(t, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
	f = s.next(t)
	assert.Equal(t, ws.OpClose, f.Header.OpCode)
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CausePeer, ev.Cause)
	assert.Equal(t, sipws.CloseNormal, ev.Code)
	// The stream ends: the handler returned.
	_, err := io.Copy(io.Discard, s.resp.Body)
	assert.NoError(t, err)
	assert.Equal(t, 0, ts.Registry().Len())
}

// TestHTTP2ServerClose: a connection over HTTP/2 that the host closes sends
// its close frame on the stream, waits for the reply, and ends the stream;
// the peer's frames after the close are not delivered.
func TestHTTP2ServerClose(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{})
	_, s := dialH2(t, ts, sipHeader())
	require.NotNil(t, s)
	c := ts.nextOpened(t)
	require.NoError(t, c.Close(sipws.CloseGoingAway, "moving"))
	f := s.next(t)
	require.Equal(t, ws.OpClose, f.Header.OpCode)
	assert.Equal(t, uint16(sipws.CloseGoingAway), binary.BigEndian.Uint16(f.Payload))
	s.send(t, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, ""))
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CauseHost, ev.Cause)
	assert.NoError(t, ev.Err)
	select {
	case <-c.Done():
	case <-time.After(ioTimeout):
		t.Fatal("connection not done")
	}
	_, err := io.Copy(io.Discard, s.resp.Body)
	assert.NoError(t, err, "the stream ends")
}

// TestHTTP2Shutdown: Shutdown closes a connection over HTTP/2 as any other
// (1001, then the close handshake), returns once it has ended, and then
// nothing of it is left running: the handler's goroutine, which served the
// stream, has returned.
func TestHTTP2Shutdown(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ignore := goleak.IgnoreCurrent()
	ts := startH2Server(t, sipws.Config{})
	client := h2Client(t, ts)
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, ts.HTTP.URL+"/", pr)
	require.NoError(t, err)
	req.Header = sipHeader()
	req.Header.Set(":protocol", "websocket")
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	s := &h2Stream{resp: resp, out: pw}
	ts.nextOpened(t)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	f := s.next(t)
	require.Equal(t, ws.OpClose, f.Header.OpCode)
	assert.Equal(t, uint16(sipws.CloseGoingAway), binary.BigEndian.Uint16(f.Payload))
	s.send(t, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, ""))
	require.NoError(t, <-done)
	assert.Equal(t, sipws.CauseShutdown, ts.nextClosed(t).Cause)
	_, err = io.Copy(io.Discard, resp.Body)
	assert.NoError(t, err, "the stream ends")
	_ = pw.Close()
	_ = resp.Body.Close()
	client.CloseIdleConnections()
	ts.HTTP.Close()
	goleak.VerifyNone(t, ignore)
}

// TestHTTP2PeerGone: a peer that resets its stream (a browser closing the
// tab: RST_STREAM) ends the connection as a lost TCP connection does, and
// the handler returns; the HTTP/2 connection itself stays.
func TestHTTP2PeerGone(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{})
	client := h2Client(t, ts)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest(http.MethodConnect, ts.HTTP.URL+"/", pr)
	require.NoError(t, err)
	req.Header = sipHeader()
	req.Header.Set(":protocol", "websocket")
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	c := ts.nextOpened(t)
	require.NoError(t, resp.Body.Close()) // RST_STREAM (CANCEL)
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CausePeerLost, ev.Cause)
	assert.Equal(t, sipws.CloseAbnormal, ev.Code)
	select {
	case <-c.Done():
	case <-time.After(ioTimeout):
		t.Fatal("connection not done")
	}
	assert.Equal(t, 0, ts.Registry().Len())
	assert.True(t, getReused(t, ts, client), "the HTTP/2 connection outlived the stream")
}

// getReused sends a GET to ts with client and reports whether it went on a
// connection the client already had.
func getReused(t *testing.T, ts *testServer, client *http.Client) bool {
	t.Helper()
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.HTTP.URL+"/", nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return reused
}

// TestHTTP2WriteTimeout: a peer that stops reading its stream (HTTP/2 flow
// control then holds our writes) is closed after WriteTimeout as one on its
// own TCP connection is: the write fails (CauseWriteFailure), the stream is
// reset, and the handler returns.
func TestHTTP2WriteTimeout(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{WriteTimeout: 300 * time.Millisecond, SendQueueSize: 64 << 20})
	_, s := dialH2(t, ts, sipHeader())
	require.NotNil(t, s)
	c := ts.nextOpened(t)
	// More than the client's stream window (4 MiB in x/net's Transport),
	// which it never reads.
	msg := bytes.Repeat([]byte("x"), 60<<10)
	for range 100 {
		if c.SendMessage(sipws.MessageBinary, msg) != nil {
			break
		}
	}
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CauseWriteFailure, ev.Cause)
	assert.ErrorIs(t, ev.Err, os.ErrDeadlineExceeded)
	select {
	case <-c.Done():
	case <-time.After(ioTimeout):
		t.Fatal("connection not done")
	}
	assert.Equal(t, 0, ts.Registry().Len())
}

// TestHTTP2FrameTimeout: the read deadlines hold over HTTP/2 as over TCP:
// a frame that starts and does not finish within FrameTimeout fails the
// connection with 1008, and the connection ends.
func TestHTTP2FrameTimeout(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{FrameTimeout: 200 * time.Millisecond})
	_, s := dialH2(t, ts, sipHeader())
	require.NotNil(t, s)
	ts.nextOpened(t)
	// A masked text frame header announcing 10 bytes, and 3 of them.
	_, err := s.out.Write([]byte{0x81, 0x80 | 10, 1, 2, 3, 4, 'a', 'b', 'c'})
	require.NoError(t, err)
	f := s.next(t)
	require.Equal(t, ws.OpClose, f.Header.OpCode)
	assert.Equal(t, uint16(sipws.ClosePolicyViolation), binary.BigEndian.Uint16(f.Payload))
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.ClosePolicyViolation, ev.Code)
}

// TestHTTP2ChecksApply: over HTTP/2 the handshake is checked as over
// HTTP/1.1: AllowedOrigins (403), the version (426), the sub-protocols
// (400), a :protocol other than websocket (400), a GET (405, Allow:
// CONNECT). A refusal does not end the HTTP/2 connection (no Connection:
// close, which Go turns into GOAWAY): the next request reuses it.
func TestHTTP2ChecksApply(t *testing.T) {
	if !inXConnect(t) {
		return
	}
	ts := startH2Server(t, sipws.Config{AllowedOrigins: []string{"https://phone.example"}})
	client := h2Client(t, ts)
	for _, tc := range []struct {
		name   string
		edit   func(http.Header)
		status int
	}{
		{"origin", func(h http.Header) { h.Set("Origin", "https://evil.example") }, http.StatusForbidden},
		{"version", func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired},
		{"subprotocol", func(h http.Header) { h.Set("Sec-WebSocket-Protocol", "xmpp") }, http.StatusBadRequest},
		{"protocol", func(h http.Header) { h.Set(":protocol", "webtransport") }, http.StatusBadRequest},
	} {
		hdr := sipHeader()
		tc.edit(hdr)
		pr, pw := io.Pipe()
		req, err := http.NewRequest(http.MethodConnect, ts.HTTP.URL+"/", pr)
		require.NoError(t, err)
		req.Header = hdr
		if req.Header.Get(":protocol") == "" {
			req.Header.Set(":protocol", "websocket")
		}
		resp, err := client.Do(req)
		require.NoError(t, err, tc.name)
		_ = pw.Close()
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.name, body)
	}
	// A GET over HTTP/2, with Extended CONNECT offered: 405, Allow: CONNECT.
	req, err := http.NewRequest(http.MethodGet, ts.HTTP.URL+"/", nil)
	require.NoError(t, err)
	req.Header = sipHeader()
	resp, err := client.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	assert.Equal(t, http.MethodConnect, resp.Header.Get("Allow"))
	assert.Contains(t, string(body), "Extended CONNECT")

	assert.Equal(t, 0, ts.Registry().Len())
	assert.True(t, getReused(t, ts, client), "the HTTP/2 connection outlived the refusals")
}

// TestHTTP2WithoutXConnect: in a process that does not offer Extended
// CONNECT (Go's default), a WebSocket handshake that reaches sipws over
// HTTP/2 (a GET) is refused with 400 and a reason that says what the host
// must set, logged once at warn; the refusal does not end the browser's
// HTTP/2 connection, which the next request reuses.
func TestHTTP2WithoutXConnect(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), xconnectEnv) {
		t.Log("this process offers Extended CONNECT: see TestHTTP2ChecksApply")
		return
	}
	var logMu sync.Mutex
	var logBuf bytes.Buffer
	lw := writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.Write(p)
	})
	ts := startH2Server(t, sipws.Config{Logger: slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	reused := 0
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused {
				reused++
			}
		},
	})
	client := h2Client(t, ts)
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.HTTP.URL+"/", nil)
		require.NoError(t, err)
		req.Header = sipHeader()
		resp, err := client.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, 2, resp.ProtoMajor)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Contains(t, string(body), "GODEBUG=http2xconnect=1")
	}
	assert.Equal(t, 1, reused, "the second handshake reused the HTTP/2 connection")
	logMu.Lock()
	logged := logBuf.String()
	logMu.Unlock()
	assert.Equal(t, 1, strings.Count(logged, "GODEBUG=http2xconnect=1"), "one warning: %s", logged)
	assert.Contains(t, logged, "level=WARN")
	assert.Equal(t, 0, ts.Registry().Len())
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
