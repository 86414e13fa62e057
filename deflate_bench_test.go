package sipws_test

import (
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipws/sipws"
)

// benchConnCompression is benchConn with Config.Compression as on says, the
// client offering what Chromium offers.
func benchConnCompression(b *testing.B, on bool, onMsg func(*sipws.Conn, sipws.Message)) net.Conn {
	b.Helper()
	srv, err := sipws.New(sipws.Config{OnMessage: onMsg, Keepalive: sipws.KeepaliveNone, Compression: on})
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
	benchUpgrade(b, conn, addr, chromiumOffer)
	return conn
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// BenchmarkSendSIPFlow sends the messages of 20 runs of SIPFlow in turn (a
// register, a call and a MESSAGE, as JsSIP writes them, with new identifiers
// in each run), compression off and on: the
// CPU per message sent, and the bytes on the wire per message (wire-B/msg,
// frame headers included) against the messages' own (plain-B/msg).
func BenchmarkSendSIPFlow(b *testing.B) {
	var flow []string
	for n := range 20 {
		flow = append(flow, sipws.SIPFlow(n)...)
	}
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			opened := make(chan *sipws.Conn, 1)
			conn := benchConnCompression(b, on, func(c *sipws.Conn, _ sipws.Message) { opened <- c })
			if _, err := conn.Write(encodeFrame(true, 0, 0x1, []byte("hi"), true)); err != nil {
				b.Fatal(err)
			}
			c := <-opened
			cr := &countingReader{r: conn}
			go func() { _, _ = io.Copy(io.Discard, cr) }()
			msgs := make([][]byte, len(flow))
			for i, m := range flow {
				msgs[i] = []byte(m)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				for c.Buffered() > 256<<10 {
					time.Sleep(10 * time.Microsecond)
				}
				if err := c.Send(msgs[i%len(msgs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.StopTimer()
			want := int64(0)
			for k := range i {
				want += int64(len(msgs[k%len(msgs)]))
			}
			deadline := time.Now().Add(10 * time.Second)
			for c.Buffered() > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond)
			b.ReportMetric(float64(cr.n.Load()-4)/float64(i), "wire-B/msg")
			b.ReportMetric(float64(want)/float64(i), "plain-B/msg")
		})
	}
}

// BenchmarkReceiveSIPFlow receives the messages of 20 runs of SIPFlow in turn,
// compressed by the client each on its own (client_no_context_takeover, as
// the server answers) when compression is on: the CPU per message received
// and delivered, inflation included.
func BenchmarkReceiveSIPFlow(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var got atomic.Int64
			conn := benchConnCompression(b, on, func(*sipws.Conn, sipws.Message) { got.Add(1) })
			var burst []byte
			var flow []string
			for n := range 20 {
				flow = append(flow, sipws.SIPFlow(n)...)
			}
			wire, plain := 0, 0
			for _, m := range flow {
				var f []byte
				if on {
					f = encodeFrame(true, 4, 0x1, deflateMsg(b, []byte(m)), true)
				} else {
					f = encodeFrame(true, 0, 0x1, []byte(m), true)
				}
				burst = append(burst, f...)
				wire += len(f)
				plain += len(m)
			}
			b.ReportAllocs()
			b.ResetTimer()
			sent := 0
			for sent < b.N {
				if _, err := conn.Write(burst); err != nil {
					b.Fatal(err)
				}
				sent += len(flow)
			}
			deadline := time.Now().Add(30 * time.Second)
			for got.Load() < int64(sent) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Microsecond)
			}
			if got.Load() < int64(sent) {
				b.Fatalf("delivered %d of %d", got.Load(), sent)
			}
			b.ReportMetric(float64(wire)/float64(len(flow)), "wire-B/msg")
			b.ReportMetric(float64(plain)/float64(len(flow)), "plain-B/msg")
		})
	}
}
