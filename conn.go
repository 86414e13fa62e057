package sipws

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// ConnID identifies a connection. IDs start at 1 and are never reused by a
// Server.
type ConnID uint64

// connState is the life of a connection's sending side.
type connState uint8

const (
	stateOpen    connState = iota // messages may be sent
	stateClosing                  // our close frame is queued or sent; waiting for the reply
	stateClosed                   // nothing more is sent
)

// Conn is one WebSocket connection that completed its handshake. All its
// methods are safe for concurrent use, and none of them blocks on the peer:
// Send, Ping, Pong and Close queue the frame and return; a goroutine owned by
// the connection writes it with a deadline.
type Conn struct {
	srv      *Server
	id       ConnID
	sp       Subprotocol
	secure   bool
	remote   netip.AddrPort
	local    netip.AddrPort
	req      string // what it keeps of the handshake request: see packRequest
	identity any
	opened   time.Time

	nc  net.Conn
	raw *rawConn // reads and non-blocking writes on nc's descriptor; nil for TLS
	rb  readBuf  // the read buffer
	pre []byte   // bytes the HTTP server read past the handshake, not yet read

	lastRecv atomic.Int64 // Clock.Now().UnixNano() of the last frame received
	closeDL  atomic.Int64 // UnixNano read deadline while closing; 0 when none
	ka       kaState      // keepalive bookkeeping, owned by the keepalive worker
	routes   connRoutes   // routing index entries, guarded by Registry.routeMu
	// addrNewer and addrOlder link the connections with the same remote
	// address in Registry.byAddr, newest first; guarded by its shard's lock.
	addrNewer, addrOlder *Conn

	wmu     sync.Mutex // guards the fields below
	wwg     sync.WaitGroup
	state   connState
	writing bool          // a goroutine is writing the queue
	queue   []outFrame    // frames waiting to be written, in order
	spare   []outFrame    // the other queue slice, reused
	queued  int           // bytes in queue
	end     endCause      // why the connection ends; set once
	sockMu  sync.Mutex    // held while writing to nc
	done    chan struct{} // closed when the connection has ended

	graced bool        // the current frame had its grace read (read goroutine only)
	hidx   int32       // 1 + index among partialBudget.holders; 0 when not there (partialBudget.mu)
	doomed atomic.Bool // closed by partialBudget: its reads fail at once (set under partialBudget.mu)
}

// outFrame is a complete frame waiting to be written.
type outFrame struct {
	b       []byte
	data    bool    // a data frame (for the per-sub-protocol counters)
	pong    bool    // a Pong answering a Ping: a later one may replace it
	scratch *[]byte // the server's pooled block b is in: b is copied before it waits
}

// own makes f's bytes its own, out of the pooled block, which goes back to
// the pool; the frame can then wait in the queue.
func (f *outFrame) own(s *Server) {
	if f.scratch != nil {
		f.b = append([]byte(nil), f.b...)
		s.putScratch(f)
	}
}

// endCause records how a connection ends.
type endCause struct {
	by     CloseCause
	code   CloseCode
	reason string
	err    error
}

func (s *Server) newConn(nc net.Conn, r *http.Request, cl client, sp Subprotocol, identity any, pre []byte) *Conn {
	req, dropped := packRequest(r, s.cfg.KeepHeaders, s.cfg.MaxKeptHeaderBytes)
	c := &Conn{
		srv:      s,
		id:       ConnID(s.nextID.Add(1)),
		sp:       sp,
		secure:   cl.secure,
		remote:   cl.addr,
		local:    unmap(addrPort(nc.LocalAddr())),
		req:      req,
		identity: identity,
		opened:   s.clock.Now(),
		nc:       nc,
		done:     make(chan struct{}),
	}
	c.raw = newRawConn(nc)
	c.rb.pool = &s.readers
	c.pre = pre
	c.lastRecv.Store(c.opened.UnixNano())
	if dropped != nil {
		s.log.Info("handshake request parts not kept", "conn", c.id, "remote", c.remote,
			"dropped", dropped, "max_kept_header_bytes", s.cfg.MaxKeptHeaderBytes)
	}
	return c
}

// ID returns the connection's ID (Kamailio's $ws_conid).
func (c *Conn) ID() ConnID { return c.id }

// Server returns the Server that owns the connection, so that a hook can
// reach it (BindInstance, ResolveFlow, MapMSRPSession, Registry) without a
// variable declared before New.
func (c *Conn) Server() *Server { return c.srv }

// Subprotocol returns the sub-protocol the connection speaks: SIP or MSRP.
func (c *Conn) Subprotocol() Subprotocol { return c.sp }

// RemoteAddr returns the peer's address ($si:$sp). Behind a trusted proxy
// it is the client's IP (Config.ForwardedHeader) with the port of the
// proxy's connection.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// LocalAddr returns the server's address the connection came in on.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Secure reports a wss connection (TLS on the socket).
func (c *Conn) Secure() bool { return c.secure }

// Header returns the handshake request's headers that the connection kept
// for its life: those Config.KeepHeaders names (by default Origin and
// User-Agent), each with all its values, as long as they fit
// Config.MaxKeptHeaderBytes together with the request URI and the Host (see
// there). Every other header is dropped once the handshake is done: the
// host's handler, CheckOrigin and Authorize see them all, and what a
// connection needs later, such as who the user is, travels with it as
// Conn.Identity. The headers are kept compactly, as text, to keep an idle
// connection small: each call parses them into a new map, which the caller
// owns.
func (c *Conn) Header() http.Header {
	_, _, head := unpackRequest(c.req)
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(head))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return http.Header{}
	}
	return http.Header(h)
}

// Cookies parses the cookies of the handshake request's Cookie header (RFC
// 7118 §7), when the connection kept it: Config.KeepHeaders must name
// Cookie, which it does not by default.
func (c *Conn) Cookies() []*http.Cookie {
	return (&http.Request{Header: c.Header()}).Cookies()
}

// Cookie returns the named cookie of the handshake request, or
// http.ErrNoCookie; as Cookies, it needs Cookie in Config.KeepHeaders.
func (c *Conn) Cookie(name string) (*http.Cookie, error) {
	return (&http.Request{Header: c.Header()}).Cookie(name)
}

// URL returns the handshake request's URL (path and query), parsed anew on
// each call. It is empty when the request URI was longer than
// Config.MaxKeptHeaderBytes allows.
func (c *Conn) URL() *url.URL {
	uri, _, _ := unpackRequest(c.req)
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return &url.URL{Path: uri}
	}
	return u
}

// Host returns the handshake request's Host header; "" when it was longer
// than Config.MaxKeptHeaderBytes allows.
func (c *Conn) Host() string {
	_, host, _ := unpackRequest(c.req)
	return host
}

// packedFraming is the bytes packRequest adds to what it keeps: the two
// newlines after the URI and the Host, and the blank line that ends the
// headers.
const packedFraming = 4

// packRequest keeps what a Conn tells of its handshake request in one
// string of at most limit bytes: the request URI, the Host, and the headers
// named in keep, in that order of priority. Each part ends with a newline;
// the headers are "Name: value\r\n" lines followed by a blank line. A part
// that does not fit in what is left is dropped whole (a header with all its
// values), and named in dropped; the later ones may still fit. The string is
// a fresh copy: it holds on to none of the request's memory.
func packRequest(r *http.Request, keep []string, limit int) (packed string, dropped []string) {
	room := limit - packedFraming
	fits := func(n int) bool {
		if n > room {
			return false
		}
		room -= n
		return true
	}
	uri, host := r.RequestURI, r.Host
	if !fits(len(uri)) {
		dropped, uri = append(dropped, "request URI"), ""
	}
	if !fits(len(host)) {
		dropped, host = append(dropped, "Host"), ""
	}
	kept := make([]string, 0, len(keep))
	for _, k := range keep {
		n := 0
		for _, v := range r.Header[k] {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
		switch {
		case n == 0:
		case fits(n):
			kept = append(kept, k)
		default:
			dropped = append(dropped, k)
		}
	}
	var b strings.Builder
	b.Grow(limit - room)
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(host)
	b.WriteByte('\n')
	for _, k := range kept {
		for _, v := range r.Header[k] {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String(), dropped
}

// unpackRequest splits what packRequest made.
func unpackRequest(s string) (uri, host, head string) {
	uri, rest, _ := strings.Cut(s, "\n")
	host, head, _ = strings.Cut(rest, "\n")
	return uri, host, head
}

// Identity returns what Config.Authorize returned for this connection.
func (c *Conn) Identity() any { return c.identity }

// Opened returns when the handshake completed.
func (c *Conn) Opened() time.Time { return c.opened }

// LastUsed returns when the last frame was received from the peer.
func (c *Conn) LastUsed() time.Time { return time.Unix(0, c.lastRecv.Load()) }

// isOpen reports whether messages may still be sent on c.
func (c *Conn) isOpen() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.state == stateOpen
}

// Buffered returns the bytes queued for the peer and not yet written to the
// socket. A host that sends in bulk can watch it to stay under
// Config.SendQueueSize, past which the connection is closed as a slow
// consumer.
func (c *Conn) Buffered() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.queued
}

// Done returns a channel that is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// String returns "ws:REMOTE -> ws:LOCAL #ID" (wss for a secure one).
func (c *Conn) String() string {
	return fmt.Sprintf("%s:%s -> %s:%s #%d", c.scheme(), c.remote, c.scheme(), c.local, c.id)
}

func (c *Conn) scheme() string {
	if c.secure {
		return "wss"
	}
	return "ws"
}

// Send sends data as one message: a text frame when data is valid UTF-8, a
// binary frame otherwise (RFC 7118 §4.2, RFC 7977). It copies data and returns
// without waiting for the peer. It fails with ErrClosed once the connection is
// closing, ErrMessageTooBig past Config.MaxMessageSize, and ErrSendQueueFull
// when the peer does not read (the connection is then closed).
func (c *Conn) Send(data []byte) error {
	typ := MessageBinary
	if utf8.Valid(data) {
		typ = MessageText
	}
	return c.send(typ, data)
}

// SendMessage sends data as one message of the given type. A Text message
// must be valid UTF-8.
func (c *Conn) SendMessage(typ MessageType, data []byte) error {
	switch typ {
	case MessageText:
		if !utf8.Valid(data) {
			return fmt.Errorf("sipws: send on %d: text message is not valid UTF-8", c.id)
		}
	case MessageBinary:
	default:
		return fmt.Errorf("sipws: send on %d: unknown message type %d", c.id, typ)
	}
	return c.send(typ, data)
}

// send is SendMessage once the type is known to fit the data.
func (c *Conn) send(typ MessageType, data []byte) error {
	if int64(len(data)) > c.srv.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrMessageTooBig, len(data), c.srv.cfg.MaxMessageSize)
	}
	f := outFrame{data: true}
	if c.raw != nil && len(data) <= scratchSize-maxHeaderLen {
		// Built in a pooled block: the frame usually goes out at once, and
		// is copied only if it must wait.
		f.scratch = c.srv.scratch.Get().(*[]byte)
		f.b = appendDataFrame((*f.scratch)[:0], typ, data)
	} else {
		f.b = dataFrame(typ, data)
	}
	if err := c.enqueue(f); err != nil {
		return err
	}
	if o := c.srv.obs; o != nil {
		o.MessageSent(c.sp, len(data))
	}
	return nil
}

// Ping sends a Ping frame with data (at most 125 bytes) as payload. It does
// not wait for the Pong; the Pong's round-trip time shows in Registry.Dump.
func (c *Conn) Ping(data []byte) error {
	if len(data) > maxControlPayload {
		return errControlTooLong
	}
	// Note the Ping before it can go out, so that no Pong can come first.
	c.srv.ka.pingSent(c)
	if err := c.enqueue(outFrame{b: controlFrame(opPing, data)}); err != nil {
		c.ka.awaiting.Store(false)
		return err
	}
	return nil
}

// Pong sends an unsolicited Pong frame with data (at most 125 bytes): a
// one-way heartbeat (RFC 6455 §5.5.3).
func (c *Conn) Pong(data []byte) error {
	if len(data) > maxControlPayload {
		return errControlTooLong
	}
	return c.enqueue(outFrame{b: controlFrame(opPong, data)})
}

// Close starts the close handshake with code and reason, as Kamailio's
// ws_close(): 0 and "" stand for 1000 "Normal closure". The code must be one
// that may be sent (RFC 6455 §7.4: 1000–1003, 1007–1014, 3000–4999) and the
// reason at most 123 bytes of UTF-8, or an error saying which is wrong is
// returned and nothing is sent. Close returns at
// once; the TCP connection is closed when the peer answers, or after
// Config.CloseTimeout, and then OnClosed fires. Closing a connection that is
// already closing returns ErrClosed.
func (c *Conn) Close(code CloseCode, reason string) error {
	if code == 0 {
		code = defaultCloseCode
		if reason == "" {
			reason = defaultCloseReason
		}
	}
	if err := checkClose(code, reason); err != nil {
		return err
	}
	return c.startClose(CauseHost, code, reason, nil)
}

// pongReply queues the answer to a Ping (RFC 6455 §5.5.2): also while our
// own close handshake is under way — only data frames stop after a close
// frame (§5.5.1) — but not after the peer's close. When an earlier answer is
// still waiting at the end of the queue, it is replaced rather than joined
// (§5.5.3 lets the last Ping alone be answered), so that a peer that floods
// Pings and reads nothing holds one Pong, not a pile of them.
func (c *Conn) pongReply(p []byte) {
	f := outFrame{b: controlFrame(opPong, p), pong: true}
	c.wmu.Lock()
	switch {
	case c.state == stateClosed:
		c.wmu.Unlock()
		return
	case len(c.queue) > 0 && c.queue[len(c.queue)-1].pong:
		last := &c.queue[len(c.queue)-1]
		c.queued += len(f.b) - len(last.b)
		*last = f
		c.wmu.Unlock()
		return
	case c.raw != nil && !c.writing && len(c.queue) == 0:
		c.writeNow(f)
		return
	}
	c.pushLocked(f)
	c.wmu.Unlock()
}

// enqueue adds a frame to the send queue and makes sure a writer runs. A
// control frame is not held to the queue bound.
func (c *Conn) enqueue(f outFrame) error {
	c.wmu.Lock()
	if c.state != stateOpen {
		c.wmu.Unlock()
		c.srv.putScratch(&f)
		return fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	if f.data && c.queued > 0 && c.queued+len(f.b) > c.srv.cfg.SendQueueSize {
		queued := c.queued
		c.wmu.Unlock()
		c.srv.putScratch(&f)
		err := fmt.Errorf("%w: connection %d has %d bytes waiting, the bound is %d", ErrSendQueueFull, c.id, queued, c.srv.cfg.SendQueueSize)
		c.abort(CauseSlowConsumer, ClosePolicyViolation, "send queue full", err)
		return err
	}
	if c.raw != nil && !c.writing && len(c.queue) == 0 {
		c.writeNow(f)
		return nil
	}
	c.pushLocked(f)
	c.wmu.Unlock()
	return nil
}

// writeNow writes f from the caller's goroutine as far as the socket takes it
// without waiting, and leaves the rest, and whatever was queued meanwhile, to
// a writer goroutine. c.wmu is held on entry and released on return. Most
// frames go out this way, with no goroutine and no copy of the queue.
func (c *Conn) writeNow(f outFrame) {
	// The caller is the writer for now: counted like a writer goroutine, so
	// that the end of the connection waits for it.
	c.writing = true
	c.wwg.Add(1)
	defer c.wwg.Done()
	c.wmu.Unlock()
	c.sockMu.Lock()
	n, err := c.raw.tryWrite(f.b)
	c.sockMu.Unlock()
	if err != nil {
		c.srv.putScratch(&f)
		c.abort(CauseWriteFailure, CloseAbnormal, "", fmt.Errorf("sipws: write to connection %d: %w", c.id, err))
		c.wmu.Lock()
		clear(c.queue)
		c.queue, c.queued, c.writing = c.queue[:0], 0, false
		c.wmu.Unlock()
		return
	}
	c.wmu.Lock()
	if n == len(f.b) {
		var data uint64
		if f.data {
			data = 1
		}
		c.srv.stats.countTx(c.sp, 1, data)
	} else {
		// The rest of the frame goes first; never as a Pong that a later
		// one could replace.
		f.b = f.b[n:]
		f.own(c.srv)
		c.queue = append(c.queue, outFrame{})
		copy(c.queue[1:], c.queue)
		c.queue[0] = outFrame{b: f.b, data: f.data}
		c.queued += len(f.b)
	}
	c.srv.putScratch(&f)
	if len(c.queue) == 0 {
		c.writing = false
	} else {
		c.wwg.Add(1)
		go c.writeLoop()
	}
	c.wmu.Unlock()
}

// pushLocked appends f and starts a writer when none runs. c.wmu is held.
func (c *Conn) pushLocked(f outFrame) {
	f.own(c.srv)
	c.queue = append(c.queue, f)
	c.queued += len(f.b)
	if !c.writing {
		c.writing = true
		c.wwg.Add(1)
		go c.writeLoop()
	}
}

// writeLoop writes the queue until it is empty. At most one runs per
// connection; the connection's read goroutine waits for it before it ends.
func (c *Conn) writeLoop() {
	defer c.wwg.Done()
	for {
		c.wmu.Lock()
		batch := c.queue
		if len(batch) == 0 {
			c.queue, c.queued, c.writing = c.queue[:0], 0, false
			c.wmu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.wmu.Unlock()

		n, err := c.writeFrames(batch)

		clear(batch)
		c.wmu.Lock()
		c.queued -= n
		c.spare = batch[:0]
		c.wmu.Unlock()
		if err != nil {
			c.abort(CauseWriteFailure, CloseAbnormal, "", fmt.Errorf("sipws: write to connection %d: %w", c.id, err))
			c.wmu.Lock()
			clear(c.queue)
			c.queue, c.queued, c.writing = c.queue[:0], 0, false
			c.wmu.Unlock()
			return
		}
	}
}

// writeFrames writes frames to the socket in one go, with the write
// deadline, and counts them. It returns the bytes the frames held.
func (c *Conn) writeFrames(frames []outFrame) (int, error) {
	var total, data int
	bufs := make(net.Buffers, 0, len(frames))
	for _, f := range frames {
		bufs = append(bufs, f.b)
		total += len(f.b)
		if f.data {
			data++
		}
	}
	c.sockMu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := bufs.WriteTo(c.nc)
	if err == nil && c.raw != nil {
		// A deadline left in the past would fail the next direct write.
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	c.sockMu.Unlock()
	if err == nil {
		c.srv.stats.countTx(c.sp, uint64(len(frames)), uint64(data))
	}
	return total, err
}

// recordEnd sets why the connection ends, unless that is already known.
// c.wmu is held.
func (c *Conn) recordEnd(by CloseCause, code CloseCode, reason string, err error) {
	if c.end.by == 0 {
		c.end = endCause{by: by, code: code, reason: reason, err: err}
	}
}

// startClose sends our close frame and gives the peer Config.CloseTimeout to
// answer it.
func (c *Conn) startClose(by CloseCause, code CloseCode, reason string, err error) error {
	c.wmu.Lock()
	if c.state != stateOpen {
		c.wmu.Unlock()
		return fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	c.state = stateClosing
	c.recordEnd(by, code, reason, err)
	c.pushLocked(outFrame{b: closeFrame(code, reason)})
	c.wmu.Unlock()
	c.srv.log.Debug("closing", "conn", c.id, "remote", c.remote, "code", code, "reason", reason, "by", by)
	c.armCloseDeadline()
	return nil
}

// armCloseDeadline bounds the read side's wait for the close reply.
func (c *Conn) armCloseDeadline() {
	dl := time.Now().Add(c.srv.cfg.CloseTimeout)
	c.closeDL.Store(dl.UnixNano())
	_ = c.nc.SetReadDeadline(dl)
}

// abort ends the connection at once, without a close handshake: the socket is
// closed, which ends the read goroutine and any write in progress. When a
// close handshake was under way, its cause stays and err tells why it did
// not complete.
func (c *Conn) abort(by CloseCause, code CloseCode, reason string, err error) {
	c.wmu.Lock()
	c.recordEnd(by, code, reason, err)
	if c.end.err == nil {
		c.end.err = err
	}
	c.state = stateClosed
	c.wmu.Unlock()
	c.srv.log.Debug("aborting", "conn", c.id, "remote", c.remote, "by", by, "err", err)
	_ = c.nc.Close()
}

// finalFrame is called by the read goroutine when the connection is to end
// after one last frame (the echo of the peer's close, or our close for a
// protocol error). It records cause, stops the queue, appends f when the
// connection was still open (no close frame of ours went out yet), and writes
// whatever is queued, waiting for a writer that runs.
func (c *Conn) finalFrame(cause endCause, f []byte) {
	c.wmu.Lock()
	c.recordEnd(cause.by, cause.code, cause.reason, cause.err)
	if c.state == stateOpen && f != nil {
		c.queue = append(c.queue, outFrame{b: f})
		c.queued += len(f)
	}
	c.state = stateClosed
	inline := !c.writing && len(c.queue) > 0
	var batch []outFrame
	if inline {
		batch, c.queue = c.queue, nil
		c.queued = 0
	}
	c.wmu.Unlock()
	if inline {
		_, _ = c.writeFrames(batch)
		return
	}
	c.wwg.Wait()
}
