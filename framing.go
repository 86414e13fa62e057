package sipws

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// This file checks that a WebSocket message holds exactly one SIP message
// (RFC 7118 §5, RFC 3261 §7) or exactly one MSRP chunk (RFC 7977, RFC 4975
// §7.1). The checks look at framing only — start line, header syntax, where
// the message ends — never at the meaning of a header, so a message that
// passes may still be one the host's SIP stack rejects. They are written for
// the receive path: they read the message in place, allocate nothing when it
// is well framed, and never panic.

// ErrFraming is the error every framing check failure wraps: test for it with
// errors.Is. The error in the chain above it says why.
var ErrFraming = errors.New("sipws: invalid framing")

// framingError says why a WebSocket message is not exactly one SIP message or
// one MSRP chunk. It unwraps to ErrFraming.
type framingError struct {
	// Subprotocol is the sub-protocol the message was checked against.
	Subprotocol Subprotocol
	// Reason is a human-readable explanation, fit for a log line, e.g.
	// "two SIP messages in one WebSocket message: ...".
	Reason string
}

// Error implements error.
func (e *framingError) Error() string {
	if t := e.Subprotocol.Token(); t != "" {
		return "sipws: invalid " + t + " framing: " + e.Reason
	}
	return "sipws: invalid framing: " + e.Reason
}

// Unwrap returns ErrFraming.
func (e *framingError) Unwrap() error { return ErrFraming }

// CheckMessage checks that b is exactly one message of sub-protocol sp: it is
// checkSIP for SIP and checkMSRP for MSRP. Any other sp fails. It returns nil
// or an error wrapping ErrFraming whose text says what is wrong.
func CheckMessage(sp Subprotocol, b []byte) error {
	switch sp {
	case SIP:
		return checkSIP(b)
	case MSRP:
		return checkMSRP(b)
	}
	return &framingError{Subprotocol: sp, Reason: "no framing check for sub-protocol " + sp.String()}
}

func sipFail(format string, args ...any) error {
	return &framingError{Subprotocol: SIP, Reason: fmt.Sprintf(format, args...)}
}

func msrpFail(format string, args ...any) error {
	return &framingError{Subprotocol: MSRP, Reason: fmt.Sprintf(format, args...)}
}

// checkSIP checks that b holds exactly one SIP message, as RFC 7118 §5
// requires of a WebSocket message on the "sip" sub-protocol. It returns nil or
// a *framingError (wrapping ErrFraming) whose Reason says what is wrong.
//
// The message is a request line ("METHOD SP Request-URI SP SIP/2.0", the
// method a token, the Request-URI an absolute URI) or a status line ("SIP/2.0
// SP 3DIGIT SP reason", 100–699), header lines "Name: value" (any header name
// that is a token, so compact forms pass; a line that starts with SP or HTAB
// continues the previous header, RFC 3261 §7.3.1), an empty line, then the
// body. Header lines hold no control characters other than HTAB; the body may
// hold any bytes.
//
// Lines must end with CRLF (RFC 3261 §7). A bare LF or CR is rejected, not
// tolerated: JsSIP and SIP.js always send CRLF, and a checker that tolerated
// LF could find a different end of headers than the host's SIP parser.
// Likewise an empty line before the start line (RFC 3261 §7.5 lets stream
// transports skip it; a WebSocket message has no stream to resynchronise) is
// rejected, and a message that is exactly CRLFCRLF is reported as an RFC 5626
// CRLF keepalive, not a SIP message.
//
// Content-Length (or its compact form "l") is optional over WebSocket (RFC
// 7118 §5: the message boundary gives the length). When present it must
// appear once, hold a non-negative decimal integer, and equal the length in
// bytes of the body: a shorter body is a truncated message; a longer one holds
// extra bytes, reported as "two SIP messages in one WebSocket message" when
// they start with a SIP start line. Without Content-Length the body is the
// rest of the message; it is reported as a second SIP message only when it
// starts with a SIP start line and the message has no Content-Type (so that a
// message/sipfrag body passes). Mandatory headers (Via, From, To, Call-ID,
// CSeq, Max-Forwards) are the SIP stack's business and are not checked.
//
// An MSRP chunk fails with a reason saying it is MSRP, not SIP.
func checkSIP(b []byte) error {
	if len(b) == 0 {
		return sipFail("empty message")
	}
	if string(b) == "\r\n\r\n" {
		return sipFail("a CRLF keepalive (RFC 5626 §3.5.1), not a SIP message")
	}
	if b[0] == '\r' || b[0] == '\n' {
		return sipFail("empty line before the start line")
	}
	first, next, err := sipLine(b, 0, 1)
	if err != nil {
		if hasPrefix(b, "MSRP ") {
			return sipFail("an MSRP chunk, not a SIP message (MSRP on a sip connection)")
		}
		return err
	}
	if hasPrefix(first, "MSRP ") {
		return sipFail("an MSRP chunk, not a SIP message (MSRP on a sip connection): start line %s", snippet(first))
	}
	if reason := sipStartLine(first); reason != "" {
		return sipFail("line 1: %s", reason)
	}
	if next < 0 {
		return sipFail("the message ends after the start line: no CRLF, no headers and no empty line")
	}

	var (
		lineNo       = 1
		pos          = next
		bodyStart    = -1
		inHeader     = false // a header line was seen (continuations may follow)
		curIsCL      = false // the current header is Content-Length
		valStart     = 0     // the current header's value: b[valStart:valEnd]
		valEnd       = 0
		clCount      = 0
		clLine       = 0
		contentLen   = int64(-1)
		hasType      = false
		finishHeader = func() error {
			if !curIsCL {
				return nil
			}
			n, ok := parseContentLength(b[valStart:valEnd])
			if !ok {
				return sipFail("line %d: Content-Length %s is not a non-negative decimal integer", clLine, snippet(bytes.TrimSpace(b[valStart:valEnd])))
			}
			contentLen = n
			return nil
		}
	)
	for {
		lineNo++
		if pos >= len(b) {
			return sipFail("no empty line after the headers: the message ends after line %d, in the header section", lineNo-1)
		}
		line, nx, err := sipLine(b, pos, lineNo)
		if err != nil {
			return err
		}
		if nx < 0 {
			return sipFail("line %d has no CRLF: no empty line ends the headers (truncated message?)", lineNo)
		}
		if len(line) == 0 {
			bodyStart = nx
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// RFC 3261 §7.3.1 folding: this line continues the previous header.
			if !inHeader {
				return sipFail("line %d starts with whitespace but there is no header to continue", lineNo)
			}
			if i := ctlIndex(line); i >= 0 {
				return sipFail("line %d: control character %#02x in a header", lineNo, line[i])
			}
			valEnd = nx - 2
			pos = nx
			continue
		}
		if err := finishHeader(); err != nil {
			return err
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return sipFail("line %d is not a header (no colon): %s", lineNo, snippet(line))
		}
		name := trimRightWSP(line[:colon])
		if len(name) == 0 || !isToken(name) {
			return sipFail("line %d: header name %s is not a token", lineNo, snippet(line[:colon]))
		}
		if i := ctlIndex(line[colon+1:]); i >= 0 {
			return sipFail("line %d: control character %#02x in header %s", lineNo, line[colon+1+i], name)
		}
		inHeader = true
		curIsCL = equalFold(name, "Content-Length") || equalFold(name, "l")
		if curIsCL {
			clCount++
			if clCount > 1 {
				return sipFail("line %d: more than one Content-Length header (first on line %d)", lineNo, clLine)
			}
			clLine = lineNo
		}
		if equalFold(name, "Content-Type") || equalFold(name, "c") {
			hasType = true
		}
		valStart = pos + colon + 1
		valEnd = nx - 2
		pos = nx
	}
	if err := finishHeader(); err != nil {
		return err
	}

	body := b[bodyStart:]
	if contentLen < 0 {
		if len(body) > 0 && !hasType && startsWithSIP(body) {
			return sipFail("two SIP messages in one WebSocket message: there is no Content-Length or Content-Type and the body (%d bytes) starts with a SIP start line %s", len(body), snippet(firstLine(body)))
		}
		return nil
	}
	switch {
	case int64(len(body)) < contentLen:
		return sipFail("truncated message: the body is %d bytes, shorter than Content-Length %d", len(body), contentLen)
	case int64(len(body)) > contentLen:
		extra := body[contentLen:]
		if startsWithSIP(skipCRLFs(extra)) {
			return sipFail("two SIP messages in one WebSocket message: %d extra bytes after the body of Content-Length %d start another SIP message %s", len(extra), contentLen, snippet(firstLine(skipCRLFs(extra))))
		}
		return sipFail("the message holds %d extra bytes after the body of Content-Length %d (body is %d bytes): %s", len(extra), contentLen, len(body), snippet(extra))
	}
	return nil
}

// sipLine returns the line of b that starts at start, without its CRLF, and
// the index just past the CRLF, or -1 when the line runs to the end of b
// without one. A bare LF is an error; a bare CR is caught later as a control
// character (the body is never read with sipLine).
func sipLine(b []byte, start, lineNo int) (line []byte, next int, err error) {
	i := bytes.IndexByte(b[start:], '\n')
	if i < 0 {
		return b[start:], -1, nil
	}
	end := start + i
	if end == start || b[end-1] != '\r' {
		return nil, 0, sipFail("line %d ends with a bare LF; SIP lines end with CRLF (RFC 3261 §7)", lineNo)
	}
	line = b[start : end-1]
	if j := bytes.IndexByte(line, '\r'); j >= 0 {
		return nil, 0, sipFail("line %d holds a bare CR; SIP lines end with CRLF (RFC 3261 §7)", lineNo)
	}
	return line, end + 1, nil
}

// sipStartLine checks a SIP request line or status line (without its CRLF)
// and returns "" or the reason it is not one.
func sipStartLine(line []byte) string {
	if len(line) >= 8 && equalFold(line[:8], "SIP/2.0 ") {
		rest := line[8:]
		if len(rest) < 3 || !isDigit(rest[0]) || !isDigit(rest[1]) || !isDigit(rest[2]) {
			return "status line " + snippet(line) + " has no 3-digit status code"
		}
		if rest[0] < '1' || rest[0] > '6' {
			return "status code " + string(rest[:3]) + " is not within 100–699"
		}
		rest = rest[3:]
		if len(rest) == 0 || rest[0] != ' ' {
			return "status line " + snippet(line) + " needs SP after the status code"
		}
		if i := ctlIndex(rest); i >= 0 {
			return fmt.Sprintf("control character %#02x in the reason phrase", rest[i])
		}
		return ""
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return "start line " + snippet(line) + " is neither a request line nor a status line"
	}
	method := line[:sp1]
	if !isToken(method) {
		return "method " + snippet(method) + " is not a token"
	}
	rest := line[sp1+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 < 0 {
		return "request line " + snippet(line) + " needs METHOD SP Request-URI SP SIP/2.0"
	}
	uri, ver := rest[:sp2], rest[sp2+1:]
	if !equalFold(ver, "SIP/2.0") {
		return "request line " + snippet(line) + " does not end with SIP/2.0"
	}
	if len(uri) == 0 {
		return "empty Request-URI"
	}
	if bytes.IndexByte(uri, ' ') >= 0 {
		return "Request-URI " + snippet(uri) + " holds a space"
	}
	if i := ctlIndex(uri); i >= 0 || bytes.IndexByte(uri, '\t') >= 0 {
		return "control character in Request-URI " + snippet(uri)
	}
	if !hasScheme(uri) {
		return "Request-URI " + snippet(uri) + " is not an absolute URI (no scheme)"
	}
	return ""
}

// startsWithSIP reports whether b starts with something that passes as a SIP
// start line (the first line, with or without its CRLF).
func startsWithSIP(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	return sipStartLine(firstLine(b)) == ""
}

// firstLine returns b up to its first CR or LF.
func firstLine(b []byte) []byte {
	for i, c := range b {
		if c == '\r' || c == '\n' {
			return b[:i]
		}
	}
	return b
}

// skipCRLFs drops leading CRLF pairs: a sender that writes a stream puts them
// between messages.
func skipCRLFs(b []byte) []byte {
	for len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
		b = b[2:]
	}
	return b
}

// parseContentLength parses the value of Content-Length, with the linear
// whitespace around it (folding included).
func parseContentLength(v []byte) (int64, bool) {
	isLWS := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(v) > 0 && isLWS(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && isLWS(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		if n > (1<<62)/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// hasScheme reports whether uri starts with scheme ":" (RFC 3986 §3.1).
func hasScheme(uri []byte) bool {
	if len(uri) == 0 || !isAlpha(uri[0]) {
		return false
	}
	for i := 1; i < len(uri); i++ {
		c := uri[i]
		switch {
		case c == ':':
			return i+1 < len(uri)
		case isAlpha(c), isDigit(c), c == '+', c == '-', c == '.':
		default:
			return false
		}
	}
	return false
}

// checkMSRP checks that b holds exactly one MSRP chunk, as RFC 7977 requires
// of a WebSocket message on the "msrp" sub-protocol, following the grammar of
// RFC 4975 §7.1 and §9. It returns nil or a *framingError (wrapping
// ErrFraming) whose Reason says what is wrong.
//
// The chunk is a start line "MSRP SP transact-id SP method" (the method in
// upper case) or "MSRP SP transact-id SP 3DIGIT [SP comment]" (a response),
// the transact-id 4–32 characters of ALPHANUM . - + % =; then header lines
// "Name: value", of which the first two must be To-Path and From-Path, in that
// order, and non-empty; then either the end-line straight away (no body) or
// an empty line, the data and CRLF before the end-line. The end-line is
// "-------" + the start line's transact-id + one continuation flag ("$" last
// chunk, "+" more to come, "#" aborted) + CRLF, and nothing may follow it.
// A response carries no body. All lines end with CRLF; a bare LF is rejected.
//
// The data ends at the first CRLF "-------" transact-id flag in it: RFC 4975
// §7.1 makes the sender choose a transact-id that does not occur so in the
// data. Data that starts with the end-line (an empty line right before the
// end-line) is rejected as ambiguous. Content-Type, Byte-Range and Message-ID are not checked.
//
// A SIP message fails with a reason saying it is SIP, not MSRP.
func checkMSRP(b []byte) error {
	if len(b) == 0 {
		return msrpFail("empty message")
	}
	if !hasPrefix(b, "MSRP ") {
		if startsWithSIP(b) {
			return msrpFail("a SIP message, not an MSRP chunk (SIP on an msrp connection): start line %s", snippet(firstLine(b)))
		}
		return msrpFail("start line %s does not begin with \"MSRP \"", snippet(firstLine(b)))
	}
	first, next, err := msrpLine(b, 0, 1)
	if err != nil {
		return err
	}
	if next < 0 {
		return msrpFail("the chunk ends after the start line: no CRLF, no headers and no end-line")
	}
	tid, response, reason := msrpStartLine(first)
	if reason != "" {
		return msrpFail("line 1: %s", reason)
	}

	lineNo, pos, headers := 1, next, 0
	for {
		lineNo++
		if pos >= len(b) {
			return msrpFail("no end-line: the chunk ends in the header section (truncated chunk?)")
		}
		line, nx, err := msrpLine(b, pos, lineNo)
		if err != nil {
			return err
		}
		if hasPrefix(line, "-------") {
			if headers < 2 {
				return msrpFail("line %d: the end-line comes before the %s header (RFC 4975 §7.1)", lineNo, [...]string{"To-Path", "From-Path"}[headers])
			}
			if nx < 0 {
				return msrpFail("line %d: the end-line has no CRLF", lineNo)
			}
			if r := msrpEndLine(line, tid); r != "" {
				return msrpFail("line %d: %s", lineNo, r)
			}
			return msrpAfterEnd(b[nx:])
		}
		if nx < 0 {
			return msrpFail("line %d has no CRLF and there is no end-line (truncated chunk?)", lineNo)
		}
		if len(line) == 0 {
			if headers < 2 {
				return msrpFail("line %d: the headers end before the %s header (RFC 4975 §7.1)", lineNo, [...]string{"To-Path", "From-Path"}[headers])
			}
			if response {
				return msrpFail("line %d: a response carries no body (RFC 4975 §7.1)", lineNo)
			}
			return msrpBody(b, nx, tid)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return msrpFail("line %d is not a header (no name and colon): %s", lineNo, snippet(line))
		}
		name := line[:colon]
		if !isAlpha(name[0]) || !isToken(name) {
			return msrpFail("line %d: header name %s is not valid", lineNo, snippet(name))
		}
		value := line[colon+1:]
		if i := ctlIndex(value); i >= 0 {
			return msrpFail("line %d: control character %#02x in header %s", lineNo, value[i], name)
		}
		switch headers {
		case 0, 1:
			want := [...]string{"To-Path", "From-Path"}[headers]
			if !equalFold(name, want) {
				return msrpFail("line %d: header %d must be %s (RFC 4975 §7.1), not %s", lineNo, headers+1, want, snippet(name))
			}
			if len(bytes.TrimSpace(value)) == 0 {
				return msrpFail("line %d: empty %s", lineNo, want)
			}
		}
		headers++
		pos = nx
	}
}

// msrpBody checks the data that starts at b[start:] and the end-line after it.
func msrpBody(b []byte, start int, tid []byte) error {
	// Data that starts with the end-line is ambiguous: a receiver that
	// looks for CRLF end-line from the empty line finds it there.
	if d := b[start:]; hasPrefix(d, "-------") && bytes.HasPrefix(d[7:], tid) && len(d) > 7+len(tid) && isContinuationFlag(d[7+len(tid)]) {
		return msrpFail("the end-line follows the empty line straight away: a chunk without a body has the end-line right after the headers, and data is followed by CRLF and the end-line (RFC 4975 §7.1)")
	}
	for i := start; i <= len(b); {
		j := bytes.Index(b[i:], msrpEndMark)
		if j < 0 {
			break
		}
		e := i + j + len(msrpEndMark) // just past "\r\n-------"
		if bytes.HasPrefix(b[e:], tid) && e+len(tid) < len(b) && isContinuationFlag(b[e+len(tid)]) {
			rest := b[e+len(tid)+1:]
			if !hasPrefix(rest, "\r\n") {
				return msrpFail("the end-line -------%s%c has no CRLF", tid, b[e+len(tid)])
			}
			return msrpAfterEnd(rest[2:])
		}
		i = i + j + 2
	}
	// No end-line for this transaction. When the chunk ends with another
	// end-line, say what is wrong with it; otherwise it is cut short.
	data := b[start:]
	if k := bytes.LastIndex(data, msrpEndMark); k >= 0 {
		last := data[k+2:]
		l := firstLine(last)
		if tail := last[len(l):]; len(tail) == 0 || string(tail) == "\r\n" {
			if r := msrpEndLine(l, tid); r != "" {
				return msrpFail("%s", r)
			}
		}
	}
	return msrpFail("no end-line -------%s after the %d bytes of data (truncated chunk?)", tid, len(b)-start)
}

var msrpEndMark = []byte("\r\n-------")

// msrpAfterEnd checks that nothing follows the end-line.
func msrpAfterEnd(rest []byte) error {
	if len(rest) == 0 {
		return nil
	}
	if hasPrefix(rest, "MSRP ") {
		return msrpFail("two MSRP chunks in one WebSocket message: %d bytes after the end-line start another chunk %s", len(rest), snippet(firstLine(rest)))
	}
	return msrpFail("%d bytes after the end-line: %s", len(rest), snippet(rest))
}

// msrpEndLine checks an end-line (without its CRLF) against the start line's
// transaction id and returns "" or the reason it does not match.
func msrpEndLine(line, tid []byte) string {
	rest := line[len("-------"):]
	if len(rest) == 0 {
		return "end-line " + snippet(line) + " has no transaction id"
	}
	flag := rest[len(rest)-1]
	got := rest[:len(rest)-1]
	if !bytes.Equal(got, tid) {
		if isContinuationFlag(flag) {
			return "end-line transaction id " + snippet(got) + " does not match the start line's " + snippet(tid)
		}
		if bytes.Equal(rest, tid) {
			return "end-line " + snippet(line) + " has no continuation flag ($, + or #)"
		}
		return "end-line " + snippet(line) + " does not match the start line's transaction id " + snippet(tid)
	}
	if !isContinuationFlag(flag) {
		return fmt.Sprintf("end-line continuation flag %q is not $, + or #", flag)
	}
	return ""
}

// msrpStartLine parses an MSRP start line (without its CRLF) and returns its
// transaction id and whether it is a response, or the reason it is not valid.
func msrpStartLine(line []byte) (tid []byte, response bool, reason string) {
	rest := line[len("MSRP "):]
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return nil, false, "start line " + snippet(line) + " needs MSRP SP transact-id SP method (or status)"
	}
	tid, rest = rest[:sp], rest[sp+1:]
	if !isMSRPIdent(tid) {
		return nil, false, "transaction id " + snippet(tid) + " is not 4–32 characters of ALPHANUM . - + % = starting with ALPHANUM"
	}
	if len(rest) >= 3 && isDigit(rest[0]) && isDigit(rest[1]) && isDigit(rest[2]) && (len(rest) == 3 || rest[3] == ' ') {
		if i := ctlIndex(rest); i >= 0 {
			return nil, false, fmt.Sprintf("control character %#02x in the status comment", rest[i])
		}
		return tid, true, ""
	}
	if len(rest) == 0 {
		return nil, false, "start line " + snippet(line) + " has no method"
	}
	for _, c := range rest {
		if c < 'A' || c > 'Z' {
			return nil, false, "method " + snippet(rest) + " is neither upper-case letters nor a 3-digit status"
		}
	}
	return tid, false, ""
}

// msrpLine is sipLine for MSRP.
func msrpLine(b []byte, start, lineNo int) (line []byte, next int, err error) {
	i := bytes.IndexByte(b[start:], '\n')
	if i < 0 {
		return b[start:], -1, nil
	}
	end := start + i
	if end == start || b[end-1] != '\r' {
		return nil, 0, msrpFail("line %d ends with a bare LF; MSRP lines end with CRLF (RFC 4975 §9)", lineNo)
	}
	line = b[start : end-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, msrpFail("line %d holds a bare CR; MSRP lines end with CRLF (RFC 4975 §9)", lineNo)
	}
	return line, end + 1, nil
}

// isMSRPIdent reports whether b is an RFC 4975 ident: ALPHANUM 3*31ident-char.
func isMSRPIdent(b []byte) bool {
	if len(b) < 4 || len(b) > 32 || !(isAlpha(b[0]) || isDigit(b[0])) {
		return false
	}
	for _, c := range b[1:] {
		switch {
		case isAlpha(c), isDigit(c), c == '.', c == '-', c == '+', c == '%', c == '=':
		default:
			return false
		}
	}
	return true
}

func isContinuationFlag(c byte) bool { return c == '$' || c == '+' || c == '#' }

// isToken reports whether b is an RFC 3261 token: 1*(alphanum / "-" / "." /
// "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~").
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case isAlpha(c), isDigit(c):
		case c == '-', c == '.', c == '!', c == '%', c == '*', c == '_', c == '+', c == '`', c == '\'', c == '~':
		default:
			return false
		}
	}
	return true
}

// ctlIndex returns the index of the first control character other than HTAB
// in b (0x00–0x1F, 0x7F), or -1.
func ctlIndex(b []byte) int {
	for i, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

func trimRightWSP(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// equalFold compares b with the ASCII string s without regard to case,
// without converting either.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || !isAlpha(x) {
			return false
		}
	}
	return true
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }

// snippet quotes the start of b for a reason string, at most 48 bytes of it.
func snippet(b []byte) string {
	const max = 48
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "…"
	}
	return strconv.Quote(string(b))
}
