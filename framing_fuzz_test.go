package sipws_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sipws/sipws"
)

// Fuzz targets for the framing checks. Besides never panicking, they check
// properties: a message built from valid headers and a body with the right
// Content-Length always passes whatever the body holds; two of them in one
// buffer, or one cut short, always fail; nothing passes both as SIP and as
// MSRP; and every failure is a *framingError for the right sub-protocol.

// chkFuzzFailure checks the shape of a framing failure.
func chkFuzzFailure(t *testing.T, sp sipws.Subprotocol, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var fe *sipws.FramingError
	if !errors.As(err, &fe) || !errors.Is(err, sipws.ErrFraming) {
		t.Fatalf("error %v (%T) is not a *FramingError wrapping ErrFraming", err, err)
	}
	if fe.Subprotocol != sp || fe.Reason == "" {
		t.Fatalf("FramingError %+v: want sub-protocol %v and a reason", fe, sp)
	}
}

// chkHeaderValue makes s fit in a header value: no control characters but
// HTAB.
func chkHeaderValue(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

func chkSeedsSIP() [][]byte {
	return [][]byte{
		chkJsSIPRegister(),
		chkSIPjsRegister(),
		chkInvite(chkSDP(2048)),
		chkMessage(chkUTF8, len(chkUTF8)),
		chkRegister200(),
		chkRinging(),
		chkOptions("sip:edge1.example.com;transport=ws"),
		append(chkJsSIPRegister(), chkRegister200()...),
		chkMessage(chkUTF8, len(chkUTF8)+3),
		[]byte("\r\n\r\n"),
		[]byte("MSRP a786hjs2 SEND\r\nTo-Path: msrp://a.invalid:2855/s;ws\r\nFrom-Path: msrp://b:1/t;ws\r\n-------a786hjs2$\r\n"),
		[]byte("INVITE sip:x SIP/2.0\r\nSubject: a\r\n b\r\nl: 2\r\n\r\nhi"),
	}
}

func FuzzCheckSIP(f *testing.F) {
	for _, m := range chkSeedsSIP() {
		f.Add(m, []byte("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"), "Jürgen")
	}
	f.Add([]byte{}, []byte{}, "")
	f.Add([]byte("SIP/2.0 200 OK\r\n\r\n"), []byte("SIP/2.0 200 OK\r\n\r\n"), "\r\n")
	f.Fuzz(func(t *testing.T, msg, body []byte, value string) {
		err := sipws.CheckSIP(msg)
		chkFuzzFailure(t, sipws.SIP, err)
		if err == nil && sipws.CheckMSRP(msg) == nil {
			t.Fatalf("%q passes both as SIP and as MSRP", msg)
		}
		if e2 := sipws.CheckMessage(sipws.SIP, msg); (e2 == nil) != (err == nil) {
			t.Fatalf("CheckMessage(SIP) = %v, CheckSIP = %v", e2, err)
		}

		// Valid headers and a body of the right Content-Length: passes.
		built := chkSIP("MESSAGE sip:bob@example.com SIP/2.0", []string{
			"Via: SIP/2.0/WSS 5ek8bgh0k2s1.invalid;branch=z9hG4bK8391130",
			"From: <sip:alice@example.com>;tag=1",
			"To: <sip:bob@example.com>",
			"Call-ID: fuzz",
			"CSeq: 1 MESSAGE",
			"X-Fuzz: " + chkHeaderValue(value),
			"Content-Type: application/octet-stream",
			chkCL(string(body)),
		}, string(body))
		if err := sipws.CheckSIP(built); err != nil {
			t.Fatalf("valid message fails: %v\n%q", err, built)
		}
		// Two of them in one buffer: fails, and says so.
		two := append(append([]byte{}, built...), built...)
		if err := sipws.CheckSIP(two); err == nil || !strings.Contains(err.Error(), "two SIP messages in one WebSocket message") {
			t.Fatalf("two messages: %v", err)
		}
		// Cut short anywhere in the body: truncated.
		if len(body) > 0 {
			cut := built[:len(built)-1-len(body)/2]
			if err := sipws.CheckSIP(cut); err == nil || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("truncated message: %v", err)
			}
		}
	})
}

// chkHasEndLine reports whether data holds CRLF "-------" tid and a
// continuation flag: where an MSRP receiver would see the end of the chunk.
func chkHasEndLine(data []byte, tid string) bool {
	mark := []byte("\r\n-------" + tid)
	for i := 0; ; {
		j := bytes.Index(data[i:], mark)
		if j < 0 {
			return false
		}
		k := i + j + len(mark)
		if k < len(data) && strings.IndexByte("$+#", data[k]) >= 0 {
			return true
		}
		i += j + 1
	}
}

// chkValidTid reports whether tid is an RFC 4975 transact-id.
func chkValidTid(tid string) bool {
	if len(tid) < 4 || len(tid) > 32 {
		return false
	}
	for i, c := range []byte(tid) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte(".-+%=", c) < 0) {
			return false
		}
	}
	return true
}

func FuzzCheckMSRP(f *testing.F) {
	seeds := [][]byte{
		chkSend("a786hjs2", chkPtr("Hey Bob, are you there?"), "$"),
		chkSend("a786hjs2", nil, "+"),
		chkSend("dkei38sd", chkPtr(chkUTF8), "#"),
		[]byte("MSRP a786hjs2 200 OK\r\nTo-Path: msrp://a:1/x;ws\r\nFrom-Path: msrp://b:2/y;ws\r\n-------a786hjs2$\r\n"),
		chkChunk("MSRP a786hjs2 SEND", "b786hjs2", chkPaths, chkPtr("x"), "$"),
		append(chkSend("a786hjs2", chkPtr("x"), "$"), "trailing"...),
		chkJsSIPRegister(),
	}
	for _, s := range seeds {
		f.Add(s, []byte("hello\r\n-------a786hjs2"), "a786hjs2")
	}
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, msg, data []byte, tid string) {
		err := sipws.CheckMSRP(msg)
		chkFuzzFailure(t, sipws.MSRP, err)
		if err == nil && sipws.CheckSIP(msg) == nil {
			t.Fatalf("%q passes both as MSRP and as SIP", msg)
		}
		if e2 := sipws.CheckMessage(sipws.MSRP, msg); (e2 == nil) != (err == nil) {
			t.Fatalf("CheckMessage(MSRP) = %v, CheckMSRP = %v", e2, err)
		}

		if !chkValidTid(tid) {
			tid = "a786hjs2"
		}
		// A chunk with any data passes unless the data holds its end-line.
		chunk := chkSend(tid, chkPtr(string(data)), "$")
		err = sipws.CheckMSRP(chunk)
		// The CRLF of the empty line counts: data that starts with the
		// end-line is not data.
		if hasEnd := chkHasEndLine(append([]byte("\r\n"), data...), tid); (err == nil) == hasEnd {
			t.Fatalf("data holds end-line: %v, CheckMSRP: %v\n%q", hasEnd, err, chunk)
		}
		if err != nil {
			return
		}
		// Two chunks in one buffer, or one cut short: fails.
		two := append(append([]byte{}, chunk...), chunk...)
		if err := sipws.CheckMSRP(two); err == nil || !strings.Contains(err.Error(), "two MSRP chunks in one WebSocket message") {
			t.Fatalf("two chunks: %v", err)
		}
		for _, cut := range []int{1, 2, len("-------" + tid + "$\r\n"), len(chunk) / 2} {
			if err := sipws.CheckMSRP(chunk[:len(chunk)-cut]); err == nil {
				t.Fatalf("chunk cut by %d passes", cut)
			}
		}
		// Without a body, with any header value: passes.
		h := append(append([]string{}, chkPaths...), "Message-ID: "+chkHeaderValue(string(data)))
		if err := sipws.CheckMSRP(chkChunk("MSRP "+tid+" SEND", tid, h, nil, "#")); err != nil {
			t.Fatalf("body-less chunk fails: %v", err)
		}
	})
}
