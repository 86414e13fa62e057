package sipws

import (
	"errors"
	"fmt"
	"strconv"
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
