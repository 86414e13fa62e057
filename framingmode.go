package sipws

import "fmt"

// FramingMode is what the server does with messages that fail the framing
// check of Config.Framing.
type FramingMode uint8

const (
	// FramingOff delivers every message as it is (the default).
	FramingOff FramingMode = iota
	// FramingReport counts and logs a message that fails, gives it to
	// Config.OnInvalidMessage instead of OnMessage, and keeps the connection.
	FramingReport
	// FramingClose fails the connection with 1007 (invalid payload) on the
	// first message that fails; it is counted, logged and given to
	// Config.OnInvalidMessage first.
	FramingClose
)

// String returns "off", "report" or "close".
func (m FramingMode) String() string {
	switch m {
	case FramingOff:
		return "off"
	case FramingReport:
		return "report"
	case FramingClose:
		return "close"
	}
	return fmt.Sprintf("FramingMode(%d)", uint8(m))
}

// invalid handles a message that failed the framing check.
func (c *Conn) invalid(m Message, err error) {
	c.srv.stats.invalid.Add(1)
	c.srv.log.Info("invalid message", "conn", c.id, "remote", c.remote, "subprotocol", c.sp, "size", len(m.Data), "err", err)
	if h := c.srv.cfg.OnInvalidMessage; h != nil {
		h(c, m, err)
	}
	if c.srv.cfg.Framing == FramingClose {
		_ = c.startClose(CauseProtocolError, CloseInvalidPayload, "invalid "+c.sp.Token()+" message", err)
	}
}
