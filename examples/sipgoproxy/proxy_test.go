package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// phone is a WebSocket SIP client over a real socket, as JsSIP would be.
type phone struct {
	t    *testing.T
	user string
	host string // its .invalid Contact host
	conn net.Conn
	seq  int
}

func newTestApp(t *testing.T) (*app, *httptest.Server) {
	t.Helper()
	o, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	a, err := newApp(o, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	hs := httptest.NewServer(a.handler())
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.ws.Shutdown(ctx)
		a.close()
	})
	return a, hs
}

func dialPhone(t *testing.T, hs *httptest.Server, user string) *phone {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{Protocols: []string{"sip"}}
	c, _, _, err := d.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &phone{t: t, user: user, host: user + "xyz.invalid", conn: c}
}

func (p *phone) send(s string) {
	p.t.Helper()
	require.NoError(p.t, wsutil.WriteClientText(p.conn, []byte(s)))
}

func (p *phone) read() sip.Message {
	p.t.Helper()
	require.NoError(p.t, p.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	data, err := wsutil.ReadServerText(p.conn)
	require.NoError(p.t, err)
	m, err := sip.ParseMessage(data)
	require.NoError(p.t, err, string(data))
	return m
}

// request builds a request from p; extra headers end with CRLF.
func (p *phone) request(method, ruri, to, callID, extra, body string) string {
	p.seq++
	return fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/WS %s;branch=z9hG4bK%s%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"To: <%s>\r\n"+
		"From: <sip:%s@sipws.test>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Contact: <sip:%s@%s;transport=ws>;+sip.instance=\"<urn:uuid:%s>\";reg-id=1\r\n"+
		"%sContent-Length: %d\r\n\r\n%s",
		method, ruri, p.host, p.user, p.seq, to, p.user, p.user+"tag", callID, p.seq, method, p.user, p.host, p.user, extra, len(body), body)
}

func (p *phone) register() {
	p.t.Helper()
	p.send(p.request("REGISTER", "sip:sipws.test", "sip:"+p.user+"@sipws.test", "reg-"+p.user, "Expires: 600\r\n", ""))
	res := p.read().(*sip.Response)
	require.Equal(p.t, 200, int(res.StatusCode), res.String())
}

// answer sends a response to req.
func (p *phone) answer(req *sip.Request, code int, extra ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, "X", nil)
	if to := res.To(); to != nil && code > 100 {
		if _, ok := to.Params.Get("tag"); !ok {
			to.Params.Add("tag", p.user+"totag")
		}
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	p.send(res.String())
}

func TestRegisterMessageOptions(t *testing.T) {
	a, hs := newTestApp(t)
	alice, bob := dialPhone(t, hs, "alice"), dialPhone(t, hs, "bob")
	alice.register()
	bob.register()
	require.Len(t, a.proxy.reg.snapshot(time.Now()), 2)

	body := strings.Repeat("Grüße ✓ 你好 ", 1500) // ~20 KB of UTF-8
	alice.send(alice.request("MESSAGE", "sip:bob@sipws.test", "sip:bob@sipws.test", "msg-1", "Content-Type: text/plain\r\n", body))
	in := bob.read().(*sip.Request)
	require.Equal(t, sip.MESSAGE, in.Method)
	require.Equal(t, body, string(in.Body()))
	require.Equal(t, "bob@"+bob.host, in.Recipient.User+"@"+in.Recipient.Host)
	bob.answer(in, 200)
	res := alice.read().(*sip.Response)
	require.Equal(t, 200, int(res.StatusCode))
	require.Equal(t, "msg-1", res.CallID().Value())

	alice.send(alice.request("OPTIONS", "sip:sipws.test", "sip:sipws.test", "opt-1", "", ""))
	res = alice.read().(*sip.Response)
	require.Equal(t, 200, int(res.StatusCode))
	require.True(t, strings.HasPrefix(res.GetHeader("Server").Value(), "sipws-sipgoproxy"))

	alice.send(alice.request("MESSAGE", "sip:nobody@sipws.test", "sip:nobody@sipws.test", "msg-2", "", "hi"))
	res = alice.read().(*sip.Response)
	require.Equal(t, 404, int(res.StatusCode))
}

func TestCall(t *testing.T) {
	_, hs := newTestApp(t)
	alice, bob := dialPhone(t, hs, "alice"), dialPhone(t, hs, "bob")
	alice.register()
	bob.register()

	alice.send(alice.request("INVITE", "sip:bob@sipws.test", "sip:bob@sipws.test", "call-1", "Content-Type: application/sdp\r\n", "v=0\r\n"))
	var inv *sip.Request
	for inv == nil {
		switch m := bob.read().(type) {
		case *sip.Request:
			inv = m
		}
	}
	require.Equal(t, sip.INVITE, inv.Method)
	rrs := inv.GetHeaders("Record-Route")
	require.Len(t, rrs, 2)
	bob.answer(inv, 180)
	params := sip.NewParams()
	params.Add("transport", "ws")
	contact := &sip.ContactHeader{Address: sip.Uri{User: "bob", Host: bob.host, UriParams: params}}
	bob.answer(inv, 200, contact)
	var ok *sip.Response
	for ok == nil {
		m := alice.read()
		if r, isRes := m.(*sip.Response); isRes && r.StatusCode >= 180 {
			if r.StatusCode == 200 {
				ok = r
			}
		}
	}
	// ACK and BYE go by the Record-Route (reversed for the caller).
	routes := ok.GetHeaders("Record-Route")
	require.Len(t, routes, 2)
	route := "Route: " + routes[1].Value() + "\r\nRoute: " + routes[0].Value() + "\r\n"
	toTag, _ := ok.To().Params.Get("tag")
	ack := strings.Replace(alice.request("ACK", "sip:bob@"+bob.host+";transport=ws", "sip:bob@sipws.test", "call-1", route, ""),
		"To: <sip:bob@sipws.test>", "To: <sip:bob@sipws.test>;tag="+toTag, 1)
	ack = strings.Replace(ack, fmt.Sprintf("CSeq: %d ACK", alice.seq), "CSeq: 1 ACK", 1)
	alice.send(ack)
	got := bob.read().(*sip.Request)
	require.Equal(t, sip.ACK, got.Method)
	bye := strings.Replace(alice.request("BYE", "sip:bob@"+bob.host+";transport=ws", "sip:bob@sipws.test", "call-1", route, ""),
		"To: <sip:bob@sipws.test>", "To: <sip:bob@sipws.test>;tag="+toTag, 1)
	alice.send(bye)
	got = bob.read().(*sip.Request)
	require.Equal(t, sip.BYE, got.Method)
	bob.answer(got, 200)
	res := alice.read().(*sip.Response)
	require.Equal(t, 200, int(res.StatusCode))
	require.Equal(t, "BYE", string(res.CSeq().MethodName))
}

// The handshake's Origin: same origin only by default; -allow-origin adds
// patterns, and "*" allows any.
func TestAllowOrigin(t *testing.T) {
	for _, tc := range []struct {
		flags  []string
		origin string // "SELF": the server's own
		want   int
	}{
		{nil, "", http.StatusSwitchingProtocols},
		{nil, "SELF", http.StatusSwitchingProtocols},
		{nil, "http://evil.test", http.StatusForbidden},
		{[]string{"-allow-origin", "*"}, "http://evil.test", http.StatusSwitchingProtocols},
		{[]string{"-allow-origin", "https://app.test"}, "https://app.test", http.StatusSwitchingProtocols},
		{[]string{"-allow-origin", "https://app.test"}, "http://evil.test", http.StatusForbidden},
		{[]string{"-allow-origin", "https://app.test"}, "SELF", http.StatusSwitchingProtocols},
	} {
		o, err := parseFlags(tc.flags, io.Discard)
		require.NoError(t, err)
		a, err := newApp(o, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		hs := httptest.NewServer(a.handler())
		origin := tc.origin
		if origin == "SELF" {
			origin = hs.URL
		}
		req, err := http.NewRequest(http.MethodGet, hs.URL+"/ws", nil)
		require.NoError(t, err)
		for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
			"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "sip"} {
			req.Header.Set(k, v)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		assert.Equal(t, tc.want, res.StatusCode, "%q, Origin %q", tc.flags, tc.origin)
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.ws.Shutdown(ctx)
		cancel()
		a.close()
	}
	// A pattern path.Match rejects fails at start.
	o, err := parseFlags([]string{"-allow-origin", "[bad"}, io.Discard)
	require.NoError(t, err)
	_, err = newApp(o, slog.New(slog.DiscardHandler))
	require.Error(t, err)
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-allow-origin", "https://app.test", "-allow-origin", "*"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"https://app.test", "*"}, o.allowOrigins)
	for _, bad := range [][]string{
		{"-tls-cert", "c.pem"},
		{"-self-signed", "-tls-cert", "c", "-tls-key", "k"},
		{"-domain", "a b"},
		{"-log-level", "loud"},
		{"-flow-key", "00"},
		{"extra"},
	} {
		_, err := parseFlags(bad, io.Discard)
		require.Error(t, err, "%q", bad)
	}
}

// A phone that reconnects (same +sip.instance and reg-id) replaces its old
// flow: the old connection is closed, and requests reach the new one.
func TestReconnectReplacesFlow(t *testing.T) {
	a, hs := newTestApp(t)
	old, bob := dialPhone(t, hs, "alice"), dialPhone(t, hs, "bob")
	old.register()
	bob.register()
	renewed := dialPhone(t, hs, "alice")
	renewed.register()

	require.NoError(t, old.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := wsutil.ReadServerText(old.conn)
	var ce wsutil.ClosedError
	require.ErrorAs(t, err, &ce, "the old connection is closed")
	require.Len(t, a.proxy.reg.lookup("alice", time.Now()), 1)

	bob.send(bob.request("MESSAGE", "sip:alice@sipws.test", "sip:alice@sipws.test", "msg-r", "", "again"))
	in := renewed.read().(*sip.Request)
	require.Equal(t, "again", string(in.Body()))
	renewed.answer(in, 200)
	res := bob.read().(*sip.Response)
	require.Equal(t, 200, int(res.StatusCode))
}

// The callee's browser closes while the call rings: the caller gets 480 at
// once (the client transaction ends with its connection, not on Timer B),
// and the callee's binding is gone.
func TestCalleeClosesWhileRinging(t *testing.T) {
	a, hs := newTestApp(t)
	alice, bob := dialPhone(t, hs, "alice"), dialPhone(t, hs, "bob")
	alice.register()
	bob.register()
	alice.send(alice.request("INVITE", "sip:bob@sipws.test", "sip:bob@sipws.test", "call-2", "", ""))
	inv := bob.read().(*sip.Request)
	bob.answer(inv, 180)
	for {
		res := alice.read().(*sip.Response)
		if res.StatusCode == 180 {
			break
		}
	}
	require.NoError(t, bob.conn.Close())
	var final *sip.Response
	for final == nil {
		if res := alice.read().(*sip.Response); res.StatusCode >= 200 {
			final = res
		}
	}
	require.Equal(t, 480, int(final.StatusCode))
	// sipws's OnClosed (which drops the binding) may run a moment after
	// the bridge let go of the connection.
	require.Eventually(t, func() bool { return len(a.proxy.reg.lookup("bob", time.Now())) == 0 }, 10*time.Second, 5*time.Millisecond)
}
