package main

import (
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sipws/sipws"
)

// These tests run the webphone's handler on a real listener and talk SIP
// to it over real WebSocket connections, writing the messages by hand, so
// that every header the proxy adds, removes or routes by is visible.

const testDomain = "sipws.test"

type testServer struct {
	t     *testing.T
	app   *app
	hs    *httptest.Server
	admin *httptest.Server // the -admin listener's views
	url   string
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	return newTestServerWith(t, appConfig{})
}

// newTestServerWith runs the webphone with cfg (its domain and web
// directory are the tests').
func newTestServerWith(t *testing.T, cfg appConfig) *testServer {
	t.Helper()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.domain, cfg.webDir = testDomain, "web"
	a, err := newApp(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.site.handler())
	mux := http.NewServeMux()
	a.site.adminRoutes(mux)
	admin := httptest.NewServer(mux)
	ts := &testServer{t: t, app: a, hs: hs, admin: admin, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
	t.Cleanup(func() {
		admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.ws.Shutdown(ctx)
		hs.Close()
		a.proxy.close()
	})
	return ts
}

// phone is a SIP-over-WebSocket client that writes raw SIP.
type phone struct {
	t        *testing.T
	name     string
	password string // answers 401/407 challenges when set
	alg      string // the digest algorithm it answers with; "" is MD5
	nc       int
	cuser    string // the user part of its Contact; "" is name+"x"
	host     string // its Contact host, xxx.invalid as browsers use
	conn     net.Conn
	wmu      sync.Mutex
	in       chan sip.Message
	closed   chan wsutil.ClosedError
	seq      int
}

type lockedRW struct {
	net.Conn
	mu *sync.Mutex
}

func (l lockedRW) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Conn.Write(b)
}

func (ts *testServer) dial(name string) *phone {
	ts.t.Helper()
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 5 * time.Second}
	conn, _, hs, err := d.Dial(context.Background(), ts.url)
	if err != nil {
		ts.t.Fatal(err)
	}
	if hs.Protocol != "sip" {
		ts.t.Fatalf("sub-protocol %q", hs.Protocol)
	}
	p := &phone{t: ts.t, name: name, host: name + "-df7jal23ls0d.invalid", conn: conn, in: make(chan sip.Message, 64), closed: make(chan wsutil.ClosedError, 1)}
	go func() {
		rw := lockedRW{conn, &p.wmu}
		for {
			data, _, err := wsutil.ReadServerData(rw)
			if err != nil {
				var ce wsutil.ClosedError
				if errors.As(err, &ce) {
					p.closed <- ce
				}
				close(p.in)
				return
			}
			m, err := sip.ParseMessage(data)
			if err != nil {
				ts.t.Errorf("%s: unparsable message from the server: %v\n%s", name, err, data)
				continue
			}
			p.in <- m
		}
	}()
	ts.t.Cleanup(func() { _ = conn.Close() })
	return p
}

// send writes a SIP message given with \n line ends; Content-Length is
// computed.
func (p *phone) send(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	head, body, _ := strings.Cut(msg, "\n\n")
	head = strings.TrimSpace(head)
	wire := strings.ReplaceAll(head, "\n", "\r\n") + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
	p.wmu.Lock()
	err := wsutil.WriteClientText(p.conn, []byte(wire))
	p.wmu.Unlock()
	if err != nil {
		p.t.Fatal(err)
	}
}

func (p *phone) recv() sip.Message {
	p.t.Helper()
	return p.recvWithin(3 * time.Second)
}

func (p *phone) recvWithin(d time.Duration) sip.Message {
	p.t.Helper()
	select {
	case m, ok := <-p.in:
		if !ok {
			p.t.Fatalf("%s: connection closed", p.name)
		}
		return m
	case <-time.After(d):
		p.t.Fatalf("%s: nothing received in %v", p.name, d)
	}
	return nil
}

func (p *phone) recvRequest(method sip.RequestMethod) *sip.Request {
	p.t.Helper()
	m := p.recv()
	r, ok := m.(*sip.Request)
	if !ok || r.Method != method {
		p.t.Fatalf("%s: want a %s request, got:\n%s", p.name, method, m)
	}
	return r
}

func (p *phone) recvResponse(code int) *sip.Response {
	p.t.Helper()
	m := p.recv()
	r, ok := m.(*sip.Response)
	if !ok || r.StatusCode != code {
		p.t.Fatalf("%s: want a %d response, got:\n%s", p.name, code, m)
	}
	return r
}

func (p *phone) silent(d time.Duration) {
	p.t.Helper()
	select {
	case m, ok := <-p.in:
		if ok {
			p.t.Fatalf("%s: want nothing, got:\n%s", p.name, m)
		}
	case <-time.After(d):
	}
}

func (p *phone) contact() string {
	user := p.cuser
	if user == "" {
		user = p.name + "x"
	}
	return "sip:" + user + "@" + p.host + ";transport=ws"
}

func (p *phone) register(expires int, outbound bool) *sip.Response {
	p.t.Helper()
	params, supported := "", "path, gruu"
	if outbound {
		params = `;reg-id=1;+sip.instance="<urn:uuid:0000-` + p.name + `>"`
		supported += ", outbound"
	}
	auth := ""
	for range 2 {
		p.seq++
		p.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKreg%[3]d
Max-Forwards: 69
To: <sip:%[4]s@%[1]s>
From: <sip:%[4]s@%[1]s>;tag=%[4]stag
Call-ID: reg-%[4]s
CSeq: %[3]d REGISTER
Contact: <%[5]s>;+sip.ice%[6]s;expires=%[7]d
Supported: %[8]s
User-Agent: test-%[4]s%[9]s

`, testDomain, p.host, p.seq, p.name, p.contact(), params, expires, supported, auth)
		res, ok := p.recv().(*sip.Response)
		if !ok {
			p.t.Fatalf("%s: want a response to REGISTER", p.name)
		}
		if res.StatusCode != 401 || p.password == "" || auth != "" {
			if res.StatusCode != 200 {
				p.t.Fatalf("%s: want 200 to REGISTER, got:\n%s", p.name, res)
			}
			return res
		}
		auth = "\nAuthorization: " + p.answer(res, "WWW-Authenticate", "REGISTER", "sip:"+testDomain)
	}
	panic("unreachable")
}

// answer returns the credentials for the challenge of res (header name)
// with the phone's algorithm, computed here independently of auth.go.
func (p *phone) answer(res *sip.Response, name, method, uri string) string {
	p.t.Helper()
	alg := p.alg
	if alg == "" {
		alg = "MD5"
	}
	var nonce, realm string
	for _, h := range res.GetHeaders(name) {
		v := h.Value()
		if !strings.Contains(v, "algorithm="+alg+",") {
			continue
		}
		nonce = between(v, `nonce="`, `"`)
		realm = between(v, `realm="`, `"`)
	}
	if nonce == "" {
		p.t.Fatalf("%s: no %s challenge in:\n%s", p.name, alg, res)
	}
	h := func(s string) string {
		if alg == "SHA-256" {
			return fmt.Sprintf("%x", sha256.Sum256([]byte(s)))
		}
		return fmt.Sprintf("%x", md5.Sum([]byte(s)))
	}
	p.nc++
	nc := fmt.Sprintf("%08x", p.nc)
	ha1 := h(p.name + ":" + realm + ":" + p.password)
	resp := h(ha1 + ":" + nonce + ":" + nc + ":cn0nce:auth:" + h(method+":"+uri))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, qop=auth, nc=%s, cnonce="cn0nce"`,
		p.name, realm, nonce, uri, resp, alg, nc)
}

func between(s, start, end string) string {
	_, rest, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, end)
	return v
}

// online returns the number of bindings of each user, from the -admin
// listener's /api/bindings.
func (ts *testServer) online() map[string]int {
	ts.t.Helper()
	var v struct {
		Bindings []struct{ User string }
	}
	ts.getJSON(ts.admin.URL+"/api/bindings?limit=1000", &v)
	out := make(map[string]int)
	for _, b := range v.Bindings {
		out[b.User]++
	}
	return out
}

func (ts *testServer) getJSON(url string, v any) {
	ts.t.Helper()
	res, err := http.Get(url)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		ts.t.Fatalf("GET %s: %s", url, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		ts.t.Fatal(err)
	}
}

func header(m sip.Message, name string) []string {
	var out []string
	for _, h := range m.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

func TestOptionsToServer(t *testing.T) {
	ts := newTestServer(t)
	a := ts.dial("alice")
	a.send(`OPTIONS sip:%s SIP/2.0
Via: SIP/2.0/WSS %s;branch=z9hG4bKopt1
Max-Forwards: 70
To: <sip:%[1]s>
From: <sip:alice@%[1]s>;tag=a1
Call-ID: opt-1
CSeq: 1 OPTIONS

`, testDomain, a.host)
	res := a.recvResponse(200)
	if got := header(res, "Server"); len(got) != 1 || !strings.HasPrefix(got[0], "sipws-webphone") {
		t.Errorf("Server = %q", got)
	}
	if got := header(res, "Via"); len(got) != 1 || !strings.Contains(got[0], "z9hG4bKopt1") {
		t.Errorf("Via = %q", got)
	}
}

func TestRegisterAndUnregister(t *testing.T) {
	ts := newTestServer(t)
	a := ts.dial("alice")
	res := a.register(600, true)
	contacts := header(res, "Contact")
	if len(contacts) != 1 || !strings.Contains(contacts[0], a.host) || !strings.Contains(contacts[0], "expires=600") {
		t.Errorf("Contact = %q", contacts)
	}
	if got := header(res, "Require"); len(got) != 1 || got[0] != "outbound" {
		t.Errorf("Require = %q", got)
	}
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("online = %v", got)
	}
	// Expires above the maximum is cut down.
	res = a.register(100000, true)
	if c := header(res, "Contact"); len(c) != 1 || !strings.Contains(c[0], fmt.Sprintf("expires=%d", maxExpires)) {
		t.Errorf("Contact = %q", c)
	}
	res = a.register(0, true)
	if c := header(res, "Contact"); len(c) != 0 {
		t.Errorf("Contact after un-REGISTER = %q", c)
	}
	if got := ts.online(); len(got) != 0 {
		t.Fatalf("online after un-REGISTER = %v", got)
	}

	// Without Outbound (SIP.js): bound by contact, no Require.
	res = a.register(300, false)
	if got := header(res, "Require"); len(got) != 0 {
		t.Errorf("Require without outbound = %q", got)
	}
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("online = %v", got)
	}
	// The binding goes with its connection.
	_ = a.conn.Close()
	waitFor(t, func() bool { return len(ts.online()) == 0 }, "alice's binding to go with her connection")
}

func TestRegisterWildcardAndDomain(t *testing.T) {
	ts := newTestServer(t)
	a := ts.dial("alice")
	a.register(600, false)
	a.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKstar
To: <sip:alice@%[1]s>
From: <sip:alice@%[1]s>;tag=x
Call-ID: reg-alice
CSeq: 100 REGISTER
Contact: *
Expires: 0

`, testDomain, a.host)
	a.recvResponse(200)
	if got := ts.online(); len(got) != 0 {
		t.Fatalf("online after Contact: * = %v", got)
	}
	a.send(`REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/WSS %[1]s;branch=z9hG4bKdom
To: <sip:alice@example.com>
From: <sip:alice@example.com>;tag=x
Call-ID: reg-other
CSeq: 1 REGISTER
Contact: <sip:a@%[1]s;transport=ws>

`, a.host)
	a.recvResponse(403)
}

// testUsers is a users file of the tests: alice in clear, bob as an
// htdigest line with both hashes, carol with the MD5 hash only.
const testUsers = `# test users
alice:s3cret:with:colons
bob:sipws.test:3afa3a74217e7bec1e62bf84b5b0165d:edc1ebf6b8333c5a19f6fdb481dc3fc0752976a1ee0e3eda3584236a4768e77a
carol:sipws.test:acafebf971da874fe605ba808f548d5d
`

func authUsers(t *testing.T) map[string]credential {
	t.Helper()
	users, err := parseUsers(strings.NewReader(testUsers), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// TestReconnectReplacesFlow checks RFC 5626 flow replacement: a phone that
// reconnects (same instance and reg-id) and proves it is alice replaces
// its old connection, which is closed.
func TestReconnectReplacesFlow(t *testing.T) {
	ts := newTestServerWith(t, appConfig{users: authUsers(t)})
	a1 := ts.dial("alice")
	a1.password = "s3cret:with:colons"
	a1.register(600, true)
	a2 := ts.dial("alice")
	a2.password = a1.password
	a2.seq = a1.seq
	a2.register(600, true)
	select {
	case ce := <-a1.closed:
		if ce.Code != ws.StatusNormalClosure || ce.Reason != "Replaced by a new flow" {
			t.Errorf("old flow closed with %d %q", ce.Code, ce.Reason)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the old flow was not closed")
	}
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("online = %v", got)
	}
	// Requests reach the new flow.
	b := ts.dial("bob")
	b.password = "b0b-pw"
	b.register(600, false)
	b.send("%s", message(b, "alice", "b1", "hi"))
	got := a2.recvRequest(sip.MESSAGE)
	if string(got.Body()) != "hi" {
		t.Errorf("body %q", got.Body())
	}
}

func message(from *phone, to, branch, body string) string {
	return fmt.Sprintf(`MESSAGE sip:%[1]s@%[2]s SIP/2.0
Via: SIP/2.0/WSS %[3]s;branch=z9hG4bK%[4]s
Max-Forwards: 70
To: <sip:%[1]s@%[2]s>
From: <sip:%[5]s@%[2]s>;tag=%[4]s
Call-ID: msg-%[4]s
CSeq: 1 MESSAGE
Content-Type: text/plain;charset=utf-8

%[6]s`, to, testDomain, from.host, branch, from.name, body)
}

func TestMessageRouting(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, true)
	b.register(600, false)

	body := "héllo 👋 " + strings.Repeat("x", 20000)
	b.send("%s", message(b, "alice", "m1", body))
	req := a.recvRequest(sip.MESSAGE)
	if string(req.Body()) != body {
		t.Fatalf("body changed: %d bytes, want %d", len(req.Body()), len(body))
	}
	if req.Recipient.Host != a.host {
		t.Errorf("Request-URI %s, want the registered contact", req.Recipient.String())
	}
	vias := header(req, "Via")
	if len(vias) != 2 || !strings.Contains(vias[0], branchPrefix) || !strings.Contains(vias[1], "z9hG4bKm1") {
		t.Fatalf("Via = %q", vias)
	}
	if mf := req.MaxForwards(); mf == nil || *mf != 69 {
		t.Errorf("Max-Forwards = %v", mf)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	a.send("%s", strings.ReplaceAll(strings.TrimSuffix(res.String(), "\r\n\r\n"), "\r\n", "\n")+"\n\n")
	got := b.recvResponse(200)
	if vias := header(got, "Via"); len(vias) != 1 || !strings.Contains(vias[0], "z9hG4bKm1") {
		t.Errorf("Via of the response = %q", vias)
	}
	a.silent(100 * time.Millisecond)

	// Unknown user, and Max-Forwards 0.
	b.send("%s", message(b, "carol", "m2", "x"))
	b.recvResponse(404)
	b.send("%s", strings.Replace(message(b, "alice", "m3", "x"), "Max-Forwards: 70", "Max-Forwards: 0", 1))
	b.recvResponse(483)
	a.silent(100 * time.Millisecond)
}

func TestMessageForksToEveryConnection(t *testing.T) {
	ts := newTestServer(t)
	a1, a2, b := ts.dial("alice"), ts.dial("alice"), ts.dial("bob")
	a1.host = "alice-one.invalid"
	a2.host = "alice-two.invalid"
	a1.register(600, false)
	a2.register(600, false)
	b.send("%s", message(b, "alice", "f1", "to both"))
	r1, r2 := a1.recvRequest(sip.MESSAGE), a2.recvRequest(sip.MESSAGE)
	// One 404 and one 200: the caller gets the 200, once.
	send := func(p *phone, req *sip.Request, code int, reason string) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		p.send("%s", strings.ReplaceAll(strings.TrimSuffix(res.String(), "\r\n\r\n"), "\r\n", "\n")+"\n\n")
	}
	send(a1, r1, 486, "Busy Here")
	send(a2, r2, 200, "OK")
	b.recvResponse(200)
	b.silent(200 * time.Millisecond)
}

// dialog runs INVITE → 100 → 180 → 200 → ACK from bob to alice and returns
// what both sides need for in-dialog requests.
type dialogState struct {
	calleeRoutes []string // alice's route set: Record-Route in order
	callerRoutes []string // bob's: reversed
	invite       *sip.Request
	ok           *sip.Response
}

func respond(p *phone, req *sip.Request, code int, reason, toTag string, extra ...string) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if toTag != "" {
		res.To().Params.Add("tag", toTag)
	}
	s := strings.TrimSuffix(res.String(), "\r\n\r\n")
	for _, e := range extra {
		s += "\r\n" + e
	}
	p.send("%s", strings.ReplaceAll(s, "\r\n", "\n")+"\n\n")
}

func invite(t *testing.T, a, b *phone, branch string) *sip.Request {
	t.Helper()
	b.send(`INVITE sip:alice@%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bK%[3]s
Max-Forwards: 70
To: <sip:alice@%[1]s>
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-%[3]s
CSeq: 1 INVITE
Contact: <%[4]s;ob>
Content-Type: application/sdp

v=0
`, testDomain, b.host, branch, b.contact())
	b.recvResponse(100)
	return a.recvRequest(sip.INVITE)
}

func establish(t *testing.T, a, b *phone) dialogState {
	t.Helper()
	var d dialogState
	d.invite = invite(t, a, b, "inv1")
	d.calleeRoutes = header(d.invite, "Record-Route")
	if len(d.calleeRoutes) != 2 {
		t.Fatalf("Record-Route = %q", d.calleeRoutes)
	}
	for _, rr := range d.calleeRoutes {
		// On the domain; in a cluster on the -sip-addr of the node.
		if tok, ok := sipws.FlowTokenFromURI(rr); !ok || tok == "" || !(strings.Contains(rr, "@"+testDomain+";transport=ws;lr") || strings.Contains(rr, ";transport=tcp;lr")) {
			t.Fatalf("Record-Route %q is not a flow URI", rr)
		}
	}
	// NewResponseFromRequest copies the Record-Route headers, as a UAS must.
	respond(a, d.invite, 180, "Ringing", "alicetag", "Contact: <"+a.contact()+">")
	b.recvResponse(180)
	respond(a, d.invite, 200, "OK", "alicetag", "Contact: <"+a.contact()+">")
	d.ok = b.recvResponse(200)
	got := header(d.ok, "Record-Route")
	if len(got) != 2 {
		t.Fatalf("Record-Route in 200 = %q", got)
	}
	d.callerRoutes = []string{got[1], got[0]}
	b.send(`ACK %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKack1
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv1
CSeq: 1 ACK

`, testDomain, b.host, d.callerRoutes[0], d.callerRoutes[1], a.contact())
	ack := a.recvRequest(sip.ACK)
	if r := header(ack, "Route"); len(r) != 0 {
		t.Errorf("ACK still has our Route headers: %q", r)
	}
	if v := header(ack, "Via"); len(v) < 2 { // 3 across nodes
		t.Errorf("ACK Via = %q", v)
	}
	return d
}

func TestCallAndBye(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, true)
	b.register(600, true)
	d := establish(t, a, b)

	// The callee hangs up: its Route set is the Record-Route in order.
	a.send(`BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye1
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:bob@%[1]s>;tag=bobtag
From: <sip:alice@%[1]s>;tag=alicetag
Call-ID: call-inv1
CSeq: 2 BYE

`, testDomain, a.host, d.calleeRoutes[0], d.calleeRoutes[1], b.contact())
	bye := b.recvRequest(sip.BYE)
	respond(b, bye, 200, "OK", "")
	res := a.recvResponse(200)
	if cs := res.CSeq(); cs.MethodName != sip.BYE {
		t.Errorf("CSeq %v", cs)
	}
}

func TestByeToGoneFlowIs430(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, true)
	b.register(600, true)
	d := establish(t, a, b)
	_ = a.conn.Close()
	waitFor(t, func() bool { return ts.online()["alice"] == 0 }, "alice's connection to end")
	b.send(`BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye2
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv1
CSeq: 2 BYE

`, testDomain, b.host, d.callerRoutes[0], d.callerRoutes[1], a.contact())
	res := b.recvResponse(430)
	if res.Reason != reasonFlowFailed {
		t.Errorf("reason %q", res.Reason)
	}
	// A token that was tampered with is refused, not routed.
	bad := strings.Replace(d.callerRoutes[1], "sip:", "sip:x", 1)
	b.send(`BYE %[4]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye3
Max-Forwards: 70
Route: %[3]s
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv1
CSeq: 3 BYE

`, testDomain, b.host, bad, a.contact())
	b.recvResponse(403)
}

func TestCancelRingingCall(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, true)
	b.register(600, true)
	inv := invite(t, a, b, "inv2")
	respond(a, inv, 180, "Ringing", "alicetag")
	b.recvResponse(180)
	b.send(`CANCEL sip:alice@%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKinv2
Max-Forwards: 70
To: <sip:alice@%[1]s>
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv2
CSeq: 1 CANCEL

`, testDomain, b.host)
	if res := b.recvResponse(200); res.CSeq().MethodName != sip.CANCEL {
		t.Fatalf("want 200 for the CANCEL, got %s", res.StartLine())
	}
	cancel := a.recvRequest(sip.CANCEL)
	if cancel.Via().Params.GetOr("branch", "") != inv.Via().Params.GetOr("branch", "") {
		t.Errorf("CANCEL branch %v, INVITE's %v", cancel.Via(), inv.Via())
	}
	if cancel.Recipient.String() != inv.Recipient.String() {
		t.Errorf("CANCEL Request-URI %s, INVITE's %s", cancel.Recipient.String(), inv.Recipient.String())
	}
	respond(a, cancel, 200, "OK", "alicetag")
	respond(a, inv, 487, "Request Terminated", "alicetag")
	res := b.recvResponse(487)
	if v := header(res, "Via"); len(v) != 1 {
		t.Errorf("Via = %q", v)
	}
	// The proxy ACKs the 487 itself; the caller's ACK is absorbed.
	ack := a.recvRequest(sip.ACK)
	if ack.Via().Params.GetOr("branch", "") != inv.Via().Params.GetOr("branch", "") {
		t.Errorf("ACK branch %v", ack.Via())
	}
	b.send(`ACK sip:alice@%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKinv2
Max-Forwards: 70
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv2
CSeq: 1 ACK

`, testDomain, b.host)
	a.silent(200 * time.Millisecond)

	// A CANCEL for nothing.
	b.send(`CANCEL sip:alice@%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKnothing
To: <sip:alice@%[1]s>
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-x
CSeq: 1 CANCEL

`, testDomain, b.host)
	b.recvResponse(481)
}

func TestCalleeGoneWhileRinging(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, true)
	b.register(600, true)
	inv := invite(t, a, b, "inv3")
	respond(a, inv, 180, "Ringing", "alicetag")
	b.recvResponse(180)
	_ = a.conn.Close()
	b.recvResponse(480)
}

func TestOrigin(t *testing.T) {
	for _, c := range []struct {
		origin, host string
		ok           bool
	}{
		{"", "127.0.0.1:8080", true},
		{"http://127.0.0.1:8080", "127.0.0.1:8080", true},
		{"https://LOCALHOST:8443", "localhost:8443", true},
		{"http://127.0.0.1:8081", "127.0.0.1:8080", false},
		{"https://evil.example", "127.0.0.1:8080", false},
		{"null", "127.0.0.1:8080", false},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if got := sameOrigin(r); got != c.ok {
			t.Errorf("Origin %q Host %q: %v, want %v", c.origin, c.host, got, c.ok)
		}
	}
}

// TestAPIs checks the JSON of the public listener (the page's config and
// the names of who is online, paged, nothing else about them) and the
// operator's views on the -admin listener.
func TestAPIs(t *testing.T) {
	ts := newTestServer(t)
	names := []string{"alice", "bob", "carol", "dave", "erin"}
	for _, n := range names {
		ts.dial(n).register(600, true)
	}
	// Public: names only, a page at a time.
	var got []string
	after := ""
	for range len(names) {
		var page struct {
			Users []string
			Total int
			Next  string
		}
		ts.getJSON(ts.hs.URL+"/api/online?limit=2&after="+after, &page)
		if page.Total != len(names) || len(page.Users) > 2 {
			t.Fatalf("page after %q: %+v", after, page)
		}
		got = append(got, page.Users...)
		if after = page.Next; after == "" {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("users paged: %q", got)
	}
	res, err := http.Get(ts.hs.URL + "/api/online")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, secret := range []string{".invalid", "urn:uuid", "test-alice", "127.0.0.1", "conn"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("public /api/online tells %q:\n%s", secret, body)
		}
	}
	for _, path := range []string{"/api/connections", "/api/bindings", "/api/online?limit=x"} {
		res, err := http.Get(ts.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 404 && res.StatusCode != 400 {
			t.Errorf("public GET %s: %s", path, res.Status)
		}
	}
	var cfg struct{ Auth bool }
	ts.getJSON(ts.hs.URL+"/api/config", &cfg)
	if cfg.Auth {
		t.Error("open mode says auth")
	}

	// Admin: every connection and binding, paged.
	var conns struct {
		Total       int
		Connections []struct{ ID uint64 }
	}
	ts.getJSON(ts.admin.URL+"/api/connections?limit=3", &conns)
	if conns.Total != len(names) || len(conns.Connections) != 3 {
		t.Errorf("admin connections = %+v", conns)
	}
	// A name other than loopback's (DNS rebinding) is refused.
	req, _ := http.NewRequest("GET", ts.admin.URL+"/api/bindings", nil)
	req.Host = "rebind.example:80"
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("admin with Host rebind.example: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	var bs struct {
		Total    int
		Bindings []struct{ User, Key, Contact, UserAgent string }
	}
	ts.getJSON(ts.admin.URL+"/api/bindings?limit=2", &bs)
	if len(bs.Bindings) != 2 || bs.Bindings[1].User != "bob" {
		t.Fatalf("admin bindings = %+v", bs)
	}
	ts.getJSON(ts.admin.URL+"/api/bindings?limit=2&after_user=bob&after_key="+url.QueryEscape(bs.Bindings[1].Key), &bs)
	if bs.Total != len(names) || len(bs.Bindings) != 2 || bs.Bindings[0].User != "carol" || bs.Bindings[1].User != "dave" || !strings.Contains(bs.Bindings[0].Contact, ".invalid") {
		t.Errorf("admin bindings = %+v", bs)
	}
	// JsSIP, bundled for the page, compressed when the browser takes it.
	if _, err := os.Stat("web/node_modules/jssip"); err == nil {
		req, _ := http.NewRequest("GET", ts.hs.URL+"/jssip.js", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		js, err := io.ReadAll(zr)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || !strings.Contains(string(js), `globalThis["JsSIP"] = load(0)`) {
			t.Errorf("GET /jssip.js: %d, %d bytes, %v", res.StatusCode, len(js), err)
		}
	}
	// Only the page's files are served from the web directory.
	for path, want := range map[string]int{"/": 200, "/app.js": 200, "/style.css": 200, "/package.json": 404, "/node_modules/jssip/package.json": 404} {
		res, err := http.Get(ts.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, res.StatusCode, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// offsetClock is time.Now moved forward by a test.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func TestExpiryAndTimeouts(t *testing.T) {
	ts := newTestServer(t)
	var clk offsetClock
	ts.app.proxy.now = clk.now // before any connection uses it
	a, b := ts.dial("alice"), ts.dial("bob")

	// The Expires header applies where the Contact has no expires
	// parameter; the parameter wins over it.
	a.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKexp1
To: <sip:alice@%[1]s>
From: <sip:alice@%[1]s>;tag=x
Call-ID: reg-exp
CSeq: 1 REGISTER
Contact: <sip:one@%[2]s;transport=ws>
Contact: <sip:two@%[2]s;transport=ws>;expires=120
Expires: 60

`, testDomain, a.host)
	res := a.recvResponse(200)
	got := strings.Join(header(res, "Contact"), " | ")
	if !strings.Contains(got, "sip:one@"+a.host+";transport=ws>;expires=60") || !strings.Contains(got, "sip:two@"+a.host+";transport=ws>;expires=120") {
		t.Fatalf("Contact = %s", got)
	}
	// An older CSeq of the same Call-ID is refused (RFC 3261 §10.3 step 7).
	a.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKexp0
To: <sip:alice@%[1]s>
From: <sip:alice@%[1]s>;tag=x
Call-ID: reg-exp
CSeq: 1 REGISTER
Contact: <sip:one@%[2]s;transport=ws>;expires=0

`, testDomain, a.host)
	a.recvResponse(500)
	if got := ts.online(); got["alice"] != 2 {
		t.Fatalf("online = %v", got)
	}

	clk.advance(121 * time.Second)
	ts.app.proxy.sweep()
	if got := ts.online(); len(got) != 0 {
		t.Fatalf("online after expiry = %v", got)
	}

	// A MESSAGE nobody answers is answered 408 after Timer F.
	b.register(3600, false)
	a.register(3600, false)
	b.send("%s", message(b, "alice", "t1", "anyone?"))
	a.recvRequest(sip.MESSAGE)
	clk.advance(nonInviteLifetime + time.Second)
	ts.app.proxy.sweep()
	b.recvResponse(408)
	if n := ts.app.proxy.txns.len(); n != 0 {
		t.Errorf("%d transactions left", n)
	}
}
