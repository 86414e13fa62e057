package sipws

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"time"
	"unicode/utf8"
)

// CloseCode is a WebSocket close status code (RFC 6455 §7.4).
type CloseCode uint16

// Close codes of RFC 6455 §7.4.1 and the IANA registry.
const (
	CloseNormal           CloseCode = 1000 // normal closure
	CloseGoingAway        CloseCode = 1001 // server shutting down, browser leaving the page
	CloseProtocolError    CloseCode = 1002 // the peer broke RFC 6455
	CloseUnsupportedData  CloseCode = 1003 // a data type the endpoint cannot accept
	CloseNoStatus         CloseCode = 1005 // reserved: no code was present (never sent)
	CloseAbnormal         CloseCode = 1006 // reserved: no close frame at all (never sent)
	CloseInvalidPayload   CloseCode = 1007 // e.g. a text message that is not UTF-8
	ClosePolicyViolation  CloseCode = 1008 // generic policy reason, e.g. a slow consumer
	CloseMessageTooBig    CloseCode = 1009 // a message over the size limit
	CloseMandatoryExt     CloseCode = 1010 // (client only) an extension was not negotiated
	CloseInternalError    CloseCode = 1011 // unexpected condition on the server
	CloseServiceRestart   CloseCode = 1012 // IANA: service restart
	CloseTryAgainLater    CloseCode = 1013 // IANA: try again later
	CloseBadGateway       CloseCode = 1014 // IANA: bad gateway
	CloseTLSHandshakeFail CloseCode = 1015 // reserved: TLS failure (never sent)
)

// Default close code and reason of Conn.Close and Registry.Close, as
// Kamailio's ws_close().
const (
	defaultCloseCode   = CloseNormal
	defaultCloseReason = "Normal closure"
)

// maxCloseReason is the longest reason that fits a control frame (125 bytes
// less the 2-byte code).
const maxCloseReason = 123

// String returns the code as a number followed by its meaning, e.g.
// "1000 (normal closure)".
func (c CloseCode) String() string {
	var name string
	switch c {
	case CloseNormal:
		name = "normal closure"
	case CloseGoingAway:
		name = "going away"
	case CloseProtocolError:
		name = "protocol error"
	case CloseUnsupportedData:
		name = "unsupported data"
	case CloseNoStatus:
		name = "no status"
	case CloseAbnormal:
		name = "abnormal closure"
	case CloseInvalidPayload:
		name = "invalid payload"
	case ClosePolicyViolation:
		name = "policy violation"
	case CloseMessageTooBig:
		name = "message too big"
	case CloseMandatoryExt:
		name = "mandatory extension"
	case CloseInternalError:
		name = "internal error"
	case CloseServiceRestart:
		name = "service restart"
	case CloseTryAgainLater:
		name = "try again later"
	case CloseBadGateway:
		name = "bad gateway"
	case CloseTLSHandshakeFail:
		name = "TLS handshake failure"
	default:
		return strconv.Itoa(int(c))
	}
	return strconv.Itoa(int(c)) + " (" + name + ")"
}

// validOnWire reports whether c may appear in a close frame, sent or received
// (RFC 6455 §7.4.1, §7.4.2): 1000–1003, 1007–1014 and 3000–4999. 1004, 1005,
// 1006 and 1015 are reserved and never sent; 0–999 and 1016–2999 are not used
// or reserved for future versions of the protocol.
func (c CloseCode) validOnWire() bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// checkClose validates a code and reason a host wants to send.
func checkClose(code CloseCode, reason string) error {
	if !code.validOnWire() {
		return fmt.Errorf("%w: %d may not be sent (RFC 6455 §7.4)", errInvalidCloseCode, code)
	}
	if len(reason) > maxCloseReason {
		return fmt.Errorf("%w: reason is %d bytes, at most %d fit a close frame", errInvalidCloseReason, len(reason), maxCloseReason)
	}
	if !utf8.ValidString(reason) {
		return fmt.Errorf("%w: reason is not valid UTF-8", errInvalidCloseReason)
	}
	return nil
}

// Errors returned by this package. Test for them with errors.Is: most are
// wrapped with detail.
var (
	// ErrClosed: the connection is closed or closing; nothing more can be
	// sent on it.
	ErrClosed = errors.New("sipws: connection closed")
	// ErrNotFound: no live connection has that ID (Kamailio's
	// "Unknown connection ID").
	ErrNotFound = errors.New("sipws: unknown connection ID")
	// errInvalidCloseCode: a close code that may not be sent.
	errInvalidCloseCode = errors.New("sipws: invalid close code")
	// errInvalidCloseReason: a close reason that is too long or not UTF-8.
	errInvalidCloseReason = errors.New("sipws: invalid close reason")
	// errControlTooLong: a Ping or Pong payload over 125 bytes.
	errControlTooLong = errors.New("sipws: control frame payload over 125 bytes")
	// ErrMessageTooBig: a message over Config.MaxMessageSize.
	ErrMessageTooBig = errors.New("sipws: message too big")
	// ErrSendQueueFull: the peer does not read fast enough; the connection
	// is being closed.
	ErrSendQueueFull = errors.New("sipws: send queue full")
	// ErrUnauthorized is returned by a Config.Authorize hook to refuse a
	// handshake with 401; the hook sets the challenge headers on the
	// ResponseWriter.
	ErrUnauthorized = errors.New("sipws: unauthorized")
)

// CloseError is the close code and reason a connection ended with. It is
// CloseEvent.Err for a connection that ended with a close handshake, and the error
// a protocol violation is reported as.
type CloseError struct {
	Code   CloseCode
	Reason string
}

// Error implements error.
func (e *CloseError) Error() string {
	if e.Reason == "" {
		return "sipws: close " + e.Code.String()
	}
	return "sipws: close " + e.Code.String() + ": " + e.Reason
}

// CloseStatus returns the close code inside err (a *CloseError anywhere in its
// chain), or 0 when there is none.
func CloseStatus(err error) CloseCode {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// CloseCause says why a connection ended.
type CloseCause uint8

const (
	// CausePeer: the peer started the close handshake with a close frame.
	CausePeer CloseCause = iota + 1
	// CausePeerLost: the TCP connection ended (FIN, RST, read error)
	// without a close frame.
	CausePeerLost
	// CauseProtocolError: the peer broke RFC 6455 or a limit (bad frame,
	// invalid UTF-8, message too big, unfinished frame); we failed the
	// connection with the matching close code.
	CauseProtocolError
	// CauseHost: the host closed it (Conn.Close, Registry.Close, the RPC
	// ws.close).
	CauseHost
	// CauseWriteFailure: a write to the peer failed or timed out.
	CauseWriteFailure
	// CauseKeepaliveTimeout: keepalive timeout — no answer to a keepalive Ping
	// in time, or idle for longer than Config.IdleTimeout.
	CauseKeepaliveTimeout
	// CauseShutdown: Server.Shutdown closed it with 1001.
	CauseShutdown
	// CauseSlowConsumer: the peer did not read what was sent to it and
	// its send queue overflowed.
	CauseSlowConsumer
	// CauseReplaced: a new connection bound the same registration flow
	// (Conn.BindInstance) and this one was closed with 1000 "Replaced by a
	// new flow".
	CauseReplaced
	// CauseMessageTimeout: the peer started a message in fragments and
	// did not finish it within Config.MessageTimeout; we failed the
	// connection with 1008.
	CauseMessageTimeout
	// CausePartialBytes: the messages still being received by all
	// connections together reached Config.MaxPartialBytes, and this
	// connection held the most; we failed it with 1009.
	CausePartialBytes
)

// String returns a short stable name: "peer", "peer-lost", "protocol-error",
// "host", "write-failure", "keepalive-timeout", "shutdown", "slow-consumer",
// "replaced", "message-timeout", "partial-bytes".
func (i CloseCause) String() string {
	switch i {
	case CausePeer:
		return "peer"
	case CausePeerLost:
		return "peer-lost"
	case CauseProtocolError:
		return "protocol-error"
	case CauseHost:
		return "host"
	case CauseWriteFailure:
		return "write-failure"
	case CauseKeepaliveTimeout:
		return "keepalive-timeout"
	case CauseShutdown:
		return "shutdown"
	case CauseSlowConsumer:
		return "slow-consumer"
	case CauseReplaced:
		return "replaced"
	case CauseMessageTimeout:
		return "message-timeout"
	case CausePartialBytes:
		return "partial-bytes"
	}
	return "CloseCause(" + strconv.Itoa(int(i)) + ")"
}

// Local reports whether this side ended the connection. It decides whether the
// connection counts in ws_local_closed_connections or
// ws_remote_closed_connections: every connection counts in exactly one.
func (i CloseCause) Local() bool {
	return i != CausePeer && i != CausePeerLost
}

// failed reports whether this cause always means an abnormal end (a
// CloseEvent.Err that is not nil, counted in ws_failed_connections): anything
// but a close handshake started by either side, a shutdown or a replacement —
// which are abnormal too when the handshake does not complete.
func (i CloseCause) failed() bool {
	switch i {
	case CausePeer, CauseHost, CauseShutdown, CauseReplaced:
		return false
	}
	return true
}

// endCause records how a connection ends.
type endCause struct {
	by     CloseCause
	code   CloseCode
	reason string
	err    error
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
	c.srv.log.Debug("closing", "conn", c.id, "remote", c.remote, "code", code, "reason", reason, "cause", by)
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
	c.srv.log.Debug("aborting", "conn", c.id, "remote", c.remote, "cause", by, "err", err)
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

// finish ends the connection: the socket is closed (gracefully after a close
// handshake), the connection leaves the registry and the counters, and
// OnClosed fires; its slot under the connection caps is given back once the
// socket is closed.
func (c *Conn) finish(readErr error) {
	graceful := readErr == errPeerClose || readErr == errFailed
	c.wmu.Lock()
	switch {
	case c.end.by == 0:
		c.end = endCause{by: CausePeerLost, code: CloseAbnormal, err: readErr}
	case !graceful && c.end.err == nil && c.state == stateClosing:
		c.end.err = fmt.Errorf("sipws: no close reply from the peer: %w", readErr)
	}
	c.state = stateClosed
	end := c.end
	c.wmu.Unlock()

	// After a close handshake our FIN goes out now and the socket is closed
	// once the peer's FIN is in (or CloseTimeout passed), after OnClosed;
	// otherwise it is closed at once.
	if !graceful || c.srv.shutdown.Load() || !c.closeWrite() {
		graceful = false
		_ = c.nc.Close()
	}
	c.wwg.Wait()
	// The connection holds its MaxConns and MaxConnsPerIP slot as long as
	// its socket is open: a peer that never sends its FIN after a close
	// handshake keeps it for CloseTimeout.
	defer func() {
		if graceful {
			c.linger()
			_ = c.nc.Close()
			c.srv.limits.release(c.remote.Addr())
		}
	}()

	c.srv.reg.remove(c)
	c.srv.reg.unroute(c)
	c.srv.ka.remove(c)
	if !graceful {
		c.srv.limits.release(c.remote.Addr())
	}
	c.srv.stats.closed(c.sp, end.by, end.err != nil)
	if o := c.srv.obs; o != nil {
		o.Closed(end.code, end.by)
	}
	ended := c.srv.clock.Now()
	close(c.done)
	c.srv.log.Info("connection closed", "conn", c.id, "remote", c.remote, "subprotocol", c.sp,
		"code", int(end.code), "reason", end.reason, "cause", end.by.String(), "err", end.err)
	if h := c.srv.cfg.OnClosed; h != nil {
		defer func() {
			if p := recover(); p != nil {
				c.srv.log.Error("panic in OnClosed", "conn", c.id, "remote", c.remote, "panic", p, "stack", string(debug.Stack()))
			}
		}()
		h(CloseEvent{
			ID:          c.id,
			RemoteAddr:  c.remote,
			LocalAddr:   c.local,
			Subprotocol: c.sp,
			Secure:      c.secure,
			Identity:    c.identity,
			Code:        end.code,
			Reason:      end.reason,
			Cause:       end.by,
			Err:         end.err,
			Opened:      c.opened,
			Ended:       ended,
		})
	}
}

// closeWrite sends our FIN after the close handshake, keeping the socket
// open for reading; it reports whether it could.
func (c *Conn) closeWrite() bool {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		return false
	}
	c.sockMu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.CloseTimeout))
	err := cw.CloseWrite()
	c.sockMu.Unlock()
	return err == nil
}

// linger waits, at most Config.CloseTimeout, for the peer's FIN after ours,
// discarding what it still sends, so that the peer reads our close frame
// before the socket is gone (closing a socket with unread input resets it).
func (c *Conn) linger() {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.CloseTimeout))
	c.dropInput()
	_, _ = io.CopyN(io.Discard, c.nc, 1<<16)
}
