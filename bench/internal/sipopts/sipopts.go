// Package sipopts answers a SIP OPTIONS request with a 200 OK, cheaply: it
// is the work every benchmark server (bench/optionsd on sipws, bench/bareopts
// on bare gobwas/ws) does per message, so that they differ only in the
// WebSocket layer.
//
// It is not a SIP parser. It reads the request line and the header lines up
// to the blank line, and copies into the response the ones RFC 3261 §8.2.6.2
// says a response copies: every Via, From, To (with a tag added when it has
// none), Call-ID and CSeq, in long or compact form. Folded (multi-line)
// headers are not supported: nothing that the load generator, JsSIP or SIP.js
// sends uses them. It does not allocate when dst has room.
package sipopts

import "bytes"

// ToTag is the tag added to the To header of every response.
const ToTag = "sipws-bench"

// Request is a sample OPTIONS of the size a browser phone sends (JsSIP-style
// Via with a .invalid host), the one the load generator sends.
const Request = "OPTIONS sip:bench@127.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK5g1h8v\r\n" +
	"Max-Forwards: 70\r\n" +
	"To: <sip:bench@127.0.0.1>\r\n" +
	"From: <sip:loadgen@127.0.0.1>;tag=6c2b4k9u0e\r\n" +
	"Call-ID: 2q9tk0ld1v6e3d5oqv8r\r\n" +
	"CSeq: 8421 OPTIONS\r\n" +
	"Accept: application/sdp\r\n" +
	"Supported: path,outbound,gruu\r\n" +
	"User-Agent: sipws-loadgen\r\n" +
	"Content-Length: 0\r\n\r\n"

const (
	statusLine    = "SIP/2.0 200 OK\r\n"
	contentLength = "Content-Length: 0\r\n\r\n"
)

// header kinds copied into the response.
const (
	hNone = iota
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
)

// Reply appends to dst the 200 OK answering req, when req is an OPTIONS
// request, and reports whether it did. For anything else (another method, a
// response, a message without its blank line) it returns dst unchanged and
// false.
func Reply(dst, req []byte) ([]byte, bool) {
	line, rest, ok := cutLine(req)
	if !ok || !bytes.HasPrefix(line, []byte("OPTIONS ")) || !bytes.HasSuffix(line, []byte(" SIP/2.0")) {
		return dst, false
	}
	start := len(dst)
	dst = append(dst, statusLine...)
	var seen [hCSeq + 1]bool
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return dst[:start], false
		}
		if len(line) == 0 {
			break // the blank line: end of headers
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return dst[:start], false
		}
		kind := headerKind(bytes.TrimRight(line[:colon], " \t"))
		if kind == hNone {
			continue
		}
		if kind != hVia && seen[kind] {
			continue // a repeated single-valued header: keep the first
		}
		seen[kind] = true
		value := bytes.TrimLeft(line[colon+1:], " \t")
		dst = append(dst, longName[kind]...)
		dst = append(dst, ": "...)
		dst = append(dst, value...)
		if kind == hTo && !hasTag(value) {
			dst = append(dst, ";tag="+ToTag...)
		}
		dst = append(dst, "\r\n"...)
	}
	if !seen[hVia] || !seen[hFrom] || !seen[hTo] || !seen[hCallID] || !seen[hCSeq] {
		return dst[:start], false
	}
	return append(dst, contentLength...), true
}

var longName = [...]string{hVia: "Via", hFrom: "From", hTo: "To", hCallID: "Call-ID", hCSeq: "CSeq"}

// cutLine returns the line before the first CRLF (or LF) and what follows.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}

// headerKind classifies a header name, long or compact, ignoring case.
func headerKind(name []byte) int {
	switch len(name) {
	case 1:
		switch name[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		}
	case 2:
		if equalFold(name, "to") {
			return hTo
		}
	case 3:
		if equalFold(name, "via") {
			return hVia
		}
	case 4:
		switch {
		case equalFold(name, "from"):
			return hFrom
		case equalFold(name, "cseq"):
			return hCSeq
		}
	case 7:
		if equalFold(name, "call-id") {
			return hCallID
		}
	}
	return hNone
}

// equalFold compares b with the lower-case ASCII s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// hasTag reports whether a To value has a tag parameter: one outside the
// name-addr's angle brackets, whose URI parameters are not the header's.
func hasTag(v []byte) bool {
	if i := bytes.LastIndexByte(v, '>'); i >= 0 {
		v = v[i+1:]
	}
	for {
		i := bytes.IndexByte(v, ';')
		if i < 0 {
			return false
		}
		v = bytes.TrimLeft(v[i+1:], " \t")
		if len(v) >= 4 && equalFold(v[:3], "tag") && (v[3] == '=' || v[3] == ' ' || v[3] == '\t') {
			return true
		}
	}
}
