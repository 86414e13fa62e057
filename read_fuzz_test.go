package sipws

import (
	"bufio"
	"bytes"
	stdflate "compress/flate"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fuzzFrame builds a masked client frame.
func fuzzFrame(fin bool, op byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	b = append(b, mask[:]...)
	for i, c := range p {
		b = append(b, c^mask[i%4])
	}
	return b
}

// FuzzReadFrames feeds arbitrary bytes to a connection's read loop, as a
// client would after the handshake, three ways: over a pipe (the path of TLS
// and of other platforms); over loopback TCP (the raw socket path), with a
// 128-byte read buffer so that headers and payloads straddle it; and over
// TCP with the first part of the bytes handed over as read past the
// handshake. Whatever the bytes, the loop must not panic, must end once the
// input ends, and OnClosed must fire exactly once; every message delivered
// fits the size limit, and the three ways deliver the same messages. A
// fourth run, over TCP with permessage-deflate negotiated, inflates what has
// RSV1 set, with the same checks but its own messages.
func FuzzReadFrames(f *testing.F) {
	f.Add(fuzzFrame(true, 0x1, []byte("OPTIONS sip:a@b SIP/2.0\r\n\r\n")))
	f.Add(append(fuzzFrame(false, 0x1, []byte("frag")), fuzzFrame(true, 0x0, []byte("ment"))...))
	f.Add(append(fuzzFrame(false, 0x1, []byte("a")), append(fuzzFrame(true, 0x9, []byte("ping")), fuzzFrame(true, 0x0, []byte("b"))...)...))
	f.Add(fuzzFrame(true, 0x8, []byte{0x03, 0xe8, 'b', 'y', 'e'}))
	f.Add(fuzzFrame(true, 0x2, bytes.Repeat([]byte{0xff}, 300)))
	f.Add([]byte{0x81, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4})
	f.Add(fuzzFrame(true, 0x1, []byte{0xce, 0xba, 0xf4, 0x90}))
	f.Add(fuzzFrame(true, 0x3, nil))
	// 62-byte frames: the third header straddles the end of a 128-byte buffer.
	f.Add(bytes.Repeat(fuzzFrame(true, 0x1, bytes.Repeat([]byte("0123456"), 8)), 12))
	var z bytes.Buffer
	zw, _ := stdflate.NewWriter(&z, stdflate.BestSpeed)
	_, _ = zw.Write(bytes.Repeat([]byte("REGISTER sip:a SIP/2.0\r\n"), 30))
	_ = zw.Flush()
	zp := z.Bytes()[:z.Len()-4]
	f.Add(fuzzFrame(true, 0x41, zp))
	f.Add(append(fuzzFrame(false, 0x41, zp[:10]), fuzzFrame(true, 0x0, zp[10:])...))
	f.Fuzz(func(t *testing.T, in []byte) {
		viaPipe := fuzzReadOnce(t, in, "pipe")
		viaTCP := fuzzReadOnce(t, in, "tcp")
		viaPre := fuzzReadOnce(t, in, "tcp+pre")
		if !slices.Equal(viaPipe, viaTCP) || !slices.Equal(viaPipe, viaPre) {
			t.Fatalf("messages differ: pipe %q, tcp %q, tcp+pre %q", viaPipe, viaTCP, viaPre)
		}
		// With permessage-deflate negotiated, RSV1 frames inflate.
		fuzzReadOnce(t, in, "tcp+deflate")
	})
}

// fuzzReadOnce runs one connection over in (see FuzzReadFrames) and returns
// the messages delivered.
func fuzzReadOnce(t *testing.T, in []byte, way string) []string {
	var closed atomic.Int32
	var mu sync.Mutex
	var msgs []string
	var bad atomic.Value
	s, err := New(Config{
		MaxMessageSize: 1024,
		ReadBufferSize: 128,
		Keepalive:      KeepaliveNone,
		CloseTimeout:   50 * time.Millisecond,
		FrameTimeout:   200 * time.Millisecond,
		OnMessage: func(c *Conn, m Message) {
			if len(m.Data) > 1024 {
				bad.Store("message over the limit")
			}
			mu.Lock()
			msgs = append(msgs, string(m.Data))
			mu.Unlock()
		},
		OnClosed: func(CloseEvent) { closed.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var server, peer net.Conn
	var pre []byte
	if way == "pipe" {
		server, peer = net.Pipe()
	} else {
		server, peer = tcpPair(t)
		if way == "tcp+pre" {
			pre, in = in[:len(in)/2], in[len(in)/2:]
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	c := s.newConn(server, r, client{}, SIP, nil, pre)
	if way == "tcp+deflate" {
		c.dfl = newDeflater(deflateParams{})
	}
	s.stats.opened(SIP)
	s.reg.add(c)
	s.live.Add(1)
	go c.serve()
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	_ = peer.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = peer.Write(in)
	if tc, ok := peer.(*net.TCPConn); ok {
		_ = tc.CloseWrite() // the end of the input; the server's close frame can still be read
	} else {
		_ = peer.Close()
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the read loop did not end after the input ended", way)
	}
	if err := s.Shutdown(context.Background()); err != nil { // waits for the goroutine's end
		t.Fatalf("%s: %v", way, err)
	}
	_ = peer.Close()
	if n := closed.Load(); n != 1 {
		t.Fatalf("%s: OnClosed fired %d times", way, n)
	}
	if v := bad.Load(); v != nil {
		t.Fatalf("%s: %v", way, v)
	}
	if s.reg.Len() != 0 || s.Stats().CurrentConnections != 0 {
		t.Fatalf("%s: registry %d, current %d after the end", way, s.reg.Len(), s.Stats().CurrentConnections)
	}
	return msgs
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, peer net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		_ = peer.Close()
		t.Fatal(err)
	}
	return server, peer
}

// hijackRecorder is a ResponseWriter that records refusals and can be
// hijacked, onto a pipe whose other end is read into out.
type hijackRecorder struct {
	*httptest.ResponseRecorder
	peer net.Conn
	out  chan []byte
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	server, peer := net.Pipe()
	h.peer = peer
	h.out = make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		h.out <- b
	}()
	return server, bufio.NewReadWriter(bufio.NewReader(server), bufio.NewWriter(server)), nil
}

// FuzzHandshake parses arbitrary bytes as an HTTP request and hands it to
// HandleHandshake. It must never panic; a refusal is an error status with a
// body; a 101 carries the right accept key for the request's key.
func FuzzHandshake(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: msrp, sip\r\n\r\n")
	f.Add("POST /x HTTP/1.0\r\n\r\n")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: foo\r\nX-Forwarded-For: 1.2.3.4, ::1\r\nForwarded: for=\"[::1]:9\";proto=https\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		r.RemoteAddr = "127.0.0.1:5555"
		s, err := New(Config{Keepalive: KeepaliveNone, CloseTimeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		w := &hijackRecorder{ResponseRecorder: httptest.NewRecorder()}
		s.HandleHandshake(w, r)
		if w.peer == nil {
			if w.Code < 400 || w.Code > 599 {
				t.Fatalf("refusal with status %d", w.Code)
			}
			if w.Body.Len() == 0 && r.Method != http.MethodHead {
				t.Fatalf("refusal %d without a body", w.Code)
			}
			return
		}
		// Upgraded: end the connection, then read what the server wrote.
		_ = w.peer.Close()
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(<-w.out)), r)
		if err != nil {
			t.Fatalf("reading the 101: %v", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("hijacked, then status %d", resp.StatusCode)
		}
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))); got != want {
			t.Fatalf("accept %q, want %q", got, want)
		}
		if err := s.Shutdown(context.Background()); err != nil { // waits for the connection's end
			t.Fatal(err)
		}
	})
}
