package sipws_test

// Handshake tests (RFC 6455 §4.2, RFC 7118 §4, RFC 7977 §4) over real
// loopback sockets, written against the matrix of
// shared/reference/kamailio-behaviour.md §1. Where sipws deliberately answers
// differently from Kamailio 5.6 the row or test says so, with the number of
// the entry in §7 ("where Kamailio is wrong") of that file.
//
// Common to every refusal (Kamailio §7 #5 and #6): Kamailio answers every
// failure with the same bare response (empty body, Content-Length: 0, an
// internal Sia: header, and Sec-WebSocket-Protocol/-Version lines on every
// 400). sipws answers each failure with its own status, only the headers that
// belong to that failure, and a one-line text/plain body naming the fault;
// like Kamailio it closes the TCP connection after the response.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The sample handshake of RFC 6455 §1.3.
const (
	hsSampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	hsSampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// hsRefusalHeaders are the headers some refusal carries; a refusal that does
// not expect one of them must not carry it.
var hsRefusalHeaders = []string{"Allow", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol", "WWW-Authenticate"}

// hsKey returns a fresh Sec-WebSocket-Key: the base64 of n random bytes.
func hsKey(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// hsAccept computes Sec-WebSocket-Accept for key as RFC 6455 §4.2.2 item 5.4
// says, independently of the package.
func hsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hsRequest is a handshake request a test can bend in one place.
type hsRequest struct {
	Method, Target, Proto string
	Headers               [][2]string // in order; a name may repeat
}

// newHSRequest returns a correct handshake request for addr offering
// protocols (no Sec-WebSocket-Protocol when "").
func newHSRequest(addr, protocols string) *hsRequest {
	r := &hsRequest{Method: http.MethodGet, Target: "/", Proto: "HTTP/1.1", Headers: [][2]string{
		{"Host", addr},
		{"Upgrade", "websocket"},
		{"Connection", "Upgrade"},
		{"Sec-WebSocket-Key", hsKey(16)},
		{"Sec-WebSocket-Version", "13"},
	}}
	if protocols != "" {
		r.add("Sec-WebSocket-Protocol", protocols)
	}
	return r
}

// del removes every line of the header name.
func (r *hsRequest) del(name string) *hsRequest {
	kept := r.Headers[:0]
	for _, h := range r.Headers {
		if !strings.EqualFold(h[0], name) {
			kept = append(kept, h)
		}
	}
	r.Headers = kept
	return r
}

// set gives the header name the one value, in place of its first line (or at
// the end when it had none).
func (r *hsRequest) set(name, value string) *hsRequest {
	for i, h := range r.Headers {
		if strings.EqualFold(h[0], name) {
			r.del(name)
			r.Headers = append(r.Headers[:i], append([][2]string{{name, value}}, r.Headers[i:]...)...)
			return r
		}
	}
	return r.add(name, value)
}

// add appends one header line.
func (r *hsRequest) add(name, value string) *hsRequest {
	r.Headers = append(r.Headers, [2]string{name, value})
	return r
}

// get returns the value of the first line of name.
func (r *hsRequest) get(name string) string {
	for _, h := range r.Headers {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

// String renders the request as sent on the wire.
func (r *hsRequest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\n", r.Method, r.Target, r.Proto)
	for _, h := range r.Headers {
		if h[1] == "" {
			fmt.Fprintf(&b, "%s:\r\n", h[0])
		} else {
			fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// hsResult is the client side of one handshake attempt.
type hsResult struct {
	c    *rawClient
	resp *http.Response
	head string // the response's status line and headers as received, blank line included
}

// hsDial connects to addr over TCP and runs hsExchange.
func hsDial(t testing.TB, addr, method, req string) *hsResult {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	require.NoError(t, err)
	return hsExchange(t, conn, method, req)
}

// hsExchange sends the raw bytes req over conn and reads the response head,
// keeping a copy of the bytes as received. method is the request's method
// (it tells the HTTP parser whether a body may follow).
func hsExchange(t testing.TB, conn net.Conn, method, req string) *hsResult {
	t.Helper()
	t.Cleanup(func() { _ = conn.Close() })
	var raw bytes.Buffer // written only by this goroutine, through br
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(io.TeeReader(conn, &raw))}
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	_, err := io.WriteString(conn, req)
	require.NoError(t, err)
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	require.NoError(t, err, "reading the handshake response")
	c.resp = resp
	end := bytes.Index(raw.Bytes(), []byte("\r\n\r\n"))
	require.GreaterOrEqual(t, end, 0, "no end of the response head in %q", raw.String())
	return &hsResult{c: c, resp: resp, head: raw.String()[:end+4]}
}

// hsRefusal is what a refused handshake must look like.
type hsRefusal struct {
	status int
	header map[string][]string // exact values; hsRefusalHeaders not listed must be absent
	body   []string            // substrings of the plain-text body
}

// hsState is the server's state before a handshake attempt.
type hsState struct {
	sipws.Stats
	reg int // Registry().Len()
}

// hsBefore snapshots the server's counters and registry size.
func hsBefore(ts *testServer) hsState { return hsState{ts.Stats(), ts.Registry().Len()} }

// hsExpectRefused checks a refusal sent by HandleHandshake: status, headers,
// a one-line text/plain body naming the fault, the connection closed after
// it, and nothing upgraded: no 101 headers, no registry entry, no OnOpen,
// ws_failed_handshakes one more than in before and ws_successful_handshakes
// unchanged.
func hsExpectRefused(t *testing.T, ts *testServer, res *hsResult, before hsState, want hsRefusal) {
	t.Helper()
	resp := res.resp
	require.Equal(t, want.status, resp.StatusCode, "status; response head:\n%s", res.head)
	names := append([]string(nil), hsRefusalHeaders...)
	for name := range want.header {
		names = append(names, name)
	}
	for _, name := range names {
		assert.Equal(t, want.header[name], resp.Header.Values(name), "header %s", name)
	}
	for _, name := range []string{"Sec-WebSocket-Accept", "Upgrade", "Access-Control-Allow-Origin", "Sec-WebSocket-Extensions"} {
		assert.Empty(t, resp.Header.Values(name), "a refusal must not carry %s", name)
	}
	assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), "Content-Type %q", resp.Header.Get("Content-Type"))
	assert.True(t, resp.Close, "a refusal must close the connection (Connection: close)")

	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "reading the refusal body")
	if resp.Request.Method == http.MethodHead {
		assert.Empty(t, body, "a response to HEAD has no body")
	} else {
		assert.Equal(t, 1, strings.Count(string(body), "\n"), "body %q is not one line", body)
		assert.Greater(t, len(strings.TrimSpace(string(body))), 0, "empty body")
		for _, w := range want.body {
			assert.Contains(t, string(body), w, "the body should say what was wrong")
		}
	}
	res.c.expectEOF(ioTimeout)

	after := ts.Stats()
	assert.Equal(t, before.reg, ts.Registry().Len(), "registry entries")
	assert.Equal(t, before.FailedHandshakes+1, after.FailedHandshakes, "ws_failed_handshakes")
	assert.Equal(t, before.SuccessfulHandshakes, after.SuccessfulHandshakes, "ws_successful_handshakes")
	assert.Equal(t, before.SIP.SuccessfulHandshakes, after.SIP.SuccessfulHandshakes, "ws_sip_successful_handshakes")
	assert.Equal(t, before.MSRP.SuccessfulHandshakes, after.MSRP.SuccessfulHandshakes, "ws_msrp_successful_handshakes")
	assert.Equal(t, before.CurrentConnections, after.CurrentConnections, "ws_current_connections")
	select {
	case c := <-ts.Opened:
		t.Fatalf("a refused handshake opened connection %v", c)
	default:
	}
}

// hsExpectOpened checks a 101 of a handshake that offered key: the accept
// key, the one chosen sub-protocol, and waits for the connection.
func hsExpectOpened(t *testing.T, ts *testServer, res *hsResult, key string, sp sipws.Subprotocol) *sipws.Conn {
	t.Helper()
	require.Equal(t, http.StatusSwitchingProtocols, res.resp.StatusCode, "status; response head:\n%s", res.head)
	assert.Equal(t, []string{hsAccept(key)}, res.resp.Header.Values("Sec-WebSocket-Accept"))
	assert.Equal(t, []string{sp.Token()}, res.resp.Header.Values("Sec-WebSocket-Protocol"))
	conn := ts.nextOpened(t)
	require.Equal(t, sp, conn.Subprotocol())
	return conn
}

// hsEcho is an OnMessage that sends every message back.
func hsEcho(c *sipws.Conn, m sipws.Message) { _ = c.SendMessage(m.Type, m.Data) }

// hsRoundTrip sends a text message and checks that it is delivered on conn
// and that the echo comes back.
func hsRoundTrip(t *testing.T, ts *testServer, c *rawClient, conn *sipws.Conn, msg string) {
	t.Helper()
	c.sendText(msg)
	m := ts.nextMsg(t)
	assert.Same(t, conn, m.Conn, "delivered on another connection")
	assert.Equal(t, sipws.MessageText, m.Msg.Type)
	assert.Equal(t, msg, string(m.Msg.Data))
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x1), f.Op, "echo opcode")
	assert.False(t, f.Masked, "server frames are not masked")
	assert.Equal(t, msg, string(f.Payload))
}

// TestHandshakeRefused covers every refusal of HandleHandshake's request
// checks (RFC 6455 §4.2.1), each on a fresh server.
func TestHandshakeRefused(t *testing.T) {
	both, sipOnly, msrpOnly := sipws.SIP|sipws.MSRP, sipws.SIP, sipws.MSRP
	bad400 := func(body ...string) hsRefusal { return hsRefusal{status: http.StatusBadRequest, body: body} }
	protos := func(body string, tokens ...string) hsRefusal {
		return hsRefusal{status: http.StatusBadRequest, header: map[string][]string{"Sec-WebSocket-Protocol": tokens}, body: []string{body}}
	}
	cases := []struct {
		name   string
		sp     sipws.Subprotocol
		method string // "" is GET
		mutate func(r *hsRequest)
		want   hsRefusal
	}{
		// Kamailio: 101, the method is not checked (§7 #3).
		{name: "POST", method: http.MethodPost,
			want: hsRefusal{status: http.StatusMethodNotAllowed, header: map[string][]string{"Allow": {"GET"}}, body: []string{"GET", "POST"}}},
		// Kamailio: 101 (§7 #3). A response to HEAD has no body.
		{name: "HEAD", method: http.MethodHead,
			want: hsRefusal{status: http.StatusMethodNotAllowed, header: map[string][]string{"Allow": {"GET"}}}},
		// Kamailio: "HTTP/1.0 101 Switching Protocols" (§7 #3).
		{name: "HTTP/1.0", mutate: func(r *hsRequest) { r.Proto = "HTTP/1.0" }, want: bad400("HTTP/1.1", "HTTP/1.0")},
		// An empty Host line reaches the handler (net/http itself answers a
		// request with no Host line, see TestHandshakeMissingHost).
		// Kamailio: 101, Host is not checked (§7 #4).
		{name: "empty Host", mutate: func(r *hsRequest) { r.set("Host", "") }, want: bad400("Host")},
		{name: "Upgrade missing", mutate: func(r *hsRequest) { r.del("Upgrade") }, want: bad400("Upgrade", "websocket")},
		{name: "Upgrade h2c", mutate: func(r *hsRequest) { r.set("Upgrade", "h2c") }, want: bad400("Upgrade", "websocket")},
		{name: "Connection missing", mutate: func(r *hsRequest) { r.del("Connection") }, want: bad400("Connection")},
		{name: "Connection keep-alive only", mutate: func(r *hsRequest) { r.set("Connection", "keep-alive") }, want: bad400("Connection")},
		{name: "plain GET", mutate: func(r *hsRequest) {
			for _, h := range []string{"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol"} {
				r.del(h)
			}
		}, want: bad400("Upgrade")},
		// Kamailio's 400 also carries Sec-WebSocket-Version: 13 (it sends it
		// on every 400); here only the version refusals do.
		{name: "Sec-WebSocket-Key missing", mutate: func(r *hsRequest) { r.del("Sec-WebSocket-Key") }, want: bad400("Sec-WebSocket-Key")},
		{name: "Sec-WebSocket-Key twice", mutate: func(r *hsRequest) { r.add("Sec-WebSocket-Key", hsKey(16)) }, want: bad400("Sec-WebSocket-Key")},
		// Kamailio: 101, the key is not validated (§7 #2).
		{name: "Sec-WebSocket-Key abc", mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Key", "abc") }, want: bad400("Sec-WebSocket-Key", "16 bytes")},
		// Kamailio: 101 (§7 #2).
		{name: "Sec-WebSocket-Key of 10 bytes", mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Key", hsKey(10)) }, want: bad400("Sec-WebSocket-Key", "16 bytes")},
		// Kamailio: 101 (§7 #2).
		{name: "Sec-WebSocket-Key not base64", mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Key", "!!!!not-base64-at-all!!!") }, want: bad400("Sec-WebSocket-Key", "base64")},
		// As Kamailio: 426 with the version this server speaks.
		{name: "Sec-WebSocket-Version 8", mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Version", "8") },
			want: hsRefusal{status: http.StatusUpgradeRequired, header: map[string][]string{"Sec-WebSocket-Version": {"13"}}, body: []string{`"8"`, "13"}}},
		{name: "Sec-WebSocket-Version missing", mutate: func(r *hsRequest) { r.del("Sec-WebSocket-Version") },
			want: hsRefusal{status: http.StatusBadRequest, header: map[string][]string{"Sec-WebSocket-Version": {"13"}}, body: []string{"Sec-WebSocket-Version"}}},
		// As Kamailio: the sub-protocol is mandatory, and the 400 lists one
		// Sec-WebSocket-Protocol line per enabled sub-protocol.
		{name: "no Sec-WebSocket-Protocol, sip+msrp", sp: both, mutate: func(r *hsRequest) { r.del("Sec-WebSocket-Protocol") }, want: protos("Sec-WebSocket-Protocol", "sip", "msrp")},
		{name: "no Sec-WebSocket-Protocol, sip", sp: sipOnly, mutate: func(r *hsRequest) { r.del("Sec-WebSocket-Protocol") }, want: protos("Sec-WebSocket-Protocol", "sip")},
		{name: "no Sec-WebSocket-Protocol, msrp", sp: msrpOnly, mutate: func(r *hsRequest) { r.del("Sec-WebSocket-Protocol") }, want: protos("Sec-WebSocket-Protocol", "msrp")},
		{name: "foo, sip+msrp", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "foo") }, want: protos(`"foo"`, "sip", "msrp")},
		{name: "foo, sip", sp: sipOnly, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "foo") }, want: protos(`"foo"`, "sip")},
		{name: "foo, msrp", sp: msrpOnly, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "foo") }, want: protos(`"foo"`, "msrp")},
		{name: "msrp offered, sip server", sp: sipOnly, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "msrp") }, want: protos(`"msrp"`, "sip")},
		{name: "sip offered, msrp server", sp: msrpOnly, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "sip") }, want: protos(`"sip"`, "msrp")},
		{name: "foo and bar lines, sip+msrp", sp: both, mutate: func(r *hsRequest) {
			r.set("Sec-WebSocket-Protocol", "foo").add("Sec-WebSocket-Protocol", "bar")
		}, want: protos(`"foo, bar"`, "sip", "msrp")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{Subprotocols: tc.sp})
			req := newHSRequest(ts.Addr, "sip")
			if tc.sp == msrpOnly {
				req.set("Sec-WebSocket-Protocol", "msrp")
			}
			if tc.method != "" {
				req.Method = tc.method
			}
			if tc.mutate != nil {
				tc.mutate(req)
			}
			before := hsBefore(ts)
			res := hsDial(t, ts.Addr, req.Method, req.String())
			hsExpectRefused(t, ts, res, before, tc.want)
		})
	}
}

// TestHandshakeMissingHost sends an HTTP/1.1 handshake with no Host line.
// net/http rejects such a request itself (RFC 7230 §5.4) before any handler
// runs, so HandleHandshake never sees it: the answer is 400, nothing is
// upgraded, and ws_failed_handshakes does NOT move (the package cannot count
// what it never sees). Kamailio: 101, Host is not checked (§7 #4).
func TestHandshakeMissingHost(t *testing.T) {
	var calls atomic.Int32
	ts := startServer(t, sipws.Config{CheckOrigin: func(*http.Request) bool { calls.Add(1); return true }})
	req := newHSRequest(ts.Addr, "sip").del("Host")
	before := ts.Stats()
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())
	require.Equal(t, http.StatusBadRequest, res.resp.StatusCode, "response head:\n%s", res.head)
	assert.Empty(t, res.resp.Header.Values("Sec-WebSocket-Accept"))
	body, err := io.ReadAll(res.resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), "Host")
	res.c.expectEOF(ioTimeout)
	after := ts.Stats()
	assert.Equal(t, before.FailedHandshakes, after.FailedHandshakes, "net/http refused it: the handler never ran")
	assert.Equal(t, before.SuccessfulHandshakes, after.SuccessfulHandshakes)
	assert.Equal(t, 0, ts.Registry().Len())
	assert.Zero(t, calls.Load(), "the handler ran")
}

// TestHandshakeNegotiation checks the sub-protocol choice: exactly one
// sub-protocol, by server preference (sip before msrp), echoed in lower case,
// and the connection really speaks it (a message goes both ways and is
// counted under that sub-protocol).
func TestHandshakeNegotiation(t *testing.T) {
	both := sipws.SIP | sipws.MSRP
	cases := []struct {
		name   string
		sp     sipws.Subprotocol
		mutate func(r *hsRequest)
		want   sipws.Subprotocol
	}{
		{name: "sip", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "sip") }, want: sipws.SIP},
		{name: "msrp", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "msrp") }, want: sipws.MSRP},
		// Kamailio: 101 with sip, but the connection is stored as
		// "**UNKNOWN**" (3) and its first frame kills it (§7 #1).
		{name: "sip, msrp", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "sip, msrp") }, want: sipws.SIP},
		// Kamailio: broken as above (§7 #1). Server preference, not client
		// order, decides.
		{name: "msrp, sip", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "msrp, sip") }, want: sipws.SIP},
		{name: "SIP upper case", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "SIP") }, want: sipws.SIP},
		{name: "MSRP upper case", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "MSRP") }, want: sipws.MSRP},
		{name: "sip, msrp to sip server", sp: sipws.SIP, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "sip, msrp") }, want: sipws.SIP},
		{name: "sip, msrp to msrp server", sp: sipws.MSRP, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "sip, msrp") }, want: sipws.MSRP},
		{name: "foo, msrp", sp: both, mutate: func(r *hsRequest) { r.set("Sec-WebSocket-Protocol", "foo, msrp") }, want: sipws.MSRP},
		{name: "two lines msrp and sip", sp: both, mutate: func(r *hsRequest) {
			r.set("Sec-WebSocket-Protocol", "msrp").add("Sec-WebSocket-Protocol", "sip")
		}, want: sipws.SIP},
		{name: "two lines foo and msrp", sp: both, mutate: func(r *hsRequest) {
			r.set("Sec-WebSocket-Protocol", "foo").add("Sec-WebSocket-Protocol", "msrp")
		}, want: sipws.MSRP},
		// Header tokens are matched without regard to case, in lists.
		{name: "Connection keep-alive, Upgrade (Firefox)", sp: both, mutate: func(r *hsRequest) { r.set("Connection", "keep-alive, Upgrade") }, want: sipws.SIP},
		{name: "Upgrade WebSocket, Connection upgrade", sp: both, mutate: func(r *hsRequest) {
			r.set("Upgrade", "WebSocket").set("Connection", "upgrade")
		}, want: sipws.SIP},
		// As Kamailio: the path is the host's business.
		{name: "other path", sp: both, mutate: func(r *hsRequest) { r.Target = "/some/other/path?x=1" }, want: sipws.SIP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{Subprotocols: tc.sp, OnMessage: hsEcho})
			req := newHSRequest(ts.Addr, "sip")
			tc.mutate(req)
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			require.Equal(t, http.StatusSwitchingProtocols, res.resp.StatusCode, "response head:\n%s", res.head)
			// One line with the registered lower-case token.
			assert.Equal(t, 1, strings.Count(res.head, "Sec-WebSocket-Protocol:"), "head:\n%s", res.head)
			assert.Contains(t, res.head, "\r\nSec-WebSocket-Protocol: "+tc.want.Token()+"\r\n")
			conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), tc.want)

			hsRoundTrip(t, ts, res.c, conn, "hello "+tc.want.Token())

			st := ts.Stats()
			other := sipws.MSRP
			wantSt, otherSt := st.SIP, st.MSRP
			if tc.want == sipws.MSRP {
				other, wantSt, otherSt = sipws.SIP, st.MSRP, st.SIP
			}
			assert.Equal(t, uint64(1), st.SuccessfulHandshakes, "ws_successful_handshakes")
			assert.Zero(t, st.FailedHandshakes, "ws_failed_handshakes")
			assert.Equal(t, uint64(1), wantSt.SuccessfulHandshakes, "ws_%s_successful_handshakes", tc.want)
			assert.Equal(t, uint64(1), wantSt.CurrentConnections, "ws_%s_current_connections", tc.want)
			assert.Equal(t, uint64(1), wantSt.ReceivedFrames, "ws_%s_received_frames", tc.want)
			assert.Zero(t, otherSt.SuccessfulHandshakes, "ws_%s_successful_handshakes", other)
			assert.Zero(t, otherSt.CurrentConnections, "ws_%s_current_connections", other)
			assert.Zero(t, otherSt.ReceivedFrames, "ws_%s_received_frames", other)
		})
	}
}

// TestHandshake101Shape checks the exact 101: the RFC 6455 §1.3 accept key,
// Upgrade and Connection, no Content-Length (Kamailio sends
// "Content-Length: 0" in its 101, §7 #5), no Sec-WebSocket-Extensions even
// when permessage-deflate is offered (as Kamailio, §7 #24), and the frames
// that follow are uncompressed.
func TestHandshake101Shape(t *testing.T) {
	ts := startServer(t, sipws.Config{OnMessage: hsEcho})
	req := newHSRequest(ts.Addr, "sip").
		set("Sec-WebSocket-Key", hsSampleKey).
		add("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())

	assert.True(t, strings.HasPrefix(res.head, "HTTP/1.1 101 Switching Protocols\r\n"), "status line of\n%s", res.head)
	require.Equal(t, http.StatusSwitchingProtocols, res.resp.StatusCode)
	assert.Equal(t, []string{hsSampleAccept}, res.resp.Header.Values("Sec-WebSocket-Accept"), "RFC 6455 §1.3 sample")
	assert.Equal(t, hsSampleAccept, hsAccept(hsSampleKey), "the test's own accept computation")
	assert.Equal(t, []string{"websocket"}, res.resp.Header.Values("Upgrade"))
	require.Len(t, res.resp.Header.Values("Connection"), 1)
	assert.True(t, strings.EqualFold(res.resp.Header.Get("Connection"), "upgrade"), "Connection: %q", res.resp.Header.Get("Connection"))
	assert.Equal(t, []string{"sip"}, res.resp.Header.Values("Sec-WebSocket-Protocol"))
	assert.Empty(t, res.resp.Header.Values("Content-Length"), "a 1xx has no Content-Length (RFC 7230 §3.3.2)")
	assert.Empty(t, res.resp.Header.Values("Transfer-Encoding"))
	assert.Empty(t, res.resp.Header.Values("Sec-WebSocket-Extensions"), "no extension is negotiated")
	assert.Empty(t, res.resp.Header.Values("Access-Control-Allow-Origin"), "CORSNone")
	assert.NotContains(t, res.head, "Sia:", "no internal headers (Kamailio §7 #5)")

	conn := ts.nextOpened(t)
	c := res.c
	c.sendText("uncompressed")
	m := ts.nextMsg(t)
	assert.Equal(t, "uncompressed", string(m.Msg.Data))
	f := c.mustReadFrame()
	assert.Equal(t, byte(0), f.Rsv, "RSV1 would mean a compressed frame")
	assert.Equal(t, "uncompressed", string(f.Payload))
	assert.Equal(t, sipws.SIP, conn.Subprotocol())

	// A random key too, checked against the RFC's formula.
	req = newHSRequest(ts.Addr, "sip")
	res = hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
}

// TestHandshakeHostHeaders checks that headers the host set on the
// ResponseWriter before calling HandleHandshake go out with the 101, except
// the ones the handshake owns and any value that would split the header.
func TestHandshakeHostHeaders(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Set-Cookie", "session=abc123; Path=/; HttpOnly")
		h.Add("X-Host", "one")
		h.Add("X-Host", "two")
		// The handshake's own headers cannot be overridden.
		h.Set("Sec-WebSocket-Protocol", "msrp")
		h.Set("Sec-WebSocket-Accept", "forged")
		h.Set("Content-Length", "0")
		h.Set("Sec-WebSocket-Extensions", "permessage-deflate")
		// No response splitting.
		h["X-Split"] = []string{"a\r\nInjected: yes"}
		ts.HandleHandshake(w, r)
	}))
	t.Cleanup(host.Close)
	addr := strings.TrimPrefix(host.URL, "http://")

	req := newHSRequest(addr, "sip")
	res := hsDial(t, addr, http.MethodGet, req.String())
	conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
	assert.Equal(t, []string{"session=abc123; Path=/; HttpOnly"}, res.resp.Header.Values("Set-Cookie"))
	assert.Equal(t, []string{"one", "two"}, res.resp.Header.Values("X-Host"))
	assert.Empty(t, res.resp.Header.Values("Content-Length"))
	assert.Empty(t, res.resp.Header.Values("Sec-WebSocket-Extensions"))
	assert.Empty(t, res.resp.Header.Values("Injected"))
	assert.NotContains(t, res.head, "Injected")
	assert.Equal(t, sipws.SIP, conn.Subprotocol())
}

// TestHandshakeCORS checks the Access-Control-Allow-Origin of the 101 in
// each CORS mode, with and without Origin.
func TestHandshakeCORS(t *testing.T) {
	const origin = "https://app.example.test"
	cases := []struct {
		name   string
		mode   sipws.CORSMode
		origin string
		want   []string
	}{
		{"none with Origin", sipws.CORSNone, origin, nil},
		{"none without Origin", sipws.CORSNone, "", nil},
		{"any with Origin", sipws.CORSAny, origin, []string{"*"}},
		// Kamailio (cors_mode=1) sends "*" even without Origin; we
		// deliberately send ACAO only in reply to an Origin (§7 #26).
		{"any without Origin", sipws.CORSAny, "", nil},
		{"echo with Origin", sipws.CORSEcho, origin, []string{origin}},
		{"echo without Origin", sipws.CORSEcho, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{CORS: tc.mode})
			req := newHSRequest(ts.Addr, "sip")
			if tc.origin != "" {
				req.add("Origin", tc.origin)
			}
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
			assert.Equal(t, tc.want, res.resp.Header.Values("Access-Control-Allow-Origin"))
		})
	}
}

// TestHandshakeCheckOrigin checks Config.CheckOrigin: false refuses with 403
// naming the origin and Authorize is not asked; true lets the handshake
// through. It is asked only about otherwise valid handshakes. Kamailio has no
// origin check of its own (§7 #26).
func TestHandshakeCheckOrigin(t *testing.T) {
	var checked, authorized atomic.Int32
	ts := startServer(t, sipws.Config{
		CheckOrigin: func(r *http.Request) bool {
			checked.Add(1)
			return r.Header.Get("Origin") == "https://good.example.test"
		},
		Authorize: func(http.ResponseWriter, *http.Request) (any, error) {
			authorized.Add(1)
			return nil, nil
		},
	})

	before := hsBefore(ts)
	req := newHSRequest(ts.Addr, "sip").add("Origin", "https://evil.example.test")
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusForbidden, body: []string{"https://evil.example.test"}})
	assert.Equal(t, int32(1), checked.Load())
	assert.Zero(t, authorized.Load(), "Authorize asked after CheckOrigin refused")

	// A malformed handshake is refused before CheckOrigin is asked.
	before = hsBefore(ts)
	req = newHSRequest(ts.Addr, "sip").add("Origin", "https://good.example.test").set("Sec-WebSocket-Key", "abc")
	res = hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusBadRequest, body: []string{"Sec-WebSocket-Key"}})
	assert.Equal(t, int32(1), checked.Load(), "CheckOrigin asked about a malformed handshake")

	req = newHSRequest(ts.Addr, "sip").add("Origin", "https://good.example.test")
	res = hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
	assert.Equal(t, int32(2), checked.Load())
	assert.Equal(t, int32(1), authorized.Load())
}

// hsIdentity is what the tests' Authorize returns.
type hsIdentity struct{ User string }

// TestHandshakeAuthorize checks Config.Authorize (RFC 7118 §7): an error
// wrapping ErrUnauthorized → 401 with the WWW-Authenticate the hook set;
// another error → 403; an identity → 101 and Conn.Identity. The hook reads
// the request's cookie, and the Conn keeps the cookies. Kamailio leaves
// authorization to the script.
func TestHandshakeAuthorize(t *testing.T) {
	const challenge = `Digest realm="example.test", nonce="n0nce", qop="auth"`
	authorize := func(w http.ResponseWriter, r *http.Request) (any, error) {
		ck, err := r.Cookie("session")
		switch {
		case err != nil:
			w.Header().Set("WWW-Authenticate", challenge)
			return nil, fmt.Errorf("no session cookie: %w", sipws.ErrUnauthorized)
		case ck.Value == "suspended":
			return nil, errors.New("account suspended")
		case ck.Value == "forbidden":
			return nil, errors.New("user banned")
		}
		w.Header().Set("Set-Cookie", "seen=1")
		return hsIdentity{User: "alice/" + ck.Value}, nil
	}

	t.Run("401", func(t *testing.T) {
		ts := startServer(t, sipws.Config{Authorize: authorize})
		before := hsBefore(ts)
		req := newHSRequest(ts.Addr, "sip")
		res := hsDial(t, ts.Addr, http.MethodGet, req.String())
		hsExpectRefused(t, ts, res, before, hsRefusal{
			status: http.StatusUnauthorized,
			header: map[string][]string{"WWW-Authenticate": {challenge}},
			body:   []string{"no session cookie"},
		})
	})
	for _, tc := range []struct{ cookie, body string }{
		{"suspended", "account suspended"},
		{"forbidden", "user banned"},
	} {
		t.Run("403 "+tc.cookie, func(t *testing.T) {
			ts := startServer(t, sipws.Config{Authorize: authorize})
			before := hsBefore(ts)
			req := newHSRequest(ts.Addr, "sip").add("Cookie", "session="+tc.cookie)
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusForbidden, body: []string{tc.body}})
		})
	}
	t.Run("identity", func(t *testing.T) {
		ts := startServer(t, sipws.Config{Authorize: authorize, KeepHeaders: []string{"Cookie"}})
		req := newHSRequest(ts.Addr, "sip").add("Cookie", "theme=dark; session=tok123")
		res := hsDial(t, ts.Addr, http.MethodGet, req.String())
		conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
		assert.Equal(t, []string{"seen=1"}, res.resp.Header.Values("Set-Cookie"), "a header Authorize set goes out with the 101")
		assert.Empty(t, res.resp.Header.Values("WWW-Authenticate"))
		assert.Equal(t, hsIdentity{User: "alice/tok123"}, conn.Identity())
		ck, err := conn.Cookie("session")
		require.NoError(t, err)
		assert.Equal(t, "tok123", ck.Value)
		ck, err = conn.Cookie("theme")
		require.NoError(t, err)
		assert.Equal(t, "dark", ck.Value)
		_, err = conn.Cookie("absent")
		assert.ErrorIs(t, err, http.ErrNoCookie)
		assert.Len(t, conn.Cookies(), 2)

		res.c.sendClose(1000, "bye")
		res.c.expectClose(1000, ioTimeout)
		ev := ts.nextClosed(t)
		assert.Equal(t, hsIdentity{User: "alice/tok123"}, ev.Identity, "Closed.Identity")
	})
}

// TestHandshakeDisable checks Server.Disable: new handshakes get 503 while an
// open connection keeps exchanging messages; Enable lets them in again. As
// Kamailio's ws.disable / ws.enable.
func TestHandshakeDisable(t *testing.T) {
	ts := startServer(t, sipws.Config{OnMessage: hsEcho})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)

	ts.Disable()
	require.False(t, ts.Enabled())
	before := hsBefore(ts)
	req := newHSRequest(ts.Addr, "sip")
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusServiceUnavailable, body: []string{"disabled"}})
	// refused handshakes do not touch the open connection.
	_, ok := ts.Registry().Get(conn.ID())
	assert.True(t, ok, "the open connection left the registry")

	// The open connection still works both ways.
	hsRoundTrip(t, ts, c, conn, "still here")
	require.NoError(t, conn.Send([]byte("server push")))
	f := c.mustReadFrame()
	assert.Equal(t, "server push", string(f.Payload))

	ts.Enable()
	require.True(t, ts.Enabled())
	req = newHSRequest(ts.Addr, "sip")
	res = hsDial(t, ts.Addr, http.MethodGet, req.String())
	conn2 := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
	hsRoundTrip(t, ts, res.c, conn2, "after enable")

	st := ts.Stats()
	assert.Equal(t, uint64(1), st.FailedHandshakes)
	assert.Equal(t, uint64(2), st.SuccessfulHandshakes)
	assert.Equal(t, 2, ts.Registry().Len())
}

// TestHandshakePipelined sends the handshake and the first frames in one TCP
// write: the frames the HTTP server read past the request must be delivered,
// in order, also when they straddle the HTTP server's read buffer and the
// socket. As Kamailio.
func TestHandshakePipelined(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<10) // 16 KiB: more than net/http's 4 KiB buffer
	// 4.5 KiB of frames of every size up to 95 bytes, through a 128-byte
	// read buffer: headers and payloads straddle it.
	var many []string
	for i := range 96 {
		many = append(many, strings.Repeat(string(rune('a'+i%26)), i))
	}
	cases := []struct {
		name string
		msgs []string
		rbuf int
	}{
		{"one frame", []string{"OPTIONS sip:a@example.test SIP/2.0\r\n\r\n"}, 0},
		{"three frames", []string{"first", "second", "third"}, 0},
		{"frame past the HTTP buffer", []string{big, "after"}, 0},
		{"frames straddling a small read buffer", many, 128},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{OnMessage: hsEcho, ReadBufferSize: tc.rbuf})
			req := newHSRequest(ts.Addr, "sip")
			wire := []byte(req.String())
			for _, m := range tc.msgs {
				wire = append(wire, encodeFrame(true, 0, 0x1, []byte(m), true)...)
			}
			res := hsDial(t, ts.Addr, http.MethodGet, string(wire))
			conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
			for i, want := range tc.msgs {
				m := ts.nextMsg(t)
				assert.Same(t, conn, m.Conn)
				require.Equal(t, len(want), len(m.Msg.Data), "message %d length", i)
				assert.Equal(t, want, string(m.Msg.Data), "message %d", i)
			}
			for i, want := range tc.msgs {
				f := res.c.mustReadFrame()
				assert.Equal(t, want, string(f.Payload), "echo %d", i)
			}
			assert.Equal(t, uint64(len(tc.msgs)), ts.Stats().SIP.ReceivedFrames)
		})
	}
}

// TestHandshakeTLS runs the handshake over TLS (wss): the connection is
// secure, works, and is counted. As Kamailio on its TLS port.
func TestHandshakeTLS(t *testing.T) {
	ts := startServer(t, sipws.Config{OnMessage: hsEcho})
	h := httptest.NewUnstartedServer(ts.Server)
	h.StartTLS()
	t.Cleanup(h.Close)
	addr := strings.TrimPrefix(h.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(h.Certificate())
	dialTLS := func(t *testing.T) net.Conn {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		require.NoError(t, err, "TLS handshake")
		return conn
	}

	before := ts.Stats()
	tc := dialTLS(t)
	req := newHSRequest(addr, "sip")
	first := hsExchange(t, tc, http.MethodGet, req.String())
	conn := hsExpectOpened(t, ts, first, req.get("Sec-WebSocket-Key"), sipws.SIP)
	assert.True(t, conn.Secure(), "Conn.Secure on wss")
	assert.True(t, strings.HasPrefix(conn.String(), "wss:"), "Conn.String %q", conn.String())
	assert.Equal(t, unmapAddr(tc.LocalAddr()), conn.RemoteAddr())
	hsRoundTrip(t, ts, first.c, conn, "OPTIONS over TLS")

	st := ts.Stats()
	assert.Equal(t, before.SuccessfulHandshakes+1, st.SuccessfulHandshakes, "ws_successful_handshakes")
	assert.Equal(t, before.SIP.SuccessfulHandshakes+1, st.SIP.SuccessfulHandshakes, "ws_sip_successful_handshakes")
	assert.Equal(t, before.FailedHandshakes, st.FailedHandshakes)

	// A refusal over TLS is counted too.
	before2 := hsBefore(ts)
	req = newHSRequest(addr, "foo")
	res := hsExchange(t, dialTLS(t), http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before2, hsRefusal{
		status: http.StatusBadRequest,
		header: map[string][]string{"Sec-WebSocket-Protocol": {"sip", "msrp"}},
		body:   []string{`"foo"`},
	})

	// The first connection closes cleanly over TLS.
	first.c.sendClose(1000, "bye")
	first.c.expectClose(1000, ioTimeout)
	ev := ts.nextClosed(t)
	assert.Equal(t, conn.ID(), ev.ID)
	assert.True(t, ev.Secure, "Closed.Secure")
}

// unmapAddr converts a socket address to the form Conn reports.
func unmapAddr(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// TestHandshakeConnInfo checks what a Conn knows after a successful
// handshake: addresses, the request's headers named in KeepHeaders (and no
// other), URL, Host, and the counters, for a sip and then an msrp
// connection.
func TestHandshakeConnInfo(t *testing.T) {
	ts := startServer(t, sipws.Config{KeepHeaders: []string{"x-custom", "X-Multi", "User-Agent", "Upgrade"}})
	req := newHSRequest(ts.Addr, "sip").
		add("X-Custom", "42").
		add("X-Multi", "a").
		add("X-Multi", "b").
		add("X-Other", "dropped").
		add("User-Agent", "sipws-test")
	req.Target = "/ws/path?user=alice"
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())
	conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)

	assert.Equal(t, unmapAddr(res.c.conn.LocalAddr()), conn.RemoteAddr(), "Conn.RemoteAddr is the client's address")
	assert.Equal(t, unmapAddr(res.c.conn.RemoteAddr()), conn.LocalAddr(), "Conn.LocalAddr is the server's address")
	assert.False(t, conn.Secure())
	assert.True(t, strings.HasPrefix(conn.String(), "ws:"), "Conn.String %q", conn.String())
	h := conn.Header()
	assert.Equal(t, "42", h.Get("X-Custom"))
	assert.Equal(t, []string{"a", "b"}, h.Values("X-Multi"))
	assert.Equal(t, "sipws-test", h.Get("User-Agent"))
	assert.Equal(t, "websocket", h.Get("Upgrade"), "a handshake header the host asked to keep")
	for _, name := range []string{"Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol", "Connection", "X-Other", "Origin"} {
		assert.Empty(t, h.Values(name), "header %s kept, not in KeepHeaders", name)
	}
	assert.Len(t, h, 4, "the kept headers: %v", h)
	assert.Equal(t, "/ws/path", conn.URL().Path)
	assert.Equal(t, "alice", conn.URL().Query().Get("user"))
	assert.Equal(t, ts.Addr, conn.Host())
	assert.Nil(t, conn.Identity(), "no Authorize")
	got, ok := ts.Registry().Get(conn.ID())
	require.True(t, ok, "registry entry")
	assert.Same(t, conn, got)

	st := ts.Stats()
	assert.Equal(t, uint64(1), st.SuccessfulHandshakes, "ws_successful_handshakes")
	assert.Equal(t, uint64(1), st.SIP.SuccessfulHandshakes, "ws_sip_successful_handshakes")
	assert.Zero(t, st.MSRP.SuccessfulHandshakes, "ws_msrp_successful_handshakes")
	assert.Equal(t, uint64(1), st.CurrentConnections, "ws_current_connections")
	assert.Zero(t, st.FailedHandshakes, "ws_failed_handshakes")

	req = newHSRequest(ts.Addr, "msrp")
	res = hsDial(t, ts.Addr, http.MethodGet, req.String())
	conn2 := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.MSRP)
	assert.Equal(t, unmapAddr(res.c.conn.LocalAddr()), conn2.RemoteAddr())
	assert.NotEqual(t, conn.ID(), conn2.ID())
	st = ts.Stats()
	assert.Equal(t, uint64(2), st.SuccessfulHandshakes, "ws_successful_handshakes")
	assert.Equal(t, uint64(1), st.SIP.SuccessfulHandshakes, "ws_sip_successful_handshakes")
	assert.Equal(t, uint64(1), st.MSRP.SuccessfulHandshakes, "ws_msrp_successful_handshakes")
	assert.Equal(t, uint64(2), st.CurrentConnections, "ws_current_connections")
	assert.Equal(t, 2, ts.Registry().Len())
}

// TestHandshakeKeepHeaders checks what a Conn keeps of its handshake by
// default, Origin and User-Agent, and that the whole request, Cookie
// included, is still what CheckOrigin and Authorize see; an empty
// KeepHeaders keeps no header.
func TestHandshakeKeepHeaders(t *testing.T) {
	const cookie = "session=tok123; theme=dark"
	seen := make(chan string, 1)
	authorize := func(_ http.ResponseWriter, r *http.Request) (any, error) {
		seen <- r.Header.Get("Cookie") + "|" + r.Header.Get("Accept-Language")
		return nil, nil
	}
	for _, tc := range []struct {
		name string
		keep []string
		want []string // the headers kept
	}{
		{name: "default", keep: nil, want: []string{"Origin", "User-Agent"}},
		{name: "none", keep: []string{}, want: nil},
		{name: "cookie", keep: []string{"COOKIE", "cookie"}, want: []string{"Cookie"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, sipws.Config{Authorize: authorize, KeepHeaders: tc.keep})
			req := newHSRequest(ts.Addr, "sip").
				add("Origin", "https://phone.example.test").
				add("User-Agent", "JsSIP 3.10.1").
				add("Accept-Language", "en-US,en;q=0.9").
				add("Cookie", cookie)
			req.Target = "/ws?user=alice"
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
			assert.Equal(t, cookie+"|en-US,en;q=0.9", <-seen, "Authorize sees the whole request")

			h := conn.Header()
			var got []string
			for name := range h {
				got = append(got, name)
			}
			assert.ElementsMatch(t, tc.want, got)
			if slices.Contains(tc.want, "Origin") {
				assert.Equal(t, "https://phone.example.test", h.Get("Origin"))
				assert.Equal(t, "JsSIP 3.10.1", h.Get("User-Agent"))
			}
			if slices.Contains(tc.want, "Cookie") {
				assert.Equal(t, []string{cookie}, h.Values("Cookie"))
				assert.Len(t, conn.Cookies(), 2)
			} else {
				assert.Empty(t, conn.Cookies(), "cookies of a Cookie header not kept")
				_, err := conn.Cookie("session")
				assert.ErrorIs(t, err, http.ErrNoCookie)
			}
			// The URI and the Host are kept whatever the list.
			assert.Equal(t, "/ws", conn.URL().Path)
			assert.Equal(t, "alice", conn.URL().Query().Get("user"))
			assert.Equal(t, ts.Addr, conn.Host())
		})
	}
}

// TestKeepHeadersConfigErrors checks the validation of KeepHeaders and
// MaxKeptHeaderBytes.
func TestKeepHeadersConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   sipws.Config
		field string
	}{
		{sipws.Config{KeepHeaders: []string{""}}, "KeepHeaders"},
		{sipws.Config{KeepHeaders: []string{"Origin", "User Agent"}}, "KeepHeaders"},
		{sipws.Config{KeepHeaders: []string{"Origin:"}}, "KeepHeaders"},
		{sipws.Config{MaxKeptHeaderBytes: -1}, "MaxKeptHeaderBytes"},
		{sipws.Config{MaxKeptHeaderBytes: 127}, "MaxKeptHeaderBytes"},
		{sipws.Config{MaxKeptHeaderBytes: 1<<20 + 1}, "MaxKeptHeaderBytes"},
	} {
		_, err := sipws.New(tc.cfg)
		var ce *sipws.ConfigError
		if assert.ErrorAs(t, err, &ce, "%+v", tc.cfg) {
			assert.Equal(t, tc.field, ce.Field)
		}
	}
	for _, cfg := range []sipws.Config{
		{KeepHeaders: []string{"X-Forwarded-For", "sec-websocket-protocol", "Authorization"}},
		{MaxKeptHeaderBytes: 128},
		{MaxKeptHeaderBytes: 1 << 20},
	} {
		s, err := sipws.New(cfg)
		require.NoError(t, err, "%+v", cfg)
		require.NoError(t, s.Shutdown(context.Background()))
	}
}

// TestHandshakeHTTPServerTimeouts mounts the server on an http.Server with
// short ReadTimeout and WriteTimeout: they bound the HTTP request only, and
// an upgraded connection outlives them (the deadlines net/http left on the
// socket are cleared).
func TestHandshakeHTTPServerTimeouts(t *testing.T) {
	const timeout = 100 * time.Millisecond
	ts := startServer(t, sipws.Config{OnMessage: hsEcho})
	h := httptest.NewUnstartedServer(ts.Server)
	h.Config.ReadTimeout = timeout
	h.Config.WriteTimeout = timeout
	h.Start()
	t.Cleanup(h.Close)
	addr := strings.TrimPrefix(h.URL, "http://")

	req := newHSRequest(addr, "sip")
	res := hsDial(t, addr, http.MethodGet, req.String())
	conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
	// Let both HTTP deadlines pass; what is checked afterwards does not
	// depend on this wait, only becomes meaningful through it.
	time.Sleep(3 * timeout)
	hsRoundTrip(t, ts, res.c, conn, "after the HTTP deadlines")
	require.NoError(t, conn.Send([]byte("push after the HTTP deadlines")))
	f := res.c.mustReadFrame()
	assert.Equal(t, "push after the HTTP deadlines", string(f.Payload))
	_, ok := ts.Registry().Get(conn.ID())
	assert.True(t, ok, "the connection ended")
}

// hsPlainWriter hides the http.Hijacker of the writer it wraps, as a
// middleware that does not implement Unwrap does.
type hsPlainWriter struct{ w http.ResponseWriter }

func (p hsPlainWriter) Header() http.Header         { return p.w.Header() }
func (p hsPlainWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p hsPlainWriter) WriteHeader(code int)        { p.w.WriteHeader(code) }

// hsUnwrapWriter is a middleware's writer that implements Unwrap, which
// http.ResponseController follows.
type hsUnwrapWriter struct{ hsPlainWriter }

func (u hsUnwrapWriter) Unwrap() http.ResponseWriter { return u.w }

// TestHandshakeWrappedResponseWriter calls HandleHandshake through
// middleware writers: one that implements Unwrap is upgraded; one that hides
// the connection gets a 500 naming the problem, counted as a failed
// handshake.
func TestHandshakeWrappedResponseWriter(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unwrap" {
			ts.HandleHandshake(hsUnwrapWriter{hsPlainWriter{w}}, r)
			return
		}
		ts.HandleHandshake(hsPlainWriter{w}, r)
	}))
	t.Cleanup(host.Close)
	addr := strings.TrimPrefix(host.URL, "http://")

	req := newHSRequest(addr, "sip")
	req.Target = "/unwrap"
	res := hsDial(t, addr, http.MethodGet, req.String())
	hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)

	before := hsBefore(ts)
	req = newHSRequest(addr, "sip")
	res = hsDial(t, addr, http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusInternalServerError, body: []string{"connection"}})
}

// TestHandshakeIPv6 runs a handshake over the IPv6 loopback: the Conn's
// addresses are the sockets' own.
func TestHandshakeIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ts := startServer(t, sipws.Config{OnMessage: hsEcho})
	h := httptest.NewUnstartedServer(ts.Server)
	_ = h.Listener.Close()
	h.Listener = ln
	h.Start()
	t.Cleanup(h.Close)
	addr := ln.Addr().String()

	req := newHSRequest(addr, "sip")
	res := hsDial(t, addr, http.MethodGet, req.String())
	conn := hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
	assert.Equal(t, unmapAddr(res.c.conn.LocalAddr()), conn.RemoteAddr())
	assert.Equal(t, unmapAddr(res.c.conn.RemoteAddr()), conn.LocalAddr())
	assert.True(t, conn.RemoteAddr().Addr().Is6(), "remote %v", conn.RemoteAddr())
	assert.Equal(t, addr, conn.Host())
	hsRoundTrip(t, ts, res.c, conn, "over IPv6")
}

// TestHandshakeAfterShutdown checks that a handshake after Server.Shutdown is
// refused with 503 and nothing is upgraded.
func TestHandshakeAfterShutdown(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	require.NoError(t, ts.Shutdown(ctx))

	before := hsBefore(ts)
	req := newHSRequest(ts.Addr, "sip")
	res := hsDial(t, ts.Addr, http.MethodGet, req.String())
	hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusServiceUnavailable, body: []string{"shutting down"}})
}

// TestHandshakeNoSubprotocol checks Config.ImplicitSubprotocol: a client that
// offers no sub-protocol (a generic WebSocket tool) is served as the
// configured one with no Sec-WebSocket-Protocol in the 101, while a client
// that offers only unknown ones is still refused, and one that offers sip
// still gets it named.
func TestHandshakeNoSubprotocol(t *testing.T) {
	for _, sp := range []sipws.Subprotocol{sipws.SIP, sipws.MSRP} {
		t.Run(sp.String(), func(t *testing.T) {
			ts := startServer(t, sipws.Config{ImplicitSubprotocol: sp, OnMessage: hsEcho})

			for _, offer := range []string{"", " , "} {
				req := newHSRequest(ts.Addr, "sip").del("Sec-WebSocket-Protocol")
				if offer != "" {
					req.set("Sec-WebSocket-Protocol", offer)
				}
				res := hsDial(t, ts.Addr, http.MethodGet, req.String())
				require.Equal(t, http.StatusSwitchingProtocols, res.resp.StatusCode, "offer %q, head:\n%s", offer, res.head)
				assert.Equal(t, []string{hsAccept(req.get("Sec-WebSocket-Key"))}, res.resp.Header.Values("Sec-WebSocket-Accept"))
				assert.NotContains(t, res.head, "Sec-WebSocket-Protocol", "nothing offered, nothing named (RFC 6455 §4.2.2)")
				conn := ts.nextOpened(t)
				assert.Equal(t, sp, conn.Subprotocol())
				hsRoundTrip(t, ts, res.c, conn, "no sub-protocol "+offer)
			}
			st := ts.Stats()
			assert.Equal(t, uint64(2), st.SuccessfulHandshakes)
			if sp == sipws.SIP {
				assert.Equal(t, uint64(2), st.SIP.SuccessfulHandshakes)
			} else {
				assert.Equal(t, uint64(2), st.MSRP.SuccessfulHandshakes)
			}

			// Offering only unknown sub-protocols is still refused.
			before := hsBefore(ts)
			req := newHSRequest(ts.Addr, "chat")
			hsExpectRefused(t, ts, hsDial(t, ts.Addr, http.MethodGet, req.String()), before, hsRefusal{
				status: http.StatusBadRequest,
				header: map[string][]string{"Sec-WebSocket-Protocol": {"sip", "msrp"}},
				body:   []string{"chat"},
			})

			// Offering one is negotiated as before.
			req = newHSRequest(ts.Addr, "msrp")
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.MSRP)
		})
	}
}

// TestNoSubprotocolConfigErrors checks that ImplicitSubprotocol must name one
// enabled sub-protocol.
func TestNoSubprotocolConfigErrors(t *testing.T) {
	for _, cfg := range []sipws.Config{
		{ImplicitSubprotocol: sipws.SIP | sipws.MSRP},
		{ImplicitSubprotocol: 4},
		{Subprotocols: sipws.SIP, ImplicitSubprotocol: sipws.MSRP},
		{Subprotocols: sipws.MSRP, ImplicitSubprotocol: sipws.SIP},
	} {
		_, err := sipws.New(cfg)
		var ce *sipws.ConfigError
		if assert.ErrorAs(t, err, &ce, "%+v", cfg) {
			assert.Equal(t, "ImplicitSubprotocol", ce.Field)
		}
	}
	for _, cfg := range []sipws.Config{
		{ImplicitSubprotocol: sipws.SIP},
		{Subprotocols: sipws.MSRP, ImplicitSubprotocol: sipws.MSRP},
	} {
		s, err := sipws.New(cfg)
		require.NoError(t, err, "%+v", cfg)
		require.NoError(t, s.Shutdown(context.Background()))
	}
}
