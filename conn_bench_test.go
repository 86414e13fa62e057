package sipws_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipws/sipws"
)

const benchOptions = "OPTIONS sip:bob@sipws.test SIP/2.0\r\n" +
	"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK5g1h8v\r\n" +
	"Max-Forwards: 70\r\n" +
	"To: <sip:bob@sipws.test>\r\n" +
	"From: <sip:alice@sipws.test>;tag=6c2b4k9u0e\r\n" +
	"Call-ID: 2q9tk0ld1v6e3d5oqv8r\r\n" +
	"CSeq: 8421 OPTIONS\r\n" +
	"Accept: application/sdp\r\n" +
	"Supported: path,outbound,gruu\r\n" +
	"User-Agent: JsSIP 3.10.1\r\n" +
	"Content-Length: 0\r\n\r\n"

// benchConn opens one connection to a server with the given OnMessage and
// returns the client's socket, after the handshake.
func benchConn(b *testing.B, onMsg func(*sipws.Conn, sipws.Message)) net.Conn {
	b.Helper()
	srv, err := sipws.New(sipws.Config{OnMessage: onMsg, Keepalive: sipws.KeepaliveNone})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	addr := strings.TrimPrefix(hs.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = conn.Close()
		_ = srv.Shutdown(b.Context())
		hs.Close()
	})
	benchUpgrade(b, conn, addr)
	return conn
}

// benchUpgrade sends a sip handshake (with extra header lines) on conn and reads the 101 up to its
// blank line, byte by byte, so that nothing past it is consumed.
func benchUpgrade(b *testing.B, conn net.Conn, addr string, extra ...string) {
	b.Helper()
	if _, err := io.WriteString(conn, handshakeRequest(addr, "sip", extra...)); err != nil {
		b.Fatal(err)
	}
	var resp []byte
	buf := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := conn.Read(buf); err != nil {
			b.Fatal(err)
		}
		resp = append(resp, buf[0])
	}
}

// BenchmarkReceiveSIP measures reading one SIP-sized message (a 400-byte
// OPTIONS in a masked text frame) and handing it to OnMessage: the frames are
// written in batches by the client, and allocations per op are the server's.
func BenchmarkReceiveSIP(b *testing.B) {
	var got atomic.Int64
	conn := benchConn(b, func(*sipws.Conn, sipws.Message) { got.Add(1) })
	frame := encodeFrame(true, 0, 0x1, []byte(benchOptions), true)
	const batch = 64
	burst := bytes.Repeat(frame, batch)
	b.SetBytes(int64(len(benchOptions)))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n := min(batch, b.N-sent)
		if _, err := conn.Write(burst[:n*len(frame)]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Microsecond)
	}
	if got.Load() < int64(b.N) {
		b.Fatalf("delivered %d of %d", got.Load(), b.N)
	}
}

// benchInvite is an INVITE with a WebRTC-sized SDP offer (about 3 KB): more
// than the default 512-byte read buffer, so that its frame is read in
// several steps.
var benchInvite = func() string {
	var sdp strings.Builder
	sdp.WriteString("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n" +
		"c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Wq1B\r\na=ice-pwd:bXV0ZWQgdGhlIGljZSBwYXNzd29yZA\r\n" +
		"a=fingerprint:sha-256 5B:D3:8E:66:0E:7D:D3:F3:8F:AD:4D:1C:3A:0C:66:4F:0B:4C:2B:44:38:1B:3F:06:12:55:6E:33:0B:5E:69:2C\r\n" +
		"a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n")
	for i := range 24 {
		fmt.Fprintf(&sdp, "a=candidate:%d 1 udp 2122260223 192.0.2.%d 5%04d typ host generation 0 network-id 1\r\n", 1000+i, i+1, i)
	}
	body := sdp.String()
	return "INVITE sip:bob@sipws.test SIP/2.0\r\n" +
		"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK776asdhds\r\n" +
		"Max-Forwards: 70\r\nTo: <sip:bob@sipws.test>\r\nFrom: <sip:alice@sipws.test>;tag=1928301774\r\n" +
		"Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n" +
		"Content-Type: application/sdp\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
}()

// BenchmarkReceiveInvite is BenchmarkReceiveSIP with benchInvite, a message
// larger than the read buffer.
func BenchmarkReceiveInvite(b *testing.B) {
	var got atomic.Int64
	benchReceiveInvite(b, benchConn(b, func(*sipws.Conn, sipws.Message) { got.Add(1) }), &got)
}

// BenchmarkReceiveInviteTLS is BenchmarkReceiveInvite over wss.
func BenchmarkReceiveInviteTLS(b *testing.B) {
	var got atomic.Int64
	benchReceiveInvite(b, benchConnTLS(b, func(*sipws.Conn, sipws.Message) { got.Add(1) }), &got)
}

// benchConnTLS is benchConn over TLS.
func benchConnTLS(b *testing.B, onMsg func(*sipws.Conn, sipws.Message)) net.Conn {
	b.Helper()
	srv, err := sipws.New(sipws.Config{OnMessage: onMsg, Keepalive: sipws.KeepaliveNone})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewTLSServer(srv)
	addr := strings.TrimPrefix(hs.URL, "https://")
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a loopback test server
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = conn.Close()
		_ = srv.Shutdown(b.Context())
		hs.Close()
	})
	benchUpgrade(b, conn, addr)
	return conn
}

func benchReceiveInvite(b *testing.B, conn net.Conn, got *atomic.Int64) {
	frame := encodeFrame(true, 0, 0x1, []byte(benchInvite), true)
	const batch = 16
	burst := bytes.Repeat(frame, batch)
	b.SetBytes(int64(len(benchInvite)))
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		n := min(batch, b.N-sent)
		if _, err := conn.Write(burst[:n*len(frame)]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Microsecond)
	}
	if got.Load() < int64(b.N) {
		b.Fatalf("delivered %d of %d", got.Load(), b.N)
	}
}

// BenchmarkSendSIP measures Conn.Send of a SIP-sized message; the client
// reads and discards.
func BenchmarkSendSIP(b *testing.B) {
	opened := make(chan *sipws.Conn, 1)
	var c *sipws.Conn
	conn := benchConn(b, func(conn *sipws.Conn, _ sipws.Message) { opened <- conn })
	go func() { _, _ = io.Copy(io.Discard, conn) }()
	if _, err := conn.Write(encodeFrame(true, 0, 0x1, []byte("hi"), true)); err != nil {
		b.Fatal(err)
	}
	c = <-opened
	msg := []byte(benchOptions)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for c.Buffered() > 256<<10 {
			time.Sleep(10 * time.Microsecond)
		}
		if err := c.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestReply is one request and its reply over one connection,
// with one request outstanding: the client sends an OPTIONS, OnMessage sends
// a reply of the same size back, the client reads it.
func BenchmarkRequestReply(b *testing.B) {
	conn := benchConn(b, func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) })
	frame := encodeFrame(true, 0, 0x1, []byte(benchOptions), true)
	reply := make([]byte, 2+2+len(benchOptions))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, reply); err != nil {
			b.Fatal(err)
		}
	}
}
