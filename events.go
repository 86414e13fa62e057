package sipws

import (
	"net/netip"
	"time"
)

// MessageType is the type of a WebSocket data message.
type MessageType uint8

const (
	// MessageText is a text message (opcode 0x1); its payload is valid UTF-8.
	MessageText MessageType = 1
	// MessageBinary is a binary message (opcode 0x2).
	MessageBinary MessageType = 2
)

// String returns "text" or "binary".
func (t MessageType) String() string {
	switch t {
	case MessageText:
		return "text"
	case MessageBinary:
		return "binary"
	}
	return "unknown"
}

// Message is one complete WebSocket message (all its fragments reassembled),
// as delivered to Config.OnMessage.
type Message struct {
	// Type is Text or Binary. RFC 7118 §4.2 lets SIP travel in either; a text
	// message has been checked to be valid UTF-8.
	Type MessageType
	// Data is the payload. It belongs to the host: the package never touches
	// it again after OnMessage is called, so it may be kept.
	Data []byte
}

// CloseEvent describes a connection that has ended. Config.OnClosed receives
// exactly one per connection that completed its handshake — the counterpart of
// Kamailio's event_route[websocket:closed] with $ws_conid, $si and $sp.
type CloseEvent struct {
	// ID is the connection's ID ($ws_conid).
	ID ConnID
	// RemoteAddr is the client's address ($si:$sp).
	RemoteAddr netip.AddrPort
	// LocalAddr is the server's address the connection came in on.
	LocalAddr netip.AddrPort
	// Subprotocol is the sub-protocol the connection spoke.
	Subprotocol Subprotocol
	// Secure reports a wss connection.
	Secure bool
	// Identity is what Config.Authorize returned for the connection.
	Identity any
	// Code and Reason are the close code and reason of the close handshake:
	// the peer's when it started it, ours when we did. Code is
	// CloseAbnormal (1006) when no close frame was exchanged (TCP lost).
	Code   CloseCode
	Reason string
	// Cause says who or what ended the connection.
	Cause CloseCause
	// Err is the error behind an abnormal end (a read or write error, a
	// *CloseError for a protocol violation, ErrSendQueueFull); nil for a
	// clean close handshake.
	Err error
	// Opened is when the handshake completed; Ended is when the TCP
	// connection was closed.
	Opened, Ended time.Time
}

// Observer receives measurements as they happen, for metrics that counters
// cannot give (histograms): the Prometheus collector in the sipwsprom
// sub-package is one. Its methods are called on the goroutines where things
// happen, often on hot paths: they must be fast, safe for concurrent use, and
// must not block or call back into the Server.
type Observer interface {
	// Handshake is called for every handshake answered: status is 101 for
	// a success (200 over HTTP/2, RFC 8441), the refusal's status
	// otherwise; d is the time from the start of HandleHandshake to the
	// response.
	Handshake(status int, d time.Duration)
	// MessageReceived is called for every message received, when it is
	// delivered, with its size in bytes.
	MessageReceived(sp Subprotocol, size int)
	// MessageSent is called for every message sent, when it is queued,
	// with its size in bytes.
	MessageSent(sp Subprotocol, size int)
	// RTT is called with each Ping's round-trip time as it is measured.
	RTT(d time.Duration)
	// Closed is called once for each connection that ends, with its close
	// code and cause.
	Closed(code CloseCode, cause CloseCause)
}
