package sipws

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNegotiateDeflate is the negotiation matrix of RFC 7692 §5 and §7.1:
// what the server answers (or that it answers nothing) for each offer.
func TestNegotiateDeflate(t *testing.T) {
	const base = "permessage-deflate; client_no_context_takeover"
	for _, tc := range []struct {
		name   string
		values []string
		want   string // "" when compression is not negotiated
	}{
		{"chromium", []string{"permessage-deflate; client_max_window_bits"}, base},
		{"firefox", []string{"permessage-deflate"}, base},
		{"no header", nil, ""},
		{"other extension only", []string{"x-webkit-deflate-frame"}, ""},
		{"case of the name", []string{"Permessage-Deflate"}, base},
		{"client_max_window_bits=10", []string{"permessage-deflate; client_max_window_bits=10"}, base},
		{"client_max_window_bits quoted", []string{`permessage-deflate; client_max_window_bits="12"`}, base},
		{"client_max_window_bits=7 declined", []string{"permessage-deflate; client_max_window_bits=7"}, ""},
		{"client_max_window_bits=16 declined", []string{"permessage-deflate; client_max_window_bits=16"}, ""},
		{"client_max_window_bits=08 declined", []string{"permessage-deflate; client_max_window_bits=08"}, ""},
		{"client_max_window_bits=x declined", []string{"permessage-deflate; client_max_window_bits=x"}, ""},
		{"server_max_window_bits=10", []string{"permessage-deflate; server_max_window_bits=10"}, base + "; server_max_window_bits=10"},
		{"server_max_window_bits=8", []string{"permessage-deflate;server_max_window_bits=8"}, base + "; server_max_window_bits=8"},
		{"server_max_window_bits quoted", []string{`permessage-deflate; server_max_window_bits="15"`}, base + "; server_max_window_bits=15"},
		{"server_max_window_bits without value declined", []string{"permessage-deflate; server_max_window_bits"}, ""},
		{"server_no_context_takeover", []string{"permessage-deflate; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"client_no_context_takeover", []string{"permessage-deflate; client_no_context_takeover"}, base},
		{"both no_context_takeover", []string{"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"no_context_takeover with a value declined", []string{"permessage-deflate; server_no_context_takeover=1"}, ""},
		{"duplicate parameter declined", []string{"permessage-deflate; client_max_window_bits; client_max_window_bits"}, ""},
		{"duplicate differing in case declined", []string{"permessage-deflate; server_no_context_takeover; Server_No_Context_Takeover"}, ""},
		{"unknown parameter declined", []string{"permessage-deflate; foo=bar"}, ""},
		{"declined offer, next accepted", []string{"permessage-deflate; foo, permessage-deflate; server_max_window_bits=12"}, base + "; server_max_window_bits=12"},
		{"offers on two lines", []string{"permessage-deflate; server_max_window_bits=7", "permessage-deflate; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"first acceptable of several", []string{"x-foo, permessage-deflate; server_max_window_bits=9, permessage-deflate"}, base + "; server_max_window_bits=9"},
		{"whitespace and empty elements", []string{" ,permessage-deflate \t;\tclient_max_window_bits , "}, base},
		{"quoted value with a comma", []string{`x-foo; a="1,2", permessage-deflate`}, base},
		{"malformed: unterminated quote", []string{`permessage-deflate; client_max_window_bits="15`}, ""},
		{"malformed: missing parameter name", []string{"permessage-deflate; =15"}, ""},
		{"malformed: garbage after name", []string{"permessage-deflate foo"}, ""},
		{"malformed: empty value", []string{"permessage-deflate; server_max_window_bits="}, ""},
		{"malformed elsewhere ignores all", []string{"permessage-deflate", "x-foo; @"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := negotiateDeflate(tc.values)
			if tc.want == "" {
				assert.False(t, ok, "negotiated %q", p.response())
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.want, p.response())
		})
	}
}

// inflateStd inflates a compressed message with the standard library's
// decompressor, the history (the peer's window) as its dictionary.
func inflateStd(t testing.TB, p, hist []byte) []byte {
	t.Helper()
	r := stdflate.NewReaderDict(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail[:])), hist)
	out, err := io.ReadAll(r)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		require.NoError(t, err)
	}
	return out
}

// TestDeflaterHistory checks that what compress produces inflates, in a
// standard decompressor that keeps the peer's window (context takeover),
// to what was sent, over a run of messages long enough to roll the history;
// and that within a window of 2^8 bytes no reference reaches past it.
func TestDeflaterHistory(t *testing.T) {
	for _, p := range []deflateParams{{}, {serverNoContext: true}, {serverBits: 8}, {serverBits: 10}} {
		d := newDeflater(p)
		var window []byte // what the peer's inflater holds
		compressed, total := 0, 0
		for i := range 60 {
			msg := []byte(strings.Repeat("SIP/2.0 200 OK\r\nVia: SIP/2.0/WSS a.invalid;branch=z9hG4bK", 1+i%5) + strings.Repeat("x", i*37%300))
			out, ok := d.compress(nil, msg)
			total += len(msg)
			if !ok {
				continue
			}
			hist := window
			if p.serverNoContext {
				hist = nil
			}
			if lim := d.window; len(hist) > lim {
				// Only the last window's bytes: a reference past them
				// would not inflate to the message.
				hist = hist[len(hist)-lim:]
			}
			require.Equal(t, string(msg), string(inflateStd(t, out, hist)), "message %d with %+v", i, p)
			d.sent(msg)
			window = append(window, msg...)
			compressed += len(out)
			assert.LessOrEqual(t, cap(d.hist), d.keep)
		}
		// A message longer than the encoder's block (32 KiB), after the
		// history: it spans blocks, each referring back within the window.
		var long strings.Builder
		for i := 0; long.Len() < 100<<10; i++ {
			fmt.Fprintf(&long, "line %d of a long message, %x\r\n", i, i*i*7919)
		}
		if out, ok := d.compress(nil, []byte(long.String())); ok {
			hist := window
			if p.serverNoContext {
				hist = nil
			}
			hist = hist[max(0, len(hist)-d.window):]
			require.Equal(t, long.String(), string(inflateStd(t, out, hist)), "long message with %+v", p)
		} else {
			assert.Less(t, d.window, long.Len(), "only a message past the window goes as it is")
		}
		t.Logf("%+v: %d bytes to %d", p, total, compressed)
		assert.Positive(t, compressed)
	}
}

// TestInflateBounds checks the inflate limit: a message that inflates past
// the limit stops there (errInflateTooBig) having grown its buffer to no more
// than the limit and one byte, and data that is not DEFLATE fails.
func TestInflateBounds(t *testing.T) {
	s, err := New(Config{})
	require.NoError(t, err)
	var bomb bytes.Buffer
	w, _ := stdflate.NewWriter(&bomb, stdflate.BestCompression)
	_, _ = w.Write(make([]byte, 10<<20))
	require.NoError(t, w.Flush())
	zb := bomb.Bytes()[:bomb.Len()-4]
	const limit = 64 << 10
	most := 0
	_, err = s.inflate(zb, limit, func(n int) error { most = max(most, n); return nil })
	assert.ErrorIs(t, err, errInflateTooBig)
	assert.Equal(t, limit, most, "largest buffer asked for")

	// Exactly the limit inflates; one byte more does not.
	var exact bytes.Buffer
	w, _ = stdflate.NewWriter(&exact, stdflate.BestSpeed)
	_, _ = w.Write(bytes.Repeat([]byte("ab"), limit/2))
	require.NoError(t, w.Flush())
	out, err := s.inflate(exact.Bytes()[:exact.Len()-4], limit, func(int) error { return nil })
	require.NoError(t, err)
	assert.Len(t, out, limit)
	_, err = s.inflate(exact.Bytes()[:exact.Len()-4], limit-1, func(int) error { return nil })
	assert.ErrorIs(t, err, errInflateTooBig)

	out, err = s.inflate(zb, 20<<20, func(int) error { return nil })
	require.NoError(t, err)
	assert.Len(t, out, 10<<20)

	_, err = s.inflate([]byte{0xff, 0xff, 0xff, 0xff}, limit, func(int) error { return nil })
	assert.ErrorIs(t, err, errInflateBad)

	refused := errors.New("refused")
	_, err = s.inflate(zb, limit, func(int) error { return refused })
	assert.ErrorIs(t, err, refused)
}

// FuzzExtensions feeds Sec-WebSocket-Extensions values to the negotiation:
// it must not panic, and what it accepts must parse back to the same
// parameters.
func FuzzExtensions(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits",
		`permessage-deflate; server_max_window_bits="10"; client_no_context_takeover, x-foo`,
		"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
		`a; b="c\"d", permessage-deflate`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := negotiateDeflate([]string{s})
		if !ok {
			return
		}
		q, ok := negotiateDeflate([]string{p.response()})
		if !ok || q != p {
			t.Fatalf("%q: answer %q parses to %+v, %v", s, p.response(), q, ok)
		}
	})
}

// FuzzInflate feeds compressed messages to inflate: never a panic, never
// more than the limit.
func FuzzInflate(f *testing.F) {
	var b bytes.Buffer
	w, _ := stdflate.NewWriter(&b, stdflate.DefaultCompression)
	_, _ = w.Write([]byte(strings.Repeat("REGISTER sip:a SIP/2.0\r\n", 20)))
	_ = w.Flush()
	f.Add(b.Bytes()[:b.Len()-4])
	f.Add([]byte{0x00})
	f.Add([]byte{0x03, 0x00})
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		const limit = 4 << 10
		out, err := s.inflate(p, limit, func(n int) error {
			if n > limit {
				t.Fatalf("buffer of %d bytes asked for", n)
			}
			return nil
		})
		if err == nil && len(out) > limit {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}

// sipFlow is the n-th run of what a JsSIP phone (3.10, in Chromium) and the
// proxy exchange for a REGISTER, a call (INVITE with Chromium's audio offer,
// 180, 200 with the answer, ACK, BYE, 200) and a MESSAGE with its 200. The
// identifiers — branches, tags, Call-IDs, ICE credentials, fingerprints —
// are new random-looking strings in each run and each transaction, as they
// are on the wire, so that a compressor finds only what really repeats.
func sipFlow(n int) []string {
	id := func(i, width int) string {
		var b strings.Builder
		x := uint64(n*1009+i+1) * 0x9e3779b97f4a7c15
		for b.Len() < width {
			x ^= x >> 29
			x *= 0xbf58476d1ce4e5b9
			fmt.Fprintf(&b, "%016x", x)
		}
		return b.String()[:width]
	}
	host := id(1, 12) + ".invalid"
	contact := "<sip:" + id(2, 8) + "@" + host + ";transport=ws;ob>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:" +
		id(3, 8) + "-" + id(4, 4) + "-4" + id(5, 3) + "-8" + id(6, 3) + "-" + id(7, 12) + ">\""
	sdp := func(k int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "v=0\r\no=- %s 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n", id(k, 19))
		fmt.Fprintf(&b, "a=extmap-allow-mixed\r\na=msid-semantic: WMS %s\r\n", id(k+1, 36))
		b.WriteString("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n")
		for c := range 3 {
			fmt.Fprintf(&b, "a=candidate:%s 1 udp 2122260223 192.168.%d.%d 5%04d typ host generation 0 network-id %d\r\n",
				id(k+2+c, 10), c, 10+k%200, (k*7+c)%10000, c+1)
		}
		fmt.Fprintf(&b, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=ice-options:trickle\r\n", id(k+6, 4), id(k+7, 24))
		fp := id(k+8, 64)
		b.WriteString("a=fingerprint:sha-256 ")
		for i := 0; i < 64; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(strings.ToUpper(fp[i : i+2]))
		}
		b.WriteString("\r\na=setup:actpass\r\na=mid:0\r\n" +
			"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" +
			"a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n" +
			"a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n" +
			"a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n")
		fmt.Fprintf(&b, "a=sendrecv\r\na=msid:%s %s\r\na=rtcp-mux\r\na=rtcp-rsize\r\n", id(k+1, 36), id(k+9, 36))
		b.WriteString("a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n" +
			"a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n" +
			"a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n")
		fmt.Fprintf(&b, "a=ssrc:%d cname:%s\r\na=ssrc:%d msid:%s %s\r\n", 1e9+k, id(k+10, 16), 1e9+k, id(k+1, 36), id(k+9, 36))
		return b.String()
	}
	type dialog struct{ callID, fromTag, toTag string }
	reg := dialog{id(10, 20), id(11, 10), id(12, 10)}
	call := dialog{id(20, 20), id(21, 10), id(22, 10)}
	msg := dialog{id(30, 20), id(31, 10), id(32, 10)}
	req := func(method, ruri string, d dialog, cseq int, branch, extra, body string, toTag bool) string {
		to := "<" + strings.Replace(ruri, "sip:sipws.test", "sip:alice@sipws.test", 1) + ">"
		if toTag {
			to += ";tag=" + d.toTag
		}
		return method + " " + ruri + " SIP/2.0\r\n" +
			"Via: SIP/2.0/WSS " + host + ";branch=z9hG4bK" + branch + "\r\n" +
			"Max-Forwards: 69\r\n" +
			"To: " + to + "\r\n" +
			"From: \"Alice\" <sip:alice@sipws.test>;tag=" + d.fromTag + "\r\n" +
			"Call-ID: " + d.callID + "\r\n" +
			fmt.Sprintf("CSeq: %d %s\r\n", cseq, method) + extra +
			"Supported: path,gruu,outbound\r\nUser-Agent: JsSIP 3.10.1\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	res := func(status, method string, d dialog, cseq int, branch, extra, body string) string {
		return "SIP/2.0 " + status + "\r\n" +
			"Via: SIP/2.0/WSS " + host + ";rport=" + fmt.Sprint(40000+n%20000) + ";received=192.0.2.7;branch=z9hG4bK" + branch + "\r\n" +
			"To: <sip:alice@sipws.test>;tag=" + d.toTag + "\r\n" +
			"From: \"Alice\" <sip:alice@sipws.test>;tag=" + d.fromTag + "\r\n" +
			"Call-ID: " + d.callID + "\r\n" +
			fmt.Sprintf("CSeq: %d %s\r\n", cseq, method) + extra +
			fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	allow := "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n"
	rr := "Record-Route: <sip:" + id(40, 32) + "@192.0.2.1:8080;transport=ws;lr;ob>\r\n"
	b1, b2, b3, b4, b5 := id(50, 16), id(51, 16), id(52, 16), id(53, 16), id(54, 16)
	offer, answer := sdp(100), sdp(200)
	return []string{
		req("REGISTER", "sip:sipws.test", reg, 1, b1, "Contact: "+contact+";expires=600\r\nExpires: 600\r\n"+allow, "", false),
		res("200 OK", "REGISTER", reg, 1, b1, "Contact: "+contact+";expires=600\r\nPath: <sip:"+id(41, 32)+"@192.0.2.1:8080;transport=ws;lr;ob>\r\n", ""),
		req("INVITE", "sip:bob@sipws.test", call, 2, b2, "Contact: "+contact+"\r\n"+allow+"Content-Type: application/sdp\r\n", offer, false),
		res("100 Trying", "INVITE", call, 2, b2, "", ""),
		res("180 Ringing", "INVITE", call, 2, b2, rr+"Contact: <sip:"+id(42, 8)+"@"+id(43, 12)+".invalid;transport=ws;ob>\r\n", ""),
		res("200 OK", "INVITE", call, 2, b2, rr+"Contact: <sip:"+id(42, 8)+"@"+id(43, 12)+".invalid;transport=ws;ob>\r\n"+allow+"Content-Type: application/sdp\r\n", answer),
		req("ACK", "sip:"+id(42, 8)+"@"+id(43, 12)+".invalid;transport=ws", call, 2, b3, "Route: <sip:"+id(40, 32)+"@192.0.2.1:8080;transport=ws;lr;ob>\r\n", "", true),
		req("MESSAGE", "sip:bob@sipws.test", msg, 3, b4, "Content-Type: text/plain\r\n", "Hi Bob! Call me back when you can.", false),
		res("200 OK", "MESSAGE", msg, 3, b4, "", ""),
		req("BYE", "sip:"+id(42, 8)+"@"+id(43, 12)+".invalid;transport=ws", call, 4, b5, "Route: <sip:"+id(40, 32)+"@192.0.2.1:8080;transport=ws;lr;ob>\r\n", "", true),
		res("200 OK", "BYE", call, 4, b5, "", ""),
	}
}

// BenchmarkDeflateModes compresses the messages of sipFlow, run after run,
// in each outbound mode: the stateless encoder with a history of keep
// bytes (0: no takeover, each message alone), and for comparison the
// standard library's compressor kept per connection (context takeover, its
// whole state held) and used per message (no takeover). It reports the CPU
// per message, the bytes out per 100 in (pct) and what a connection holds
// between messages (held-B).
func BenchmarkDeflateModes(b *testing.B) {
	var msgs [][]byte
	for n := range 20 {
		for _, m := range sipFlow(n) {
			msgs = append(msgs, []byte(m))
		}
	}
	report := func(b *testing.B, out, in int, held float64) {
		b.ReportMetric(100*float64(out)/float64(in), "pct")
		b.ReportMetric(held, "held-B")
	}
	for _, keep := range []int{0, 1 << 10, 2 << 10, 4 << 10, 8 << 10} {
		b.Run(fmt.Sprintf("stateless/history=%d", keep), func(b *testing.B) {
			d := newDeflater(deflateParams{})
			d.keep = keep
			out, in, i := 0, 0, 0
			var buf []byte
			for b.Loop() {
				m := msgs[i%len(msgs)]
				i++
				c, ok := d.compress(buf[:0], m)
				buf = c
				in += len(m)
				if ok {
					d.sent(m)
					out += len(c)
				} else {
					out += len(m)
				}
			}
			report(b, out, in, float64(cap(d.hist)))
		})
	}
	b.Run("stdlib/takeover", func(b *testing.B) {
		var w bytes.Buffer
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		fw, _ := stdflate.NewWriter(&w, stdflate.DefaultCompression)
		runtime.ReadMemStats(&ms1)
		held := float64(ms1.TotalAlloc - ms0.TotalAlloc)
		out, in, i := 0, 0, 0
		for b.Loop() {
			m := msgs[i%len(msgs)]
			i++
			w.Reset()
			_, _ = fw.Write(m)
			_ = fw.Flush()
			in += len(m)
			out += w.Len() - 4
		}
		report(b, out, in, held)
	})
	b.Run("stdlib/no-takeover", func(b *testing.B) {
		var w bytes.Buffer
		fw, _ := stdflate.NewWriter(&w, stdflate.DefaultCompression)
		out, in, i := 0, 0, 0
		for b.Loop() {
			m := msgs[i%len(msgs)]
			i++
			w.Reset()
			fw.Reset(&w)
			_, _ = fw.Write(m)
			_ = fw.Flush()
			in += len(m)
			out += w.Len() - 4
		}
		report(b, out, in, 0)
	})
}
