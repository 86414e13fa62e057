package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the echo server as a real process, as a user would, and
// talk to it over loopback with github.com/gobwas/ws as the client.

const (
	buildTimeout = 5 * time.Minute  // go build, cold cache and -race included
	startTimeout = 15 * time.Second // from exec to "listening on"
	ioTimeout    = 5 * time.Second  // every network wait
	exitTimeout  = 10 * time.Second // from SIGTERM to exit, the server's own bound
)

func TestEchoBinary(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGTERM")
	}
	bin := buildEcho(t)

	t.Run("EchoesTextAndBinary", func(t *testing.T) {
		p := startEcho(t, bin)
		c := dial(t, p.addr, "sip")
		assert.Equal(t, "sip", c.protocol)

		options := "OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKhjhs8ass877\r\n" +
			"Max-Forwards: 70\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: <sip:alice@example.com>;tag=1928301774\r\n" +
			"Call-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n"
		c.send(ws.OpText, []byte(options))
		op, data := c.read()
		assert.Equal(t, ws.OpText, op, "opcode of the text echo")
		assert.Equal(t, options, string(data))

		// Not UTF-8, with a NUL: only a binary frame can carry it.
		bin := []byte{0x00, 0xff, 0xfe, 'M', 'S', 'R', 'P', 0x80, 0x00}
		c.send(ws.OpBinary, bin)
		op, data = c.read()
		assert.Equal(t, ws.OpBinary, op, "opcode of the binary echo")
		assert.Equal(t, bin, data)

		// Valid UTF-8 sent as binary stays binary; a 16-bit length too.
		big := bytes.Repeat([]byte("SIP/2.0 200 OK\r\n"), 3000)
		c.send(ws.OpBinary, big)
		op, data = c.read()
		assert.Equal(t, ws.OpBinary, op)
		assert.Equal(t, big, data)

		// A text message split in fragments comes back whole, as text.
		c.sendFragments(ws.OpText, []byte("INVITE sip:"), []byte("bob@example.com SIP/2.0\r\n\r\n"))
		op, data = c.read()
		assert.Equal(t, ws.OpText, op)
		assert.Equal(t, "INVITE sip:bob@example.com SIP/2.0\r\n\r\n", string(data))

		// Every path is served, and msrp is enabled by default.
		m := dial(t, p.addr+"/some/path?x=1", "msrp")
		assert.Equal(t, "msrp", m.protocol)
		m.send(ws.OpText, []byte("MSRP a786hjs2 SEND\r\n-------a786hjs2$\r\n"))
		op, data = m.read()
		assert.Equal(t, ws.OpText, op)
		assert.Equal(t, "MSRP a786hjs2 SEND\r\n-------a786hjs2$\r\n", string(data))

		c.closeNormally()
		m.closeNormally()
	})

	t.Run("MaxMessageSize", func(t *testing.T) {
		p := startEcho(t, bin, "-max", "100")
		c := dial(t, p.addr, "sip")
		c.send(ws.OpBinary, bytes.Repeat([]byte{'a'}, 100))
		op, data := c.read()
		assert.Equal(t, ws.OpBinary, op)
		assert.Len(t, data, 100, "a message of exactly -max bytes is echoed")

		c.send(ws.OpText, bytes.Repeat([]byte{'b'}, 101))
		code, reason := c.expectClose()
		assert.Equal(t, ws.StatusMessageTooBig, code, "close code for 101 bytes with -max 100 (reason %q)", reason)
	})

	t.Run("Compression", func(t *testing.T) {
		msg := []byte(strings.Repeat("MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Type: text/plain\r\n", 8))
		for _, on := range []bool{true, false} {
			var flags []string
			if on {
				flags = []string{"-compression"}
			}
			p := startEcho(t, bin, flags...)
			d := dialer("sip")
			d.Extensions = []httphead.Option{wsflate.DefaultParameters.Option()}
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			conn, br, hs, err := d.Dial(ctx, "ws://"+p.addr)
			cancel()
			require.NoError(t, err)
			var answer string
			for _, e := range hs.Extensions {
				answer += e.String()
			}
			require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
			var r io.Reader = conn
			if br != nil {
				r = br
			}
			if !on {
				assert.Empty(t, answer, "no extension without -compression")
				require.NoError(t, wsutil.WriteClientMessage(conn, ws.OpText, msg))
				f, err := ws.ReadFrame(r)
				require.NoError(t, err)
				assert.Zero(t, f.Header.Rsv)
				assert.Equal(t, msg, f.Payload)
				_ = conn.Close()
				continue
			}
			assert.Contains(t, answer, "permessage-deflate")
			f, err := wsflate.CompressFrame(ws.NewTextFrame(msg))
			require.NoError(t, err)
			require.NoError(t, ws.WriteFrame(conn, ws.MaskFrameInPlace(f)))
			f, err = ws.ReadFrame(r)
			require.NoError(t, err)
			compressed, err := wsflate.IsCompressed(f.Header)
			require.NoError(t, err)
			assert.True(t, compressed, "the echo is compressed")
			assert.Less(t, len(f.Payload), len(msg))
			f, err = wsflate.DecompressFrame(f)
			require.NoError(t, err)
			assert.Equal(t, msg, f.Payload)
			_ = conn.Close()
		}
	})

	t.Run("SubprotocolsRefused", func(t *testing.T) {
		p := startEcho(t, bin, "-subprotocols", "msrp")
		assert.Equal(t, ws.StatusError(400), dialRefused(t, p.addr, "sip"), "a sip-only handshake to an msrp-only server")

		m := dial(t, p.addr, "msrp")
		assert.Equal(t, "msrp", m.protocol)
		m.closeNormally()
	})

	t.Run("AllowOrigin", func(t *testing.T) {
		p := startEcho(t, bin, "-allow-origin", "*.app.example", "-allow-origin", "https://try.example")
		status := func(origin string) int {
			t.Helper()
			d := dialer("sip")
			d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}})
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			conn, _, _, err := d.Dial(ctx, "ws://"+p.addr+"/")
			if conn != nil {
				_ = conn.Close()
			}
			if err == nil {
				return 101
			}
			var se ws.StatusError
			require.ErrorAs(t, err, &se, "Origin %s", origin)
			return int(se)
		}
		assert.Equal(t, 101, status("https://phone.app.example"))
		assert.Equal(t, 101, status("https://try.example"))
		assert.Equal(t, 101, status("http://"+p.addr), "same origin")
		assert.Equal(t, 403, status("https://evil.example"))
		assert.Equal(t, 403, status("http://try.example"))
	})

	t.Run("ImplicitSubprotocol", func(t *testing.T) {
		// By default a client that offers no sub-protocol is refused.
		p := startEcho(t, bin)
		assert.Equal(t, ws.StatusError(400), dialRefused(t, p.addr, ""), "a handshake offering no sub-protocol")

		// With -implicit-subprotocol it is served, and the 101 names none.
		p = startEcho(t, bin, "-implicit-subprotocol", "sip")
		c := dial(t, p.addr, "")
		assert.Empty(t, c.protocol)
		c.send(ws.OpText, []byte("autobahn"))
		op, data := c.read()
		assert.Equal(t, ws.OpText, op)
		assert.Equal(t, "autobahn", string(data))
		c.closeNormally()
	})

	t.Run("SIGTERMClosesWith1001AndExits0", func(t *testing.T) {
		p := startEcho(t, bin)
		c := dial(t, p.addr, "sip")
		c.send(ws.OpText, []byte("ping"))
		_, data := c.read()
		require.Equal(t, "ping", string(data))

		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		code, reason := c.expectClose()
		assert.Equal(t, ws.StatusGoingAway, code, "close code on SIGTERM (reason %q)", reason)
		_ = c.conn.Close()

		select {
		case <-p.exited:
			require.NotNil(t, p.cmd.ProcessState)
			assert.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "exit status after SIGTERM; stderr:\n%s", p.log.String())
		case <-time.After(exitTimeout):
			t.Fatalf("the server did not exit within %v of SIGTERM; stderr:\n%s", exitTimeout, p.log.String())
		}
		assert.Contains(t, p.log.String(), "shut down")
	})

	t.Run("AdminRPCAndMetrics", func(t *testing.T) {
		p := startEcho(t, bin, "-admin", "127.0.0.1:0")
		m := regexp.MustCompile(`msg="admin listening on ([^"\s]+)"`).FindStringSubmatch(p.log.String())
		require.NotNil(t, m, "admin address in the log:\n%s", p.log.String())
		admin := m[1]
		c := dial(t, p.addr, "sip")
		c.send(ws.OpText, []byte("hello")) // proves the connection is registered
		c.read()

		body := `{"jsonrpc":"2.0","id":1,"method":"ws.dump"}`
		resp, err := http.Post("http://"+admin+"/RPC", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var out struct {
			Result struct {
				Connections []struct {
					ID          uint64 `json:"id"`
					Subprotocol string `json:"subprotocol"`
				} `json:"connections"`
			} `json:"result"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		require.Len(t, out.Result.Connections, 1)
		assert.Equal(t, "sip", out.Result.Connections[0].Subprotocol)

		mresp, err := http.Get("http://" + admin + "/metrics")
		require.NoError(t, err)
		defer mresp.Body.Close()
		metrics, err := io.ReadAll(mresp.Body)
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^sipws_ws_current_connections 1$`, string(metrics))

		// A request for another Host (DNS rebinding) is refused and runs
		// nothing: new connections are still accepted.
		req, err := http.NewRequest(http.MethodPost, "http://"+admin+"/RPC", strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"ws.disable"}`))
		require.NoError(t, err)
		req.Host = "rebind.evil.example"
		req.Header.Set("Content-Type", "application/json")
		rresp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = rresp.Body.Close()
		assert.Equal(t, http.StatusMisdirectedRequest, rresp.StatusCode)
		c2 := dial(t, p.addr, "sip")
		c2.send(ws.OpText, []byte("still enabled"))
		c2.read()
	})

	t.Run("TrustedProxyHeader", func(t *testing.T) {
		// The reproduction: behind a proxy on 127.0.0.1 that
		// appends X-Forwarded-For, a client sends its own Forwarded.
		handshakes := func(p *process, extra func(i int) http.Header) []string {
			t.Helper()
			var statuses []string
			for i := range 10 {
				d := dialer("sip")
				d.Header = ws.HandshakeHeaderHTTP(extra(i))
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				conn, br, _, err := d.Dial(ctx, "ws://"+p.addr)
				cancel()
				var se ws.StatusError
				switch {
				case err == nil:
					t.Cleanup(func() { _ = conn.Close() })
					statuses = append(statuses, "101")
					// An echo proves the connection is registered.
					var r io.Reader = conn
					if br != nil {
						r = br
					}
					c := &client{t: t, conn: conn, rw: struct {
						io.Reader
						io.Writer
					}{r, conn}}
					require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
					c.send(ws.OpText, []byte("hello"))
					c.read()
				case errors.As(err, &se):
					statuses = append(statuses, strconv.Itoa(int(se)))
				default:
					require.NoError(t, err)
				}
			}
			return statuses
		}
		spoofed := func(i int) http.Header {
			return http.Header{
				"Forwarded":       {fmt.Sprintf(`for="203.0.113.%d:5060"`, i+1)},
				"X-Forwarded-For": {"198.51.100.7"},
			}
		}
		five := []string{"101", "101", "101", "101", "101", "503", "503", "503", "503", "503"}

		p := startEcho(t, bin, "-trusted-proxies", "127.0.0.0/8", "-max-conns-per-ip", "5", "-admin", "127.0.0.1:0")
		assert.Equal(t, five, handshakes(p, spoofed), "a client's own Forwarded is ignored")
		srcs := dumpSrcs(t, p)
		require.Len(t, srcs, 5)
		for _, src := range srcs {
			assert.Regexp(t, `^ws:198\.51\.100\.7:\d+$`, src)
			assert.NotContains(t, src, ":5060")
		}

		// The operator names Forwarded: it is believed, X-Forwarded-For is
		// not, and no port is taken from it.
		p = startEcho(t, bin, "-trusted-proxies", "127.0.0.0/8", "-max-conns-per-ip", "5", "-admin", "127.0.0.1:0", "-forwarded-header", "Forwarded")
		assert.Equal(t, slices.Repeat([]string{"101"}, 10), handshakes(p, spoofed))
		srcs = dumpSrcs(t, p)
		require.Len(t, srcs, 10)
		for _, src := range srcs {
			assert.Regexp(t, `^ws:203\.0\.113\.\d+:\d+$`, src)
			assert.NotContains(t, src, ":5060")
		}

		// IPv6 clients count by their /48 here.
		p = startEcho(t, bin, "-trusted-proxies", "127.0.0.0/8", "-max-conns-per-ip", "5", "-ipv6-prefix-len", "48")
		assert.Equal(t, five, handshakes(p, func(i int) http.Header {
			return http.Header{"X-Forwarded-For": {fmt.Sprintf("2001:db8:1:%x::1", i)}}
		}))
	})

	t.Run("WSS", func(t *testing.T) {
		certFile, keyFile, pool := selfSigned(t)
		p := startEcho(t, bin, "-tls-cert", certFile, "-tls-key", keyFile)
		d := ws.Dialer{
			Protocols: []string{"sip"},
			Timeout:   ioTimeout,
			TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2", "http/1.1"}},
		}
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		conn, br, hs, err := d.Dial(ctx, "wss://"+p.addr)
		require.NoError(t, err)
		defer conn.Close()
		assert.Equal(t, "sip", hs.Protocol)
		tc, ok := conn.(*tls.Conn)
		require.True(t, ok)
		st := tc.ConnectionState()
		assert.GreaterOrEqual(t, st.Version, uint16(tls.VersionTLS12))
		assert.Equal(t, "http/1.1", st.NegotiatedProtocol, "only HTTP/1.1 is offered by the server")
		var r io.Reader = conn
		if br != nil {
			r = br
		}
		require.NoError(t, wsutil.WriteClientMessage(conn, ws.OpText, []byte("over TLS")))
		_ = conn.SetReadDeadline(time.Now().Add(ioTimeout))
		data, op, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{r, conn})
		require.NoError(t, err)
		assert.Equal(t, ws.OpText, op)
		assert.Equal(t, "over TLS", string(data))

		// TLS 1.1 is refused.
		old := tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}
		_, err = tls.Dial("tcp", p.addr, &old)
		assert.Error(t, err)
	})

	t.Run("BadFlagsExit2", func(t *testing.T) {
		for _, args := range [][]string{
			{"-subprotocols", "xmpp"},
			{"-implicit-subprotocol", "xmpp"},
			{"-implicit-subprotocol", "sip,msrp"},
			{"-subprotocols", "sip", "-implicit-subprotocol", "msrp"},
			{"-keepalive", "sometimes"},
			{"-cors", "maybe"},
			{"-allow-origin", "[a-"},
			{"-allow-origin", ""},
			{"-log-level", "loud"},
			{"-keepalive-timeout", "10s", "-pong-wait", "1m"},
			{"-frame-timeout", "1m", "-message-timeout", "30s"},
			{"-max", "1048576", "-max-partial-bytes", "65536"},
			{"-max", "-1"},
			{"-forwarded-header", "X-Client-IP"},
			{"-ipv6-prefix-len", "129"},
			{"-ipv6-prefix-len", "-1"},
			{"-keep-headers", "Origin,User Agent"},
			{"-max-kept-header-bytes", "-1"},
			{"-tls-cert", "only-the-cert.pem"},
			{"-no-such-flag"},
			{"extra-argument"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			cancel()
			var ee *exec.ExitError
			if assert.ErrorAs(t, err, &ee, "%v should fail", args) {
				assert.Equal(t, 2, ee.ExitCode(), "exit status of %v; stderr: %s", args, stderr.String())
			}
			assert.NotEmpty(t, strings.TrimSpace(stderr.String()), "%v should say what is wrong", args)
			assert.NotContains(t, stderr.String(), "listening on", "%v must not start", args)
		}
	})
}

// dumpSrcs returns the src of every connection in ws.dump, asked on the
// admin listener of p.
func dumpSrcs(t *testing.T, p *process) []string {
	t.Helper()
	m := regexp.MustCompile(`msg="admin listening on ([^"\s]+)"`).FindStringSubmatch(p.log.String())
	require.NotNil(t, m, "admin address in the log:\n%s", p.log.String())
	body := `{"jsonrpc":"2.0","id":1,"method":"ws.dump","params":{"limit":100}}`
	resp, err := http.Post("http://"+m[1]+"/RPC", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Result struct {
			Connections []struct {
				Src string `json:"src"`
			} `json:"connections"`
		} `json:"result"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	var srcs []string
	for _, c := range out.Result.Connections {
		srcs = append(srcs, c.Src)
	}
	return srcs
}

// buildEcho builds this command into a temporary directory, with -race when
// the test itself runs with it, and returns the binary's path.
func buildEcho(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "echo")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// go test puts its own GOROOT/bin first on PATH, so "go" is the
	// toolchain that runs this test.
	out, err := exec.CommandContext(ctx, "go", append(args, ".")...).CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// process is a running echo server.
type process struct {
	cmd    *exec.Cmd
	addr   string        // host:port it listens on
	log    *logWriter    // its stderr
	exited chan struct{} // closed when it has exited (cmd.ProcessState is set)
}

// listeningRE finds the address in the first log line, e.g.
// `msg="listening on 127.0.0.1:40123"`.
var listeningRE = regexp.MustCompile(`msg="listening on ([^"\s]+)"`)

// startEcho runs the binary on a free loopback port with extra flags and
// waits until it listens. It is killed when the test ends, if still running.
func startEcho(t *testing.T, bin string, flags ...string) *process {
	t.Helper()
	lw := &logWriter{found: make(chan string, 1)}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, flags...)...)
	cmd.Stderr = lw
	cmd.Stdout = lw
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, log: lw, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(exitTimeout):
			t.Errorf("echo server pid %d did not die after SIGKILL", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("echo server stderr:\n%s", lw.String())
		}
	})
	select {
	case p.addr = <-lw.found:
	case <-p.exited:
		t.Fatalf("echo server exited before listening (%v); stderr:\n%s", cmd.ProcessState, lw.String())
	case <-time.After(startTimeout):
		t.Fatalf("echo server did not log its address within %v; stderr:\n%s", startTimeout, lw.String())
	}
	host, _, err := net.SplitHostPort(p.addr)
	require.NoError(t, err, "logged address %q", p.addr)
	require.Equal(t, "127.0.0.1", host, "loopback only")
	return p
}

// logWriter keeps a process's output and reports the listening address.
type logWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	line  []byte // the unfinished last line
	found chan string
	sent  bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		if m := listeningRE.FindSubmatch(w.line[:i]); m != nil && !w.sent {
			w.sent = true
			w.found <- string(m[1])
		}
		w.line = w.line[i+1:]
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// client is a gobwas/ws client connection.
type client struct {
	t        *testing.T
	conn     net.Conn
	rw       io.ReadWriter // reads what the dialer buffered first
	protocol string        // the sub-protocol the server chose
}

// dial opens a WebSocket connection to hostPath (host:port, optionally with a
// path) offering one sub-protocol, and fails the test unless it gets a 101.
// Every later read and write on it must end within ioTimeout.
func dial(t *testing.T, hostPath, protocol string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, br, hs, err := dialer(protocol).Dial(ctx, "ws://"+hostPath)
	require.NoError(t, err, "WebSocket handshake with %s offering %q", hostPath, protocol)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(ioTimeout)))
	var r io.Reader = conn
	if br != nil {
		r = br // bytes that came right behind the 101, then the socket
	}
	return &client{t: t, conn: conn, rw: struct {
		io.Reader
		io.Writer
	}{r, conn}, protocol: hs.Protocol}
}

// dialer is a client that offers protocol (none when empty).
func dialer(protocol string) ws.Dialer {
	d := ws.Dialer{Timeout: ioTimeout}
	if protocol != "" {
		d.Protocols = []string{protocol}
	}
	return d
}

// dialRefused runs a handshake to hostPath offering protocol (none when
// empty) that the server must refuse, and returns the HTTP status it gave.
func dialRefused(t *testing.T, hostPath, protocol string) ws.StatusError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	conn, _, _, err := dialer(protocol).Dial(ctx, "ws://"+hostPath+"/")
	if conn != nil {
		_ = conn.Close()
	}
	var se ws.StatusError
	require.ErrorAs(t, err, &se, "handshake offering %q should be refused with an HTTP status", protocol)
	return se
}

// send writes one masked client message.
func (c *client) send(op ws.OpCode, p []byte) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetWriteDeadline(time.Now().Add(ioTimeout)))
	require.NoError(c.t, wsutil.WriteClientMessage(c.conn, op, p))
}

// sendFragments writes one message as several masked frames.
func (c *client) sendFragments(op ws.OpCode, parts ...[]byte) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetWriteDeadline(time.Now().Add(ioTimeout)))
	for i, p := range parts {
		fop := ws.OpContinuation
		if i == 0 {
			fop = op
		}
		f := ws.NewFrame(fop, i == len(parts)-1, p)
		f = ws.MaskFrameInPlace(f)
		require.NoError(c.t, ws.WriteFrame(c.conn, f))
	}
}

// read reads the next data message, answering control frames on the way.
func (c *client) read() (ws.OpCode, []byte) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(ioTimeout)))
	data, op, err := wsutil.ReadServerData(c.rw)
	require.NoError(c.t, err, "reading an echo")
	return op, data
}

// expectClose reads until the server's close frame, which the client echoes
// (wsutil's control handler does), and returns its code and reason.
func (c *client) expectClose() (ws.StatusCode, string) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetDeadline(time.Now().Add(ioTimeout)))
	data, op, err := wsutil.ReadServerData(c.rw)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) {
		c.t.Fatalf("expected a close frame, got op %v %q, err %v", op, data, err)
	}
	return ce.Code, ce.Reason
}

// closeNormally runs a client-initiated close handshake: our close frame,
// the server's echo, then its FIN.
func (c *client) closeNormally() {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetDeadline(time.Now().Add(ioTimeout)))
	body := ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")
	require.NoError(c.t, ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewCloseFrame(body))))
	for {
		h, err := ws.ReadHeader(c.rw)
		require.NoError(c.t, err, "waiting for the server's close echo")
		payload := make([]byte, h.Length)
		_, err = io.ReadFull(c.rw, payload)
		require.NoError(c.t, err)
		if h.OpCode != ws.OpClose {
			continue // a keepalive ping, say
		}
		code, _ := ws.ParseCloseFrameData(payload)
		assert.Equal(c.t, ws.StatusNormalClosure, code, "server's close echo")
		break
	}
	// The server closes TCP after its echo.
	var b [1]byte
	_, err := c.rw.Read(b[:])
	assert.ErrorIs(c.t, err, io.EOF, "the server should close TCP after the close handshake")
	_ = c.conn.Close()
}

// selfSigned writes a fresh self-signed certificate for 127.0.0.1 and its key
// into the test's temporary directory.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile, pool
}
