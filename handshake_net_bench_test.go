package sipws_test

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sipws/sipws"
)

// BenchmarkHandshakeLoopback is one whole WebSocket handshake over loopback
// TCP through net/http, as a phone makes it: connect, GET with Upgrade and
// sip, the 101 read back; the client then resets the connection (no
// TIME_WAIT) and the server's goroutine ends. Client and server run in the
// benchmark's process: the figures are the sum of both, kernel included.
func BenchmarkHandshakeLoopback(b *testing.B) {
	closed := make(chan struct{}, 1)
	srv, err := sipws.New(sipws.Config{
		Subprotocols: sipws.SIP,
		Keepalive:    sipws.KeepaliveNone,
		OnClosed:     func(sipws.CloseEvent) { closed <- struct{}{} },
	})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	b.Cleanup(func() {
		_ = srv.Shutdown(b.Context())
		hs.Close()
	})
	addr := strings.TrimPrefix(hs.URL, "http://")
	req := []byte(handshakeRequest(addr, "sip"))
	buf := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
			k, err := conn.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += k
			if n == len(buf) {
				b.Fatal("101 response too long")
			}
		}
		if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
			b.Fatalf("handshake answered %q", buf[:n])
		}
		_ = conn.(*net.TCPConn).SetLinger(0)
		_ = conn.Close()
		select {
		case <-closed:
		case <-time.After(ioTimeout):
			b.Fatal("connection did not end")
		}
	}
}
