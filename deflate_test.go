package sipws_test

import (
	"bytes"
	"compress/flate"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipws/sipws"
)

// chromiumOffer is the permessage-deflate offer of Chromium's new WebSocket().
const chromiumOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

// deflateClient is a client that speaks permessage-deflate with the standard
// library's compress/flate, an implementation independent of the server's:
// it compresses each message on its own (the server answers
// client_no_context_takeover) and inflates the server's with the window of
// what it inflated before (context takeover).
type deflateClient struct {
	*rawClient
	window []byte // the last 32 KiB inflated: the inflater's window
	answer string // the server's Sec-WebSocket-Extensions
}

// dialDeflate opens a sip connection with the extension header line ext
// ("" for none).
func dialDeflate(t testing.TB, addr, ext string) *deflateClient {
	t.Helper()
	var extra []string
	if ext != "" {
		extra = append(extra, ext)
	}
	c, resp := rawDial(t, addr, handshakeRequest(addr, "sip", extra...))
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return &deflateClient{rawClient: c, answer: strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")}
}

// deflateMsg compresses p on its own, the trailing empty block removed.
func deflateMsg(t testing.TB, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.DefaultCompression)
	require.NoError(t, err)
	_, err = w.Write(p)
	require.NoError(t, err)
	require.NoError(t, w.Flush())
	out := b.Bytes()
	require.Equal(t, []byte{0, 0, 0xff, 0xff}, out[len(out)-4:])
	return out[:len(out)-4]
}

// sendCompressed sends p compressed in one frame with RSV1 (rsv 4).
func (c *deflateClient) sendCompressed(op byte, p []byte) {
	c.t.Helper()
	c.writeFrame(true, 4, op, deflateMsg(c.t, p), true)
}

// readMessage reads the next data frame and inflates it when RSV1 is set.
func (c *deflateClient) readMessage() (f frame, data []byte) {
	c.t.Helper()
	for {
		f = c.mustReadFrame()
		if f.Op == 0x1 || f.Op == 0x2 || f.Op == 0x8 {
			break
		}
	}
	require.Equal(c.t, byte(0x80), boolBit(f.Fin), "one frame per message")
	if f.Rsv != 4 {
		require.Zero(c.t, f.Rsv)
		return f, f.Payload
	}
	in := io.MultiReader(bytes.NewReader(f.Payload), bytes.NewReader([]byte{0, 0, 0xff, 0xff}))
	data, err := io.ReadAll(flate.NewReaderDict(in, c.window))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		require.NoError(c.t, err)
	}
	if !strings.Contains(c.answer, "server_no_context_takeover") {
		c.window = append(c.window, data...)
		if len(c.window) > 32<<10 {
			c.window = c.window[len(c.window)-32<<10:]
		}
	}
	return f, data
}

func boolBit(b bool) byte {
	if b {
		return 0x80
	}
	return 0
}

// sipFlow is SIPFlow(0): a register, a call and a MESSAGE.
func sipFlow() []string { return sipws.SIPFlow(0) }

// TestDeflateEcho runs the SIP flow through an echo server with compression
// on: every message the client sends compressed is delivered inflated, and
// every one sent back above the threshold is compressed and inflates, with
// context takeover, to what was sent; short ones go as they are.
func TestDeflateEcho(t *testing.T) {
	ts := startServer(t, sipws.Config{Compression: true, OnMessage: func(c *sipws.Conn, m sipws.Message) {
		_ = c.SendMessage(m.Type, m.Data)
	}})
	c := dialDeflate(t, ts.Addr, chromiumOffer)
	assert.Equal(t, "permessage-deflate; client_no_context_takeover", c.answer)

	var plain, wire int
	for round := range 2 {
		for i, msg := range sipws.SIPFlow(round) {
			c.sendCompressed(0x1, []byte(msg))
			m := ts.nextMsg(t)
			require.Equal(t, msg, string(m.Msg.Data), "round %d message %d delivered inflated", round, i)
			f, data := c.readMessage()
			require.Equal(t, msg, string(data), "round %d message %d echoed", round, i)
			assert.Equal(t, byte(4), f.Rsv, "message %d of %d bytes compressed", i, len(msg))
			plain += len(msg)
			wire += len(f.Payload)
		}
	}
	assert.Less(t, wire, plain/3, "the flow compresses with the history")
	t.Logf("SIP flow, server to client: %d bytes to %d (%.0f %%)", plain, wire, 100*float64(wire)/float64(plain))

	// Short messages and the keepalive go as they are; a binary message
	// and an uncompressed text one from the client are delivered as sent.
	c.sendText("\r\n\r\n")
	f, data := c.readMessage()
	assert.Equal(t, "\r\n", string(data))
	assert.Zero(t, f.Rsv)
	c.sendText("short")
	assert.Equal(t, "short", string(ts.nextMsg(t).Msg.Data))
	f, data = c.readMessage()
	assert.Equal(t, "short", string(data))
	assert.Zero(t, f.Rsv, "below the threshold")
	bin := bytes.Repeat([]byte{0xff, 0, 1, 2}, 300)
	c.sendCompressed(0x2, bin)
	m := ts.nextMsg(t)
	assert.Equal(t, sipws.MessageBinary, m.Msg.Type)
	assert.Equal(t, bin, m.Msg.Data)
	f, data = c.readMessage()
	assert.Equal(t, byte(0x2), f.Op)
	assert.Equal(t, bin, data)
	// Incompressible bytes go as they are.
	noise := make([]byte, 2000)
	for i := range noise {
		noise[i] = byte(i*i*7919 + i>>3)
	}
	c.writeFrame(true, 0, 0x2, noise, true)
	assert.Equal(t, noise, ts.nextMsg(t).Msg.Data)
	_, data = c.readMessage()
	assert.Equal(t, noise, data)
}

// TestDeflateNegotiatedOnTheWire checks the 101 over a real socket: the
// answer for offers a client may send, none when Compression is off, and a
// malformed header that leaves the handshake whole and compression off.
func TestDeflateNegotiatedOnTheWire(t *testing.T) {
	on := startServer(t, sipws.Config{Compression: true})
	off := startServer(t, sipws.Config{})
	for _, tc := range []struct {
		name string
		ts   *testServer
		ext  string
		want string
	}{
		{"chromium", on, chromiumOffer, "permessage-deflate; client_no_context_takeover"},
		{"off", off, chromiumOffer, ""},
		{"no offer", on, "", ""},
		{"server window", on, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; client_max_window_bits",
			"permessage-deflate; client_no_context_takeover; server_max_window_bits=10"},
		{"server no context takeover", on, "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
			"permessage-deflate; client_no_context_takeover; server_no_context_takeover"},
		{"malformed", on, `Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits="15`, ""},
		{"unknown parameter", on, "Sec-WebSocket-Extensions: permessage-deflate; mux", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialDeflate(t, tc.ts.Addr, tc.ext)
			assert.Equal(t, tc.want, c.answer)
			tc.ts.nextOpened(t)
			c.sendText("ping me back?")
			assert.Equal(t, "ping me back?", string(tc.ts.nextMsg(t).Msg.Data))
		})
	}
}

// TestDeflateWindowAndNoContextTakeover checks what the server sends for a
// small server_max_window_bits (no reference past 2^bits bytes: the client's
// inflater is given only that much of its window) and for
// server_no_context_takeover (each message inflates on its own).
func TestDeflateWindowAndNoContextTakeover(t *testing.T) {
	for _, tc := range []struct {
		ext  string
		keep int // bytes of the window the client's inflater gets; -1 none
	}{
		{"permessage-deflate; server_max_window_bits=9", 1 << 9},
		{"permessage-deflate; server_no_context_takeover", -1},
	} {
		t.Run(tc.ext, func(t *testing.T) {
			ts := startServer(t, sipws.Config{Compression: true})
			c := dialDeflate(t, ts.Addr, "Sec-WebSocket-Extensions: "+tc.ext)
			conn := ts.nextOpened(t)
			compressed := 0
			for i, msg := range sipFlow() {
				msg = msg[:min(len(msg), 200+i*30)]
				require.NoError(t, conn.Send([]byte(msg)))
				f := c.mustReadFrame()
				data := f.Payload
				if f.Rsv == 4 {
					compressed++
					var dict []byte
					if tc.keep > 0 {
						dict = c.window[max(0, len(c.window)-tc.keep):]
					}
					in := io.MultiReader(bytes.NewReader(f.Payload), bytes.NewReader([]byte{0, 0, 0xff, 0xff}))
					var err error
					data, err = io.ReadAll(flate.NewReaderDict(in, dict))
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						require.NoError(t, err)
					}
					c.window = append(c.window, data...)
				}
				require.Equal(t, msg, string(data), "message %d", i)
			}
			assert.Positive(t, compressed)
		})
	}
}

// TestDeflateFramingErrors checks what fails the connection once the
// extension is negotiated, and RSV1 where it is not.
func TestDeflateFramingErrors(t *testing.T) {
	bomb := func(n int) []byte {
		p := deflateMsg(t, make([]byte, n))
		require.Less(t, len(p), 4<<10, "compressed, the bomb is within MaxMessageSize")
		return p
	}
	for _, tc := range []struct {
		name   string
		ext    string
		frames func(c *deflateClient)
		code   uint16
	}{
		{"RSV1 without negotiation", "", func(c *deflateClient) {
			c.writeFrame(true, 4, 0x1, deflateMsg(t, []byte("hello hello hello")), true)
		}, 1002},
		{"RSV1 when Compression is off", "off", func(c *deflateClient) {
			c.writeFrame(true, 4, 0x1, deflateMsg(t, []byte("hello hello hello")), true)
		}, 1002},
		{"RSV1 on a Ping", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0x9, []byte("x"), true) }, 1002},
		{"RSV1 on a Pong", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0xA, nil, true) }, 1002},
		{"RSV1 on a Close", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0x8, []byte{3, 232}, true) }, 1002},
		{"RSV1 on a continuation", chromiumOffer, func(c *deflateClient) {
			p := deflateMsg(t, []byte(strings.Repeat("fragmented ", 20)))
			c.writeFrame(false, 4, 0x1, p[:5], true)
			c.writeFrame(true, 4, 0x0, p[5:], true)
		}, 1002},
		{"RSV2", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 2, 0x1, []byte("x"), true) }, 1002},
		{"RSV1 and RSV3", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 5, 0x1, []byte("x"), true) }, 1002},
		{"zip bomb", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0x2, bomb(3<<20), true) }, 1009},
		{"one byte over the limit", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0x2, bomb(4<<10+1), true) }, 1009},
		{"not DEFLATE", chromiumOffer, func(c *deflateClient) { c.writeFrame(true, 4, 0x2, []byte{0xff, 0xfe, 0xfd}, true) }, 1007},
		{"invalid UTF-8 inflated", chromiumOffer, func(c *deflateClient) {
			c.writeFrame(true, 4, 0x1, deflateMsg(t, []byte("caf\xe9 au lait")), true)
		}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := sipws.Config{Compression: tc.ext != "off", MaxMessageSize: 4 << 10}
			ts := startServer(t, cfg)
			ext := tc.ext
			if ext == "off" {
				ext = chromiumOffer
			}
			c := dialDeflate(t, ts.Addr, ext)
			tc.frames(c)
			c.expectClose(tc.code, 5*time.Second)
			ts.noMsg(t, 50*time.Millisecond)
		})
	}
}

// TestDeflateFragments checks a compressed message in fragments: RSV1 on the
// first, none on the continuations, Pings between them; and that a message
// of exactly MaxMessageSize inflated is delivered.
func TestDeflateFragments(t *testing.T) {
	ts := startServer(t, sipws.Config{Compression: true, MaxMessageSize: 4 << 10})
	c := dialDeflate(t, ts.Addr, chromiumOffer)
	msg := sipFlow()[2]
	p := deflateMsg(t, []byte(msg))
	third := len(p) / 3
	c.writeFrame(false, 4, 0x1, p[:third], true)
	c.writeFrame(true, 0, 0x9, []byte("between"), true)
	c.writeFrame(false, 0, 0x0, p[third:2*third], true)
	c.writeFrame(true, 0, 0x0, p[2*third:], true)
	assert.Equal(t, msg, string(ts.nextMsg(t).Msg.Data))
	f := c.mustReadFrame()
	assert.Equal(t, byte(0xA), f.Op)

	// Then an uncompressed message in fragments, as it was before.
	c.writeFrame(false, 0, 0x1, []byte("plain "), true)
	c.writeFrame(true, 0, 0x0, []byte("fragments"), true)
	assert.Equal(t, "plain fragments", string(ts.nextMsg(t).Msg.Data))

	exact := bytes.Repeat([]byte("z"), 4<<10)
	c.sendCompressed(0x1, exact)
	assert.Equal(t, exact, ts.nextMsg(t).Msg.Data)

	// A message of exactly MaxMessageSize that does not compress takes
	// more on the wire, compressed, and is still accepted.
	noise := make([]byte, 4<<10)
	x := uint32(2463534242)
	for i := range noise {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		noise[i] = byte(x)
	}
	p = deflateMsg(t, noise)
	require.Greater(t, len(p), len(noise), "compressed, it is longer")
	c.writeFrame(true, 4, 0x2, p, true)
	assert.Equal(t, noise, ts.nextMsg(t).Msg.Data)
}

// TestDeflateHistoryDroppedWhenIdle checks that a connection keeps the
// history of what it sent while it is active and lets go of it when the
// keepalive finds it idle; what it sends next still inflates in the
// client, whose window is untouched.
func TestDeflateHistoryDroppedWhenIdle(t *testing.T) {
	for _, mech := range []sipws.KeepaliveMechanism{sipws.KeepalivePing, sipws.KeepalivePong} {
		t.Run(mech.String(), func(t *testing.T) {
			clk := newKaClock()
			ts := startServer(t, sipws.WithClock(sipws.Config{Compression: true, Keepalive: mech, KeepaliveTimeout: 30 * time.Second}, clk))
			c := dialDeflate(t, ts.Addr, chromiumOffer)
			conn := ts.nextOpened(t)
			clk.waitTickers(t, 1)
			flow := sipws.SIPFlow(0)
			require.NoError(t, conn.Send([]byte(flow[1])))
			_, data := c.readMessage()
			require.Equal(t, flow[1], string(data))
			assert.Equal(t, len(flow[1]), conn.DeflateHistory(), "the history holds what was sent")

			clk.step(t, 29*time.Second, time.Second)
			c.noFrame(quiet)
			assert.Positive(t, conn.DeflateHistory(), "kept while not idle")
			clk.advance(t, time.Second)
			f := c.mustReadFrame()
			require.Contains(t, []byte{0x9, 0xA}, f.Op, "the keepalive")
			assert.Zero(t, conn.DeflateHistory(), "dropped when idle")

			require.NoError(t, conn.Send([]byte(flow[8])))
			f, data = c.readMessage()
			assert.Equal(t, byte(4), f.Rsv)
			assert.Equal(t, flow[8], string(data))
		})
	}
}

// TestDeflateConcurrentSends sends compressed messages on one connection
// from several goroutines at once: each refers to the history of what went
// before it on the wire, so each must inflate, in the client's window, to a
// message that was sent, and all must arrive.
func TestDeflateConcurrentSends(t *testing.T) {
	ts := startServer(t, sipws.Config{Compression: true})
	c := dialDeflate(t, ts.Addr, chromiumOffer)
	conn := ts.nextOpened(t)
	const senders, each = 8, 40
	want := map[string]int{}
	var msgs [senders][]string
	for g := range senders {
		for k := range each {
			m := sipws.SIPFlow(g*each + k)[k%11]
			msgs[g] = append(msgs[g], m)
			want[m]++
		}
	}
	done := make(chan error, senders)
	for g := range senders {
		go func() {
			for _, m := range msgs[g] {
				if err := conn.Send([]byte(m)); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	got := map[string]int{}
	for range senders * each {
		_, data := c.readMessage()
		got[string(data)]++
	}
	for range senders {
		require.NoError(t, <-done)
	}
	assert.Equal(t, want, got)
}

// TestDeflateTLS runs compressed messages both ways over TLS, where frames
// are built outside the pooled blocks of the plain-TCP path.
func TestDeflateTLS(t *testing.T) {
	ts := startServer(t, sipws.Config{Compression: true, OnMessage: func(c *sipws.Conn, m sipws.Message) {
		_ = c.SendMessage(m.Type, m.Data)
	}})
	h := httptest.NewUnstartedServer(ts.Server)
	h.StartTLS()
	t.Cleanup(h.Close)
	addr := strings.TrimPrefix(h.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(h.Certificate())
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	req := newHSRequest(addr, "sip").add("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	res := hsExchange(t, tc, http.MethodGet, req.String())
	require.Equal(t, http.StatusSwitchingProtocols, res.resp.StatusCode)
	c := &deflateClient{rawClient: res.c, answer: res.resp.Header.Get("Sec-WebSocket-Extensions")}
	require.Equal(t, "permessage-deflate; client_no_context_takeover", c.answer)
	for round := range 2 {
		for i, msg := range sipws.SIPFlow(round) {
			c.sendCompressed(0x1, []byte(msg))
			assert.Equal(t, msg, string(ts.nextMsg(t).Msg.Data))
			f, data := c.readMessage()
			require.Equal(t, msg, string(data), "round %d message %d", round, i)
			assert.Equal(t, byte(4), f.Rsv)
		}
	}
}
