package sipws

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// hjConn is the socket of a benchmarked handshake: writes are swallowed and
// the first read ends the connection (EOF), so that each handshake is
// followed by the connection's start and end and nothing accumulates.
type hjConn struct{}

func (hjConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (hjConn) Write(b []byte) (int, error)      { return len(b), nil }
func (hjConn) Close() error                     { return nil }
func (hjConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (hjConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000} }
func (hjConn) SetDeadline(time.Time) error      { return nil }
func (hjConn) SetReadDeadline(time.Time) error  { return nil }
func (hjConn) SetWriteDeadline(time.Time) error { return nil }

// hjWriter is an http.ResponseWriter that can be hijacked, as net/http's.
type hjWriter struct {
	h   http.Header
	brw *bufio.ReadWriter
}

func (w *hjWriter) Header() http.Header         { return w.h }
func (w *hjWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *hjWriter) WriteHeader(int)             {}
func (w *hjWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return hjConn{}, w.brw, nil
}

const benchHandshakeRequest = "GET /ws HTTP/1.1\r\n" +
	"Host: edge.sipws.test\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Sec-WebSocket-Protocol: sip\r\n" +
	"Origin: https://phone.sipws.test\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36\r\n" +
	"Cookie: session=0123456789abcdef\r\n\r\n"

// BenchmarkHandleHandshake is the server's side of one WebSocket handshake,
// from the parsed request to the 101 written, plus the start and the end of
// the connection it makes (its goroutine reads EOF at once): checks,
// sub-protocol negotiation, accept key, hijack, the Conn, the registry and
// the counters. net/http's parsing of the request is not in it; each op
// clones a parsed request (one map and its values), as net/http makes one.
func BenchmarkHandleHandshake(b *testing.B) {
	closed := make(chan struct{}, 1)
	s, err := New(Config{
		Subprotocols: SIP,
		Keepalive:    KeepaliveNone,
		OnClosed:     func(CloseEvent) { closed <- struct{}{} },
	})
	if err != nil {
		b.Fatal(err)
	}
	tmpl, err := http.ReadRequest(bufio.NewReader(strings.NewReader(benchHandshakeRequest)))
	if err != nil {
		b.Fatal(err)
	}
	tmpl.RemoteAddr = "127.0.0.2:40000"
	brw := bufio.NewReadWriter(bufio.NewReader(strings.NewReader("")), bufio.NewWriter(io.Discard))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		w := &hjWriter{h: http.Header{}, brw: brw}
		s.HandleHandshake(w, tmpl.Clone(ctx))
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			b.Fatal("connection did not end")
		}
	}
	b.StopTimer()
	if st := s.Stats(); st.FailedHandshakes != 0 {
		b.Fatalf("%d handshakes failed", st.FailedHandshakes)
	}
	if err := s.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAcceptKey is Sec-WebSocket-Accept's SHA-1 and base64.
func BenchmarkAcceptKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if acceptKey("dGhlIHNhbXBsZSBub25jZQ==") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
			b.Fatal("wrong accept key")
		}
	}
}

// BenchmarkCheckRequest is RFC 6455 §4.2.1's checks of a handshake request
// and the sub-protocol negotiation.
func BenchmarkCheckRequest(b *testing.B) {
	s, err := New(Config{Keepalive: KeepaliveNone})
	if err != nil {
		b.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(benchHandshakeRequest)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if sp, _, ref := s.checkRequest(r); ref != nil || sp != SIP {
			b.Fatalf("checkRequest = %v, %+v", sp, ref)
		}
	}
}
