package sipopts

import (
	"strings"
	"testing"
)

func TestReplyCopiesHeaders(t *testing.T) {
	got, ok := Reply(nil, []byte(Request))
	if !ok {
		t.Fatal("Reply refused the sample OPTIONS")
	}
	want := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK5g1h8v\r\n" +
		"To: <sip:bench@127.0.0.1>;tag=" + ToTag + "\r\n" +
		"From: <sip:loadgen@127.0.0.1>;tag=6c2b4k9u0e\r\n" +
		"Call-ID: 2q9tk0ld1v6e3d5oqv8r\r\n" +
		"CSeq: 8421 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if string(got) != want {
		t.Fatalf("reply:\n%q\nwant:\n%q", got, want)
	}
}

func TestReplyCompactFormsAndTags(t *testing.T) {
	req := "OPTIONS sip:a@b SIP/2.0\r\n" +
		"v: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n" +
		"VIA:SIP/2.0/WS y.invalid;branch=z9hG4bK2\r\n" +
		"t: <sip:a@b;tag=uri-param-not-header>;tag=abc\r\n" +
		"f: sip:c@d;tag=1\r\n" +
		"i: cid\r\n" +
		"cseq: 1 OPTIONS\r\n" +
		"l: 0\r\n\r\n"
	got, ok := Reply([]byte("prefix|"), []byte(req))
	if !ok {
		t.Fatal("Reply refused compact forms")
	}
	s := string(got)
	for _, want := range []string{
		"prefix|SIP/2.0 200 OK\r\n",
		"Via: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\nVia: SIP/2.0/WS y.invalid;branch=z9hG4bK2\r\n",
		"To: <sip:a@b;tag=uri-param-not-header>;tag=abc\r\n",
		"Call-ID: cid\r\n",
		"CSeq: 1 OPTIONS\r\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("reply lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, ToTag) {
		t.Errorf("a tag was added to a To that has one:\n%s", s)
	}
	// A tag inside the URI is not the header's: one must be added.
	req2 := strings.Replace(req, ";tag=abc", "", 1)
	got, _ = Reply(nil, []byte(req2))
	if !strings.Contains(string(got), "To: <sip:a@b;tag=uri-param-not-header>;tag="+ToTag+"\r\n") {
		t.Errorf("no tag added:\n%s", got)
	}
}

func TestReplyRefuses(t *testing.T) {
	for name, msg := range map[string]string{
		"INVITE":    strings.Replace(Request, "OPTIONS sip", "INVITE sip", 1),
		"response":  "SIP/2.0 200 OK\r\nVia: x\r\n\r\n",
		"truncated": Request[:60],
		"no CSeq":   strings.Replace(Request, "CSeq: 8421 OPTIONS\r\n", "", 1),
		"no colon":  strings.Replace(Request, "Max-Forwards: 70", "Max-Forwards 70", 1),
	} {
		dst := []byte("keep")
		got, ok := Reply(dst, []byte(msg))
		if ok || string(got) != "keep" {
			t.Errorf("%s: Reply = %q, %v; want it refused", name, got, ok)
		}
	}
}

func TestReplyAllocs(t *testing.T) {
	req := []byte(Request)
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf, _ = Reply(buf[:0], req) }); n != 0 {
		t.Errorf("Reply allocates %v times per call", n)
	}
}

func BenchmarkReply(b *testing.B) {
	req := []byte(Request)
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Reply(buf[:0], req)
	}
}
