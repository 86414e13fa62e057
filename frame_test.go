package sipws_test

// Wire-format tests (frame.go): RFC 6455 §5.2 headers and length rules as a
// raw client on a loopback socket sends them, one rule per test; and the
// frame helpers the read, write and close tests share.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Opcodes as the client writes them.
const (
	frOpCont   byte = 0x0
	frOpText   byte = 0x1
	frOpBinary byte = 0x2
	frOpClose  byte = 0x8
	frOpPing   byte = 0x9
	frOpPong   byte = 0xA
)

// frDial opens a "sip" connection to ts and returns the client and the
// server's side of it.
func frDial(t *testing.T, ts *testServer) (*rawClient, *sipws.Conn) {
	t.Helper()
	c := dialWS(t, ts.Addr, "sip")
	return c, ts.nextOpened(t)
}

// frMasked builds a masked client frame with RSV=0 and the minimal length.
func frMasked(fin bool, op byte, payload []byte) []byte {
	return encodeFrame(fin, 0, op, payload, true)
}

// frEncodeForm builds a masked frame whose payload length is written in the
// given form whatever its size: 7 (in the second byte), 16 or 64 bits.
func frEncodeForm(fin bool, op byte, payload []byte, form int) []byte {
	b := []byte{op & 0x0f}
	if fin {
		b[0] |= 0x80
	}
	b = append(b, frLenBytes(uint64(len(payload)), form)...)
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i%4])
	}
	return b
}

// frLenBytes is the masked length field of a header in a given form.
func frLenBytes(n uint64, form int) []byte {
	switch form {
	case 7:
		return []byte{0x80 | byte(n)}
	case 16:
		return binary.BigEndian.AppendUint16([]byte{0x80 | 126}, uint16(n))
	default:
		return binary.BigEndian.AppendUint64([]byte{0x80 | 127}, n)
	}
}

// frText returns valid UTF-8 of exactly n bytes mixing 1- to 4-byte
// characters; seed varies it.
func frText(n, seed int) []byte {
	chars := []string{"a", "é", "€", "😀", "Z", "ß", "中", " "}
	b := make([]byte, 0, n)
	for i := seed; len(b) < n; i++ {
		s := chars[i%len(chars)]
		if len(b)+len(s) > n {
			s = "x"
		}
		b = append(b, s...)
	}
	return b
}

// frBin returns n bytes that are not valid UTF-8 (when n > 0); seed varies
// them.
func frBin(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + seed*17 + i>>8)
	}
	if n > 0 {
		b[0] = 0xff
	}
	return b
}

// frEqualBytes fails unless got is want, reporting the first difference
// instead of dumping large payloads.
func frEqualBytes(t *testing.T, want, got []byte, what string) {
	t.Helper()
	if bytes.Equal(want, got) {
		return
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	t.Fatalf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
}

// frServerFrame checks what RFC 6455 §5.1–5.2 requires of every frame this
// server sends: FIN=1 (it never fragments), RSV=0, unmasked.
func frServerFrame(t *testing.T, f frame) {
	t.Helper()
	assert.True(t, f.Fin, "server frame %#x must have FIN=1", f.Op)
	assert.Zero(t, f.Rsv, "server frame %#x must have RSV=0", f.Op)
	assert.False(t, f.Masked, "server frame %#x must be unmasked", f.Op)
}

// frReadMinimal reads one frame from the server like rawClient.readFrame,
// and also checks that its length is in the minimal form (RFC 6455 §5.2:
// "the minimal number of bytes MUST be used to encode the length").
func frReadMinimal(t *testing.T, c *rawClient) frame {
	t.Helper()
	require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(ioTimeout)))
	h, err := c.br.Peek(2)
	require.NoError(t, err)
	var hdr []byte
	switch h[1] & 0x7f {
	case 126:
		hdr, err = c.br.Peek(4)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, binary.BigEndian.Uint16(hdr[2:]), uint16(126), "16-bit length form for a short payload")
	case 127:
		hdr, err = c.br.Peek(10)
		require.NoError(t, err)
		assert.Greater(t, binary.BigEndian.Uint64(hdr[2:]), uint64(0xffff), "64-bit length form for a payload under 64 KiB")
	}
	return c.mustReadFrame()
}

// frExpectFail reads the server's close frame for a violation, checks its
// code, a valid UTF-8 reason and that TCP is closed within 1 s, then checks
// OnClosed (exactly once, CauseProtocolError, the same code) and that no
// message was delivered.
func frExpectFail(t *testing.T, ts *testServer, c *rawClient, code uint16) {
	t.Helper()
	f := c.expectClose(code, time.Second)
	frServerFrame(t, f)
	_, reason := f.closeCode()
	assert.True(t, utf8.ValidString(reason), "close reason %q", reason)
	ev := frEnded(t, ts, c)
	assert.Equal(t, sipws.CauseProtocolError, ev.Cause)
	assert.Equal(t, sipws.CloseCode(code), ev.Code)
	assert.Equal(t, sipws.CloseCode(code), sipws.CloseStatus(ev.Err), "Closed.Err %v", ev.Err)
	assert.Zero(t, len(ts.Msgs), "no message may be delivered")
}

// frEnded waits for OnClosed, then closes the client socket and shuts the
// server down — Shutdown returns only once every connection goroutine and its
// hooks have returned — and checks that OnClosed fired exactly once.
func frEnded(t *testing.T, ts *testServer, c *rawClient) sipws.CloseEvent {
	t.Helper()
	ev := ts.nextClosed(t)
	_ = c.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	require.NoError(t, ts.Shutdown(ctx))
	require.Zero(t, len(ts.Closed), "OnClosed fired more than once for one connection")
	return ev
}

// ---------------------------------------------------------------- data frames

// RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the
// length". A length in a longer form than it needs fails the connection with
// 1002, whatever the frame; the shortest lengths of each form are accepted.
func TestFrameNonMinimalLengthRefused(t *testing.T) {
	cases := []struct {
		name string
		op   byte
		n    int
		form int
	}{
		{"text 5 B in 16-bit form", frOpText, 5, 16},
		{"text 125 B in 16-bit form", frOpText, 125, 16},
		{"text 5 B in 64-bit form", frOpText, 5, 64},
		{"binary 0 B in 64-bit form", frOpBinary, 0, 64},
		{"binary 200 B in 64-bit form", frOpBinary, 200, 64},
		{"binary 65535 B in 64-bit form", frOpBinary, 0xffff, 64},
		{"continuation 5 B in 16-bit form", frOpCont, 5, 16},
		{"ping 5 B in 16-bit form", frOpPing, 5, 16},
		{"ping 5 B in 64-bit form", frOpPing, 5, 64},
		{"close 2 B in 16-bit form", frOpClose, 2, 16},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{MaxMessageSize: 1 << 20})
			c, _ := frDial(t, ts)
			p := frText(tc.n, tc.n)
			switch tc.op {
			case frOpBinary:
				p = frBin(tc.n, tc.n)
			case frOpClose:
				p = []byte{0x03, 0xe8}
			}
			if tc.op == frOpCont {
				c.writeRaw(frMasked(false, frOpText, []byte("first")))
			}
			c.writeRaw(frEncodeForm(true, tc.op, p, tc.form))
			f := c.expectClose(1002, time.Second)
			_, reason := f.closeCode()
			assert.Equal(t, "non-minimal payload length", reason)
			ev := frEnded(t, ts, c)
			assert.Equal(t, sipws.CauseProtocolError, ev.Cause)
			assert.Equal(t, sipws.CloseProtocolError, ev.Code)
			assert.Zero(t, len(ts.Msgs), "no message may be delivered")
		})
	}
	for _, tc := range []struct {
		name string
		n    int
		form int
	}{
		{"126 B in 16-bit form", 126, 16},
		{"65535 B in 16-bit form", 0xffff, 16},
		{"65536 B in 64-bit form", 0x10000, 64},
	} {
		t.Run("minimal "+tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{MaxMessageSize: 1 << 20})
			c, _ := frDial(t, ts)
			p := frBin(tc.n, tc.n)
			c.writeRaw(frEncodeForm(true, frOpBinary, p, tc.form))
			m := ts.nextMsg(t)
			assert.Equal(t, sipws.MessageBinary, m.Msg.Type)
			frEqualBytes(t, p, m.Msg.Data, "payload")
		})
	}
}

// -------------------------------------------------------------- fragmentation

// ------------------------------------------------------------- control frames

func TestFrameControlViolations(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
	}{
		{"ping with 126-byte payload", frMasked(true, frOpPing, frBin(126, 1))},
		{"ping with 1000-byte payload", frMasked(true, frOpPing, frBin(1000, 1))},
		{"pong with 126-byte payload", frMasked(true, frOpPong, frBin(126, 1))},
		{"close with 126-byte payload", frMasked(true, frOpClose, append([]byte{0x03, 0xe8}, frText(124, 0)...))},
		{"ping with FIN=0", frMasked(false, frOpPing, []byte("frag"))},
		{"pong with FIN=0", frMasked(false, frOpPong, []byte("frag"))},
		{"close with FIN=0", frMasked(false, frOpClose, []byte{0x03, 0xe8})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeRaw(tc.frame)
			frExpectFail(t, ts, c, 1002)
		})
	}
}

// ------------------------------------------------------ reserved bits, opcodes

func TestFrameHeaderViolations(t *testing.T) {
	type tcase struct {
		name  string
		frame []byte
	}
	var cases []tcase
	for _, rsv := range []byte{1, 2, 4, 7} {
		cases = append(cases,
			tcase{fmt.Sprintf("text RSV=%d", rsv), encodeFrame(true, rsv, frOpText, []byte("x"), true)},
			tcase{fmt.Sprintf("ping RSV=%d", rsv), encodeFrame(true, rsv, frOpPing, []byte("x"), true)},
		)
	}
	cases = append(cases, tcase{"continuation RSV1", append(
		frMasked(false, frOpText, []byte("a")), encodeFrame(true, 4, frOpCont, []byte("b"), true)...)})
	for _, op := range []byte{0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, tcase{fmt.Sprintf("reserved opcode %#x", op), frMasked(true, op, []byte("x"))})
	}
	cases = append(cases,
		tcase{"reserved opcode 0x3 empty", frMasked(true, 0x3, nil)},
		tcase{"reserved opcode inside a fragmented message", append(
			frMasked(false, frOpText, []byte("a")), frMasked(true, 0xB, nil)...)},
		tcase{"unmasked text", encodeFrame(true, 0, frOpText, []byte("hello"), false)},
		tcase{"unmasked binary", encodeFrame(true, 0, frOpBinary, []byte("hello"), false)},
		tcase{"unmasked ping", encodeFrame(true, 0, frOpPing, []byte("hello"), false)},
		tcase{"unmasked close", encodeFrame(true, 0, frOpClose, []byte{0x03, 0xe8}, false)},
		tcase{"unmasked empty text", encodeFrame(true, 0, frOpText, nil, false)},
		tcase{"64-bit length with MSB set", append([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}, "hello"...)},
		tcase{"64-bit length all ones", append([]byte{0x82, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, "hello"...)},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{})
			c, _ := frDial(t, ts)
			c.writeRaw(tc.frame)
			frExpectFail(t, ts, c, 1002)
		})
	}
}

// Every close reason the read path sends for a violation, as the peer reads
// it: plain RFC prose, with no name from inside the package.
func TestFrameViolationReasons(t *testing.T) {
	cases := []struct {
		name   string
		frames [][]byte
		code   uint16
		reason string
	}{
		{"fragmented ping", [][]byte{frMasked(false, frOpPing, []byte("x"))}, 1002, "fragmented control frame"},
		{"fragmented close", [][]byte{frMasked(false, frOpClose, []byte{0x03, 0xe8})}, 1002, "fragmented control frame"},
		{"text inside a fragmented message", [][]byte{
			frMasked(false, frOpText, []byte("a")), frMasked(true, frOpText, []byte("b")),
		}, 1002, "new data frame inside a fragmented message"},
		{"binary inside a fragmented message", [][]byte{
			frMasked(false, frOpBinary, []byte("a")), frMasked(false, frOpBinary, []byte("b")),
		}, 1002, "new data frame inside a fragmented message"},
		{"orphan continuation", [][]byte{frMasked(true, frOpCont, []byte("a"))}, 1002, "continuation frame without a message to continue"},
		{"control frame over 125 bytes", [][]byte{frMasked(true, frOpPing, frBin(126, 1))}, 1002, "control frame payload over 125 bytes"},
		{"reserved bits", [][]byte{encodeFrame(true, 4, frOpText, []byte("x"), true)}, 1002, "reserved bits set"},
		{"unmasked", [][]byte{encodeFrame(true, 0, frOpText, []byte("x"), false)}, 1002, "unmasked frame"},
		{"reserved opcode", [][]byte{frMasked(true, 0xB, nil)}, 1002, "reserved opcode 0xb"},
		{"64-bit length MSB", [][]byte{append([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4}, "hello"...)},
			1002, "64-bit payload length with the most significant bit set"},
		{"non-minimal length", [][]byte{frEncodeForm(true, frOpText, []byte("x"), 16)}, 1002, "non-minimal payload length"},
		{"close with a 1-byte payload", [][]byte{frMasked(true, frOpClose, []byte{3})}, 1002, "close frame with a 1-byte payload"},
		{"invalid close code", [][]byte{frMasked(true, frOpClose, []byte{0x03, 0xed})}, 1002, "invalid close code 1005"},
		{"invalid UTF-8 in a close reason", [][]byte{frMasked(true, frOpClose, []byte{0x03, 0xe8, 0xff})}, 1007, "invalid UTF-8 in the close reason"},
		{"invalid UTF-8 in a text message", [][]byte{frMasked(true, frOpText, []byte{0xff})}, 1007, "invalid UTF-8 in a text message"},
		{"message too big", [][]byte{frMasked(true, frOpBinary, frBin(1025, 1))}, 1009, "message over 1024 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, sipws.Config{MaxMessageSize: 1024})
			c, _ := frDial(t, ts)
			c.writeRaw(bytes.Join(tc.frames, nil))
			f := c.expectClose(tc.code, time.Second)
			_, reason := f.closeCode()
			assert.Equal(t, tc.reason, reason)
			ev := frEnded(t, ts, c)
			assert.Equal(t, tc.reason, ev.Reason, "Closed.Reason")
		})
	}
}

// ---------------------------------------------------------------------- UTF-8

// ----------------------------------------------------------------- size limit

// frHeader64 is a masked frame header declaring n bytes in the 64-bit form.
func frHeader64(fin bool, op byte, n uint64) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	b = append(b, frLenBytes(n, 64)...)
	return append(b, 0x11, 0x22, 0x33, 0x44)
}

// ------------------------------------------------------------ close handshake

// ------------------------------------------------------- server-side close

// ------------------------------------------------------------ server sending

// ------------------------------------------------- ordering and exactly-once
