package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
)

// These tests are the attacks of the issue "users, isolation and origins",
// run from outside over real WebSocket connections: each failed on the code
// before the fix.

// wildcard sends REGISTER To user with Contact: * and Expires: 0 from p,
// with credentials when auth is set, and returns the status.
func (p *phone) wildcard(user, auth string) int {
	p.t.Helper()
	p.seq++
	if auth != "" {
		auth = "\nAuthorization: " + auth
	}
	p.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKstar%[3]d
To: <sip:%[4]s@%[1]s>
From: <sip:%[4]s@%[1]s>;tag=x
Call-ID: star-%[2]s
CSeq: %[3]d REGISTER
Contact: *
Expires: 0%[5]s

`, testDomain, p.host, p.seq, user, auth)
	return p.recv().(*sip.Response).StatusCode
}

// TestOpenModeKeepsOtherConnectionsBindings is the first attack in
// open mode (no users file): Mallory's connection sends Contact: * for
// alice, and registers alice's own instance and reg-id. Alice keeps her
// binding and her connection; Mallory's binding lives beside hers.
func TestOpenModeKeepsOtherConnectionsBindings(t *testing.T) {
	ts := newTestServer(t)
	a := ts.dial("alice")
	a.register(600, true)
	m := ts.dial("mallory")
	if code := m.wildcard("alice", ""); code != 200 {
		t.Fatalf("Contact: * from another connection: %d", code)
	}
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("alice's bindings after Mallory's Contact: * = %d, want 1", got["alice"])
	}
	// Mallory takes alice's name and her +sip.instance/reg-id.
	m.name = "alice"
	m.host = "mallory.invalid"
	m.register(600, true)
	select {
	case ce := <-a.closed:
		t.Fatalf("alice's connection was closed by Mallory's REGISTER: %d %q", ce.Code, ce.Reason)
	case <-time.After(200 * time.Millisecond):
	}
	if got := ts.online(); got["alice"] != 2 {
		t.Fatalf("alice's bindings = %d, want hers and Mallory's", got["alice"])
	}
	// Mallory's un-REGISTER of that instance removes his binding only.
	m.register(0, true)
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("alice's bindings after Mallory's un-REGISTER = %d, want 1", got["alice"])
	}
	// And alice's own Contact: * still removes hers.
	if code := a.wildcard("alice", ""); code != 200 {
		t.Fatalf("alice's Contact: * = %d", code)
	}
	if got := ts.online(); got["alice"] != 0 {
		t.Fatalf("alice's bindings after her Contact: * = %d", got["alice"])
	}
}

// TestDigestRegister checks the registrar's digest authentication with a
// users file: a challenge of both algorithms, MD5 and SHA-256 answers,
// wrong passwords, another user's credentials, replays, stale nonces, and
// Mallory's Contact: * for alice.
func TestDigestRegister(t *testing.T) {
	ts := newTestServerWith(t, appConfig{users: authUsers(t)})
	var clk offsetClock
	ts.app.proxy.now = clk.now

	m := ts.dial("mallory")
	m.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKnoauth
To: <sip:alice@%[1]s>
From: <sip:alice@%[1]s>;tag=x
Call-ID: noauth
CSeq: 1 REGISTER
Contact: <sip:m@%[2]s;transport=ws>

`, testDomain, m.host)
	res := m.recvResponse(401)
	ch := header(res, "WWW-Authenticate")
	// SHA-256 first (RFC 8760), MD5 last: JsSIP and SIP.js read only the
	// last challenge.
	if len(ch) != 2 || !strings.Contains(ch[0], "algorithm=SHA-256,") || !strings.Contains(ch[1], "algorithm=MD5,") {
		t.Fatalf("challenges = %q", ch)
	}
	for _, c := range ch {
		if !strings.Contains(c, `realm="sipws.test"`) || !strings.Contains(c, `qop="auth"`) || strings.Contains(c, "stale") {
			t.Errorf("challenge %q", c)
		}
	}
	if got := ts.online(); len(got) != 0 {
		t.Fatalf("online after an unauthenticated REGISTER = %v", got)
	}

	// The right passwords, with MD5 and with SHA-256 (bob's second hash
	// column).
	a := ts.dial("alice")
	a.password = "s3cret:with:colons"
	a.register(600, true)
	b := ts.dial("bob")
	b.password, b.alg = "b0b-pw", "SHA-256"
	b.register(600, false)
	if got := ts.online(); got["alice"] != 1 || got["bob"] != 1 {
		t.Fatalf("online = %v", got)
	}

	// regOnce sends one REGISTER from p for user with auth and returns the
	// response.
	regOnce := func(p *phone, user, auth string) *sip.Response {
		t.Helper()
		p.seq++
		p.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKr%[3]d
To: <sip:%[4]s@%[1]s>
From: <sip:%[4]s@%[1]s>;tag=x
Call-ID: once-%[2]s
CSeq: %[3]d REGISTER
Contact: <sip:once@%[2]s;transport=ws>
Authorization: %[5]s

`, testDomain, p.host, p.seq, user, auth)
		return p.recv().(*sip.Response)
	}
	fresh := func(p *phone) *sip.Response {
		t.Helper()
		if r := regOnce(p, p.name, `Digest username="x"`); r.StatusCode != 401 {
			t.Fatalf("want a challenge, got %d", r.StatusCode)
		} else {
			return r
		}
		return nil
	}

	// A wrong password; carol has only an MD5 hash, so SHA-256 fails.
	c := ts.dial("carol")
	c.password = "wrong"
	if r := regOnce(c, "carol", c.answer(fresh(c), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)); r.StatusCode != 401 {
		t.Errorf("wrong password: %d", r.StatusCode)
	}
	c.password, c.alg = "car0l", "SHA-256"
	if r := regOnce(c, "carol", c.answer(fresh(c), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)); r.StatusCode != 401 {
		t.Errorf("SHA-256 for an MD5-only user: %d", r.StatusCode)
	}
	c.alg = "MD5"
	if r := regOnce(c, "carol", c.answer(fresh(c), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)); r.StatusCode != 200 {
		t.Errorf("carol with MD5: %d", r.StatusCode)
	}

	// Mallory knows his own password only: alice's credentials are needed
	// to register as alice, and his Contact: * for alice is challenged.
	m.name, m.password = "carol", "car0l"
	auth := m.answer(fresh(m), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)
	if r := regOnce(m, "alice", auth); r.StatusCode != 403 {
		t.Errorf("carol's credentials for alice: %d, want 403", r.StatusCode)
	}
	if code := m.wildcard("alice", ""); code != 401 {
		t.Errorf("Contact: * without credentials: %d, want 401", code)
	}
	if got := ts.online(); got["alice"] != 1 {
		t.Fatalf("alice's bindings after Mallory = %d", got["alice"])
	}

	// A replay of credentials already used (same nonce and nc) fails.
	auth = c.answer(fresh(c), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)
	if r := regOnce(c, "carol", auth); r.StatusCode != 200 {
		t.Fatalf("carol: %d", r.StatusCode)
	}
	if r := regOnce(c, "carol", auth); r.StatusCode != 401 {
		t.Errorf("replayed credentials: %d, want 401", r.StatusCode)
	}

	// An expired nonce: a new challenge with stale=true.
	ch2 := fresh(c)
	clk.advance(nonceLifetime + time.Second)
	r := regOnce(c, "carol", c.answer(ch2, "WWW-Authenticate", "REGISTER", "sip:"+testDomain))
	if r.StatusCode != 401 || !strings.Contains(strings.Join(header(r, "WWW-Authenticate"), " "), "stale=true") {
		t.Errorf("expired nonce: %d %q", r.StatusCode, header(r, "WWW-Authenticate"))
	}
	// Alice, proved, removes her own bindings with Contact: *.
	auth = a.answer(fresh(a), "WWW-Authenticate", "REGISTER", "sip:"+testDomain)
	if code := a.wildcard("alice", auth); code != 200 {
		t.Errorf("alice's Contact: *: %d", code)
	}
	if got := ts.online(); got["alice"] != 0 {
		t.Errorf("alice's bindings after her Contact: * = %d", got["alice"])
	}
}

// TestDigestRequests checks that with a users file a MESSAGE from a
// connection that has not proved its From user is challenged with 407, is
// forwarded with the right Proxy-Authorization, and that a connection that
// proved it is alice is challenged when it writes as bob.
func TestDigestRequests(t *testing.T) {
	ts := newTestServerWith(t, appConfig{users: authUsers(t)})
	b := ts.dial("bob")
	b.password = "b0b-pw"
	b.register(600, false)

	a := ts.dial("alice")
	a.send("%s", message(a, "bob", "q1", "unproved"))
	res := a.recvResponse(407)
	if ch := header(res, "Proxy-Authenticate"); len(ch) != 2 {
		t.Fatalf("Proxy-Authenticate = %q", ch)
	}
	b.silent(100 * time.Millisecond)
	a.password = "s3cret:with:colons"
	// Credentials for another Request-URI are no good here.
	msg := message(a, "bob", "q2b", "elsewhere")
	msg = strings.Replace(msg, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\nProxy-Authorization: "+a.answer(res, "Proxy-Authenticate", "MESSAGE", "sip:carol@"+testDomain), 1)
	a.send("%s", msg)
	a.recvResponse(407)
	msg = message(a, "bob", "q2", "proved")
	uri := "sip:bob@" + testDomain
	msg = strings.Replace(msg, "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\nProxy-Authorization: "+a.answer(res, "Proxy-Authenticate", "MESSAGE", uri), 1)
	a.send("%s", msg)
	if got := b.recvRequest(sip.MESSAGE); string(got.Body()) != "proved" {
		t.Errorf("body %q", got.Body())
	} else if pa := header(got, "Proxy-Authorization"); len(pa) != 0 {
		t.Errorf("our credentials were forwarded: %q", pa)
	}
	// Proved on this connection: no new challenge as alice.
	a.send("%s", message(a, "bob", "q3", "again"))
	b.recvRequest(sip.MESSAGE)

	// As bob from alice's connection: challenged.
	a.name = "bob"
	a.send("%s", message(a, "bob", "q4", "spoofed"))
	a.recvResponse(407)
	b.silent(100 * time.Millisecond)
}

// TestInvalidContactRoutesByFlow is the second attack: Mallory
// registers seven users whose Contacts have alice's host (and her
// Contact's user part); requests for alice's Contact without Route headers
// all reach alice.
func TestInvalidContactRoutesByFlow(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, false)
	b.register(600, false)
	m := ts.dial("mallory")
	m.host, m.cuser = a.host, "alicex"
	for i := range 7 {
		m.name = fmt.Sprintf("m%d", i)
		m.register(600, false)
	}
	const n = 30
	for i := range n {
		b.send(`BYE %[3]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye%[4]d
Max-Forwards: 70
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-%[4]d
CSeq: 2 BYE

`, testDomain, b.host, a.contact(), i)
	}
	for range n {
		a.recvRequest(sip.BYE)
	}
	m.silent(200 * time.Millisecond)
}

// retainedBodyBytes is the body bytes the transaction table holds.
func retainedBodyBytes(p *proxy) (bodies, branches int) {
	p.txns.mu.Lock()
	defer p.txns.mu.Unlock()
	for _, t := range p.txns.byKey {
		bodies += len(t.orig.Body())
		for _, b := range t.branches {
			bodies += len(b.req.Body())
			branches++
		}
	}
	return bodies, branches
}

// TestForksAndHeldBytesBounded is the memory attack, scaled down:
// one user on many connections, a MESSAGE with a large body. It goes to
// maxForks connections, the transaction table keeps no body, and a source
// that keeps requests pending is answered 503 once its budget is spent.
func TestForksAndHeldBytesBounded(t *testing.T) {
	ts := newTestServer(t)
	const conns = 15
	var as []*phone
	for i := range conns {
		a := ts.dial("alice")
		a.host = fmt.Sprintf("alice-%d.invalid", i)
		a.register(600, false)
		as = append(as, a)
	}
	b := ts.dial("bob")
	body := strings.Repeat("x", 40000)
	b.send("%s", message(b, "alice", "big1", body))
	got := 0
	for _, a := range as {
		select {
		case m := <-a.in:
			if r, ok := m.(*sip.Request); ok && r.Method == sip.MESSAGE {
				got++
			}
		case <-time.After(300 * time.Millisecond):
		}
	}
	bodies, branches := retainedBodyBytes(ts.app.proxy)
	t.Logf("forks received %d, branches %d, body bytes held %d", got, branches, bodies)
	if got > maxForks || branches > maxForks {
		t.Errorf("a MESSAGE went to %d connections (%d branches), want at most %d", got, branches, maxForks)
	}
	if bodies != 0 {
		t.Errorf("the transaction table holds %d bytes of bodies", bodies)
	}

	// Nobody answers; bob's pending requests with large headers hit his
	// budget and get 503, while the table stays within it.
	pad := strings.Repeat("p", 30000)
	refused := false
	for i := range 40 {
		b.send("%s", strings.Replace(message(b, "alice", fmt.Sprintf("pad%d", i), "x"), "CSeq: 1 MESSAGE", "CSeq: 1 MESSAGE\nX-Pad: "+pad, 1))
	}
	for range 40 {
		if r, ok := b.recv().(*sip.Response); ok && r.StatusCode == 503 {
			refused = true
			break
		}
	}
	total, _ := ts.app.proxy.txns.held(0)
	t.Logf("held in all: %d bytes", total)
	if !refused {
		t.Error("no 503 for a source past its budget")
	}
	if total > maxTxnBytesPerConn+maxForks*txnOverhead*2 {
		t.Errorf("held %d bytes, budget per connection %d", total, maxTxnBytesPerConn)
	}
}

// TestClosedSourceDropsTransactions checks that the transactions of a
// connection that has gone are dropped with it, not kept for Timer F.
func TestClosedSourceDropsTransactions(t *testing.T) {
	ts := newTestServer(t)
	a, b := ts.dial("alice"), ts.dial("bob")
	a.register(600, false)
	b.send("%s", message(b, "alice", "gone1", strings.Repeat("y", 10000)))
	a.recvRequest(sip.MESSAGE)
	if n := ts.app.proxy.txns.len(); n != 1 {
		t.Fatalf("%d transactions", n)
	}
	_ = b.conn.Close()
	waitFor(t, func() bool { return ts.app.proxy.txns.len() == 0 }, "bob's transaction to go with his connection")
}

// TestBindingsPerConnectionCapped is the binding flood, scaled
// down: one connection registers more Contacts than maxBindingsPerConn.
func TestBindingsPerConnectionCapped(t *testing.T) {
	ts := newTestServer(t)
	a := ts.dial("alice")
	refused := 0
	for i := range maxBindingsPerConn + 5 {
		a.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKflood%[3]d
To: <sip:u%[3]d@%[1]s>
From: <sip:u%[3]d@%[1]s>;tag=x
Call-ID: flood-%[3]d
CSeq: 1 REGISTER
Contact: <sip:c%[3]d@%[2]s;transport=ws>

`, testDomain, a.host, i)
		if r := a.recv().(*sip.Response); r.StatusCode == 403 {
			refused++
		} else if r.StatusCode != 200 {
			t.Fatalf("REGISTER %d: %d", i, r.StatusCode)
		}
	}
	total := 0
	for _, n := range ts.online() {
		total += n
	}
	if total != maxBindingsPerConn || refused != 5 {
		t.Errorf("%d bindings on one connection, %d refused; want %d and 5", total, refused, maxBindingsPerConn)
	}
	// The index by connection: closing it removes them all.
	_ = a.conn.Close()
	waitFor(t, func() bool { return len(ts.online()) == 0 }, "the bindings to go with their connection")
}

// dialOrigin returns the HTTP status of a handshake with Origin origin.
func (ts *testServer) dialOrigin(origin string) int {
	ts.t.Helper()
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}})}
	conn, _, _, err := d.Dial(context.Background(), ts.url)
	if conn != nil {
		_ = conn.Close()
	}
	if err == nil {
		return 101
	}
	if se, ok := err.(ws.StatusError); ok {
		return int(se)
	}
	ts.t.Fatal(err)
	return 0
}

// TestAllowOrigin checks that pages of another origin can connect when
// -allow-origin names it, and only then; the page's own origin always can.
func TestAllowOrigin(t *testing.T) {
	def := newTestServer(t)
	own := def.hs.URL
	if got := def.dialOrigin(own); got != 101 {
		t.Errorf("same origin: %d", got)
	}
	if got := def.dialOrigin("https://app.example"); got != 403 {
		t.Errorf("another origin by default: %d", got)
	}
	ts := newTestServerWith(t, appConfig{origins: []string{"https://app.example", "*.cdn.example"}})
	for origin, want := range map[string]int{
		ts.hs.URL:                  101,
		"https://app.example":      101,
		"https://eu.cdn.example":   101,
		"http://app.example":       403,
		"https://evil.example":     403,
		"https://app.example.evil": 403,
	} {
		if got := ts.dialOrigin(origin); got != want {
			t.Errorf("Origin %s: %d, want %d", origin, got, want)
		}
	}
	any := newTestServerWith(t, appConfig{origins: []string{"*"}})
	if got := any.dialOrigin("https://anything.example"); got != 101 {
		t.Errorf("-allow-origin '*': %d", got)
	}
	o, err := parseFlags([]string{"-allow-origin", "https://a.example", "-allow-origin", "*.b.example"}, &strings.Builder{})
	if err != nil || strings.Join(o.origins, " ") != "https://a.example *.b.example" {
		t.Errorf("flags: %v %q", err, o.origins)
	}
	if _, err := newApp(appConfig{domain: testDomain, origins: []string{"[bad"}}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a bad pattern is accepted")
	}
}

// TestUsersFileAndFlags checks the users file formats and the flags that
// read it: a bad file or algorithm list is a usage error (exit 2).
func TestUsersFileAndFlags(t *testing.T) {
	users, err := parseUsers(strings.NewReader(testUsers), testDomain)
	if err != nil {
		t.Fatal(err)
	}
	if len(users["alice"].ha1) != 2 || len(users["bob"].ha1) != 2 || len(users["carol"].ha1) != 1 {
		t.Errorf("hashes: alice %d, bob %d, carol %d", len(users["alice"].ha1), len(users["bob"].ha1), len(users["carol"].ha1))
	}
	for _, bad := range []string{
		"",                // no users
		"alice\n",         // no password
		"alice:\n",        // empty password
		":pw\n",           // no user
		"a:pw\na:other\n", // twice
		"bob:other.realm:" + strings.Repeat("a", 32) + "\n", // htdigest of another realm
	} {
		if _, err := parseUsers(strings.NewReader(bad), testDomain); err == nil {
			t.Errorf("users file %q accepted", bad)
		}
	}
	for _, args := range [][]string{
		{"-users", "/nonexistent/users"},
		{"-digest-algorithms", "SHA-512"},
		{"-digest-algorithms", "MD5,MD5"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v is not a usage error", args, err)
		}
	}
	o, err := parseFlags([]string{"-digest-algorithms", "md5"}, io.Discard)
	if err != nil || strings.Join(o.algs, ",") != "MD5" || o.users != nil {
		t.Errorf("-digest-algorithms md5: %v %v", o.algs, err)
	}
}

// TestDigestDialog checks a call between two users who proved who they
// are (nothing in the dialog is challenged again), and that a connection
// that proved nothing cannot use the flow tokens of the dialog's Route
// headers to reach a phone.
func TestDigestDialog(t *testing.T) {
	ts := newTestServerWith(t, appConfig{users: authUsers(t)})
	a, b := ts.dial("alice"), ts.dial("bob")
	a.password, b.password = "s3cret:with:colons", "b0b-pw"
	a.register(600, true)
	b.register(600, true)
	d := establish(t, a, b)

	bye := `BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bK%[6]s
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:alice@%[1]s>;tag=alicetag
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv1
CSeq: 2 BYE

`
	m := ts.dial("mallory")
	m.send(bye, testDomain, m.host, d.callerRoutes[0], d.callerRoutes[1], a.contact(), "mbye")
	m.recvResponse(407)
	a.silent(100 * time.Millisecond)

	b.send(bye, testDomain, b.host, d.callerRoutes[0], d.callerRoutes[1], a.contact(), "bbye")
	got := a.recvRequest(sip.BYE)
	respond(a, got, 200, "OK", "")
	b.recvResponse(200)
}
