package sipws

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chromiumCookie is a 2 KB Cookie header value as a browser sends it to a
// site with a session and a few analytics and preference cookies.
var chromiumCookie = func() string {
	var b strings.Builder
	b.WriteString("session=s%3AJ8kq2vT0yBnX4cL7pR1mW9eZ3hF6dA5u.Qz8rT2yN6vB1xK4cL7pR0mW9eZ3hF6dA5uJ8kq2vT0")
	for i := 0; b.Len() < 2048-40; i++ {
		fmt.Fprintf(&b, "; _pref%02d=%032x", i, uint64(i)*0x9e3779b97f4a7c15)
	}
	for b.Len() < 2048 {
		b.WriteByte('z')
	}
	return b.String()
}()

// chromiumHandshake is the WebSocket handshake Chromium sends for the web
// phone's wss:// URL (Chromium's own header order and values), with the
// 2 KB cookie and extra as more header lines (each ending in CRLF).
func chromiumHandshake(host, key, extra string) string {
	return "GET /ws HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"Connection: Upgrade\r\n" +
		"Pragma: no-cache\r\n" +
		"Cache-Control: no-cache\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r\n" +
		"Upgrade: websocket\r\n" +
		"Origin: https://phone.sipws.test\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
		"Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n" +
		"Cookie: " + chromiumCookie + "\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\n" +
		"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
		"Sec-WebSocket-Protocol: sip\r\n" +
		extra +
		"\r\n"
}

// dialIdle opens a connection with req and reads its 101; the client then
// sends nothing.
func dialIdle(addr, req string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte(req)); err != nil {
		_ = nc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = nc.Close()
		return nil, fmt.Errorf("handshake answered %s", resp.Status)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

// waitConns waits, at most 10 s, until the server holds n connections.
func waitConns(s *Server, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for s.Registry().Len() != n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections, want %d", s.Registry().Len(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdleConnMemory opens idleConns connections with Chromium's
// handshake (its headers and a 2 KB Cookie) to a server mounted on a plain
// httptest server (no MaxHeaderBytes: net/http's 1 MB default, as in the
// README's example before it set one), and reports per idle connection the
// live heap (heap-B/conn, after a full GC; it includes the client's socket
// objects, a few hundred bytes, as the clients run in this process) and what
// the Conn keeps of its handshake request (kept-B/conn). An iteration opens
// the connections, measures and closes them. Cases: chromium is the browser
// as it is; chromium+16KiB adds a 16 KiB header that a host did not bound
// with MaxHeaderBytes; chromium/keep-cookie is a host that keeps the Cookie
// header too (Config.KeepHeaders).
func BenchmarkIdleConnMemory(b *testing.B) {
	const idleConns = 500
	for _, bc := range []struct {
		name  string
		keep  []string
		extra string
	}{
		{"chromium", nil, ""},
		{"chromium+16KiB", nil, "X-Padding: " + strings.Repeat("p", 16<<10) + "\r\n"},
		{"chromium/keep-cookie", []string{"Origin", "User-Agent", "Cookie"}, ""},
		{"chromium/compression", nil, ""},
		{"chromium/compression+sent", nil, ""},
		{"chromium/compression+sent+keepalive", nil, ""},
		{"chromium/compression-off+sent", nil, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// With compression on; +sent: each connection is sent a
			// REGISTER's 200 OK once open (the client reads it: the
			// connection then holds it as its deflate history).
			compression := strings.Contains(bc.name, "/compression") && !strings.Contains(bc.name, "-off")
			sent := strings.Contains(bc.name, "+sent")
			idled := strings.HasSuffix(bc.name, "+keepalive")
			s, err := New(Config{Keepalive: KeepaliveNone, KeepHeaders: bc.keep, Compression: compression})
			if err != nil {
				b.Fatal(err)
			}
			hs := httptest.NewServer(s)
			b.Cleanup(hs.Close)
			addr := strings.TrimPrefix(hs.URL, "http://")
			req := chromiumHandshake(addr, "dGhlIHNhbXBsZSBub25jZQ==", bc.extra)
			var heap, kept float64
			rounds := 0
			for b.Loop() {
				before := heapInUse()
				conns := make([]net.Conn, 0, idleConns)
				for range idleConns {
					nc, err := dialIdle(addr, req)
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, nc)
				}
				if err := waitConns(s, idleConns); err != nil {
					b.Fatal(err)
				}
				if sent {
					ok := sipFlow(rounds)[1]
					s.Registry().each(func(c *Conn) { _ = c.Send([]byte(ok)) })
					buf := make([]byte, len(ok)+16)
					for _, nc := range conns {
						_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
						if _, err := nc.Read(buf); err != nil {
							b.Fatal(err)
						}
					}
				}
				if idled {
					// What the keepalive does to a connection it
					// finds idle.
					s.Registry().each(func(c *Conn) { c.dropHistory() })
				}
				after := heapInUse()
				heap += (float64(after) - float64(before)) / idleConns
				n := 0
				s.Registry().each(func(c *Conn) { n += len(c.req) })
				kept += float64(n) / idleConns
				rounds++
				for _, nc := range conns {
					_ = nc.Close()
				}
				if err := waitConns(s, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(heap/float64(rounds), "heap-B/conn")
			b.ReportMetric(kept/float64(rounds), "kept-B/conn")
			if err := s.Shutdown(b.Context()); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestConnKeepsBoundedHandshake checks that whatever the size of the
// handshake's header block (the host's http.Server here has net/http's
// 1 MB default), a connection keeps at most Config.MaxKeptHeaderBytes of it,
// measured on what the Conn holds: a header that would pass the bound is
// dropped whole, the parts after it are kept.
func TestConnKeepsBoundedHandshake(t *testing.T) {
	big := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name     string
		cfg      Config
		target   string            // request target; "" is /ws
		extra    string            // header lines added to Chromium's
		ua       string            // User-Agent value; "" is Chromium's
		want     map[string]string // "" for a header that must not be kept
		wantHost bool
		wantPath string
	}{
		{
			name:     "64KiB header not kept",
			extra:    "X-Padding: " + big(64<<10) + "\r\n",
			want:     map[string]string{"Origin": "https://phone.sipws.test", "X-Padding": "", "Cookie": "", "Accept-Language": ""},
			wantHost: true, wantPath: "/ws",
		},
		{
			name:     "16KiB User-Agent dropped, Origin kept",
			cfg:      Config{KeepHeaders: []string{"user-agent", "origin"}},
			ua:       big(16 << 10),
			want:     map[string]string{"Origin": "https://phone.sipws.test", "User-Agent": ""},
			wantHost: true, wantPath: "/ws",
		},
		{
			name:     "64KiB Cookie dropped at a 1 KiB bound",
			cfg:      Config{KeepHeaders: []string{"Cookie", "Origin"}, MaxKeptHeaderBytes: 1 << 10},
			extra:    "Cookie: more=" + big(64<<10) + "\r\n",
			want:     map[string]string{"Origin": "https://phone.sipws.test", "Cookie": ""},
			wantHost: true, wantPath: "/ws",
		},
		{
			name:     "32KiB request URI dropped",
			target:   "/ws?token=" + big(32<<10),
			want:     map[string]string{"Origin": "https://phone.sipws.test"},
			wantHost: true, wantPath: "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opened := make(chan *Conn, 1)
			cfg := tc.cfg
			cfg.Keepalive = KeepaliveNone
			cfg.OnOpen = func(c *Conn) { opened <- c }
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(s)
			t.Cleanup(func() {
				hs.Close()
				if err := s.Shutdown(context.Background()); err != nil {
					t.Error(err)
				}
			})
			addr := strings.TrimPrefix(hs.URL, "http://")
			req := chromiumHandshake(addr, "dGhlIHNhbXBsZSBub25jZQ==", tc.extra)
			if tc.target != "" {
				req = strings.Replace(req, "GET /ws ", "GET "+tc.target+" ", 1)
			}
			if tc.ua != "" {
				req = strings.Replace(req, "User-Agent: Mozilla/5.0", "User-Agent: "+tc.ua+" Mozilla/5.0", 1)
			}
			require.Greater(t, len(req), 16<<10, "the header block is at least 16 KiB")
			nc, err := dialIdle(addr, req)
			require.NoError(t, err)
			t.Cleanup(func() { _ = nc.Close() })
			var c *Conn
			select {
			case c = <-opened:
			case <-time.After(5 * time.Second):
				t.Fatal("no connection opened")
			}

			limit := s.cfg.MaxKeptHeaderBytes
			assert.LessOrEqual(t, len(c.req), limit, "bytes the Conn keeps of a %d-byte handshake", len(req))
			h := c.Header()
			for name, v := range tc.want {
				if v == "" {
					assert.Zero(t, len(h.Values(name)), "header %s kept", name)
					continue
				}
				assert.Equal(t, v, h.Get(name), "header %s", name)
			}
			if tc.wantHost {
				assert.Equal(t, addr, c.Host())
			}
			assert.Equal(t, tc.wantPath, c.URL().Path)
		})
	}
}
