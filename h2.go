package sipws

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WebSocket over HTTP/2 (RFC 8441). A browser sends the handshake as an
// Extended CONNECT on a stream of the HTTP/2 connection it already holds:
// :method CONNECT, :protocol websocket, Sec-WebSocket-Version 13 and the
// sub-protocols as usual, no Sec-WebSocket-Key. The answer is a 200, and the
// stream's DATA frames then carry the WebSocket frames both ways: the request
// body in, the response body out. The HTTP/2 server offers it only when the
// process starts with GODEBUG=http2xconnect=1 (Go 1.24 and later).
//
// The stream cannot be hijacked: the handler's goroutine stays in
// HandleHandshake for the life of the connection, reading the request body
// for the connection (h2Conn.serve), and returns when the connection ends,
// which ends the stream.

// xconnectSetting is what a host sets to have Go's HTTP/2 server offer
// Extended CONNECT.
const xconnectSetting = "GODEBUG=http2xconnect=1"

// xconnectOn reports whether the process runs with Go's HTTP/2 server
// offering Extended CONNECT, by the test net/http makes when it starts.
func xconnectOn() bool { return strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") }

// isHTTP2 reports a request that came over HTTP/2.
func isHTTP2(r *http.Request) bool { return r.ProtoMajor == 2 }

// checkHTTP2 applies RFC 8441 §4 and §5 to a request that came over HTTP/2
// (the parts that differ from HTTP/1.1): it must be an Extended CONNECT for
// the websocket protocol.
func (s *Server) checkHTTP2(r *http.Request) *refusal {
	if r.Method == http.MethodConnect && r.Header.Get(":protocol") != "" {
		if p := r.Header.Get(":protocol"); !strings.EqualFold(p, "websocket") {
			return &refusal{status: http.StatusBadRequest, msg: "unsupported :protocol " + quote(p) + `: want "websocket"`}
		}
		return nil
	}
	if !xconnectOn() {
		s.h2warn.Do(func() {
			s.log.Warn("a WebSocket handshake came over HTTP/2 without Extended CONNECT: start the process with "+
				xconnectSetting+" to serve WebSocket over HTTP/2 (RFC 8441), or offer only http/1.1 by ALPN",
				"remote", r.RemoteAddr, "method", r.Method)
		})
		return &refusal{status: http.StatusBadRequest, msg: "WebSocket over HTTP/2 needs Extended CONNECT (RFC 8441), " +
			"which this server does not offer: it must run with " + xconnectSetting + "; or use HTTP/1.1"}
	}
	what := r.Method
	if r.Method == http.MethodConnect {
		what = "a CONNECT without :protocol"
	}
	return &refusal{
		status: http.StatusMethodNotAllowed,
		msg:    "WebSocket over HTTP/2 must be an Extended CONNECT with :protocol websocket (RFC 8441), not " + what,
		header: [][2]string{{"Allow", http.MethodConnect}},
	}
}

// HTTP2 reports a connection carried by a stream of an HTTP/2 connection
// (RFC 8441's Extended CONNECT) rather than by a connection of its own
// upgraded from HTTP/1.1.
func (c *Conn) HTTP2() bool { return c.h2 }

// proto names what carried the connection, for log lines and dumps.
func (c *Conn) proto() string {
	if c.h2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// upgradeHTTP2 answers an Extended CONNECT with 200 and starts the
// connection on the stream. It returns the status answered (0 when the
// stream was lost) and, on success, the stream's adapter, whose serve the
// handler's goroutine must run until the connection ends.
func (s *Server) upgradeHTTP2(w http.ResponseWriter, r *http.Request, cl client, sp Subprotocol, unnegotiated bool, identity any) (int, *h2Conn) {
	s.mu.RLock()
	closed := s.closed
	if !closed {
		s.live.Add(1)
	}
	s.mu.RUnlock()
	if closed {
		return s.refuse(w, r, &refusal{status: http.StatusServiceUnavailable, msg: "server shutting down"}), nil
	}
	started := false
	defer func() {
		if !started {
			s.liveDone()
		}
	}()
	h := w.Header()
	for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol",
		"Sec-Websocket-Extensions", "Content-Length", "Transfer-Encoding", "Access-Control-Allow-Origin", "Content-Type"} {
		h.Del(k)
	}
	if !unnegotiated {
		h.Set("Sec-WebSocket-Protocol", sp.Token())
	}
	if v := s.cfg.CORS.allowOrigin(r.Header.Get("Origin")); v != "" {
		h.Set("Access-Control-Allow-Origin", v)
	}
	hc := newH2Conn(w, r, s.cfg.ReadBufferSize)
	// The http.Server's ReadTimeout and WriteTimeout, which Go's HTTP/2
	// server gives each stream, bound the handshake, not the connection
	// (which has its own: FrameTimeout, WriteTimeout, keepalive).
	_ = hc.rc.SetReadDeadline(time.Time{})
	_ = hc.rc.SetWriteDeadline(time.Time{})
	_ = hc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := hc.writeHeader(http.StatusOK); err != nil {
		s.stats.failedHS.Add(1)
		s.log.Info("handshake failed", "remote", r.RemoteAddr, "proto", r.Proto, "err", err)
		_ = hc.Close()
		hc.end()
		return 0, nil
	}
	_ = hc.SetWriteDeadline(time.Time{})
	c := s.newConn(hc, r, cl, sp, identity, nil)
	c.h2 = true
	s.open(c)
	started = true
	go c.serve()
	return http.StatusOK, hc
}

// h2Conn is a net.Conn over an HTTP/2 stream: reads come from the request
// body, writes go to the response, flushed at once. Its deadlines are those
// of a net.Conn (they may be moved, and a read that timed out may be tried
// again): the stream's own (http.ResponseController's) reset the stream when
// they pass, so a write deadline is only handed to the stream while a write
// is under way and has passed, and reads wait here, for what the handler's
// goroutine (serve) reads from the body.
type h2Conn struct {
	w             http.ResponseWriter
	rc            *http.ResponseController
	body          io.ReadCloser
	local, remote net.Addr
	chunk         int // bytes serve reads from the body at a time

	closeOnce sync.Once
	closed    chan struct{} // closed by Close
	in        chan h2Chunk  // serve → Read: what the body gave
	took      chan struct{} // Read → serve: the last chunk was read whole (capacity 1)

	// The reading side, Read's alone.
	cur  []byte // the rest of the chunk being read
	rerr error  // the body's error, once Read reached it

	rmu   sync.Mutex
	rdl   time.Time     // the read deadline
	rwake chan struct{} // closed when the read deadline moves

	wdl   atomic.Int64 // the write deadline (UnixNano); 0 for none
	wmu   sync.Mutex   // held while writing to the response; guards wdone
	wdone bool         // the handler is returning: the response may not be used

	smu     sync.Mutex  // guards ended and the stream's deadline
	ended   bool        // the handler returned
	expired atomic.Bool // a write deadline passed and the stream was reset
}

// h2Chunk is one read from the request body.
type h2Chunk struct {
	b   []byte
	err error
}

func newH2Conn(w http.ResponseWriter, r *http.Request, chunk int) *h2Conn {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		local = h2Addr("")
	}
	return &h2Conn{
		w:      w,
		rc:     http.NewResponseController(w),
		body:   r.Body,
		local:  local,
		remote: h2Addr(r.RemoteAddr),
		chunk:  chunk,
		closed: make(chan struct{}),
		in:     make(chan h2Chunk),
		took:   make(chan struct{}, 1),
		rwake:  make(chan struct{}),
	}
}

// h2Addr is the address of the HTTP/2 connection's peer, as net/http gives
// it (host:port).
type h2Addr string

func (a h2Addr) Network() string { return "tcp" }
func (a h2Addr) String() string  { return string(a) }

// serve reads the request body for Read until the connection is closed,
// then makes the response unusable and returns; it runs on the handler's
// goroutine, whose return ends the stream.
func (h *h2Conn) serve() {
	defer h.end()
	buf := make([]byte, h.chunk)
	for {
		n, err := h.body.Read(buf)
		if n == 0 && err == nil {
			continue
		}
		if err != nil && h.expired.Load() {
			// A write deadline reset the stream: the write fails and
			// ends the connection, with its cause (not a lost peer).
			<-h.closed
			return
		}
		select {
		case h.in <- h2Chunk{b: buf[:n], err: err}:
		case <-h.closed:
			return
		}
		if err != nil {
			<-h.closed
			return
		}
		select {
		case <-h.took:
		case <-h.closed:
			return
		}
	}
}

// end waits for a write under way, resetting the stream if it is stuck, and
// marks the response as no longer usable, before the handler returns.
func (h *h2Conn) end() {
	if !h.wmu.TryLock() {
		h.resetStream()
		h.wmu.Lock()
	}
	h.wdone = true
	h.wmu.Unlock()
	h.smu.Lock()
	h.ended = true
	h.smu.Unlock()
}

// resetStream resets the stream while the handler runs, which fails a write
// under way.
func (h *h2Conn) resetStream() {
	h.smu.Lock()
	defer h.smu.Unlock()
	if !h.ended {
		h.expired.Store(true)
		_ = h.rc.SetWriteDeadline(longAgo)
	}
}

// Read reads what the peer sent on the stream.
func (h *h2Conn) Read(p []byte) (int, error) {
	for len(h.cur) == 0 && h.rerr == nil {
		if err := h.wait(); err != nil {
			return 0, err
		}
	}
	if len(h.cur) == 0 {
		return 0, h.rerr
	}
	n := copy(p, h.cur)
	h.cur = h.cur[n:]
	if len(h.cur) == 0 && h.rerr == nil {
		h.took <- struct{}{}
	}
	return n, nil
}

// wait waits for the next chunk from serve, until the read deadline.
func (h *h2Conn) wait() error {
	h.rmu.Lock()
	dl, wake := h.rdl, h.rwake
	h.rmu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case ch := <-h.in:
		h.cur, h.rerr = ch.b, ch.err
	case <-timeout:
		return os.ErrDeadlineExceeded
	case <-wake:
	case <-h.closed:
		return net.ErrClosed
	}
	return nil
}

// Write writes p to the stream and flushes it, within the write deadline.
func (h *h2Conn) Write(p []byte) (int, error) {
	n := 0
	err := h.do(func() error {
		var err error
		n, err = h.w.Write(p)
		if err == nil {
			err = h.rc.Flush()
		}
		return err
	})
	return n, err
}

// writeHeader sends the response's header, within the write deadline.
func (h *h2Conn) writeHeader(status int) error {
	return h.do(func() error {
		h.w.WriteHeader(status)
		return h.rc.Flush()
	})
}

// do runs a write on the response, resetting the stream should the write
// deadline pass first.
func (h *h2Conn) do(write func() error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.wdone {
		return net.ErrClosed
	}
	if h.expired.Load() {
		return os.ErrDeadlineExceeded
	}
	if dl := h.wdl.Load(); dl != 0 {
		d := time.Until(time.Unix(0, dl))
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.AfterFunc(d, h.resetStream)
		defer t.Stop()
	}
	err := write()
	if err != nil && h.expired.Load() {
		return fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return err
}

// Close ends the connection: reads and writes fail from now on, and the
// handler's goroutine returns, which ends the stream.
func (h *h2Conn) Close() error {
	h.closeOnce.Do(func() {
		close(h.closed)
		_ = h.body.Close() // wakes serve's read
	})
	return nil
}

func (h *h2Conn) LocalAddr() net.Addr  { return h.local }
func (h *h2Conn) RemoteAddr() net.Addr { return h.remote }

// SetDeadline sets both deadlines.
func (h *h2Conn) SetDeadline(t time.Time) error {
	_ = h.SetReadDeadline(t)
	return h.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline, also for a Read under way.
func (h *h2Conn) SetReadDeadline(t time.Time) error {
	h.rmu.Lock()
	h.rdl = t
	close(h.rwake)
	h.rwake = make(chan struct{})
	h.rmu.Unlock()
	return nil
}

// SetWriteDeadline sets the deadline of the writes that start from now on.
func (h *h2Conn) SetWriteDeadline(t time.Time) error {
	var dl int64
	if !t.IsZero() {
		dl = t.UnixNano()
	}
	h.wdl.Store(dl)
	return nil
}
