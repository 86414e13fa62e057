package sipws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// growAhead is the most room a payload buffer is given ahead of the bytes
// that have arrived, when none or few have: a frame header alone costs no more,
// whatever length it declares. Past it, a buffer grows with what has arrived
// (what the read buffer and the socket hold) or, while the bytes trickle in,
// doubles each time it fills up, so it never holds much more than twice
// what came in.
const growAhead = 512

// growAheadBlind is growAhead on a connection whose socket cannot be asked
// what has arrived (TLS, or not Linux): room for a SIP message with a WebRTC
// offer in one allocation. Over TLS it costs little more: bytes arrive a
// record at a time, and crypto/tls keeps a buffer of the largest record
// (16 KiB) a peer sent for the life of the connection anyway.
const growAheadBlind = 4 << 10

// Sentinels the read loop ends with when it ended the connection itself.
var (
	errPeerClose = errors.New("sipws: close handshake done")
	errFailed    = errors.New("sipws: connection failed")
)

// serve is the connection's goroutine: it calls OnOpen, reads and delivers
// messages until the connection ends, then cleans up and calls OnClosed.
//
// It must stay the function every connection's goroutine starts in, and a
// frame of its own: a Shutdown called from a hook knows it by this frame
// (onConnGoroutine).
//
//go:noinline
func (c *Conn) serve() {
	defer c.srv.liveDone()
	c.finish(c.run())
}

// run calls the hooks and the read loop. A panic in a hook is logged and
// fails only this connection (1011).
func (c *Conn) run() (err error) {
	defer c.recoverHook(&err)
	c.open()
	return c.readLoop()
}

// open calls OnOpen. It is a function of its own so that its frame is not
// on the stack while the connection idles.
//
//go:noinline
func (c *Conn) open() {
	if h := c.srv.cfg.OnOpen; h != nil {
		h(c)
	}
}

// recoverHook, deferred by run, turns a panic in a hook into the failure of
// this connection alone (1011).
func (c *Conn) recoverHook(err *error) {
	p := recover()
	if p == nil {
		return
	}
	c.srv.log.Error("panic in a hook", "conn", c.id, "remote", c.remote, "panic", p, "stack", string(debug.Stack()))
	perr := fmt.Errorf("sipws: panic in a hook: %v", p)
	c.finalFrame(endCause{by: CauseHost, code: CloseInternalError, reason: "Internal error", err: perr},
		closeFrame(CloseInternalError, "Internal error"))
	*err = errFailed
}

// fail fails the connection for a protocol violation (RFC 6455 §7.1.7): our
// close frame with code and reason, then the end.
func (c *Conn) fail(code CloseCode, reason string) error {
	return c.failBy(CauseProtocolError, code, reason)
}

// failBy fails the connection for what the peer sent, as by says: our close
// frame with code and reason, then the end.
func (c *Conn) failBy(by CloseCause, code CloseCode, reason string) error {
	c.srv.log.Info("failing the connection", "conn", c.id, "remote", c.remote, "code", code, "reason", reason, "cause", by)
	c.finalFrame(endCause{by: by, code: code, reason: reason, err: &CloseError{Code: code, Reason: reason}},
		closeFrame(code, reason))
	return errFailed
}

// setReadDeadline sets the socket's read deadline to frame (zero for none),
// or to the close deadline when that is sooner. It re-checks the close
// deadline afterwards, as Close may arm it from another goroutine, and
// whether the connection was doomed meanwhile (see partialBudget.wake).
func (c *Conn) setReadDeadline(frame time.Time) {
	dl := frame
	cd := c.closeDL.Load()
	if cd != 0 && (dl.IsZero() || cd < dl.UnixNano()) {
		dl = time.Unix(0, cd)
	}
	_ = c.nc.SetReadDeadline(dl)
	if cd2 := c.closeDL.Load(); cd2 != cd && (frame.IsZero() || cd2 < frame.UnixNano()) {
		_ = c.nc.SetReadDeadline(time.Unix(0, cd2))
	}
	if c.doomed.Load() {
		_ = c.nc.SetReadDeadline(longAgo)
	}
}

// longAgo is a read deadline that has passed: it wakes a read at once.
var longAgo = time.Unix(1, 0)

// bufferedHeader returns the next frame's header when it is already whole
// in the read buffer (in place, valid until the next read), else nil. It
// does no I/O.
func (c *Conn) bufferedHeader() []byte {
	b := c.rb.bytes()
	if len(b) < 2 {
		return nil
	}
	if hl := headerLen(b[1]); len(b) >= hl {
		return b[:hl]
	}
	return nil
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// readState is a message being assembled across frames.
type readState struct {
	msg        []byte      // the message being assembled
	typ        MessageType // its type
	fragmented bool        // a message has started and not finished
	armed      bool        // the socket's read deadline is the message's
	byMessage  bool        // the current frame's deadline is the message's
	checked    int         // bytes of msg known to be valid UTF-8
	compressed bool        // the message is compressed (RSV1 on its first frame): msg holds it deflated
	held       int         // bytes of msg charged to Config.MaxPartialBytes
	deadline   time.Time   // when a message in fragments must have ended
}

// readLoop reads frames to the letter of RFC 6455 until the connection ends.
// It keeps its own frame small: an idle connection waits here, and a short
// stack lets the runtime keep its goroutine at the smallest stack size
// (waiting inside readFrame instead, an idle connection took 8.4 KiB of PSS,
// not 6.5, at 10,000 connections).
func (c *Conn) readLoop() error {
	var st readState
	defer c.endInput(&st)
	for {
		// Wait for the first byte of the next frame: without a deadline,
		// or until MessageTimeout while a message is unfinished. On plain
		// TCP an idle connection waits holding no read buffer.
		if c.rb.buffered() == 0 {
			if err := c.fill(); err != nil {
				return c.readError(err, &st)
			}
		}
		if err := c.readFrame(&st); err != nil {
			return err
		}
	}
}

// endInput ends the reading: the read buffer goes back, and the partial
// message, dropped, no longer counts against Config.MaxPartialBytes.
func (c *Conn) endInput(st *readState) {
	c.dropInput()
	c.release(st)
}

// dropMessage lets go of the partial message before the connection fails,
// which may take a while (the close frame is written first).
func (c *Conn) dropMessage(st *readState) {
	st.msg = nil
	c.release(st)
}

// release uncharges a message that is no longer partial: delivered, or
// dropped with the connection.
func (c *Conn) release(st *readState) {
	if st.held != 0 {
		c.srv.partial.release(c, st.held)
		st.held = 0
	}
}

// frameDeadline returns the deadline of a frame that starts now: FrameTimeout
// from now, or the end of the message it belongs to when that is sooner —
// and then the frame gets no grace, so that a peer cannot stretch its
// message one grace per frame.
func (c *Conn) frameDeadline(st *readState) time.Time {
	dl := time.Now().Add(c.srv.cfg.FrameTimeout)
	st.armed = false
	st.byMessage = st.fragmented && !st.deadline.After(dl)
	if st.byMessage {
		c.graced = true
		return st.deadline
	}
	return dl
}

// readFrame reads and handles one frame, whose first byte is in the read
// buffer.
func (c *Conn) readFrame(st *readState) error {
	maxSize := c.srv.cfg.MaxMessageSize
	// A frame already whole in the buffer is read without a deadline; any
	// other has FrameTimeout to arrive, from its first byte on, or less
	// when the message it continues must end sooner.
	c.graced = false
	timed := false
	hb := c.bufferedHeader()
	var err error
	if hb == nil {
		timed = true
		c.setReadDeadline(c.frameDeadline(st))
		if hb, err = c.peekHeader(); err != nil {
			return c.readError(err, st)
		}
	}
	h, bad := parseHeader(hb)
	if bad != "" {
		return c.fail(CloseProtocolError, bad)
	}
	if !timed && int64(c.rb.buffered()-len(hb)) < h.Length {
		timed = true
		c.setReadDeadline(c.frameDeadline(st))
	}
	c.rb.discard(len(hb))
	c.lastRecv.Store(c.srv.clock.Now().UnixNano())

	switch {
	case h.Rsv != 0 && (h.Rsv != rsvCompressed || c.dfl == nil):
		return c.fail(CloseProtocolError, "reserved bits set")
	case h.Rsv != 0 && h.OpCode != opText && h.OpCode != opBinary:
		// RFC 7692 §6.1: RSV1 only on the first frame of a data message.
		return c.fail(CloseProtocolError, "RSV1 set on a frame that does not start a data message")
	case !h.Masked:
		return c.fail(CloseProtocolError, "unmasked frame")
	}

	switch h.OpCode {
	case opPing, opPong, opClose:
		if !h.Fin {
			return c.fail(CloseProtocolError, "fragmented control frame")
		}
		if h.Length > maxControlPayload {
			return c.fail(CloseProtocolError, "control frame payload over 125 bytes")
		}
		// The payload (at most 125 bytes) is read in place in the
		// read buffer, valid until the next read.
		p, err := c.peek(int(h.Length))
		for err != nil && c.grace(err) {
			p, err = c.peek(int(h.Length))
		}
		if err != nil {
			return c.readError(err, st)
		}
		c.rb.discard(len(p))
		ws.Cipher(p, h.Mask, 0)
		c.srv.stats.countRx(c.sp, false)
		switch h.OpCode {
		case opPing:
			// Answer with the same payload.
			c.pongReply(p)
		case opPong:
			c.srv.ka.pongReceived(c)
		case opClose:
			return c.peerClose(p)
		}

	case opText, opBinary, opContinuation:
		switch {
		case h.OpCode == opContinuation && !st.fragmented:
			return c.fail(CloseProtocolError, "continuation frame without a message to continue")
		case h.OpCode != opContinuation && st.fragmented:
			return c.fail(CloseProtocolError, "new data frame inside a fragmented message")
		case h.OpCode != opContinuation:
			st.typ, st.msg, st.checked = MessageBinary, nil, 0
			st.compressed = h.Rsv != 0
			if h.OpCode == opText {
				st.typ = MessageText
			}
			if !h.Fin {
				// A message in fragments: MessageTimeout from now on.
				st.deadline = time.Now().Add(c.srv.cfg.MessageTimeout)
			}
		}
		if h.Length > c.wireLimit(st)-int64(len(st.msg)) {
			return c.fail(CloseMessageTooBig, fmt.Sprintf("message over %d bytes", maxSize))
		}
		err = c.readPayload(st, int(h.Length), h.Fin, h.Mask)
		if err == errBadUTF8 {
			return c.fail(CloseInvalidPayload, "invalid UTF-8 in a text message")
		}
		if err == nil && !h.Fin && cap(st.msg) > st.held && !c.charge(st, cap(st.msg)) {
			err = errPartialBudget
		}
		if err != nil {
			return c.readError(err, st)
		}
		c.srv.stats.countRx(c.sp, true)
		if h.Fin && st.compressed {
			if err := c.inflate(st); err != nil {
				return err
			}
		}
		if st.typ == MessageText && (h.Fin || !st.compressed) {
			n, ok := validUTF8Prefix(st.msg[st.checked:], h.Fin)
			if !ok {
				return c.fail(CloseInvalidPayload, "invalid UTF-8 in a text message")
			}
			st.checked += n
		}
		st.fragmented = !h.Fin
		if h.Fin {
			m := Message{Type: st.typ, Data: st.msg}
			st.msg = nil
			c.release(st)
			c.deliver(m)
		}

	default:
		return c.fail(CloseProtocolError, fmt.Sprintf("reserved opcode %#x", byte(h.OpCode)))
	}
	// Between frames the socket waits without a deadline, or until the
	// end of the unfinished message.
	switch {
	case st.fragmented && (timed || !st.armed):
		st.armed = true
		c.setReadDeadline(st.deadline)
	case !st.fragmented && (timed || st.armed):
		st.armed = false
		c.setReadDeadline(time.Time{})
	}
	return nil
}

// frameGrace is how long a frame whose FrameTimeout has passed gets to
// deliver what is already on its way: a deadline checked late (a busy
// machine did not run the goroutine in time) must not fail a healthy peer
// whose bytes are already in the socket.
const frameGrace = 100 * time.Millisecond

// grace reports whether a read that failed with err may be tried again: once
// per frame, after its FrameTimeout, with a short deadline that only lets
// bytes already there be read.
func (c *Conn) grace(err error) bool {
	if !isTimeout(err) || c.closeDL.Load() != 0 || c.graced || c.doomed.Load() {
		return false
	}
	c.graced = true
	c.setReadDeadline(time.Now().Add(frameGrace))
	return true
}

// peekHeader waits until the next frame's whole header is in the read
// buffer, so that reading it cannot stop half-way, and returns it, in place
// in the buffer (valid until the next read).
func (c *Conn) peekHeader() ([]byte, error) {
	need := 2
	for {
		b, err := c.peek(need)
		if err != nil {
			if c.grace(err) {
				continue
			}
			return nil, err
		}
		if hl := headerLen(b[1]); need < hl {
			need = hl
			continue
		}
		return b, nil
	}
}

// readError turns a read error into the end of the loop: a frame or message
// deadline that passed fails the connection (1008), and so does a refusal by
// the budget of partial messages, or a wake-up by it (1009).
func (c *Conn) readError(err error, st *readState) error {
	switch {
	case c.doomed.Load():
		c.dropMessage(st)
		return c.failBy(CausePartialBytes, CloseMessageTooBig, partialBytesReason)
	case !isTimeout(err) || c.closeDL.Load() != 0:
		return err
	case st.fragmented && (st.byMessage || st.armed):
		c.dropMessage(st)
		return c.failBy(CauseMessageTimeout, ClosePolicyViolation, "message not finished in time")
	}
	return c.fail(ClosePolicyViolation, "frame not finished in time")
}

// errBadUTF8 reports invalid UTF-8 found while a text frame arrives.
var errBadUTF8 = errors.New("sipws: invalid UTF-8")

// readPayload reads n payload bytes onto st.msg and unmasks them. Memory
// grows with the bytes that actually arrive, not with the declared length
// (see growAhead); in a frame that continues a message and is not its last,
// the buffer may grow past the frame, doubling, up to MaxMessageSize, so
// that a message in many frames is not copied over and over. A buffer that grows
// while its bytes are still on their way is charged to the budget of partial
// messages first (errPartialBudget when refused). In a text message, the
// bytes are checked for UTF-8 as they arrive, from st.checked on, so that a
// bad sequence fails the connection at once (errBadUTF8) rather than when
// the frame ends; the end of the message is checked by the caller.
func (c *Conn) readPayload(st *readState, n int, fin bool, mask [4]byte) error {
	msg := st.msg
	start := len(msg)
	if n == 0 {
		if msg == nil {
			st.msg = []byte{}
		}
		return nil
	}
	end := start + n
	limit := end
	if !fin && start > 0 {
		limit = max(end, int(c.srv.cfg.MaxMessageSize))
	}
	if cap(msg) < end && n <= c.rb.buffered() {
		// The whole payload is here: one allocation.
		msg = regrow(msg, min(limit, max(end, 2*cap(msg))))
	}
	for len(msg) < end {
		if len(msg) == cap(msg) {
			room := max(growAheadBlind, cap(msg))
			if c.raw != nil {
				room = max(growAhead, cap(msg))
			}
			if len(msg)+room < end {
				room = max(room, c.arrived())
			}
			want := min(limit, len(msg)+room)
			if !c.charge(st, want) {
				st.msg = msg
				return errPartialBudget
			}
			msg = regrow(msg, want)
		}
		k, err := c.read(msg[len(msg):min(cap(msg), end)])
		ws.Cipher(msg[len(msg):len(msg)+k], mask, len(msg)-start)
		msg = msg[:len(msg)+k]
		if err != nil && len(msg) < end && c.grace(err) {
			continue
		}
		if err != nil && len(msg) < end {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			st.msg = msg
			return err
		}
		if st.typ == MessageText && !st.compressed && len(msg) < end {
			v, ok := validUTF8Prefix(msg[st.checked:], false)
			if !ok {
				st.msg = msg
				return errBadUTF8
			}
			st.checked += v
		}
	}
	st.msg = msg
	return nil
}

// inflate replaces st.msg, a whole compressed message, with its inflated
// bytes (RFC 7692 §7.2.2), or fails the connection: 1009 once the output
// would pass MaxMessageSize, 1007 for data that does not inflate. The output
// is charged to the budget of partial messages as it grows, beside the
// compressed bytes it is made from.
func (c *Conn) inflate(st *readState) error {
	in := st.msg
	base := cap(in)
	out, err := c.srv.inflate(in, int(c.srv.cfg.MaxMessageSize), func(n int) error {
		if !c.charge(st, base+n) {
			return errPartialBudget
		}
		return nil
	})
	switch err {
	case nil:
		st.msg, st.checked = out, 0
		return nil
	case errInflateTooBig:
		c.dropMessage(st)
		return c.fail(CloseMessageTooBig, fmt.Sprintf("message over %d bytes", c.srv.cfg.MaxMessageSize))
	case errInflateBad:
		c.dropMessage(st)
		return c.fail(CloseInvalidPayload, "invalid compressed data")
	}
	return c.readError(err, st)
}

// charge charges the budget of partial messages for st.msg to hold want
// bytes; false when it refuses (the connection is then doomed).
func (c *Conn) charge(st *readState, want int) bool {
	if want <= st.held {
		return true
	}
	if !c.srv.partial.charge(c, int64(st.held), int64(want)) {
		return false
	}
	st.held = want
	return true
}

// regrow returns msg with room for c bytes (c ≥ len(msg)), in a new array
// of exactly that capacity.
func regrow(msg []byte, c int) []byte {
	b := make([]byte, len(msg), c)
	copy(b, msg)
	return b
}

// arrived returns how many bytes have arrived and can be read without
// waiting: in the read buffer, past the handshake, and, on plain TCP, in the
// socket's receive queue.
func (c *Conn) arrived() int {
	n := c.rb.buffered() + len(c.pre)
	if c.raw != nil {
		n += c.raw.queued()
	}
	return n
}

// crlfcrlf is the RFC 5626 §4.4.1 keepalive ping; crlf its pong.
const crlfcrlf = "\r\n\r\n"

// deliver hands a message to OnMessage, unless we are closing. On a sip
// connection a message that is exactly CRLFCRLF is a keepalive (RFC 5626
// §3.5.1, §4.4.1): it is answered with CRLF in the same frame type and not
// delivered; like any frame it counted as activity.
func (c *Conn) deliver(m Message) {
	if !c.isOpen() {
		return
	}
	if c.sp == SIP && string(m.Data) == crlfcrlf {
		_ = c.enqueue(outFrame{b: dataFrame(m.Type, m.Data[:2]), data: true})
		return
	}
	if c.srv.cfg.Framing != FramingOff {
		if err := CheckMessage(c.sp, m.Data); err != nil {
			c.invalid(m, err)
			return
		}
	}
	if o := c.srv.obs; o != nil {
		o.MessageReceived(c.sp, len(m.Data))
	}
	if h := c.srv.cfg.OnMessage; h != nil {
		h(c, m)
	}
}

// peerClose handles the peer's close frame: it validates it, answers it
// (echoing its code) unless it answers ours, and ends the loop.
func (c *Conn) peerClose(p []byte) error {
	code, reason := CloseNoStatus, ""
	switch {
	case len(p) == 1:
		return c.fail(CloseProtocolError, "close frame with a 1-byte payload")
	case len(p) >= 2:
		code = CloseCode(binary.BigEndian.Uint16(p))
		if !code.validOnWire() {
			return c.fail(CloseProtocolError, fmt.Sprintf("invalid close code %d", code))
		}
		if !utf8.Valid(p[2:]) {
			return c.fail(CloseInvalidPayload, "invalid UTF-8 in the close reason")
		}
		reason = string(p[2:])
	}
	echo := code
	if echo == CloseNoStatus {
		echo = CloseNormal
	}
	c.finalFrame(endCause{by: CausePeer, code: code, reason: reason}, closeFrame(echo, ""))
	return errPeerClose
}

// validUTF8Prefix checks b, the part of a text message not yet checked. For
// the final fragment all of b must be valid; before it, b may end in the
// first bytes of a character that the next fragment completes. It returns how
// many bytes are whole valid characters.
func validUTF8Prefix(b []byte, final bool) (int, bool) {
	if final {
		return len(b), utf8.Valid(b)
	}
	// Find where the last character starts.
	start := len(b)
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if !utf8.RuneStart(b[i]) {
			continue
		}
		start = i
		break
	}
	if start == len(b) || utf8.FullRune(b[start:]) {
		return len(b), utf8.Valid(b)
	}
	if !utf8.Valid(b[:start]) {
		return 0, false
	}
	return start, viablePrefix(b[start:])
}

// viablePrefix reports whether p, an incomplete UTF-8 sequence, can still be
// completed into a valid character.
func viablePrefix(p []byte) bool {
	var buf [utf8.UTFMax]byte
	for _, second := range [...]byte{0x80, 0x90, 0xA0} {
		n := copy(buf[:], p)
		if n == 1 {
			buf[1] = second
			n = 2
		}
		for ; n < utf8.UTFMax; n++ {
			buf[n] = 0x80
		}
		for l := len(p) + 1; l <= utf8.UTFMax; l++ {
			if r, size := utf8.DecodeRune(buf[:l]); r != utf8.RuneError && size == l {
				return true
			}
		}
	}
	return false
}
