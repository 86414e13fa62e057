package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/sipws/sipws"
)

// The cluster tests run two or three nodes in this process, each with its
// own sipws Server, HTTP listener and -sip-addr, around a real
// redis-server on a loopback port that the test starts and stops itself.

// startRedis starts redis-server on a free loopback port, without
// persistence, and returns its URL. Outside CI a machine without
// redis-server skips the test; in CI (CI=true) that fails it:
// scripts/test.sh installs redis-server.
func startRedis(t *testing.T) string {
	t.Helper()
	url, _ := startRedisProc(t)
	return url
}

// startRedisProc is startRedis that also returns a function that kills
// the server.
func startRedisProc(t *testing.T) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)")
		}
		t.Skip("SKIPPED, NOT PASSED: redis-server is not installed (apt-get install redis-server, or run scripts/test.sh)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	url := "redis://127.0.0.1:" + port + "/0"
	opts, _ := redis.ParseURL(url)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not start: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url, kill
}

func newNode(t *testing.T, redisURL, name string) *testServer {
	t.Helper()
	return newTestServerWith(t, appConfig{node: name, redis: redisURL, sipAddr: "127.0.0.1:0"})
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// onlineUsers returns the public /api/online list of node ts.
func (ts *testServer) onlineUsers() []string {
	ts.t.Helper()
	var v struct {
		Users []string
		Total int
	}
	ts.getJSON(ts.hs.URL+"/api/online?limit=200", &v)
	return v.Users
}

// waitLong is waitFor with room for a heartbeat to lapse.
func waitLong(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * (heartbeatTTL + heartbeatEvery))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reply sends a response built from req on p.
func reply(p *phone, req *sip.Request, code int, reason string) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	p.send("%s", strings.ReplaceAll(strings.TrimSuffix(res.String(), "\r\n\r\n"), "\r\n", "\n")+"\n\n")
}

func TestClusterMessageBothWays(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	alice, bob := na.dial("alice"), nb.dial("bob")
	alice.register(600, true)
	bob.register(600, false)

	for _, tc := range []struct {
		from, to *phone
		toName   string
	}{{alice, bob, "bob"}, {bob, alice, "alice"}} {
		body := "héllo 👋 " + strings.Repeat("x", 20000)
		tc.from.send("%s", message(tc.from, tc.toName, "x"+tc.from.name, body))
		req := tc.to.recvRequest(sip.MESSAGE)
		if string(req.Body()) != body {
			t.Fatalf("%s→%s: body changed: %d bytes, want %d", tc.from.name, tc.toName, len(req.Body()), len(body))
		}
		if req.Recipient.Host != tc.to.host {
			t.Errorf("Request-URI %s, want the registered contact", req.Recipient.String())
		}
		// The sender's, the node of the sender's (TCP), the node of the
		// receiver's; our Route (the Path) is gone.
		vias := header(req, "Via")
		if len(vias) != 3 || !strings.Contains(vias[0], branchPrefix) || !strings.HasPrefix(vias[1], "SIP/2.0/TCP 127.0.0.1:") {
			t.Fatalf("Via = %q", vias)
		}
		if r := header(req, "Route"); len(r) != 0 {
			t.Errorf("Route left: %q", r)
		}
		if mf := req.MaxForwards(); mf == nil || *mf != 68 {
			t.Errorf("Max-Forwards = %v, want 68 (two hops)", mf)
		}
		reply(tc.to, req, 200, "OK")
		got := tc.from.recvResponse(200)
		if vias := header(got, "Via"); len(vias) != 1 {
			t.Errorf("Via of the response = %q", vias)
		}
		tc.to.silent(100 * time.Millisecond)
	}
	// Each node's public list has the users of both.
	for _, n := range []*testServer{na, nb} {
		waitFor(t, func() bool { return strings.Join(n.onlineUsers(), ",") == "alice,bob" }, "alice and bob online on both nodes")
	}
	// Paged across the nodes as on one.
	var page struct {
		Users []string
		Total int
		Next  string
	}
	na.getJSON(na.hs.URL+"/api/online?limit=1", &page)
	if strings.Join(page.Users, ",") != "alice" || page.Total != 2 || page.Next != "alice" {
		t.Errorf("first page %+v", page)
	}
	na.getJSON(na.hs.URL+"/api/online?limit=1&after=alice", &page)
	if strings.Join(page.Users, ",") != "bob" || page.Total != 2 {
		t.Errorf("second page %+v", page)
	}
	// A binding in Redis expires with its registration.
	rdb := redisClient(t, url)
	ttl, err := rdb.PTTL(context.Background(), bindingKeyName("bob", "uri:"+bob.contact())).Result()
	if err != nil || ttl <= 0 || ttl > 600*time.Second {
		t.Errorf("bob's binding TTL %v, %v: want (0, 600 s]", ttl, err)
	}
}

func TestClusterCallAcrossNodes(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	alice, bob := na.dial("alice"), nb.dial("bob")
	alice.register(600, true)
	bob.register(600, true)
	d := establish(t, alice, bob) // bob calls alice, across the nodes
	// Each Record-Route names the -sip-addr of the node of its side.
	if !strings.Contains(d.calleeRoutes[0], "@"+na.app.proxy.cl.addr+";") || !strings.Contains(d.calleeRoutes[1], "@"+nb.app.proxy.cl.addr+";") {
		t.Errorf("Record-Route %q: want alice's node (%s) on top, then bob's (%s)", d.calleeRoutes, na.app.proxy.cl.addr, nb.app.proxy.cl.addr)
	}
	alice.send(`BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye1
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:bob@%[1]s>;tag=bobtag
From: <sip:alice@%[1]s>;tag=alicetag
Call-ID: call-inv1
CSeq: 2 BYE

`, testDomain, alice.host, d.calleeRoutes[0], d.calleeRoutes[1], bob.contact())
	bye := bob.recvRequest(sip.BYE)
	if r := header(bye, "Route"); len(r) != 0 {
		t.Errorf("BYE still has Routes: %q", r)
	}
	respond(bob, bye, 200, "OK", "")
	alice.recvResponse(200)

	// A BYE while bob's node is not live: 430 from alice's node (not a
	// loop: the flow of the other side is gone with its node).
	nb.app.proxy.cl.silent.Store(true)
	waitLong(t, func() bool { return !na.app.proxy.cl.isLive("b", nb.app.proxy.cl.run) }, "node a to see node b gone")
	alice.send(`BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye0
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:bob@%[1]s>;tag=bobtag
From: <sip:alice@%[1]s>;tag=alicetag
Call-ID: call-inv1
CSeq: 2 BYE

`, testDomain, alice.host, d.calleeRoutes[0], d.calleeRoutes[1], bob.contact())
	alice.recvResponse(430)
	bob.silent(100 * time.Millisecond)
	nb.app.proxy.cl.silent.Store(false)
	waitLong(t, func() bool { return na.app.proxy.cl.isLive("b", nb.app.proxy.cl.run) }, "node a to see node b again")

	// bob's phone goes; a BYE for its flow gets 430 from bob's node.
	_ = bob.conn.Close()
	waitFor(t, func() bool { return nb.online()["bob"] == 0 }, "bob's connection to end")
	alice.send(`BYE %[5]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKbye2
Max-Forwards: 70
Route: %[3]s
Route: %[4]s
To: <sip:bob@%[1]s>;tag=bobtag
From: <sip:alice@%[1]s>;tag=alicetag
Call-ID: call-inv1
CSeq: 3 BYE

`, testDomain, alice.host, d.calleeRoutes[0], d.calleeRoutes[1], bob.contact())
	if res := alice.recvResponse(430); res.Reason != reasonFlowFailed {
		t.Errorf("reason %q", res.Reason)
	}
}

func TestClusterCancelAcrossNodes(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	alice, bob := na.dial("alice"), nb.dial("bob")
	alice.register(600, true)
	bob.register(600, true)
	inv := invite(t, alice, bob, "inv2")
	respond(alice, inv, 180, "Ringing", "alicetag")
	bob.recvResponse(180)
	bob.send(`CANCEL sip:alice@%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKinv2
Max-Forwards: 70
To: <sip:alice@%[1]s>
From: <sip:bob@%[1]s>;tag=bobtag
Call-ID: call-inv2
CSeq: 1 CANCEL

`, testDomain, bob.host)
	bob.recvResponse(200)
	cancel := alice.recvRequest(sip.CANCEL)
	reply(alice, cancel, 200, "OK")
	respond(alice, inv, 487, "Request Terminated", "alicetag")
	alice.recvRequest(sip.ACK) // alice's node ACKs the 487 itself
	bob.recvResponse(487)
}

func TestClusterDeadNodeAndMovingPhone(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	alice, bob := na.dial("alice"), nb.dial("bob")
	alice.register(600, true)
	bob.register(600, true)
	alice.send("%s", message(alice, "bob", "d1", "before"))
	reply(bob, bob.recvRequest(sip.MESSAGE), 200, "OK")
	alice.recvResponse(200)

	// Node b stops its heartbeat, as a node that died would. Its SIP
	// listener still answers and bob's binding is still in Redis for
	// 10 minutes: only the heartbeat tells a that b is gone.
	nb.app.proxy.cl.silent.Store(true)
	waitLong(t, func() bool { return !na.app.proxy.cl.isLive("b", nb.app.proxy.cl.run) }, "node a to see node b gone")
	rdb := redisClient(t, url)
	if n, _ := rdb.Exists(context.Background(), bindingKeyName("bob", bindingKey("urn:uuid:0000-bob", 1, ""))).Result(); n != 1 {
		t.Fatalf("bob's binding is no longer in Redis (%d): the test would prove nothing", n)
	}
	alice.send("%s", message(alice, "bob", "d2", "after"))
	alice.recvResponse(404)
	bob.silent(200 * time.Millisecond)
	if u := na.onlineUsers(); strings.Join(u, ",") != "alice" {
		t.Errorf("online on a: %q, want alice only", u)
	}

	// A node that comes back under the same name is a new run: bob's old
	// binding stays unused.
	nb2 := newNode(t, url, "b")
	waitLong(t, func() bool { return na.app.proxy.cl.isLive("b", nb2.app.proxy.cl.run) }, "node a to see node b again")
	alice.send("%s", message(alice, "bob", "d3", "new run"))
	alice.recvResponse(404)

	// bob's phone reconnects, to node a, and registers: reachable again.
	bob2 := na.dial("bob")
	bob2.register(600, true)
	alice.send("%s", message(alice, "bob", "d4", "moved"))
	req := bob2.recvRequest(sip.MESSAGE)
	if string(req.Body()) != "moved" {
		t.Errorf("body %q", req.Body())
	}
	reply(bob2, req, 200, "OK")
	alice.recvResponse(200)
	bob.silent(100 * time.Millisecond)
}

// sendRaw writes a SIP request to addr over TCP and returns the status of
// the answer.
func sendRaw(t *testing.T, addr, msg string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head, body, _ := strings.Cut(msg, "\n\n")
	wire := strings.ReplaceAll(strings.TrimSpace(head), "\n", "\r\n") + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
	if _, err := c.Write([]byte(wire)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	data, err := readStreamMessage(bufio.NewReader(c), maxMessageSize)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := m.(*sip.Response)
	if !ok {
		t.Fatalf("want a response, got %s", m)
	}
	return res.StatusCode
}

// The -sip-addr listener is no open relay: only a request whose top Route
// carries a live flow token this node signed reaches a phone.
func TestClusterSIPAddrIsNoRelay(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	alice, bob := na.dial("alice"), nb.dial("bob")
	alice.register(600, true)
	bob.register(600, true)
	addr := na.app.proxy.cl.addr
	req := func(route string) string {
		r := "MESSAGE sip:alice@" + testDomain + " SIP/2.0\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKraw" + strconv.Itoa(int(time.Now().UnixNano())) +
			"\nMax-Forwards: 70\nTo: <sip:alice@" + testDomain + ">\nFrom: <sip:mallory@" + testDomain + ">;tag=m\nCall-ID: raw\nCSeq: 1 MESSAGE\n"
		if route != "" {
			r += "Route: <" + route + ">\n"
		}
		return r + "\nspam"
	}
	// No Route: the Request-URI is not looked up for a peer.
	if code := sendRaw(t, addr, req("")); code != 403 {
		t.Errorf("no Route: %d, want 403", code)
	}
	// A forged token on our address.
	if code := sendRaw(t, addr, req("sip:AAAAforged@"+addr+";transport=tcp;lr")); code != 403 {
		t.Errorf("forged token: %d, want 403", code)
	}
	// bob's Path (node b's token) sent to node a: not ours, not relayed.
	var bobPath string
	for _, b := range nb.app.proxy.reg.lookup("bob", time.Now()) {
		bobPath = b.path
	}
	if bobPath == "" {
		t.Fatal("no Path in bob's binding")
	}
	if code := sendRaw(t, addr, req(bobPath)); code != 403 {
		t.Errorf("another node's token: %d, want 403", code)
	}
	alice.silent(100 * time.Millisecond)
	bob.silent(100 * time.Millisecond)
	// The token of alice's flow, on its node: delivered (what node b does).
	var alicePath string
	for _, b := range na.app.proxy.reg.lookup("alice", time.Now()) {
		alicePath = b.path
	}
	go func() {
		r := alice.recvRequest(sip.MESSAGE)
		reply(alice, r, 200, "OK")
	}()
	if code := sendRaw(t, addr, req(alicePath)); code != 200 {
		t.Errorf("alice's Path: %d, want 200", code)
	}
	// A REGISTER from a peer is refused.
	if code := sendRaw(t, addr, "REGISTER sip:"+testDomain+" SIP/2.0\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKr1\nMax-Forwards: 70\nTo: <sip:eve@"+testDomain+">\nFrom: <sip:eve@"+testDomain+">;tag=e\nCall-ID: r\nCSeq: 1 REGISTER\nContact: <sip:eve@192.0.2.1>\n\n"); code != 403 {
		t.Errorf("REGISTER from a peer: %d, want 403", code)
	}
}

// When Redis cannot be reached, a REGISTER is answered 503, not refused as
// if the caps were reached.
func TestClusterRedisDown(t *testing.T) {
	url, kill := startRedisProc(t)
	na := newNode(t, url, "a")
	alice := na.dial("alice")
	alice.register(600, false)
	kill()
	bob := na.dial("bob")
	bob.send(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WSS %[2]s;branch=z9hG4bKdown
Max-Forwards: 70
To: <sip:bob@%[1]s>
From: <sip:bob@%[1]s>;tag=b
Call-ID: reg-down
CSeq: 1 REGISTER
Contact: <%[3]s>;expires=600

`, testDomain, bob.host, bob.contact())
	m := bob.recvWithin(5 * redisTimeout)
	if res, ok := m.(*sip.Response); !ok || res.StatusCode != 503 {
		t.Fatalf("REGISTER with Redis down: want 503, got:\n%s", m)
	}
}

func TestClusterFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-redis", "redis://127.0.0.1:1/0"},                                            // no -node
		{"-redis", "http://x", "-node", "a"},                                           // not a redis URL
		{"-redis", "redis://127.0.0.1:1/0", "-node", "a b"},                            // bad node name
		{"-redis", "redis://127.0.0.1:1/0", "-node", "a", "-sip-addr", "0.0.0.0:5070"}, // unspecified
		{"-redis", "redis://127.0.0.1:1/0", "-node", "a", "-sip-addr", "5070"},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), func() {}, args, &out); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, out.String())
		}
	}
	_ = sipws.Version
}

// A link from another node carries the requests of all of that node's
// phones: the per-connection transaction budget would throttle every
// phone of a node to what one browser may hold; only the table's budget
// bounds a link.
func TestPeerLinkNotBoundByConnectionBudget(t *testing.T) {
	for _, tc := range []struct {
		src  sipws.ConnID
		want bool
	}{{7, false}, {peerIDBase | 7, true}} {
		tt := newTxnTable()
		n := 0
		for tt.bySrc[tc.src] <= maxTxnBytesPerConn {
			n++
			if !tt.add(&proxyTxn{key: txnKey{src: tc.src, branch: strconv.Itoa(n), method: "MESSAGE"}, size: 4096}) {
				break
			}
		}
		got := tt.bySrc[tc.src] > maxTxnBytesPerConn
		if got != tc.want {
			t.Errorf("source %x: past the per-connection budget = %v after %d transactions, want %v", uint64(tc.src), got, n, tc.want)
		}
	}
}

// Two live nodes may not share a name: the second waits for the first's
// heartbeat to lapse (a node killed a moment ago) and, as it keeps beating,
// refuses to start.
func TestClusterNodeNameTaken(t *testing.T) {
	url := startRedis(t)
	newNode(t, url, "a")
	_, err := newApp(appConfig{domain: testDomain, webDir: "web", node: "a", redis: url, sipAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "already live") {
		t.Fatalf("second node a: %v, want already live", err)
	}
}

// Bindings of a node that died do not count in the user's cap: a phone
// that moved registers though the dead node held maxBindingsPerUser of
// its user's bindings.
func TestClusterDeadBindingsLeaveTheCap(t *testing.T) {
	url := startRedis(t)
	na, nb := newNode(t, url, "a"), newNode(t, url, "b")
	for i := range maxBindingsPerUser {
		p := nb.dial("bob")
		p.host = fmt.Sprintf("bob-%d.invalid", i)
		p.register(600, false)
	}
	nb.app.proxy.cl.silent.Store(true)
	waitLong(t, func() bool { return !na.app.proxy.cl.isLive("b", nb.app.proxy.cl.run) }, "node a to see node b gone")
	moved := na.dial("bob")
	moved.host = "bob-moved.invalid"
	moved.register(600, false)
	if n := len(na.app.proxy.reg.lookup("bob", time.Now())); n != 1 {
		t.Errorf("bob's live bindings: %d, want 1", n)
	}
}
