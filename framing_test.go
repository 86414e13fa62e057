package sipws_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks checkSIP, checkMSRP and CheckMessage against messages
// shaped like those JsSIP and SIP.js send, the RFC 4975 and RFC 7977 MSRP
// examples, and the ways a WebSocket message can hold other than exactly one
// of them.

// chkSIP builds a SIP message: the start line, the header lines and the body,
// with CRLF line ends and the empty line before the body.
func chkSIP(start string, headers []string, body string) []byte {
	var sb strings.Builder
	sb.WriteString(start + "\r\n")
	for _, h := range headers {
		sb.WriteString(h + "\r\n")
	}
	sb.WriteString("\r\n")
	sb.WriteString(body)
	return []byte(sb.String())
}

// chkCL is a Content-Length header for body.
func chkCL(body string) string { return "Content-Length: " + strconv.Itoa(len(body)) }

// chkJsSIPRegister is a REGISTER as JsSIP 3.10 sends it: a .invalid Via host,
// a Contact with transport=ws, +sip.ice, reg-id and +sip.instance, and
// Supported: path,gruu,outbound.
func chkJsSIPRegister() []byte {
	return chkSIP("REGISTER sip:example.com SIP/2.0", []string{
		"Via: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK2406419",
		"Max-Forwards: 69",
		"To: <sip:alice@example.com>",
		`From: "Alice" <sip:alice@example.com>;tag=ds8pahsn9t`,
		"Call-ID: eq3n5nh9hq2c5hkb2sd3ph",
		"CSeq: 1 REGISTER",
		`Contact: <sip:0ab8m4h3@5ek8bgh0k2s1.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:4f1c3e3a-72c6-4b5c-9d57-6b6e0c3b1a1f>";expires=600`,
		"Expires: 600",
		"Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY",
		"Supported: path,gruu,outbound",
		"User-Agent: JsSIP 3.10.1",
		"Content-Length: 0",
	}, "")
}

// chkSIPjsRegister is a REGISTER as SIP.js 0.21 sends it after a 401.
func chkSIPjsRegister() []byte {
	return chkSIP("REGISTER sip:example.com SIP/2.0", []string{
		"Via: SIP/2.0/WSS 7ld0i3qgd9o8.invalid;branch=z9hG4bK7283094",
		"To: <sip:bob@example.com>",
		"From: <sip:bob@example.com>;tag=m0jt4gdi6v",
		"CSeq: 2 REGISTER",
		"Call-ID: 2j6gqc2pki3b5u0gd5q2",
		"Max-Forwards: 70",
		`Authorization: Digest algorithm=MD5, username="bob", realm="example.com", nonce="YXNkZmFzZGZhc2Rm", uri="sip:example.com", response="0b9b8d0f7f0fcd5e61dd2c6c1f1c1e1f"`,
		`Contact: <sip:2n4fk9u7@7ld0i3qgd9o8.invalid;transport=ws>;expires=600;+sip.instance="<urn:uuid:9b2c2b0e-51f4-4fb1-8a44-1f5d6c0e7a3d>";reg-id=1`,
		"Allow: ACK,CANCEL,INVITE,MESSAGE,BYE,OPTIONS,INFO,NOTIFY,REFER",
		"Supported: outbound, path, gruu",
		"User-Agent: SIP.js/0.21.2",
		"Content-Length: 0",
	}, "")
}

// chkSDP is a WebRTC offer of at least size bytes: audio and video with ICE
// candidates, DTLS fingerprint and SSRC lines, as Chrome produces.
func chkSDP(size int) string {
	var sb strings.Builder
	w := func(l string) { sb.WriteString(l + "\r\n") }
	w("v=0")
	w("o=- 4611731400430051336 2 IN IP4 127.0.0.1")
	w("s=-")
	w("t=0 0")
	w("a=group:BUNDLE 0 1")
	w("a=extmap-allow-mixed")
	w("a=msid-semantic: WMS 3a5c1e0f-8b8d-4c2e-9f4e-2f1d3b4c5d6e")
	w("m=audio 54400 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126")
	w("c=IN IP4 198.51.100.7")
	w("a=rtcp:9 IN IP4 0.0.0.0")
	w("a=ice-ufrag:Fk3q")
	w("a=ice-pwd:9sT5bJx0vHq2n8Yk4LmP1cRz")
	w("a=ice-options:trickle")
	w("a=fingerprint:sha-256 3C:8D:2F:11:7A:94:E0:5B:C6:0D:1E:2F:3A:4B:5C:6D:7E:8F:90:A1:B2:C3:D4:E5:F6:07:18:29:3A:4B:5C:6D")
	w("a=setup:actpass")
	w("a=mid:0")
	w("a=sendrecv")
	w("a=rtcp-mux")
	w("a=rtpmap:111 opus/48000/2")
	w("a=fmtp:111 minptime=10;useinbandfec=1")
	for i := 0; sb.Len() < size; i++ {
		w(fmt.Sprintf("a=candidate:%d 1 udp 2122260223 192.168.%d.%d 5%04d typ host generation 0 network-id %d", 1000000000+i, i%250, i%200, i, i%4+1))
		w(fmt.Sprintf("a=candidate:%d 1 udp 1686052607 198.51.100.7 5%04d typ srflx raddr 192.168.1.%d rport 5%04d generation 0", 2000000000+i, i, i%200, i))
		w(fmt.Sprintf("a=ssrc:%d cname:Jx9P2ab7Q0eFk3Lm", 3000000000+i))
	}
	return sb.String()
}

// chkInvite is an INVITE as SIP.js sends it, with a WebRTC SDP of about 10 KB.
func chkInvite(sdp string) []byte {
	return chkSIP("INVITE sip:bob@example.com SIP/2.0", []string{
		"Via: SIP/2.0/WSS 7ld0i3qgd9o8.invalid;branch=z9hG4bK5170117",
		"To: <sip:bob@example.com>",
		`From: "Alice" <sip:alice@example.com>;tag=7lrb3hm9rd`,
		"CSeq: 1 INVITE",
		"Call-ID: hs2m0tq5p5dpoe9jcpsf",
		"Max-Forwards: 70",
		"Contact: <sip:2n4fk9u7@7ld0i3qgd9o8.invalid;transport=ws;ob>",
		"Allow: ACK,CANCEL,INVITE,MESSAGE,BYE,OPTIONS,INFO,NOTIFY,REFER",
		"Supported: outbound",
		"User-Agent: SIP.js/0.21.2",
		"Content-Type: application/sdp",
		chkCL(sdp),
	}, sdp)
}

// chkUTF8 is a text body with multi-byte UTF-8: 2-, 3- and 4-byte sequences.
const chkUTF8 = "Grüße aus Köln — 你好, ça va? 👋🏽"

// chkMessage is a MESSAGE as JsSIP sends it, with a UTF-8 body and a
// Content-Length in bytes.
func chkMessage(body string, cl int) []byte {
	return chkSIP("MESSAGE sip:bob@example.com SIP/2.0", []string{
		"Via: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK8391130",
		"Max-Forwards: 69",
		"To: <sip:bob@example.com>",
		`From: "Alice" <sip:alice@example.com>;tag=p0l4d4b1g1`,
		"Call-ID: 3il8r8n1k7c1m0v3c8uq",
		"CSeq: 7711 MESSAGE",
		"Content-Type: text/plain;charset=utf-8",
		"Supported: outbound",
		"User-Agent: JsSIP 3.10.1",
		"Content-Length: " + strconv.Itoa(cl),
	}, body)
}

// chkRegister200 is the registrar's answer to chkJsSIPRegister through an edge
// proxy: Path with a flow token, Require: outbound.
func chkRegister200() []byte {
	return chkSIP("SIP/2.0 200 OK", []string{
		"Via: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK2406419;received=192.0.2.10;rport=50912",
		"To: <sip:alice@example.com>;tag=37GkEhwl6",
		`From: "Alice" <sip:alice@example.com>;tag=ds8pahsn9t`,
		"Call-ID: eq3n5nh9hq2c5hkb2sd3ph",
		"CSeq: 1 REGISTER",
		"Path: <sip:AQVlZGdlMbV0c2R4YWJjZAEp6zA2qB1xkPfU@edge1.example.com:443;transport=ws;lr;ob>",
		`Contact: <sip:0ab8m4h3@5ek8bgh0k2s1.invalid;transport=ws>;expires=600;+sip.instance="<urn:uuid:4f1c3e3a-72c6-4b5c-9d57-6b6e0c3b1a1f>";reg-id=1;pub-gruu="sip:alice@example.com;gr=urn:uuid:4f1c3e3a-72c6-4b5c-9d57-6b6e0c3b1a1f"`,
		"Require: outbound",
		"Supported: path, outbound, gruu",
		"Content-Length: 0",
	}, "")
}

// chkRinging is a 180 Ringing as JsSIP sends it for an incoming INVITE.
func chkRinging() []byte {
	return chkSIP("SIP/2.0 180 Ringing", []string{
		"Via: SIP/2.0/WSS edge1.example.com:443;branch=z9hG4bK9a7c.1;received=203.0.113.5",
		"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK3f1e.0",
		"Record-Route: <sip:AQVlZGdlMbV0c2R4YWJjZAEp6zA2qB1xkPfU@edge1.example.com:443;transport=ws;lr>",
		"Record-Route: <sip:10.0.0.2;lr>",
		`To: <sip:alice@example.com>;tag=n1t3d7mvq8`,
		`From: "Bob" <sip:bob@example.net>;tag=as6b2f61d2`,
		"Call-ID: 5f1b7c4a2d9e3f80@10.0.0.2",
		"CSeq: 102 INVITE",
		"Contact: <sip:0ab8m4h3@5ek8bgh0k2s1.invalid;transport=ws>",
		"Supported: path,gruu,outbound",
		"Content-Length: 0",
	}, "")
}

// chkOptions is an OPTIONS keepalive without Content-Length.
func chkOptions(uri string) []byte {
	return chkSIP("OPTIONS "+uri+" SIP/2.0", []string{
		"Via: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK1234567",
		"Max-Forwards: 70",
		"To: <" + uri + ">",
		"From: <sip:alice@example.com>;tag=kq1f7h4e0b",
		"Call-ID: 1a2b3c4d5e6f",
		"CSeq: 1 OPTIONS",
	}, "")
}

// chkReason checks that err is a *framingError for sp whose reason contains
// every one of want, and that it wraps ErrFraming.
func chkReason(t *testing.T, sp sipws.Subprotocol, err error, want ...string) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, sipws.ErrFraming)
	var fe *sipws.FramingError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, sp, fe.Subprotocol)
	for _, w := range want {
		assert.Contains(t, fe.Reason, w)
	}
	assert.True(t, strings.HasPrefix(err.Error(), "sipws: invalid "+sp.Token()+" framing: "), err.Error())
}

func TestFramingSIPValid(t *testing.T) {
	sdp := chkSDP(10 * 1024)
	require.GreaterOrEqual(t, len(sdp), 10*1024)
	require.True(t, utf8.ValidString(chkUTF8))
	require.Greater(t, len(chkUTF8), utf8.RuneCountInString(chkUTF8))

	cases := map[string][]byte{
		"JsSIP REGISTER":            chkJsSIPRegister(),
		"SIP.js REGISTER":           chkSIPjsRegister(),
		"INVITE with 10 KB SDP":     chkInvite(sdp),
		"MESSAGE with UTF-8 body":   chkMessage(chkUTF8, len(chkUTF8)),
		"200 OK to REGISTER":        chkRegister200(),
		"180 Ringing":               chkRinging(),
		"OPTIONS no Content-Length": chkOptions("sip:edge1.example.com;transport=ws"),
		"response, empty reason":    chkSIP("SIP/2.0 200 ", []string{"Content-Length: 0"}, ""),
		"no headers at all":         chkSIP("OPTIONS sip:example.com SIP/2.0", nil, ""),
		"compact forms": chkSIP("MESSAGE sip:bob@example.com SIP/2.0", []string{
			"v: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK77",
			"f: <sip:alice@example.com>;tag=1", "t: <sip:bob@example.com>",
			"i: 77@x", "CSeq: 1 MESSAGE", "c: text/plain", "l: 5",
		}, "hello"),
		"folded headers": chkSIP("INVITE sip:bob@example.com SIP/2.0", []string{
			"Subject: I know you're there,",
			"   pick up the phone",
			"\tand talk to me!",
			"Content-Type: text/plain",
			"Content-Length:",
			"  2",
		}, "hi"),
		"Content-Length with spaces and leading zeros": chkSIP("MESSAGE sip:bob@example.com SIP/2.0",
			[]string{"Content-Type: text/plain", "content-length :   0005  "}, "hello"),
		"space before colon, lower-case version": chkSIP("BYE sip:bob@example.com sip/2.0",
			[]string{"Call-ID   :  x"}, ""),
		"sips and tel Request-URIs": chkSIP("INVITE tel:+15551234567 SIP/2.0", []string{"Content-Length: 0"}, ""),
		"extension method":          chkSIP("PUBLISH sips:alice@example.com SIP/2.0", []string{"Content-Length: 0"}, ""),
		"body with NUL and CRLFs, counted": chkSIP("INFO sip:bob@example.com SIP/2.0",
			[]string{"Content-Type: application/octet-stream", "Content-Length: 9"}, "a\x00b\r\n\r\nc\xff"),
		"sipfrag body without Content-Length": chkSIP("NOTIFY sip:alice@example.com SIP/2.0",
			[]string{"Event: refer", "Content-Type: message/sipfrag;version=2.0"}, "SIP/2.0 200 OK\r\n"),
		"UTF-8 in header values": chkSIP("MESSAGE sip:bob@example.com SIP/2.0",
			[]string{`From: "Jürgen 你好" <sip:juergen@example.com>;tag=1`, "Content-Length: 0"}, ""),
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			assert.NoError(t, sipws.CheckSIP(msg))
			assert.NoError(t, sipws.CheckMessage(sipws.SIP, msg))
		})
	}
}

func TestFramingSIPInvalid(t *testing.T) {
	reg := chkJsSIPRegister()
	invite := chkInvite(chkSDP(10 * 1024))
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	msg := func(body string, headers ...string) []byte {
		return chkSIP("MESSAGE sip:bob@example.com SIP/2.0", headers, body)
	}
	msrpChunk := "MSRP a786hjs2 SEND\r\nTo-Path: msrp://df7jal23ls0d.invalid:2855/98cjs;ws\r\nFrom-Path: msrp://relay.example.com:443/kjhd37s2s20w2a;ws\r\nMessage-ID: 87652491\r\n-------a786hjs2$\r\n"

	cases := []struct {
		name string
		msg  []byte
		want []string
	}{
		{"empty", nil, []string{"empty message"}},
		{"garbage", []byte("hello world"), []string{"METHOD SP Request-URI SP SIP/2.0"}},
		{"binary garbage", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, []string{"neither a request line nor a status line"}},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []string{"does not end with SIP/2.0"}},
		{"CRLF keepalive", []byte("\r\n\r\n"), []string{"CRLF keepalive"}},
		{"empty line before the start line", cat([]byte("\r\n"), reg), []string{"empty line before the start line"}},
		{"start line only, no CRLF", []byte("OPTIONS sip:example.com SIP/2.0"), []string{"ends after the start line"}},

		{"two messages, Content-Length 0", cat(reg, chkRegister200()), []string{"two SIP messages in one WebSocket message", "Content-Length 0", `"SIP/2.0 200 OK"`}},
		{"two messages, the second after CRLF", cat(reg, []byte("\r\n"), chkOptions("sip:example.com")), []string{"two SIP messages in one WebSocket message"}},
		{"two INVITEs", cat(invite, invite), []string{"two SIP messages in one WebSocket message", strconv.Itoa(len(invite)) + " extra bytes"}},
		{"two messages, no Content-Length", cat(chkOptions("sip:example.com"), chkOptions("sip:example.com")), []string{"two SIP messages in one WebSocket message", "no Content-Length"}},
		{"two messages, second truncated", cat(reg, reg[:40]), []string{"two SIP messages in one WebSocket message"}},
		{"extra bytes", msg("helloEXTRA", "Content-Length: 5"), []string{"5 extra bytes", "Content-Length 5", `"EXTRA"`}},
		{"extra CRLF after the body", msg("hello\r\n", "Content-Length: 5"), []string{"2 extra bytes"}},

		{"truncated INVITE body", invite[:len(invite)-100], []string{"truncated message", "shorter than Content-Length"}},
		{"truncated in the headers", reg[:len(reg)-30], []string{"no empty line ends the headers"}},
		{"missing empty line", reg[:len(reg)-2], []string{"no empty line after the headers"}},
		{"Content-Length counts runes, not bytes", chkMessage(chkUTF8, utf8.RuneCountInString(chkUTF8)), []string{"extra bytes"}},
		{"Content-Length too big", msg("hello", "Content-Length: 6"), []string{"truncated message", "5 bytes", "Content-Length 6"}},
		{"Content-Length 0 with a body", msg("hello", "Content-Length: 0"), []string{"5 extra bytes"}},
		{"compact l too small", msg("hello", "l: 4"), []string{"1 extra bytes"}},
		{"Content-Length negative", msg("", "Content-Length: -1"), []string{"not a non-negative decimal integer", `"-1"`}},
		{"Content-Length not a number", msg("", "Content-Length: abc"), []string{"not a non-negative decimal integer"}},
		{"Content-Length empty", msg("", "Content-Length:"), []string{"not a non-negative decimal integer"}},
		{"Content-Length huge", msg("", "Content-Length: 99999999999999999999999999"), []string{"not a non-negative decimal integer"}},
		{"Content-Length two values", msg("hello", "Content-Length: 5 5"), []string{"not a non-negative decimal integer"}},
		{"two Content-Length headers", msg("hello", "Content-Length: 5", "l: 5"), []string{"more than one Content-Length", "line 2"}},

		{"bare LF", []byte(strings.ReplaceAll(string(reg), "\r\n", "\n")), []string{"line 1 ends with a bare LF"}},
		{"bare LF in a header", []byte("OPTIONS sip:x SIP/2.0\r\nVia: a\nTo: b\r\n\r\n"), []string{"line 2 ends with a bare LF"}},
		{"bare CR", []byte("OPTIONS sip:x SIP/2.0\r\nVia: a\rTo: b\r\n\r\n"), []string{"line 2 holds a bare CR"}},
		{"NUL in a header", []byte("OPTIONS sip:x SIP/2.0\r\nVia: a\x00b\r\n\r\n"), []string{"control character 0x00"}},
		{"header without colon", msg("", "Via SIP/2.0/WSS x.invalid"), []string{"line 2 is not a header"}},
		{"header name not a token", msg("", "Vi(a: x"), []string{"not a token"}},
		{"empty header name", msg("", ": x"), []string{"not a token"}},
		{"continuation first", msg("", " folded: x"), []string{"no header to continue"}},

		{"status 700", chkSIP("SIP/2.0 700 Nope", nil, ""), []string{"not within 100–699"}},
		{"status 2 digits", chkSIP("SIP/2.0 20 OK", nil, ""), []string{"3-digit status code"}},
		{"status without SP", chkSIP("SIP/2.0 200", nil, ""), []string{"needs SP after the status code"}},
		{"SIP/3.0", chkSIP("INVITE sip:bob@example.com SIP/3.0", nil, ""), []string{"does not end with SIP/2.0"}},
		{"Request-URI without scheme", chkSIP("INVITE bob@example.com SIP/2.0", nil, ""), []string{"not an absolute URI"}},
		{"Request-URI with a space", chkSIP("INVITE sip:bob @example.com SIP/2.0", nil, ""), []string{"holds a space"}},
		{"method not a token", chkSIP("INV@TE sip:bob@example.com SIP/2.0", nil, ""), []string{"not a token"}},

		{"MSRP chunk on sip", []byte(msrpChunk), []string{"an MSRP chunk, not a SIP message"}},
		{"MSRP with bare LF on sip", []byte(strings.ReplaceAll(msrpChunk, "\r\n", "\n")), []string{"an MSRP chunk, not a SIP message"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := sipws.CheckSIP(tc.msg)
			chkReason(t, sipws.SIP, err, tc.want...)
			assert.Equal(t, err, sipws.CheckMessage(sipws.SIP, tc.msg))
		})
	}
}

// The check never allocates for a well-framed message: it runs for every
// message a server receives.
func TestFramingSIPNoAllocs(t *testing.T) {
	msgs := [][]byte{chkJsSIPRegister(), chkInvite(chkSDP(10 * 1024)), chkMessage(chkUTF8, len(chkUTF8)), chkOptions("sip:x"), chkRinging()}
	allocs := testing.AllocsPerRun(100, func() {
		for _, m := range msgs {
			if sipws.CheckSIP(m) != nil {
				panic("invalid")
			}
		}
	})
	assert.Zero(t, allocs)
}

// chkChunk builds an MSRP chunk: start line, headers, then the end-line for
// tid with flag, with the data (and its empty line and CRLF) when body is not
// nil.
func chkChunk(start, tid string, headers []string, body *string, flag string) []byte {
	var sb strings.Builder
	sb.WriteString(start + "\r\n")
	for _, h := range headers {
		sb.WriteString(h + "\r\n")
	}
	if body != nil {
		sb.WriteString("\r\n" + *body + "\r\n")
	}
	sb.WriteString("-------" + tid + flag + "\r\n")
	return []byte(sb.String())
}

func chkPtr(s string) *string { return &s }

// RFC 7977 §8.1-shaped paths: a browser client behind a relay.
var chkPaths = []string{
	"To-Path: msrps://relay.example.com:443/kjhd37s2s20w2a;ws msrp://df7jal23ls0d.invalid:2855/98cjs;ws",
	"From-Path: msrp://bob.example.net:12763/jshA7weztas;tcp",
}

func chkSend(tid string, body *string, flag string) []byte {
	h := append([]string{}, chkPaths...)
	h = append(h, "Message-ID: 87652491", "Byte-Range: 1-*/*", "Content-Type: text/plain")
	return chkChunk("MSRP "+tid+" SEND", tid, h, body, flag)
}

func TestFramingMSRPValid(t *testing.T) {
	cases := map[string][]byte{
		"RFC 4975 SEND": []byte("MSRP a786hjs2 SEND\r\n" +
			"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n" +
			"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n" +
			"Message-ID: 87652491\r\n" +
			"Byte-Range: 1-25/25\r\n" +
			"Content-Type: text/plain\r\n" +
			"\r\n" +
			"Hey Bob, are you there?\r\n" +
			"-------a786hjs2$\r\n"),
		"RFC 4975 200 OK": []byte("MSRP a786hjs2 200 OK\r\n" +
			"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n" +
			"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n" +
			"-------a786hjs2$\r\n"),
		"response without comment": []byte("MSRP a786hjs2 200\r\n" +
			"To-Path: msrp://a.example.com:1/x;ws\r\nFrom-Path: msrp://b.example.com:2/y;ws\r\n-------a786hjs2$\r\n"),
		"REPORT": []byte("MSRP dkei38sd REPORT\r\n" +
			"To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;ws\r\n" +
			"From-Path: msrp://bob.example.com:8888/9di4eae923wzd;ws\r\n" +
			"Message-ID: 12339sdqwer\r\n" +
			"Byte-Range: 1-106/106\r\n" +
			"Status: 000 200 OK\r\n" +
			"-------dkei38sd$\r\n"),
		"AUTH (RFC 4976)": []byte("MSRP 49fh AUTH\r\n" +
			"To-Path: msrps://relay.example.com:443;ws\r\n" +
			"From-Path: msrp://df7jal23ls0d.invalid:2855/98cjs;ws\r\n" +
			"-------49fh$\r\n"),
		"SEND without body":                     chkSend("dkei38sd", nil, "$"),
		"SEND with empty data":                  chkSend("dkei38sd", chkPtr(""), "$"),
		"SEND with UTF-8":                       chkSend("Xy9.-+%=", chkPtr(chkUTF8), "$"),
		"SEND with CRLFs in data":               chkSend("a786hjs2", chkPtr("line 1\r\n\r\nline 3\r\n"), "$"),
		"data holds another tid's end-line":     chkSend("a786hjs2", chkPtr("quoted:\r\n-------b999xxxx$\r\n-------a786hjs2x$\r\n"), "$"),
		"data that starts like an end-line":     chkSend("a786hjs2", chkPtr("-------a786hjs2 is not the end"), "$"),
		"data that is another end-line":         chkSend("a786hjs2", chkPtr("-------b786hjs2$"), "$"),
		"data that is an end-line without flag": chkSend("a786hjs2", chkPtr("-------a786hjs2"), "$"),
		"binary data":                           chkSend("a786hjs2", chkPtr("\x00\xff\r\n-------\r\n\x89PNG"), "+"),
		"32-char tid":                           chkSend("abcdefghijklmnopqrstuvwxyz012345", chkPtr("x"), "$"),
	}
	for _, flag := range []string{"$", "+", "#"} {
		cases["flag "+flag+" with body"] = chkSend("a786hjs2", chkPtr("chunk"), flag)
		cases["flag "+flag+" without body"] = chkSend("a786hjs2", nil, flag)
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			assert.NoError(t, sipws.CheckMSRP(msg))
			assert.NoError(t, sipws.CheckMessage(sipws.MSRP, msg))
		})
	}
}

func TestFramingMSRPInvalid(t *testing.T) {
	hello := chkPtr("hello")
	send := chkSend("a786hjs2", hello, "$")
	noBody := chkSend("a786hjs2", nil, "$")
	cases := []struct {
		name string
		msg  []byte
		want []string
	}{
		{"empty", nil, []string{"empty message"}},
		{"garbage", []byte("hello"), []string{`does not begin with "MSRP "`}},
		{"lower-case msrp", []byte(strings.Replace(string(send), "MSRP", "msrp", 1)), []string{`does not begin with "MSRP "`}},
		{"SIP on msrp", chkJsSIPRegister(), []string{"a SIP message, not an MSRP chunk"}},
		{"SIP response on msrp", chkRinging(), []string{"a SIP message, not an MSRP chunk"}},
		{"CRLF keepalive on msrp", []byte("\r\n\r\n"), []string{`does not begin with "MSRP "`}},

		{"mismatched end-line with body", chkChunk("MSRP a786hjs2 SEND", "b786hjs2", chkPaths, hello, "$"), []string{"end-line transaction id \"b786hjs2\" does not match the start line's \"a786hjs2\""}},
		{"mismatched end-line without body", chkChunk("MSRP a786hjs2 SEND", "b786hjs2", chkPaths, nil, "$"), []string{"line 4", "does not match"}},
		{"end-line tid with extra char", chkChunk("MSRP a786hjs2 SEND", "a786hjs2x", chkPaths, hello, "$"), []string{"does not match"}},
		{"invalid flag", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", chkPaths, hello, "!"), []string{`continuation flag '!'`}},
		{"invalid flag without body", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", chkPaths, nil, "!"), []string{`continuation flag '!'`}},
		{"no flag", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", chkPaths, nil, ""), []string{"no continuation flag"}},
		{"data after the end-line", append(append([]byte{}, send...), "garbage"...), []string{"7 bytes after the end-line", `"garbage"`}},
		{"CRLF after the end-line", append(append([]byte{}, noBody...), "\r\n"...), []string{"2 bytes after the end-line"}},
		{"two chunks", append(append([]byte{}, send...), chkSend("c786hjs2", hello, "$")...), []string{"two MSRP chunks in one WebSocket message"}},
		{"two chunks without bodies", append(append([]byte{}, noBody...), noBody...), []string{"two MSRP chunks in one WebSocket message"}},
		{"end-line without CRLF", send[:len(send)-2], []string{"has no CRLF"}},
		{"end-line without CRLF, no body", noBody[:len(noBody)-2], []string{"end-line has no CRLF"}},
		{"truncated data", send[:len(send)-20], []string{"no end-line -------a786hjs2", "truncated"}},
		{"truncated headers", noBody[:60], []string{"truncated chunk"}},
		{"truncated after a header", noBody[:len(noBody)-len("-------a786hjs2$\r\n")], []string{"ends in the header section"}},
		{"empty line straight before the end-line", []byte(strings.Replace(string(noBody), "Content-Type: text/plain\r\n", "Content-Type: text/plain\r\n\r\n", 1)), []string{"follows the empty line straight away"}},
		{"data that starts with the end-line", chkSend("a786hjs2", chkPtr("-------a786hjs2+ more"), "$"), []string{"follows the empty line straight away"}},
		{"data without CRLF before the end-line", []byte(strings.Replace(string(send), "hello\r\n", "hello", 1)), []string{"no end-line"}},

		{"no To-Path", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", []string{"Message-ID: 1"}, nil, "$"), []string{"header 1 must be To-Path"}},
		{"From-Path first", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", []string{chkPaths[1], chkPaths[0]}, nil, "$"), []string{"header 1 must be To-Path"}},
		{"no From-Path", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", []string{chkPaths[0], "Message-ID: 1"}, nil, "$"), []string{"header 2 must be From-Path"}},
		{"only To-Path", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", chkPaths[:1], nil, "$"), []string{"before the From-Path header"}},
		{"no headers", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", nil, nil, "$"), []string{"before the To-Path header"}},
		{"body before From-Path", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", chkPaths[:1], hello, "$"), []string{"before the From-Path header"}},
		{"empty To-Path", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", []string{"To-Path: ", chkPaths[1]}, nil, "$"), []string{"empty To-Path"}},
		{"header without colon", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", append(append([]string{}, chkPaths...), "Message-ID 1"), nil, "$"), []string{"line 4 is not a header"}},
		{"folded header", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", append(append([]string{}, chkPaths...), " folded"), nil, "$"), []string{"line 4"}},
		{"control character", chkChunk("MSRP a786hjs2 SEND", "a786hjs2", append(append([]string{}, chkPaths...), "Message-ID: \x01"), nil, "$"), []string{"control character 0x01"}},
		{"bare LF", []byte(strings.ReplaceAll(string(send), "\r\n", "\n")), []string{"bare LF"}},

		{"response with body", chkChunk("MSRP a786hjs2 200 OK", "a786hjs2", chkPaths, hello, "$"), []string{"a response carries no body"}},
		{"tid too short", chkSend("a78", hello, "$"), []string{"transaction id \"a78\""}},
		{"tid too long", chkSend("abcdefghijklmnopqrstuvwxyz0123456", hello, "$"), []string{"transaction id"}},
		{"tid bad char", chkSend("a786/hjs", hello, "$"), []string{"transaction id"}},
		{"lower-case method", chkChunk("MSRP a786hjs2 send", "a786hjs2", chkPaths, nil, "$"), []string{"neither upper-case letters nor a 3-digit status"}},
		{"no method", chkChunk("MSRP a786hjs2 ", "a786hjs2", chkPaths, nil, "$"), []string{"has no method"}},
		{"no tid", []byte("MSRP SEND\r\n"), []string{"needs MSRP SP transact-id SP method"}},
		{"start line only", []byte("MSRP a786hjs2 SEND"), []string{"ends after the start line"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := sipws.CheckMSRP(tc.msg)
			chkReason(t, sipws.MSRP, err, tc.want...)
			assert.Equal(t, err, sipws.CheckMessage(sipws.MSRP, tc.msg))
		})
	}
}

func TestFramingMSRPNoAllocs(t *testing.T) {
	msgs := [][]byte{chkSend("a786hjs2", chkPtr(chkUTF8), "$"), chkSend("a786hjs2", nil, "+")}
	allocs := testing.AllocsPerRun(100, func() {
		for _, m := range msgs {
			if sipws.CheckMSRP(m) != nil {
				panic("invalid")
			}
		}
	})
	assert.Zero(t, allocs)
}

func TestFramingCheckMessageDispatch(t *testing.T) {
	sip, msrp := chkJsSIPRegister(), chkSend("a786hjs2", chkPtr("hi"), "$")
	assert.NoError(t, sipws.CheckMessage(sipws.SIP, sip))
	assert.NoError(t, sipws.CheckMessage(sipws.MSRP, msrp))
	chkReason(t, sipws.SIP, sipws.CheckMessage(sipws.SIP, msrp), "MSRP on a sip connection")
	chkReason(t, sipws.MSRP, sipws.CheckMessage(sipws.MSRP, sip), "SIP on an msrp connection")
	for _, sp := range []sipws.Subprotocol{0, sipws.SIP | sipws.MSRP, 8} {
		err := sipws.CheckMessage(sp, sip)
		require.Error(t, err, sp.String())
		assert.ErrorIs(t, err, sipws.ErrFraming)
		assert.Contains(t, err.Error(), "no framing check for sub-protocol "+sp.String())
	}
}

func TestFramingErrorShape(t *testing.T) {
	err := error(&sipws.FramingError{Subprotocol: sipws.SIP, Reason: "why"})
	assert.Equal(t, "sipws: invalid sip framing: why", err.Error())
	assert.True(t, errors.Is(err, sipws.ErrFraming))
	assert.Equal(t, "sipws: invalid msrp framing: why", (&sipws.FramingError{Subprotocol: sipws.MSRP, Reason: "why"}).Error())
	assert.Equal(t, "sipws: invalid framing: why", (&sipws.FramingError{Reason: "why"}).Error())
	wrapped := fmt.Errorf("conn 7: %w", sipws.CheckSIP(nil))
	assert.ErrorIs(t, wrapped, sipws.ErrFraming)
}

func BenchmarkCheckSIPInvite(b *testing.B) {
	m := chkInvite(chkSDP(10 * 1024))
	b.SetBytes(int64(len(m)))
	b.ReportAllocs()
	for b.Loop() {
		if sipws.CheckSIP(m) != nil {
			b.Fatal("invalid")
		}
	}
}
