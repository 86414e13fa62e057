package sipws_test

// Read-path tests (read.go): frames and messages as a raw client on a
// loopback socket sends them, RFC 6455 §5 (framing), §5.5 (control frames
// read), §7 (the peer's close) and §8 (UTF-8), one rule per test.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFrameDataDeliveredByteExact(t *testing.T) {
	for _, typ := range []sipws.MessageType{sipws.MessageText, sipws.MessageBinary} {
		for _, n := range []int{0, 1, 125, 126, 127, 128, 65535, 65536, 70000} {
			t.Run(fmt.Sprintf("%s/%d", typ, n), func(t *testing.T) {
				t.Parallel()
				ts := startServer(t, sipws.Config{MaxMessageSize: 1 << 20})
				c, conn := frDial(t, ts)
				op, p := frOpText, frText(n, n)
				if typ == sipws.MessageBinary {
					op, p = frOpBinary, frBin(n, n)
				}
				c.writeFrame(true, 0, op, p, true)
				m := ts.nextMsg(t)
				assert.Equal(t, conn.ID(), m.Conn.ID())
				assert.Equal(t, typ, m.Msg.Type)
				require.NotNil(t, m.Msg.Data)
				frEqualBytes(t, p, m.Msg.Data, "delivered payload")
				// The connection stays usable.
				c.sendText("next")
				assert.Equal(t, "next", string(ts.nextMsg(t).Msg.Data))
			})
		}
	}
}

func TestFrameDribbled(t *testing.T) {
	cases := []struct {
		name  string
		op    byte
		n     int // payload size
		chunk int // bytes per write
		pause time.Duration
	}{
		{"one byte per write", frOpText, 130, 1, 300 * time.Microsecond},
		{"997-byte chops of 65536", frOpText, 65536, 997, 0},
		{"7-byte chops of binary 3000", frOpBinary, 3000, 7, 0},
		{"3-byte chops of text 3000", frOpText, 3000, 3, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{MaxMessageSize: 1 << 20})
			c, _ := frDial(t, ts)
			p, typ := frText(tc.n, 3), sipws.MessageText
			if tc.op == frOpBinary {
				p, typ = frBin(tc.n, 3), sipws.MessageBinary
			}
			b := frMasked(true, tc.op, p)
			for len(b) > 0 {
				k := min(tc.chunk, len(b))
				c.writeRaw(b[:k])
				b = b[k:]
				if tc.pause > 0 {
					time.Sleep(tc.pause) // let each write leave as its own segment
				}
			}
			m := ts.nextMsg(t)
			assert.Equal(t, typ, m.Msg.Type)
			frEqualBytes(t, p, m.Msg.Data, "dribbled payload")
		})
	}
}

func TestFrameEmptyTextDelivered(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)

	c.writeFrame(true, 0, frOpText, nil, true)
	m := ts.nextMsg(t)
	assert.Equal(t, sipws.MessageText, m.Msg.Type)
	assert.Empty(t, m.Msg.Data)

	// An empty message in two empty fragments is one empty message.
	c.writeRaw(append(frMasked(false, frOpText, nil), frMasked(true, frOpCont, nil)...))
	m = ts.nextMsg(t)
	assert.Equal(t, sipws.MessageText, m.Msg.Type)
	assert.Empty(t, m.Msg.Data)

	// The connection is still open and the next message is the next one.
	c.sendText("still open")
	assert.Equal(t, "still open", string(ts.nextMsg(t).Msg.Data))
	assert.Zero(t, len(ts.Closed))
}

// Frames written in the same TCP segment as the handshake request (the
// bytes net/http read past the request) are read before the socket.
func TestFramePipelinedAfterHandshake(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	req := handshakeRequest(ts.Addr, "sip")
	frames := bytes.Join([][]byte{
		frMasked(true, frOpText, []byte("first")),
		frMasked(false, frOpBinary, []byte("sec")),
		frMasked(true, frOpPing, []byte("p")),
		frMasked(true, frOpCont, []byte("ond")),
	}, nil)
	c, resp := rawDial(t, ts.Addr, req+string(frames))
	require.Equal(t, 101, resp.StatusCode)
	ts.nextOpened(t)
	m := ts.nextMsg(t)
	assert.Equal(t, sipws.MessageText, m.Msg.Type)
	assert.Equal(t, "first", string(m.Msg.Data))
	m = ts.nextMsg(t)
	assert.Equal(t, sipws.MessageBinary, m.Msg.Type)
	assert.Equal(t, "second", string(m.Msg.Data))
	f := c.mustReadFrame()
	require.Equal(t, frOpPong, f.Op)
	assert.Equal(t, "p", string(f.Payload))
	c.sendText("third")
	assert.Equal(t, "third", string(ts.nextMsg(t).Msg.Data))
}

func TestFrameFragmentsReassembled(t *testing.T) {
	cases := []struct {
		name  string
		op    byte
		parts []string
	}{
		{"text in 2", frOpText, []string{"INVITE sip:bob@b ", "SIP/2.0\r\n\r\n"}},
		{"text in 3", frOpText, []string{"REGISTER ", "sip:b ", "SIP/2.0\r\n\r\n"}},
		{"text in 3 with empty middle", frOpText, []string{"abc", "", "def"}},
		{"text with empty last", frOpText, []string{"abc", "def", ""}},
		{"binary in 2", frOpBinary, []string{"\xff\x00\x01", "\xfe\x80"}},
		{"binary in 3", frOpBinary, []string{"\xff", "\xc0\xc1", "\xf5\xf8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			for i, part := range tc.parts {
				op := frOpCont
				if i == 0 {
					op = tc.op
				}
				c.writeFrame(i == len(tc.parts)-1, 0, op, []byte(part), true)
			}
			c.sendText("marker")
			m := ts.nextMsg(t)
			assert.Equal(t, strings.Join(tc.parts, ""), string(m.Msg.Data))
			want := sipws.MessageText
			if tc.op == frOpBinary {
				want = sipws.MessageBinary
			}
			assert.Equal(t, want, m.Msg.Type)
			// Delivered once: the next message is the marker.
			assert.Equal(t, "marker", string(ts.nextMsg(t).Msg.Data))
		})
	}
}

func TestFramePingBetweenFragments(t *testing.T) {
	for _, pings := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d pings", pings), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeFrame(false, 0, frOpText, []byte("OPTIONS sip:a@b "), true)
			for i := range pings {
				c.writeFrame(true, 0, frOpPing, fmt.Appendf(nil, "mid-%d", i), true)
			}
			c.writeFrame(false, 0, frOpCont, []byte("SIP/2.0\r\n"), true)
			c.writeFrame(true, 0, frOpPing, []byte("late"), true)
			c.writeFrame(true, 0, frOpCont, []byte("\r\n"), true)
			c.sendText("marker")

			for i := range pings {
				f := c.mustReadFrame()
				frServerFrame(t, f)
				require.Equal(t, frOpPong, f.Op)
				assert.Equal(t, fmt.Sprintf("mid-%d", i), string(f.Payload))
			}
			f := c.mustReadFrame()
			require.Equal(t, frOpPong, f.Op)
			assert.Equal(t, "late", string(f.Payload))

			m := ts.nextMsg(t)
			assert.Equal(t, sipws.MessageText, m.Msg.Type)
			assert.Equal(t, "OPTIONS sip:a@b SIP/2.0\r\n\r\n", string(m.Msg.Data))
			assert.Equal(t, "marker", string(ts.nextMsg(t).Msg.Data), "the message must be delivered once")
		})
	}
}

func TestFrameFragmentationViolations(t *testing.T) {
	cases := []struct {
		name   string
		frames [][]byte
		before []string // messages delivered before the violation
	}{
		{"continuation with no message started", [][]byte{
			frMasked(true, frOpCont, []byte("orphan")),
		}, nil},
		{"non-final continuation with no message started", [][]byte{
			frMasked(false, frOpCont, []byte("orphan")),
		}, nil},
		{"continuation after a finished fragmented message", [][]byte{
			frMasked(false, frOpText, []byte("a")),
			frMasked(true, frOpCont, []byte("b")),
			frMasked(true, frOpCont, []byte("c")),
		}, []string{"ab"}},
		{"text inside a fragmented text message", [][]byte{
			frMasked(false, frOpText, []byte("first")),
			frMasked(true, frOpText, []byte("second")),
		}, nil},
		{"binary inside a fragmented text message", [][]byte{
			frMasked(false, frOpText, []byte("first")),
			frMasked(true, frOpBinary, []byte("second")),
		}, nil},
		{"non-final text inside a fragmented binary message", [][]byte{
			frMasked(false, frOpBinary, []byte("first")),
			frMasked(false, frOpText, []byte("second")),
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeRaw(bytes.Join(tc.frames, nil))
			for _, want := range tc.before {
				assert.Equal(t, want, string(ts.nextMsg(t).Msg.Data))
			}
			frExpectFail(t, ts, c, 1002)
		})
	}
}

func TestFramePingAnsweredWithSamePayload(t *testing.T) {
	for _, n := range []int{0, 17, 125} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			p := frBin(n, n) // any bytes: a ping payload is not text
			c.writeFrame(true, 0, frOpPing, p, true)
			f := c.mustReadFrame()
			frServerFrame(t, f)
			require.Equal(t, frOpPong, f.Op)
			frEqualBytes(t, p, f.Payload, "pong payload")
			assert.Zero(t, len(ts.Msgs), "a ping is not a message")
			c.sendText("after")
			assert.Equal(t, "after", string(ts.nextMsg(t).Msg.Data))
		})
	}
}

// Control frames of up to 125 bytes work whatever the read buffer size,
// including the smallest one Config accepts.
func TestFrameControlFramesWithSmallReadBuffer(t *testing.T) {
	smallest := 0
	for size := 1; size <= 1024 && smallest == 0; size++ {
		if _, err := sipws.New(sipws.Config{ReadBufferSize: size}); err == nil {
			smallest = size
		}
	}
	require.NotZero(t, smallest, "no ReadBufferSize up to 1024 is accepted")
	sizes := []int{smallest, smallest + 1, max(smallest+2, 127), max(smallest+3, 130)}
	for _, size := range sizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{ReadBufferSize: size})
			c, _ := frDial(t, ts)
			for _, n := range []int{0, 15, 16, 17, 125} {
				p := frBin(n, n)
				c.writeFrame(true, 0, frOpPing, p, true)
				f := c.mustReadFrame()
				require.Equal(t, frOpPong, f.Op, "ping of %d bytes", n)
				frEqualBytes(t, p, f.Payload, fmt.Sprintf("pong to a ping of %d bytes", n))
			}
			c.writeFrame(true, 0, frOpPong, frBin(125, 2), true)
			c.sendText("after")
			assert.Equal(t, "after", string(ts.nextMsg(t).Msg.Data))
			reason := string(frText(123, 5))
			c.sendClose(4001, reason)
			frServerFrame(t, c.expectClose(4001, time.Second))
			ev := frEnded(t, ts, c)
			assert.Equal(t, sipws.CausePeer, ev.Cause)
			assert.Equal(t, reason, ev.Reason)
		})
	}
}

func TestFrameUnsolicitedPongIgnored(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)
	c.writeFrame(true, 0, frOpPong, []byte("heartbeat"), true)
	c.writeFrame(true, 0, frOpPong, nil, true)
	c.sendText("one")
	c.writeFrame(false, 0, frOpText, []byte("t"), true)
	c.writeFrame(true, 0, frOpPong, []byte("between fragments"), true)
	c.writeFrame(true, 0, frOpCont, []byte("wo"), true)
	assert.Equal(t, "one", string(ts.nextMsg(t).Msg.Data))
	assert.Equal(t, "two", string(ts.nextMsg(t).Msg.Data))
	// Nothing was answered: the first frame the client gets is our ping's pong.
	c.writeFrame(true, 0, frOpPing, []byte("probe"), true)
	f := c.mustReadFrame()
	require.Equal(t, frOpPong, f.Op)
	assert.Equal(t, "probe", string(f.Payload))
	assert.Zero(t, len(ts.Closed))
}

func TestFrameInvalidUTF8Text(t *testing.T) {
	cases := map[string]string{
		"FF FE FD":                    "\xff\xfe\xfd",
		"valid then FF":               "OPTIONS \xff",
		"overlong slash C0 AF":        "\xc0\xaf",
		"overlong 3-byte E0 80 AF":    "\xe0\x80\xaf",
		"surrogate ED A0 80":          "\xed\xa0\x80",
		"beyond U+10FFFF F4 90 80 80": "\xf4\x90\x80\x80",
		"stray continuation 80":       "a\x80b",
		"truncated at end E2 82":      "euro \xe2\x82",
		"5-byte form F8 88 80 80 80":  "\xf8\x88\x80\x80\x80",
		"valid 4-byte then truncated": "😀\xf0\x9f\x98",
		"CESU-8 surrogate pair":       "\xed\xa0\xbd\xed\xb8\x80",
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.False(t, utf8.ValidString(s), "test vector must be invalid")
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeFrame(true, 0, frOpText, []byte(s), true)
			frExpectFail(t, ts, c, 1007)
		})
	}
}

func TestFrameUTF8SplitAcrossFragmentsDelivered(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)
	s := "aé€😀z中"
	var want []string
	// Every split into two fragments, then every split into three.
	for i := 0; i <= len(s); i++ {
		c.writeRaw(append(frMasked(false, frOpText, []byte(s[:i])), frMasked(true, frOpCont, []byte(s[i:]))...))
		want = append(want, s)
	}
	for i := 0; i <= len(s); i++ {
		for j := i; j <= len(s); j++ {
			c.writeRaw(bytes.Join([][]byte{
				frMasked(false, frOpText, []byte(s[:i])),
				frMasked(false, frOpCont, []byte(s[i:j])),
				frMasked(true, frOpCont, []byte(s[j:])),
			}, nil))
			want = append(want, s)
		}
	}
	// One byte per fragment.
	for i := 0; i < len(s); i++ {
		op := frOpCont
		if i == 0 {
			op = frOpText
		}
		c.writeFrame(i == len(s)-1, 0, op, []byte{s[i]}, true)
	}
	want = append(want, s)
	for i, w := range want {
		m := ts.nextMsg(t)
		require.Equal(t, sipws.MessageText, m.Msg.Type, "message %d", i)
		require.Equal(t, w, string(m.Msg.Data), "message %d", i)
	}
	assert.Zero(t, len(ts.Closed))
}

func TestFrameUTF8InvalidSplitAcrossFragments(t *testing.T) {
	cases := []struct {
		name  string
		parts []string
	}{
		{"2-byte lead then ASCII", []string{"a\xce", "A"}},
		{"3-byte lead+1 then ASCII", []string{"\xe2\x82", "("}},
		{"4-byte lead+2 then ASCII over 3 fragments", []string{"\xf0", "\x9f", "\x98A"}},
		{"valid prefix then truncated final", []string{"\xf0\x9f", "\x98"}},
		{"surrogate completed in next fragment", []string{"\xed", "\xa0\x80"}},
		{"invalid continuation in final fragment", []string{"ok", "\xff"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			var b []byte
			for i, p := range tc.parts {
				op := frOpCont
				if i == 0 {
					op = frOpText
				}
				b = append(b, frMasked(i == len(tc.parts)-1, op, []byte(p))...)
			}
			c.writeRaw(b)
			frExpectFail(t, ts, c, 1007)
		})
	}
}

// A non-final fragment whose bytes can no longer become valid UTF-8 fails the
// connection at once, without waiting for the rest of the message (which
// never comes here).
func TestFrameUTF8FailFastOnFragment(t *testing.T) {
	cases := map[string]string{
		"ends in F5":          "ok\xf5",
		"ends in F8":          "ok\xf8",
		"ends in FF":          "ok\xff",
		"ends in C0":          "ok\xc0",
		"ends in C1":          "ok\xc1",
		"ends in E0 80":       "ok\xe0\x80",
		"ends in ED A0":       "ok\xed\xa0",
		"ends in F0 80":       "ok\xf0\x80",
		"ends in F4 90":       "ok\xf4\x90",
		"ends in stray 80":    "ok\x80",
		"invalid in middle":   "a\xffb",
		"ends in 5 cont":      "\x80\x80\x80\x80\x80",
		"only F5 in fragment": "\xf5",
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			start := time.Now()
			c.writeFrame(false, 0, frOpText, []byte(s), true)
			frExpectFail(t, ts, c, 1007)
			assert.Less(t, time.Since(start), 2*time.Second, "fail fast")
		})
	}
	// A fragment ending in the start of a character that the next fragment
	// may still complete is not a failure.
	t.Run("viable prefixes are not failures", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{})
		c, _ := frDial(t, ts)
		for _, tc := range []struct{ first, rest string }{
			{"\xc2", "\xa9"},         // ©
			{"\xe2", "\x82\xac"},     // €
			{"\xe2\x82", "\xac"},     // €
			{"\xe0\xa0", "\x80"},     // U+0800
			{"\xed\x9f", "\xbf"},     // U+D7FF, below the surrogates
			{"\xf0", "\x9f\x98\x80"}, // 😀
			{"\xf0\x90", "\x80\x80"}, // U+10000
			{"\xf4\x8f\xbf", "\xbf"}, // U+10FFFF
		} {
			first := "ok" + tc.first
			require.True(t, utf8.ValidString(first+tc.rest), "vector %x", first+tc.rest)
			c.writeFrame(false, 0, frOpText, []byte(first), true)
			c.writeFrame(true, 0, frOpCont, []byte(tc.rest), true)
			assert.Equal(t, first+tc.rest, string(ts.nextMsg(t).Msg.Data))
		}
		assert.Zero(t, len(ts.Closed))
	})
}

// Autobahn 6.4.3/6.4.4: the invalid bytes arrive in the first chop of a
// single frame whose rest is withheld; a strict endpoint fails at once
// rather than when the frame is complete (here it never is).
func TestFrameUTF8FailFastWithinFrame(t *testing.T) {
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // κόσμε
	cases := []struct {
		name  string
		sent  string // the payload bytes sent
		total int    // the payload length the header declares
		frags bool   // sent as the first fragment of a message
	}{
		{"U+110000 whole (6.4.3)", kosme + "\xf4\x90\x80\x80", 40, false},
		{"up to the octet that makes it invalid (6.4.4)", kosme + "\xf4\x90", 40, false},
		{"FF", "ok\xff", 200, false},
		{"overlong C0", "ok\xc0", 200, false},
		{"surrogate prefix ED A0", "ok\xed\xa0", 200, false},
		{"in a non-final fragment", "ok\xf5", 200, true},
		{"after a 16-bit length", strings.Repeat("a", 300) + "\xff", 1000, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{FrameTimeout: 3 * time.Second})
			c, _ := frDial(t, ts)
			p := append([]byte(tc.sent), bytes.Repeat([]byte{'x'}, tc.total-len(tc.sent))...)
			b := frMasked(!tc.frags, frOpText, p)
			start := time.Now()
			c.writeRaw(b[:len(b)-len(p)+len(tc.sent)])
			frExpectFail(t, ts, c, 1007)
			assert.Less(t, time.Since(start), time.Second, "fail fast")
		})
	}
}

func TestFrameBinaryNeverUTF8Checked(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)
	c.writeFrame(true, 0, frOpBinary, []byte("\xff\xfe\xfd"), true)
	c.writeFrame(false, 0, frOpBinary, []byte("ok\xf5"), true)
	c.writeFrame(false, 0, frOpCont, []byte("\xc0"), true)
	c.writeFrame(true, 0, frOpCont, []byte("\xed\xa0\x80\xe2\x82"), true)
	m := ts.nextMsg(t)
	assert.Equal(t, sipws.MessageBinary, m.Msg.Type)
	assert.Equal(t, []byte("\xff\xfe\xfd"), m.Msg.Data)
	m = ts.nextMsg(t)
	assert.Equal(t, sipws.MessageBinary, m.Msg.Type)
	assert.Equal(t, []byte("ok\xf5\xc0\xed\xa0\x80\xe2\x82"), m.Msg.Data)
	assert.Zero(t, len(ts.Closed))
}

func TestFrameSizeLimit(t *testing.T) {
	const limit = 1000
	cases := []struct {
		name  string
		op    byte
		parts []int // fragment sizes
		fail  bool
	}{
		{"single frame at the limit", frOpText, []int{1000}, false},
		{"single frame one over", frOpText, []int{1001}, true},
		{"binary single frame one over", frOpBinary, []int{1001}, true},
		{"single frame far over", frOpBinary, []int{70000}, true},
		{"fragments at the limit", frOpText, []int{500, 500}, false},
		{"fragments one over", frOpText, []int{600, 401}, true},
		{"three fragments over", frOpBinary, []int{400, 400, 201}, true},
		{"empty fragments then over", frOpBinary, []int{0, 1000, 0, 1}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{MaxMessageSize: limit})
			c, _ := frDial(t, ts)
			var whole []byte
			for i, n := range tc.parts {
				op := frOpCont
				if i == 0 {
					op = tc.op
				}
				p := bytes.Repeat([]byte{'a' + byte(i)}, n)
				whole = append(whole, p...)
				c.writeFrame(i == len(tc.parts)-1, 0, op, p, true)
			}
			if tc.fail {
				frExpectFail(t, ts, c, 1009)
				return
			}
			frEqualBytes(t, whole, ts.nextMsg(t).Msg.Data, "message at the limit")
			assert.Zero(t, len(ts.Closed))
		})
	}
}

// A frame far over the limit sent in full, as a client that does not wait:
// the close frame still reaches it and TCP is closed.
func TestFrameSizeLimitWholeFrameSent(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxMessageSize: 1000})
	c, _ := frDial(t, ts)
	b := frMasked(true, frOpBinary, frBin(4<<20, 1))
	go func() {
		_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
		_, _ = c.conn.Write(b) // fails once the server is gone: expected
	}()
	f := c.mustReadFrame()
	require.Equal(t, frOpClose, f.Op)
	code, _ := f.closeCode()
	assert.Equal(t, uint16(1009), code)
	c.expectEOF(3 * time.Second)
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CauseProtocolError, ev.Cause)
	assert.Equal(t, sipws.CloseMessageTooBig, ev.Code)
	assert.Zero(t, len(ts.Msgs))
}

func TestFrameHugeDeclaredLengthFailsAtOnce(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxMessageSize: 1000})
	c, _ := frDial(t, ts)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	c.writeRaw(append(frHeader64(true, frOpBinary, 1<<40), make([]byte, 64)...))
	f := c.mustReadFrame()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	require.Equal(t, frOpClose, f.Op)
	code, _ := f.closeCode()
	assert.Equal(t, uint16(1009), code)
	assert.Less(t, elapsed, time.Second, "the close frame must come at once")
	c.expectEOF(time.Second)
	ev := frEnded(t, ts, c)
	assert.Equal(t, sipws.CauseProtocolError, ev.Cause)
	assert.Equal(t, sipws.CloseMessageTooBig, ev.Code)

	allocated := after.TotalAlloc - before.TotalAlloc
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	assert.Less(t, allocated, uint64(16<<20), "bytes allocated while handling a 2^40-byte header")
	assert.Less(t, grown, int64(16<<20), "heap growth while handling a 2^40-byte header")
}

// Under the limit, memory follows the bytes that arrive, not the length the
// header declares.
func TestFrameDeclaredLengthNotPreallocated(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxMessageSize: sipws.MaxMaxMessageSize, FrameTimeout: 300 * time.Millisecond})
	c, _ := frDial(t, ts)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c.writeRaw(append(frHeader64(true, frOpBinary, 60<<20), make([]byte, 64)...))
	f := c.mustReadFrame()
	runtime.ReadMemStats(&after)

	require.Equal(t, frOpClose, f.Op)
	code, _ := f.closeCode()
	assert.Equal(t, uint16(1008), code)
	allocated := after.TotalAlloc - before.TotalAlloc
	assert.Less(t, allocated, uint64(8<<20), "bytes allocated for a 60 MiB header followed by 64 bytes")
	c.expectEOF(time.Second)
}

func TestFrameStalledFrameTimesOut(t *testing.T) {
	payloadStall := append([]byte{0x82, 0x80 | 126}, binary.BigEndian.AppendUint16(nil, 60000)...)
	payloadStall = append(payloadStall, 1, 2, 3, 4)
	payloadStall = append(payloadStall, make([]byte, 10)...)
	cases := []struct {
		name string
		b    []byte
	}{
		{"60 KB declared, 10 bytes sent", payloadStall},
		{"first header byte only", []byte{0x81}},
		{"half of the 16-bit length", []byte{0x81, 0x80 | 126, 0x01}},
		{"half of the mask", []byte{0x81, 0x85, 1, 2}},
		{"ping payload cut", []byte{0x89, 0x85, 1, 2, 3, 4, 'a'}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{FrameTimeout: 300 * time.Millisecond})
			c, _ := frDial(t, ts)
			start := time.Now()
			c.writeRaw(tc.b)
			frExpectFail(t, ts, c, 1008)
			elapsed := time.Since(start)
			assert.GreaterOrEqual(t, elapsed, 250*time.Millisecond, "closed before FrameTimeout")
			assert.Less(t, elapsed, 3*time.Second)
		})
	}
}

// FrameTimeout bounds one frame, not the time between frames or fragments.
func TestFrameTimeoutIsNotIdleTimeout(t *testing.T) {
	ts := startServer(t, sipws.Config{FrameTimeout: 200 * time.Millisecond})
	c, _ := frDial(t, ts)
	time.Sleep(400 * time.Millisecond) // idle past FrameTimeout
	c.sendText("after idle")
	assert.Equal(t, "after idle", string(ts.nextMsg(t).Msg.Data))
	c.writeFrame(false, 0, frOpText, []byte("first half, "), true)
	time.Sleep(400 * time.Millisecond) // idle between fragments
	c.writeFrame(true, 0, frOpCont, []byte("second half"), true)
	assert.Equal(t, "first half, second half", string(ts.nextMsg(t).Msg.Data))
	assert.Zero(t, len(ts.Closed))
}

func TestFrameClientCloseEchoed(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)
	c.sendClose(1000, "bye")
	f := c.expectClose(1000, time.Second)
	frServerFrame(t, f)
	ev := frEnded(t, ts, c)
	assert.Equal(t, sipws.CausePeer, ev.Cause)
	assert.Equal(t, sipws.CloseNormal, ev.Code)
	assert.Equal(t, "bye", ev.Reason)
	assert.NoError(t, ev.Err)
	assert.Zero(t, ts.Registry().Len())
}

func TestFrameClientCloseEmptyPayload(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, _ := frDial(t, ts)
	c.writeFrame(true, 0, frOpClose, nil, true)
	frServerFrame(t, c.expectClose(1000, time.Second))
	ev := frEnded(t, ts, c)
	assert.Equal(t, sipws.CausePeer, ev.Cause)
	assert.Equal(t, sipws.CloseNoStatus, ev.Code, "no code received is 1005 (RFC 6455 §7.1.5)")
	assert.Empty(t, ev.Reason)
}

func TestFrameClientCloseCodesEchoed(t *testing.T) {
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			reason := fmt.Sprintf("why %d é", code)
			c.sendClose(code, reason)
			frServerFrame(t, c.expectClose(code, time.Second))
			ev := frEnded(t, ts, c)
			assert.Equal(t, sipws.CausePeer, ev.Cause)
			assert.Equal(t, sipws.CloseCode(code), ev.Code)
			assert.Equal(t, reason, ev.Reason)
		})
	}
	t.Run("longest reason", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, sipws.Config{})
		c, _ := frDial(t, ts)
		reason := string(frText(123, 0))
		c.sendClose(4000, reason)
		frServerFrame(t, c.expectClose(4000, time.Second))
		ev := frEnded(t, ts, c)
		assert.Equal(t, sipws.CausePeer, ev.Cause)
		assert.Equal(t, reason, ev.Reason)
	})
}

func TestFrameClientCloseInvalid(t *testing.T) {
	type tcase struct {
		name    string
		payload []byte
		want    uint16
	}
	var cases []tcase
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, tcase{fmt.Sprintf("code %d", code), binary.BigEndian.AppendUint16(nil, code), 1002})
	}
	cases = append(cases,
		tcase{"1-byte payload", []byte{0x03}, 1002},
		tcase{"invalid UTF-8 reason", append([]byte{0x03, 0xe8}, "bye\xff"...), 1007},
		tcase{"truncated UTF-8 reason", append([]byte{0x03, 0xe8}, "\xe2\x82"...), 1007},
		tcase{"surrogate in reason", append([]byte{0x03, 0xe8}, "\xed\xa0\x80"...), 1007},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeFrame(true, 0, frOpClose, tc.payload, true)
			frExpectFail(t, ts, c, tc.want)
		})
	}
}

func TestFrameDataAfterCloseNotDelivered(t *testing.T) {
	cases := []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{"close then text in one write", [][]byte{
			frMasked(true, frOpClose, []byte{0x03, 0xe8}),
			frMasked(true, frOpText, []byte("OPTIONS sip:a@b SIP/2.0\r\n\r\n")),
		}, nil},
		{"text, close, text, binary in one write", [][]byte{
			frMasked(true, frOpText, []byte("before")),
			frMasked(true, frOpClose, []byte{0x03, 0xe8}),
			frMasked(true, frOpText, []byte("after")),
			frMasked(true, frOpBinary, []byte("after too")),
		}, []string{"before"}},
		{"close inside a fragmented message", [][]byte{
			frMasked(false, frOpText, []byte("partial ")),
			frMasked(true, frOpClose, []byte{0x03, 0xe8}),
			frMasked(true, frOpCont, []byte("end")),
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeRaw(bytes.Join(tc.frames, nil))
			frServerFrame(t, c.expectClose(1000, time.Second))
			ev := frEnded(t, ts, c)
			assert.Equal(t, sipws.CausePeer, ev.Cause)
			// OnMessage runs on the goroutine that ran OnClosed, so every
			// delivery is already in the channel.
			var got []string
			for len(ts.Msgs) > 0 {
				got = append(got, string((<-ts.Msgs).Msg.Data))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// frSeqMessage is message seq of the ordering test: its type, its payload
// (the sequence number, then filler of a size that varies) and how many
// fragments it is sent in.
func frSeqMessage(seq int) (op byte, p []byte, frags int) {
	sizes := []int{8, 100, 125, 126, 500, 2000, 10000, 30000}
	n := sizes[seq%len(sizes)] + seq%7
	head := fmt.Appendf(nil, "%08d", seq)
	op, body := frOpText, frText(n-len(head), seq)
	if seq%3 == 2 {
		op, body = frOpBinary, frBin(n-len(head), seq)
	}
	frags = 1
	if seq%5 == 0 {
		frags = 2 + seq%3
	}
	return op, append(head, body...), frags
}

// frFragment encodes a message in frags fragments, with a ping after the
// first when ping is not nil.
func frFragment(op byte, p []byte, frags int, ping []byte) []byte {
	var b []byte
	for i := range frags {
		part := p[len(p)*i/frags : len(p)*(i+1)/frags]
		fop := frOpCont
		if i == 0 {
			fop = op
		}
		b = append(b, frMasked(i == frags-1, fop, part)...)
		if i == 0 && ping != nil {
			b = append(b, frMasked(true, frOpPing, ping)...)
		}
	}
	return b
}

func TestFrameOrderedExactlyOnceWithEcho(t *testing.T) {
	const total = 1000
	ts := startServer(t, sipws.Config{
		SendQueueSize: 64 << 20,
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			_ = c.SendMessage(m.Type, m.Data)
		},
	})
	c, conn := frDial(t, ts)

	// The client reads the echoes while it writes.
	type result struct {
		frames []frame
		pongs  int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for len(r.frames) < total {
			f, err := c.readFrame()
			if err != nil {
				r.err = err
				break
			}
			if f.Op == frOpPong {
				r.pongs++
				continue
			}
			r.frames = append(r.frames, f)
		}
		done <- r
	}()

	var buf []byte
	pings := 0
	for seq := range total {
		op, p, frags := frSeqMessage(seq)
		var ping []byte
		if frags > 1 && seq%50 == 0 {
			ping = fmt.Appendf(nil, "ping %d", seq)
			pings++
		}
		buf = append(buf, frFragment(op, p, frags, ping)...)
		if len(buf) > 48<<10 || seq%11 == 0 {
			c.writeRaw(buf)
			buf = buf[:0]
		}
	}
	c.writeRaw(buf)

	// Collect every message first: Data belongs to the host, so a message
	// kept while later ones are read must stay intact.
	msgs := make([]recvMsg, total)
	for seq := range total {
		msgs[seq] = ts.nextMsg(t)
	}
	for seq, m := range msgs {
		op, p, _ := frSeqMessage(seq)
		require.Equal(t, conn.ID(), m.Conn.ID())
		want := sipws.MessageText
		if op == frOpBinary {
			want = sipws.MessageBinary
		}
		require.Equal(t, want, m.Msg.Type, "message %d", seq)
		frEqualBytes(t, p, m.Msg.Data, fmt.Sprintf("message %d", seq))
	}

	var r result
	select {
	case r = <-done:
	case <-time.After(4 * ioTimeout):
		t.Fatal("the echoes did not all arrive")
	}
	require.NoError(t, r.err)
	require.Len(t, r.frames, total)
	for seq, f := range r.frames {
		op, p, _ := frSeqMessage(seq)
		frServerFrame(t, f)
		require.Equal(t, op, f.Op, "echo %d", seq)
		frEqualBytes(t, p, f.Payload, fmt.Sprintf("echo %d", seq))
	}
	assert.Equal(t, pings, r.pongs, "every ping is answered")
	assert.Zero(t, len(ts.Msgs), "a message was delivered twice")
}

func TestFrameConcurrentClientsInOrder(t *testing.T) {
	const clients, each = 50, 100
	ts := startServer(t, sipws.Config{})
	cs := make([]*rawClient, clients)
	for i := range cs {
		cs[i], _ = frDial(t, ts)
	}

	payload := func(client, seq int) []byte {
		return append(fmt.Appendf(nil, "c%02d s%03d ", client, seq), frText((client*7+seq*13)%400, seq)...)
	}
	sent := make(chan struct{})
	defer func() { <-sent }() // no assertion from a writer after the test
	go func() {
		defer close(sent)
		concurrently(clients, func(i int) {
			c := cs[i]
			for seq := range each {
				p := payload(i, seq)
				var b []byte
				if seq%10 == 3 {
					b = frFragment(frOpText, p, 2, nil)
				} else {
					b = frMasked(true, frOpText, p)
				}
				if !assert.NoError(t, c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))) {
					return
				}
				if _, err := c.conn.Write(b); !assert.NoError(t, err, "client %d message %d", i, seq) {
					return
				}
			}
		})
	}()

	got := make([][]string, clients)
	connOf := make([]sipws.ConnID, clients)
	deadline := time.After(4 * ioTimeout)
	for n := 0; n < clients*each; n++ {
		var m recvMsg
		select {
		case m = <-ts.Msgs:
		case <-deadline:
			t.Fatalf("only %d of %d messages delivered", n, clients*each)
		}
		var client, seq int
		_, err := fmt.Sscanf(string(m.Msg.Data), "c%02d s%03d ", &client, &seq)
		require.NoError(t, err, "message %q", m.Msg.Data)
		require.True(t, client >= 0 && client < clients)
		if connOf[client] == 0 {
			connOf[client] = m.Conn.ID()
		}
		require.Equal(t, connOf[client], m.Conn.ID(), "client %d's messages came on two connections", client)
		frEqualBytes(t, payload(client, seq), m.Msg.Data, fmt.Sprintf("client %d message %d", client, seq))
		got[client] = append(got[client], fmt.Sprint(seq))
	}

	ids := map[sipws.ConnID]bool{}
	for i := range clients {
		want := make([]string, each)
		for seq := range each {
			want[seq] = fmt.Sprint(seq)
		}
		assert.Equal(t, want, got[i], "client %d: messages out of order, lost or repeated", i)
		ids[connOf[i]] = true
	}
	assert.Len(t, ids, clients, "each client has its own connection")
	// Nothing more than the 5,000: close all clients, shut down, and look.
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { _ = c.conn.Close() })
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	require.NoError(t, ts.Shutdown(ctx))
	assert.Zero(t, len(ts.Msgs), "extra messages delivered")
	assert.Len(t, ts.Closed, clients, "one OnClosed per connection")
}
