package sipws_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sipws/sipws"
)

// The examples run for real over loopback: a Server on an httptest server,
// and github.com/gobwas/ws as the client (what JsSIP or SIP.js would be in a
// browser).

// Example mounts a Server as an http.Handler and answers a SIP OPTIONS that a
// client sends over WebSocket (RFC 7118).
func Example() {
	srv, err := sipws.New(sipws.Config{
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			// A real host hands m.Data to its SIP stack; this one answers
			// OPTIONS with 200 OK on the same connection.
			if !bytes.HasPrefix(m.Data, []byte("OPTIONS ")) {
				return
			}
			_ = c.Send([]byte("SIP/2.0 200 OK\r\n" +
				"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks\r\n" +
				"To: <sip:alice@example.com>;tag=a6c85cf\r\n" +
				"From: <sip:bob@example.com>;tag=1928301774\r\n" +
				"Call-ID: a84b4c76e66710\r\n" +
				"CSeq: 1 OPTIONS\r\n" +
				"Content-Length: 0\r\n\r\n"))
		},
	})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer exampleShutdown(srv)

	c := dialExample(hs.URL, "sip")
	defer c.Close()
	fmt.Println("sub-protocol:", c.protocol)
	_ = wsutil.WriteClientText(c, []byte("OPTIONS sip:alice@example.com SIP/2.0\r\n"+
		"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks\r\n"+
		"Max-Forwards: 70\r\n"+
		"To: <sip:alice@example.com>\r\n"+
		"From: <sip:bob@example.com>;tag=1928301774\r\n"+
		"Call-ID: a84b4c76e66710\r\n"+
		"CSeq: 1 OPTIONS\r\n"+
		"Content-Length: 0\r\n\r\n"))
	data, op, err := wsutil.ReadServerData(c)
	if err != nil {
		panic(err)
	}
	status, _, _ := strings.Cut(string(data), "\r\n")
	fmt.Printf("%s frame: %s\n", exampleOpName(op), status)
	// Output:
	// sub-protocol: sip
	// text frame: SIP/2.0 200 OK
}

// ExampleServer_HandleHandshake shows a host handler that does its own checks
// (here the path, and a header of its own on the 101) before it hands the
// request to HandleHandshake.
func ExampleServer_HandleHandshake() {
	srv, err := sipws.New(sipws.Config{})
	if err != nil {
		panic(err)
	}
	host := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Served-By", "edge-1") // goes out with the 101
		srv.HandleHandshake(w, r)
	})
	hs := httptest.NewServer(host)
	defer hs.Close()
	defer exampleShutdown(srv)

	for _, path := range []string{"/other", "/ws"} {
		d := ws.Dialer{
			Protocols: []string{"sip"},
			Timeout:   5 * time.Second,
			OnHeader: func(key, value []byte) error {
				if string(key) == "X-Served-By" {
					fmt.Printf("  %s: %s\n", key, value)
				}
				return nil
			},
		}
		fmt.Println("GET", path)
		conn, _, hsk, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http")+path)
		var status ws.StatusError
		switch {
		case errors.As(err, &status):
			fmt.Println("  refused with", int(status))
		case err != nil:
			panic(err)
		default:
			fmt.Println("  upgraded, sub-protocol", hsk.Protocol)
			_ = conn.Close()
		}
	}
	// Output:
	// GET /other
	//   refused with 404
	// GET /ws
	//   X-Served-By: edge-1
	//   upgraded, sub-protocol sip
}

// ExampleConn_Send sends from OnOpen: Send picks a text frame for valid UTF-8
// and a binary frame otherwise; SendMessage sets the type.
func ExampleConn_Send() {
	invalid := make(chan error, 1)
	srv, err := sipws.New(sipws.Config{
		OnOpen: func(c *sipws.Conn) {
			// Sends are queued in order and never wait for the peer.
			_ = c.Send([]byte("NOTIFY sip:alice@example.com SIP/2.0\r\n\r\n"))
			_ = c.Send([]byte{0x00, 0xff, 0x10})
			_ = c.SendMessage(sipws.MessageBinary, []byte("MSRP d93kswow SEND\r\n"))
			invalid <- c.SendMessage(sipws.MessageText, []byte{0xff}) // refused: not UTF-8
		},
	})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer exampleShutdown(srv)

	c := dialExample(hs.URL, "sip")
	defer c.Close()
	for range 3 {
		data, op, err := wsutil.ReadServerData(c)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s %q\n", exampleOpName(op), data)
	}
	fmt.Println("text that is not UTF-8 refused:", exampleRecv(invalid, "SendMessage's answer", exampleWait) != nil)
	// Output:
	// text "NOTIFY sip:alice@example.com SIP/2.0\r\n\r\n"
	// binary "\x00\xff\x10"
	// binary "MSRP d93kswow SEND\r\n"
	// text that is not UTF-8 refused: true
}

// ExampleConn_Close closes a connection from the server side. The client
// receives the close frame and answers it; then OnClosed reports who closed
// it and with which code.
func ExampleConn_Close() {
	closed := make(chan sipws.CloseEvent, 1)
	srv, err := sipws.New(sipws.Config{
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if string(m.Data) == "logout" {
				_ = c.Close(4000, "logged out")
			}
		},
		OnClosed: func(ev sipws.CloseEvent) { closed <- ev },
	})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer exampleShutdown(srv)

	c := dialExample(hs.URL, "sip")
	defer c.Close()
	_ = wsutil.WriteClientText(c, []byte("logout"))
	// wsutil answers the close frame with the same code, then reports it.
	_, _, err = wsutil.ReadServerData(c)
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		fmt.Printf("client got close %d %q\n", ce.Code, ce.Reason)
	}
	_ = c.Close()

	ev := exampleRecv(closed, "OnClosed", exampleWait)
	fmt.Println("OnClosed:", ev.Cause, ev.Code, ev.Reason, ev.Err)
	// Output:
	// client got close 4000 "logged out"
	// OnClosed: host 4000 logged out <nil>
}

// ExampleRegistry_Dump lists live connections, as the RPC ws.dump, with a
// limit.
func ExampleRegistry_Dump() {
	opened := make(chan struct{}, 2)
	srv, err := sipws.New(sipws.Config{
		OnOpen: func(*sipws.Conn) { opened <- struct{}{} },
	})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer exampleShutdown(srv)

	// One connection after the other, so that their IDs are 1 and 2.
	for _, protocol := range []string{"sip", "msrp"} {
		c := dialExample(hs.URL, protocol)
		defer c.Close()
		exampleRecv(opened, "OnOpen", exampleWait) // registered before OnOpen is called
	}

	d := srv.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 1})
	fmt.Printf("listed %d of %d, truncated: %v\n", len(d.Conns), d.Total, d.Truncated)
	for _, ci := range d.Conns {
		fmt.Println(" ", ci.ID, ci.Subprotocol, ci.State)
	}
	d = srv.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: 0}) // 0: the default limit, 50
	fmt.Printf("listed %d of %d, truncated: %v\n", len(d.Conns), d.Total, d.Truncated)
	for _, ci := range d.Conns {
		fmt.Println(" ", ci.ID, ci.Subprotocol, ci.State)
	}
	// Output:
	// listed 1 of 2, truncated: true
	//   1 sip OPEN
	// listed 2 of 2, truncated: false
	//   1 sip OPEN
	//   2 msrp OPEN
}

// ExampleServer_Shutdown stops a server: every client gets a close frame with
// 1001 "Going away", Shutdown returns once they have all answered (or ctx is
// done), and later handshakes are refused with 503. http.Server.Shutdown does
// not know hijacked connections, so a host calls both.
func ExampleServer_Shutdown() {
	closed := make(chan sipws.CloseEvent, 1)
	srv, err := sipws.New(sipws.Config{
		OnClosed: func(ev sipws.CloseEvent) { closed <- ev },
	})
	if err != nil {
		panic(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	c := dialExample(hs.URL, "sip")
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		// The client reads; wsutil answers the close frame.
		_, _, err := wsutil.ReadServerData(c)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			got <- fmt.Sprintf("client got close %d %q", ce.Code, ce.Reason)
		} else {
			got <- fmt.Sprint("client got ", err)
		}
		_ = c.Close()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("Shutdown:", srv.Shutdown(ctx))
	fmt.Println(exampleRecv(got, "the client's close", exampleWait))
	ev := exampleRecv(closed, "OnClosed", exampleWait)
	fmt.Println("OnClosed:", ev.Cause, ev.Code)
	fmt.Println("live connections:", srv.Registry().Len())

	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 5 * time.Second}
	_, _, _, err = d.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
	var status ws.StatusError
	if errors.As(err, &status) {
		fmt.Println("new handshake refused with", int(status))
	}
	// Output:
	// Shutdown: <nil>
	// client got close 1001 "Going away"
	// OnClosed: shutdown 1001 (going away)
	// live connections: 0
	// new handshake refused with 503
}

// exampleClient is a WebSocket client connection of the examples: wsutil
// reads from it and writes masked client frames to it.
type exampleClient struct {
	net.Conn
	r        io.Reader // what the dialer read past the 101, then the socket
	protocol string    // the sub-protocol the server chose
}

func (c *exampleClient) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialExample opens a WebSocket connection to an httptest server's URL,
// offering one sub-protocol. Every read and write on it must end within 5 s.
func dialExample(httpURL, protocol string) *exampleClient {
	d := ws.Dialer{Protocols: []string{protocol}, Timeout: 5 * time.Second}
	conn, br, hs, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(httpURL, "http"))
	if err != nil {
		panic(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	c := &exampleClient{Conn: conn, r: conn, protocol: hs.Protocol}
	if br != nil {
		c.r = br
	}
	return c
}

// exampleShutdown shuts a server down, waiting at most 5 s for the close
// handshakes; past that, Shutdown drops the connections and returns an
// error, which fails the example, as does a Shutdown that does not return
// within 15 s, rather than hang.
func exampleShutdown(srv *sipws.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.Shutdown(ctx) }()
	if err := exampleRecv(errc, "return from Shutdown", 15*time.Second); err != nil {
		panic(err)
	}
}

// exampleWait bounds the examples' waits for an event.
const exampleWait = 10 * time.Second

// exampleRecv receives from ch, or panics naming what did not come within
// d: an example must fail, not hang, when an event is lost.
func exampleRecv[T any](ch <-chan T, what string, d time.Duration) T {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case v := <-ch:
		return v
	case <-t.C:
		// Every goroutine's stack, for the hang's cause: a panic in an
		// example prints only its own.
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		panic(fmt.Sprintf("example: no %s within %v", what, d))
	}
}

// exampleOpName names a WebSocket opcode.
func exampleOpName(op ws.OpCode) string {
	switch op {
	case ws.OpText:
		return "text"
	case ws.OpBinary:
		return "binary"
	}
	return fmt.Sprintf("opcode %#x", byte(op))
}
