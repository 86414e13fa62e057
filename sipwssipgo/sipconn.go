package sipwssipgo

import (
	"bytes"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
)

// sipConn is the sip.Connection the Bridge puts in sipgo's pool for a link:
// sipgo's writes reach sipws's Conn.Send directly, in one frame.
type sipConn struct {
	l   *link
	ref atomic.Int64
}

// LocalAddr is the server's address the sipws connection came in on: sipgo
// uses it for a Via sent-by it must fill in.
func (s *sipConn) LocalAddr() net.Addr {
	return net.TCPAddrFromAddrPort(s.l.c.LocalAddr())
}

// WriteMsg sends msg as one WebSocket message: text when it is valid UTF-8,
// binary otherwise (RFC 7118 §4.2).
func (s *sipConn) WriteMsg(msg sip.Message) error {
	var buf bytes.Buffer
	buf.Grow(1024)
	msg.StringWrite(&buf)
	if err := s.l.c.Send(buf.Bytes()); err != nil {
		return fmt.Errorf("sipwssipgo: send on conn %d: %w", s.l.c.ID(), err)
	}
	return nil
}

// Ref counts sipgo's users of the connection; it never closes anything.
func (s *sipConn) Ref(i int) int { return int(s.ref.Add(int64(i))) }

// TryClose drops one reference. The sipws connection is the sipws.Server's:
// it stays open.
func (s *sipConn) TryClose() (int, error) {
	n := s.ref.Add(-1)
	if n < 0 {
		s.ref.Store(0)
		n = 0
	}
	return int(n), nil
}

// Close is called by sipgo when it drops the connection (its pool is
// cleared). The sipws connection stays open; it is the sipws.Server's.
func (s *sipConn) Close() error {
	s.ref.Store(0)
	return nil
}
