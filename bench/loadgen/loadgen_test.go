package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/bench/internal/sipopts"
)

func TestMask(t *testing.T) {
	for n := range 40 {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		want := make([]byte, n)
		key := uint32(0xa1b2c3d4)
		k := [4]byte{0xd4, 0xc3, 0xb2, 0xa1} // the key's bytes on the wire
		for i := range want {
			want[i] = p[i] ^ k[i%4]
		}
		mask(p, key)
		if string(p) != string(want) {
			t.Fatalf("mask of %d bytes: %x, want %x", n, p, want)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	q, n := h.quantiles(0.5, 0.99, 0.999)
	if n != 1000 {
		t.Fatalf("count %d, want 1000", n)
	}
	for i, want := range []time.Duration{500 * time.Microsecond, 990 * time.Microsecond, 999 * time.Microsecond} {
		if d := q[i] - want; d < -want/100 || d > want/100 {
			t.Errorf("quantile %d = %v, want %v ±1%%", i, q[i], want)
		}
	}
}

func TestCheckReply(t *testing.T) {
	reply, ok := sipopts.Reply(nil, []byte(sipopts.Request))
	if !ok {
		t.Fatal("no reply")
	}
	if err := checkReply(reply, true); err != nil {
		t.Fatal(err)
	}
	if err := checkReply([]byte("SIP/2.0 404 Not Found\r\n\r\n"), false); err == nil {
		t.Fatal("a 404 passed")
	}
}

// startSipws serves sipws answering OPTIONS, like bench/optionsd, on a
// loopback port.
func startSipws(t *testing.T) string {
	t.Helper()
	srv, err := sipws.New(sipws.Config{
		Subprotocols: sipws.SIP,
		Keepalive:    sipws.KeepaliveNone,
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if r, ok := sipopts.Reply(nil, m.Data); ok {
				_ = c.Send(r)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		_ = srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

func testConfig(mode, addr string) config {
	return config{
		mode: mode, addr: addr, path: "/", conns: 3, loops: 2,
		duration: 300 * time.Millisecond, warmup: 50 * time.Millisecond,
		sources: 2, rate: 1000, parallel: 2, hold: 300 * time.Millisecond,
		timeout: 5 * time.Second, maxRequests: 1e6, serverPID: 0,
	}
}

func TestModesAgainstSipws(t *testing.T) {
	addr := startSipws(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, mode := range []string{"rps", "handshake", "idle"} {
		t.Run(mode, func(t *testing.T) {
			r, err := run(t.Context(), log, testConfig(mode, addr))
			if err != nil {
				t.Fatalf("%s: %v (%v)", mode, err, r)
			}
			switch mode {
			case "rps":
				if r["requests"].(int64) == 0 {
					t.Errorf("no request answered: %v", r)
				}
			case "handshake":
				if r["handshakes"].(int64) == 0 {
					t.Errorf("no handshake: %v", r)
				}
			case "idle":
				if r["opened"].(int) != 3 {
					t.Errorf("opened %v of 3", r["opened"])
				}
			}
		})
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	if _, err := newDialer("192.0.2.1:80", "/", 1, time.Second); err == nil {
		t.Fatal("a non-loopback target was accepted")
	}
}
