package sipwssipgo_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwssipgo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rig is a sipws.Server on a real loopback HTTP(S) server with a sipgo
// Server behind a Bridge.
type rig struct {
	t      *testing.T
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	bridge *sipwssipgo.Bridge
	ws     *sipws.Server
	http   *httptest.Server

	mu    sync.Mutex
	conns map[string]*sipws.Conn // AOR → conn, from REGISTER
}

func newRig(t *testing.T, secure bool, cfg sipws.Config, setup func(*rig)) *rig {
	t.Helper()
	r := &rig{t: t, conns: make(map[string]*sipws.Conn)}
	ua, err := sipgo.NewUA(append(sipwssipgo.UserAgentOptions(), sipgo.WithUserAgentHostname("proxy.test"))...)
	require.NoError(t, err)
	r.ua = ua
	r.srv, err = sipgo.NewServer(ua)
	require.NoError(t, err)
	r.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname("proxy.test"))
	require.NoError(t, err)
	r.bridge, err = sipwssipgo.New(ua, sipwssipgo.Config{})
	require.NoError(t, err)
	r.srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		c, ok := r.bridge.Conn(req)
		if ok {
			r.mu.Lock()
			r.conns[req.To().Address.User] = c
			r.mu.Unlock()
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	if setup != nil {
		setup(r)
	}
	cfg.OnMessage = r.bridge.OnMessage
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = sipwssipgo.MaxMessageSize()
	}
	r.ws, err = sipws.New(cfg)
	require.NoError(t, err)
	if secure {
		r.http = httptest.NewTLSServer(r.ws)
	} else {
		r.http = httptest.NewServer(r.ws)
	}
	t.Cleanup(func() {
		r.http.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, r.ws.Shutdown(ctx))
		assert.NoError(t, r.bridge.Close())
		assert.NoError(t, r.ua.Close())
	})
	return r
}

func (r *rig) conn(aor string) *sipws.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[aor]
}

// browser is a WebSocket SIP client, as JsSIP would be.
type browser struct {
	t    *testing.T
	conn net.Conn
}

func (r *rig) dial(header http.Header) *browser {
	r.t.Helper()
	u := "ws" + strings.TrimPrefix(r.http.URL, "http")
	d := ws.Dialer{Protocols: []string{"sip"}, Header: ws.HandshakeHeaderHTTP(header)}
	if strings.HasPrefix(u, "wss") {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // httptest's certificate
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, _, err := d.Dial(ctx, u)
	require.NoError(r.t, err)
	r.t.Cleanup(func() { _ = c.Close() })
	return &browser{t: r.t, conn: c}
}

func (b *browser) send(op ws.OpCode, msg string) {
	b.t.Helper()
	require.NoError(b.t, wsutil.WriteClientMessage(b.conn, op, []byte(msg)))
}

// read returns the next data message, failing the test after 10 s.
func (b *browser) read() (string, ws.OpCode) {
	b.t.Helper()
	require.NoError(b.t, b.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	data, op, err := wsutil.ReadServerData(b.conn)
	require.NoError(b.t, err)
	return string(data), op
}

// closeCode reads until the server closes and returns its close code.
func (b *browser) closeCode() ws.StatusCode {
	b.t.Helper()
	require.NoError(b.t, b.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	for {
		_, _, err := wsutil.ReadServerData(b.conn)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			return ce.Code
		}
		require.NoError(b.t, err)
	}
}

func request(method, user, callID, branch, body string) string {
	return fmt.Sprintf("%s sip:proxy.test SIP/2.0\r\n"+
		"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"To: <sip:%s@proxy.test>\r\n"+
		"From: <sip:%s@proxy.test>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 %s\r\n"+
		"Contact: <sip:%s@df7jal23ls0d.invalid;transport=ws>\r\n"+
		"Content-Length: %d\r\n\r\n%s",
		method, branch, user, user, branch, callID, method, user, len(body), body)
}

func register(b *browser, user string) {
	b.t.Helper()
	b.send(ws.OpText, request("REGISTER", user, "reg-"+user, "z9hG4bKreg"+user, ""))
	res, _ := b.read()
	require.True(b.t, strings.HasPrefix(res, "SIP/2.0 200 OK\r\n"), res)
	require.Contains(b.t, res, "Call-ID: reg-"+user+"\r\n")
}

// Requests in text and binary frames reach sipgo with the WS or WSS label,
// and each response leaves on the connection its request came in on.
func TestRoundTrip(t *testing.T) {
	for _, secure := range []bool{false, true} {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			t.Run(fmt.Sprintf("secure=%v/%v", secure, op), func(t *testing.T) {
				transports := make(chan string, 1)
				r := newRig(t, secure, sipws.Config{}, func(r *rig) {
					r.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
						transports <- req.Transport()
						_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
					})
				})
				b := r.dial(nil)
				b.send(op, request("OPTIONS", "alice", "opt-1", "z9hG4bKopt1", ""))
				res, resOp := b.read()
				assert.True(t, strings.HasPrefix(res, "SIP/2.0 200 OK\r\n"), res)
				assert.Contains(t, res, "Call-ID: opt-1\r\n")
				assert.Equal(t, ws.OpText, resOp)
				want := "WS"
				if secure {
					want = "WSS"
				}
				assert.Equal(t, want, <-transports)
			})
		}
	}
}

// A MESSAGE of the largest size sipgo reads reaches its handler byte for
// byte (UTF-8 body), once; one byte more is refused by sipws with 1009
// before sipgo sees it.
func TestMessageSizeLimit(t *testing.T) {
	bodies := make(chan []byte, 4)
	r := newRig(t, false, sipws.Config{}, func(r *rig) {
		r.srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
			bodies <- bytes.Clone(req.Body())
			_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	head := request("MESSAGE", "alice", "big-1", "z9hG4bKbig1", "")
	// Content-Length grows by a few digits with the body; fill up to the limit.
	fill := int(sipwssipgo.MaxMessageSize()) - len(head) - 5
	body := strings.Repeat("héllo wörld ☎ ", fill/18)
	body += strings.Repeat("x", fill-len(body))
	msg := request("MESSAGE", "alice", "big-1", "z9hG4bKbig1", body)
	require.LessOrEqual(t, int64(len(msg)), sipwssipgo.MaxMessageSize())

	b := r.dial(nil)
	b.send(ws.OpText, msg)
	res, _ := b.read()
	require.True(t, strings.HasPrefix(res, "SIP/2.0 200 OK\r\n"), res)
	assert.Equal(t, []byte(body), <-bodies)

	big := r.dial(nil)
	pad := int(sipwssipgo.MaxMessageSize()) + 1 - len(msg)
	over := request("MESSAGE", "alice", "big-2", "z9hG4bKbig2", body+strings.Repeat("y", pad+5))
	over = over[:sipwssipgo.MaxMessageSize()+1]
	big.send(ws.OpText, over)
	assert.Equal(t, ws.StatusMessageTooBig, big.closeCode())

	// The first connection still works, and its message arrived once.
	b.send(ws.OpText, request("MESSAGE", "alice", "small", "z9hG4bKsmall", "hi"))
	res, _ = b.read()
	require.Contains(t, res, "Call-ID: small\r\n")
	assert.Equal(t, []byte("hi"), <-bodies)
	assert.Empty(t, bodies)
}

// Two browsers behind one address (a trusted proxy that names the same
// client IP for both): a request sipgo sends to each leaves on that
// browser's own connection, and responses go back the same way.
func TestTwoBrowsersOneAddress(t *testing.T) {
	r := newRig(t, false, sipws.Config{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	}, nil)
	h := http.Header{"X-Forwarded-For": {"203.0.113.7"}}
	alice, bob := r.dial(h), r.dial(h)
	register(alice, "alice")
	register(bob, "bob")
	ca, cb := r.conn("alice"), r.conn("bob")
	require.NotNil(t, ca)
	require.NotNil(t, cb)
	require.NotSame(t, ca, cb)
	require.Equal(t, ca.RemoteAddr().Addr(), cb.RemoteAddr().Addr(), "both browsers share one address")

	for _, tc := range []struct {
		user string
		c    *sipws.Conn
		b    *browser
	}{{"alice", ca, alice}, {"bob", cb, bob}, {"alice", ca, alice}} {
		req := sip.NewRequest(sip.MESSAGE, sip.Uri{User: tc.user, Host: "df7jal23ls0d.invalid"})
		req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
		req.SetBody([]byte("to " + tc.user))
		require.NoError(t, r.bridge.Route(req, tc.c))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tx, err := r.client.TransactionRequest(ctx, req)
		require.NoError(t, err)
		got, _ := tc.b.read()
		require.True(t, strings.HasPrefix(got, "MESSAGE sip:"+tc.user+"@"), got)
		require.True(t, strings.HasSuffix(got, "\r\n\r\nto "+tc.user), got)
		msg, err := sip.ParseMessage([]byte(got))
		require.NoError(t, err)
		tc.b.send(ws.OpText, sip.NewResponseFromRequest(msg.(*sip.Request), 200, "OK", nil).String())
		select {
		case res := <-tx.Responses():
			assert.Equal(t, 200, int(res.StatusCode))
		case <-tx.Done():
			t.Fatalf("transaction ended: %v", tx.Err())
		}
		tx.Terminate()
		cancel()
	}

	// Each browser's OPTIONS is answered on its own connection only.
	alice.send(ws.OpText, request("OPTIONS", "alice", "opt-a", "z9hG4bKopta", ""))
	bob.send(ws.OpText, request("OPTIONS", "bob", "opt-b", "z9hG4bKoptb", ""))
	ra, _ := alice.read()
	rb, _ := bob.read()
	assert.Contains(t, ra, "Call-ID: opt-a\r\n")
	assert.Contains(t, rb, "Call-ID: opt-b\r\n")
}

// A browser that closes while sipgo waits for its answer to an INVITE: the
// client transaction ends at once with a transport error (not Timer B, 32 s
// later), the connection leaves sipgo's pool, and a new request to it fails
// without any dial.
func TestBrowserClosesMidTransaction(t *testing.T) {
	r := newRig(t, false, sipws.Config{}, nil)
	alice := r.dial(nil)
	register(alice, "alice")
	ca := r.conn("alice")
	require.NotNil(t, ca)

	invite := sip.NewRequest(sip.INVITE, sip.Uri{User: "alice", Host: "df7jal23ls0d.invalid"})
	require.NoError(t, r.bridge.Route(invite, ca))
	dest := invite.Destination()
	require.NotNil(t, r.ua.TransportLayer().Pool("ws").Get(dest))
	tx, err := r.client.TransactionRequest(context.Background(), invite)
	require.NoError(t, err)
	got, _ := alice.read()
	require.True(t, strings.HasPrefix(got, "INVITE sip:alice@"), got)

	require.NoError(t, alice.conn.Close())
	select {
	case <-tx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the transaction outlived its connection")
	}
	require.ErrorIs(t, tx.Err(), sip.ErrTransactionTransport)
	<-ca.Done()
	require.Eventually(t, func() bool { return r.bridge.Len() == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Nil(t, r.ua.TransportLayer().Pool("ws").Get(dest))
	_, ok := r.bridge.Conn(invite)
	assert.False(t, ok)

	// Route refuses a gone connection; a request sent to its old address
	// fails at the dial guard, not with a dial.
	bye := sip.NewRequest(sip.BYE, sip.Uri{User: "alice", Host: "df7jal23ls0d.invalid"})
	assert.ErrorIs(t, r.bridge.Route(bye, ca), sipwssipgo.ErrConnGone)
	bye.SetDestination(dest)
	bye.SetTransport("WS")
	_, err = r.client.TransactionRequest(context.Background(), bye)
	assert.ErrorIs(t, err, sipwssipgo.ErrConnGone)
}

// A browser that closes while sipgo's handler is still on its request: the
// server transaction ends, and the handler's late response goes nowhere.
func TestBrowserClosesMidServerTransaction(t *testing.T) {
	inHandler := make(chan sip.ServerTransaction, 1)
	release := make(chan struct{})
	respondErr := make(chan error, 1)
	r := newRig(t, false, sipws.Config{}, func(r *rig) {
		r.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			inHandler <- tx
			<-release
			respondErr <- tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	alice := r.dial(nil)
	alice.send(ws.OpText, request("INVITE", "alice", "inv-1", "z9hG4bKinv1", ""))
	tx := <-inHandler
	require.NoError(t, alice.conn.Close())
	select {
	case <-tx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the server transaction outlived its connection")
	}
	assert.ErrorIs(t, tx.Err(), sip.ErrTransactionTransport)
	close(release)
	assert.Error(t, <-respondErr)
	require.Eventually(t, func() bool { return r.bridge.Len() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// A message sipgo cannot parse ends that browser's connection with 1007
// (its messages would reach no one); another browser is untouched.
func TestUnparsableMessage(t *testing.T) {
	r := newRig(t, false, sipws.Config{}, func(r *rig) {
		r.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	bad, good := r.dial(nil), r.dial(nil)
	good.send(ws.OpText, request("OPTIONS", "bob", "opt-g", "z9hG4bKoptg", ""))
	res, _ := good.read()
	require.Contains(t, res, "Call-ID: opt-g\r\n")

	bad.send(ws.OpText, "NOT SIP AT ALL\r\n\r\n")
	assert.Equal(t, ws.StatusInvalidFramePayloadData, bad.closeCode())

	good.send(ws.OpText, request("OPTIONS", "bob", "opt-g2", "z9hG4bKoptg2", ""))
	res, _ = good.read()
	assert.Contains(t, res, "Call-ID: opt-g2\r\n")
}

// Close ends every sipgo reader and empties sipgo's pool; a message after it
// closes its connection with 1001.
func TestBridgeClose(t *testing.T) {
	r := newRig(t, false, sipws.Config{}, nil)
	alice := r.dial(nil)
	register(alice, "alice")
	dest := ""
	{
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Host: "x.invalid"})
		require.NoError(t, r.bridge.Route(req, r.conn("alice")))
		dest = req.Destination()
	}
	require.NoError(t, r.bridge.Close())
	assert.Equal(t, 0, r.bridge.Len())
	assert.Nil(t, r.ua.TransportLayer().Pool("ws").Get(dest))
	alice.send(ws.OpText, request("OPTIONS", "alice", "late", "z9hG4bKlate", ""))
	assert.Equal(t, ws.StatusGoingAway, alice.closeCode())
}

// A message the browser sends in fragments reaches sipgo whole (sipws
// reassembles it; sipgo v1.7.3 would drop the continuation frame).
func TestFragmentedMessage(t *testing.T) {
	r := newRig(t, false, sipws.Config{}, func(r *rig) {
		r.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	b := r.dial(nil)
	msg := []byte(request("OPTIONS", "alice", "frag-1", "z9hG4bKfrag1", ""))
	half := len(msg) / 2
	for _, f := range []ws.Frame{
		ws.NewFrame(ws.OpText, false, msg[:half]),
		ws.NewFrame(ws.OpContinuation, true, msg[half:]),
	} {
		require.NoError(t, ws.WriteFrame(b.conn, ws.MaskFrameInPlace(f)))
	}
	res, _ := b.read()
	assert.True(t, strings.HasPrefix(res, "SIP/2.0 200 OK\r\n"), res)
	assert.Contains(t, res, "Call-ID: frag-1\r\n")
}

// Many browsers at once, each with several requests in flight: every
// response reaches the browser that sent its request, once.
func TestManyBrowsers(t *testing.T) {
	r := newRig(t, false, sipws.Config{}, func(r *rig) {
		r.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		})
	})
	const browsers, requests = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, browsers)
	for i := range browsers {
		b := r.dial(nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := make(map[string]bool)
			for j := range requests {
				id := fmt.Sprintf("b%d-r%d", i, j)
				want["Call-ID: "+id+"\r\n"] = true
				if err := wsutil.WriteClientText(b.conn, []byte(request("OPTIONS", "u", id, "z9hG4bK"+id, ""))); err != nil {
					errs <- err
					return
				}
			}
			_ = b.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for range requests {
				data, err := wsutil.ReadServerText(b.conn)
				if err != nil {
					errs <- err
					return
				}
				s := string(data)
				k := strings.Index(s, "Call-ID: ")
				if k < 0 {
					errs <- fmt.Errorf("browser %d: no Call-ID in %q", i, s)
					return
				}
				line := s[k : k+strings.Index(s[k:], "\r\n")+2]
				if !want[line] {
					errs <- fmt.Errorf("browser %d got a response that is not its own, or twice: %q", i, line)
					return
				}
				delete(want, line)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
