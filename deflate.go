package sipws

// This file holds permessage-deflate (RFC 7692): the negotiation of the
// extension in the handshake, the compression of what we send and the
// inflation of what arrives. It is the only one that knows the compression
// engine (github.com/klauspost/compress/flate).
//
// What a connection holds, so that 100k mostly idle connections stay cheap:
//
//   - Outbound, no compressor: each message is compressed by a stateless
//     encoder (flate.StatelessDeflate), with the last bytes we sent compressed
//     (at most deflateHistory, and within the peer's window) as its
//     dictionary. Under context takeover the peer's inflater still holds those
//     bytes in its window, so the ratio is close to a compressor that keeps its
//     state, for the price of the history bytes alone.
//   - Inbound, no decompressor: we answer client_no_context_takeover, so each
//     message the peer sends stands alone and is inflated with a pooled
//     inflater once it has arrived, bounded by MaxMessageSize while it
//     inflates.

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
)

// deflateExtension is the extension token of RFC 7692.
const deflateExtension = "permessage-deflate"

// deflateMin is the smallest message we compress: below it a message goes
// as it is. A SIP message is rarely shorter; a CRLF keepalive, an MSRP
// chunk acknowledgement or a short text are, and save nothing.
const deflateMin = 128

// deflateHistory is the most of what we sent compressed that a connection
// keeps as the dictionary of its next message: the most a stateless
// encoder uses.
const deflateHistory = 8 << 10

// deflateTail is the empty stored block that ends every compressed message
// and that RFC 7692 §7.2.1 removes from the wire.
var deflateTail = [4]byte{0x00, 0x00, 0xff, 0xff}

// deflateParams is what an accepted offer asks of us.
type deflateParams struct {
	serverNoContext bool // server_no_context_takeover: each message we send stands alone
	serverBits      int  // server_max_window_bits, 0 when not offered
}

// response is the Sec-WebSocket-Extensions value that accepts the offer:
// the parameters the offer asked of us, and client_no_context_takeover,
// which RFC 7692 §7.1.1.2 lets a server add to any offer.
func (p deflateParams) response() string {
	s := deflateExtension + "; client_no_context_takeover"
	if p.serverNoContext {
		s += "; server_no_context_takeover"
	}
	if p.serverBits != 0 {
		s += "; server_max_window_bits=" + strconv.Itoa(p.serverBits)
	}
	return s
}

// negotiateDeflate picks the first permessage-deflate offer in the
// Sec-WebSocket-Extensions values that we can accept (RFC 7692 §5, §7.1).
// An offer with an unknown or repeated parameter, or a value out of range,
// is declined and the next one tried; a header that does not parse as an
// extension list (RFC 6455 §9.1) is ignored whole. Either way the handshake
// goes on, without compression when nothing was accepted.
func negotiateDeflate(values []string) (deflateParams, bool) {
	exts, ok := parseExtensions(values)
	if !ok {
		return deflateParams{}, false
	}
	for _, e := range exts {
		if !strings.EqualFold(e.name, deflateExtension) {
			continue
		}
		if p, ok := acceptDeflate(e.params); ok {
			return p, true
		}
	}
	return deflateParams{}, false
}

// acceptDeflate checks one offer's parameters (RFC 7692 §7.1).
func acceptDeflate(params []extParam) (deflateParams, bool) {
	var p deflateParams
	seen := map[string]bool{}
	for _, kv := range params {
		name := strings.ToLower(kv.name)
		if seen[name] {
			return p, false
		}
		seen[name] = true
		switch name {
		case "server_no_context_takeover":
			if kv.hasValue {
				return p, false
			}
			p.serverNoContext = true
		case "client_no_context_takeover":
			if kv.hasValue {
				return p, false
			}
		case "server_max_window_bits":
			bits, ok := windowBits(kv)
			if !ok || !kv.hasValue {
				return p, false
			}
			p.serverBits = bits
		case "client_max_window_bits":
			// With or without a value: we may answer it or not
			// (§7.1.2.2); each message of the peer stands alone and
			// is inflated with a full window, so we do not.
			if _, ok := windowBits(kv); kv.hasValue && !ok {
				return p, false
			}
		default:
			return p, false
		}
	}
	return p, true
}

// windowBits parses a window-bits value: "8" to "15" with no leading zero
// (RFC 7692 §7.1.2.1), quoted or not.
func windowBits(kv extParam) (int, bool) {
	v := kv.value
	if len(v) == 0 || len(v) > 2 || v[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int(v[i]-'0')
	}
	return n, 8 <= n && n <= 15
}

// extension is one element of a Sec-WebSocket-Extensions list.
type extension struct {
	name   string
	params []extParam
}

// extParam is one extension parameter; value is unquoted.
type extParam struct {
	name     string
	value    string
	hasValue bool
}

// parseExtensions parses the values of Sec-WebSocket-Extensions, each a
// list of RFC 6455 §9.1:
//
//	extension = extension-token *( ";" extension-param )
//	extension-param = token [ "=" (token | quoted-string) ]
//
// with optional whitespace around the separators and empty list elements
// allowed (RFC 9110 §5.6.1). It returns false when a value does not parse.
func parseExtensions(values []string) ([]extension, bool) {
	var exts []extension
	for _, v := range values {
		s := extScanner{s: v}
		for {
			s.skipSpace()
			if s.done() {
				break
			}
			if s.peek() == ',' {
				s.i++
				continue
			}
			name := s.token()
			if name == "" {
				return nil, false
			}
			e := extension{name: name}
			for {
				s.skipSpace()
				if s.done() || s.peek() == ',' {
					break
				}
				if s.peek() != ';' {
					return nil, false
				}
				s.i++
				s.skipSpace()
				kv := extParam{name: s.token()}
				if kv.name == "" {
					return nil, false
				}
				s.skipSpace()
				if !s.done() && s.peek() == '=' {
					s.i++
					s.skipSpace()
					kv.hasValue = true
					var ok bool
					if kv.value, ok = s.value(); !ok {
						return nil, false
					}
				}
				e.params = append(e.params, kv)
			}
			exts = append(exts, e)
		}
	}
	return exts, true
}

// extScanner reads one header value.
type extScanner struct {
	s string
	i int
}

func (s *extScanner) done() bool { return s.i >= len(s.s) }
func (s *extScanner) peek() byte { return s.s[s.i] }

func (s *extScanner) skipSpace() {
	for !s.done() && (s.peek() == ' ' || s.peek() == '\t') {
		s.i++
	}
}

// token reads a token (RFC 9110 §5.6.2); "" when there is none.
func (s *extScanner) token() string {
	start := s.i
	for !s.done() && isTokenChar(s.peek()) {
		s.i++
	}
	return s.s[start:s.i]
}

// value reads a token or a quoted-string, unquoted; false when it is
// neither, or the quoted-string does not end.
func (s *extScanner) value() (string, bool) {
	if s.done() {
		return "", false
	}
	if s.peek() != '"' {
		t := s.token()
		return t, t != ""
	}
	s.i++
	var b strings.Builder
	for !s.done() {
		c := s.peek()
		s.i++
		switch {
		case c == '"':
			return b.String(), true
		case c == '\\':
			if s.done() {
				return "", false
			}
			b.WriteByte(s.peek())
			s.i++
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

// isTokenChar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// deflater is a connection's outbound side of the extension: no compressor,
// only the history of what it sent compressed.
type deflater struct {
	mu     sync.Mutex // held from compressing a message to queueing it, so that the history follows the queue's order
	window int        // the peer's inflate window: no reference may reach further back
	keep   int        // the most history kept: min(deflateHistory, window), 0 with server_no_context_takeover
	hist   []byte     // the last bytes sent compressed, at most keep (cap too); nil until a message is
}

// newDeflater returns the outbound state for the accepted parameters.
func newDeflater(p deflateParams) *deflater {
	d := &deflater{window: 1 << 15}
	if p.serverBits != 0 {
		d.window = 1 << p.serverBits
	}
	if !p.serverNoContext {
		d.keep = min(deflateHistory, d.window)
	}
	return d
}

// appendWriter is an io.Writer that appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// compress appends p compressed (RFC 7692 §7.2.1, the trailing empty block
// removed) to dst. d.mu is held. It returns false when p is too long for the
// peer's window or does not shrink; it then goes uncompressed.
func (d *deflater) compress(dst, p []byte) ([]byte, bool) {
	if len(p) > d.window {
		return dst, false
	}
	dict := d.hist
	if room := d.window - len(p); len(dict) > room {
		dict = dict[len(dict)-room:]
	}
	w := appendWriter{b: dst}
	if err := flate.StatelessDeflate(&w, p, false, dict); err != nil {
		return dst, false
	}
	out := w.b
	if len(out)-len(dst) < len(deflateTail) || string(out[len(out)-len(deflateTail):]) != string(deflateTail[:]) {
		return dst, false
	}
	out = out[:len(out)-len(deflateTail)]
	if len(out)-len(dst) >= len(p) {
		return dst, false
	}
	return out, true
}

// sent adds p, which went out compressed, to the history. d.mu is held.
func (d *deflater) sent(p []byte) {
	if d.keep == 0 {
		return
	}
	if len(p) >= d.keep {
		if cap(d.hist) < d.keep {
			d.hist = make([]byte, 0, d.keep)
		}
		d.hist = append(d.hist[:0], p[len(p)-d.keep:]...)
		return
	}
	if drop := len(d.hist) + len(p) - d.keep; drop > 0 {
		d.hist = d.hist[:copy(d.hist, d.hist[drop:])]
	}
	if n := len(d.hist) + len(p); n > cap(d.hist) {
		// Grown with what was sent, doubling, up to keep: a connection
		// that sent one short answer holds little more than it.
		d.hist = regrow(d.hist, min(d.keep, max(n, 2*cap(d.hist))))
	}
	d.hist = append(d.hist, p...)
}

// dropHistory lets go of the history of an idle connection, as the
// keepalive finds it (nothing received for KeepaliveTimeout): the next
// message it sends is compressed without a dictionary, and the history grows
// again from there. The peer needs to know nothing: its window still holds
// the bytes, we only stop referring to them.
func (c *Conn) dropHistory() {
	if d := c.dfl; d != nil {
		d.mu.Lock()
		d.hist = nil
		d.mu.Unlock()
	}
}

// wireLimit is the most bytes the message being read may take on the wire:
// MaxMessageSize, or for a compressed message the most that DEFLATE can
// expand a message of that size (stored blocks: 5 bytes each 16 KiB at
// worst, and a few more), so that a message that does not compress and was
// compressed anyway, as browsers do, is still accepted when it fits once
// inflated. Inflation is bounded by MaxMessageSize itself.
func (c *Conn) wireLimit(st *readState) int64 {
	n := c.srv.cfg.MaxMessageSize
	if st.compressed {
		n += n>>12 + n>>14 + 16
	}
	return n
}

// Errors of inflate.
var (
	errInflateTooBig = errors.New("sipws: inflated message over the size limit")
	errInflateBad    = errors.New("sipws: invalid compressed data")
)

// inflater is a pooled decompressor and the source it reads: a message's
// compressed bytes, then the empty block RFC 7692 §7.2.2 has us append.
type inflater struct {
	fr  io.ReadCloser
	src inflateSrc
}

// inflateSrc reads p, then deflateTail. It is an io.ByteReader, so that the
// decompressor reads it without a buffer of its own.
type inflateSrc struct {
	p    []byte
	tail int // bytes of deflateTail read
}

func (s *inflateSrc) Read(b []byte) (int, error) {
	if len(s.p) > 0 {
		n := copy(b, s.p)
		s.p = s.p[n:]
		return n, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(b, deflateTail[s.tail:])
	s.tail += n
	return n, nil
}

func (s *inflateSrc) ReadByte() (byte, error) {
	if len(s.p) > 0 {
		c := s.p[0]
		s.p = s.p[1:]
		return c, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	s.tail++
	return deflateTail[s.tail-1], nil
}

// getInflater takes an inflater from the server's pool, set to read p.
func (s *Server) getInflater(p []byte) *inflater {
	f, _ := s.inflaters.Get().(*inflater)
	if f == nil {
		f = &inflater{}
		f.src.p = p
		f.fr = flate.NewReader(&f.src)
		return f
	}
	f.src = inflateSrc{p: p}
	_ = f.fr.(flate.Resetter).Reset(&f.src, nil)
	return f
}

// putInflater gives f back, holding nothing of the message.
func (s *Server) putInflater(f *inflater) {
	f.src = inflateSrc{}
	s.inflaters.Put(f)
}

// inflate inflates a compressed message p into a new buffer of at most
// limit bytes: errInflateTooBig as soon as the output would pass it,
// errInflateBad when p is not DEFLATE data. grow is asked before the
// buffer grows to a new capacity (never past limit); when it refuses,
// inflate returns its error.
func (s *Server) inflate(p []byte, limit int, grow func(int) error) ([]byte, error) {
	f := s.getInflater(p)
	defer s.putInflater(f)
	size := min(limit, max(growAhead, 4*len(p)))
	if err := grow(size); err != nil {
		return nil, err
	}
	out := make([]byte, 0, size)
	var probe [1]byte
	for {
		buf := out[len(out):cap(out)]
		if len(buf) == 0 && cap(out) < limit {
			size = min(limit, 2*cap(out))
			if err := grow(size); err != nil {
				return nil, err
			}
			out = regrow(out, size)
			buf = out[len(out):cap(out)]
		}
		if len(buf) == 0 {
			// At the limit: one byte more is one too many.
			buf = probe[:]
		}
		n, err := f.fr.Read(buf)
		if n > 0 && len(out) == limit {
			return nil, errInflateTooBig
		}
		out = out[:len(out)+n]
		switch {
		case err == nil:
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			// The end of the final block, or of the input after the
			// empty block that flushes it: the message is whole.
			if len(f.src.p) > 0 {
				return nil, errInflateBad
			}
			return out, nil
		default:
			return nil, errInflateBad
		}
	}
}
